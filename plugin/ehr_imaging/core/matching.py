"""Which EHR imaging order an incoming DICOM study belongs to (pure decision logic).

Linking a study to another patient's order is the worst failure this plugin can make, so precision
comes before recall: a study is linked automatically only when the evidence names exactly one order of
the same patient. Everything else stays unmatched with a stable ``reason`` (and the plausible orders as
``candidates``) for the reconciliation queue, where a human decides. No name or typo is fuzzy-matched.

Rules, first applicable wins:

1. explicit order id given by the uploader: authoritative, no fallback to the other rules;
2. accession number, checked against the order's MRN;
3. MRN + modality + study date within a window, only for studies that carry no accession number;
4. otherwise unmatched.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime

RULE_EXPLICIT = "explicit"
RULE_ACCESSION = "accession"
RULE_MRN_MODALITY_DATE = "mrn_modality_date"
RULES = frozenset({RULE_EXPLICIT, RULE_ACCESSION, RULE_MRN_MODALITY_DATE})

# Stable reason strings: the reconciliation queue and the API expose them, do not reword.
REASON_EXPLICIT_NOT_FOUND = "explicit order not found"
REASON_ORDER_CANCELLED = "order cancelled"
REASON_PATIENT_MISMATCH = "patient mismatch"
REASON_ALREADY_LINKED = "order already linked to another study"
REASON_AMBIGUOUS = "ambiguous"
REASON_ACCESSION_NO_ORDER = "accession matches no order"
REASON_NO_MATCH = "no matching order"
REASON_PATIENT_ID_MISSING = "patient id missing"
REASONS = frozenset({
    REASON_EXPLICIT_NOT_FOUND, REASON_ORDER_CANCELLED, REASON_PATIENT_MISMATCH, REASON_ALREADY_LINKED,
    REASON_AMBIGUOUS, REASON_ACCESSION_NO_ORDER, REASON_NO_MATCH, REASON_PATIENT_ID_MISSING,
})

CANCELLED = "cancelled"
DEFAULT_WINDOW_DAYS = 3

# DICOM pads string values with trailing spaces (UI values with NUL); neither is part of the value.
_PADDING = " \t\r\n\x00"


@dataclass(frozen=True)
class StudyFacts:
    """What Orthanc knows about one study (raw DICOM values; ``decide`` normalizes them)."""

    study_instance_uid: str
    patient_id: str | None  # DICOM PatientID (the hospital MRN)
    accession_number: str | None
    modalities: frozenset[str]  # ModalitiesInStudy, e.g. {"CT"} or {"MR", "SR"}
    study_date: date | None
    explicit_order_id: str | None = None  # given by the uploader (REST upload with order_id)


@dataclass(frozen=True)
class OrderFacts:
    """One EHR imaging order as far as matching needs it."""

    order_id: str
    accession_number: str | None
    mrn: str | None
    modality: str | None
    scheduled_start: datetime | None  # aware or naive; only its calendar date is compared
    status: str  # scheduled | in-progress | completed | cancelled
    linked_study_uid: str | None = None  # the study already linked to this order, if any


@dataclass(frozen=True)
class Decision:
    """The outcome for one study: a link (``order_id`` + ``rule``) or an unmatched ``reason``."""

    order_id: str | None  # None = unmatched
    rule: str | None  # "explicit" | "accession" | "mrn_modality_date" | None
    reason: str | None  # for unmatched; None when linked
    candidates: tuple[str, ...]  # order ids considered plausible (sorted), for the reconciliation queue

    def __post_init__(self) -> None:
        """Reject inconsistent decisions early: a half-linked decision would be a silent bug downstream."""
        if self.order_id is not None:
            if self.rule not in RULES or self.reason is not None:
                raise ValueError(f"a link needs a known rule and no reason: {self!r}")
        elif self.rule is not None or self.reason not in REASONS:
            raise ValueError(f"an unmatched decision needs a known reason and no rule: {self!r}")
        if self.candidates != tuple(sorted(set(self.candidates))):
            raise ValueError("candidates must be sorted and unique")

    @property
    def linked(self) -> bool:
        return self.order_id is not None


def normalize_identifier(value: str | None) -> str | None:
    """Canonical form of an identifier (MRN, accession): padding stripped, upper-case; empty -> None.

    Only padding and case are forgiven; inner characters are kept, so "ACC-1O01" never equals "ACC-1001".
    """
    if value is None:
        return None
    cleaned = value.strip(_PADDING).upper()
    return cleaned or None


def decide(study: StudyFacts, orders: Sequence[OrderFacts], *, window_days: int = DEFAULT_WINDOW_DAYS) -> Decision:
    """Link ``study`` to at most one of ``orders``, or say why not.

    ``orders`` may contain irrelevant orders (the caller looks them up by accession, MRN and explicit id)
    and may list one order several times; the result does not depend on their order.
    """
    if window_days < 0:
        raise ValueError("window_days must be >= 0")
    pool = _dedupe(orders)
    explicit = (study.explicit_order_id or "").strip(_PADDING)
    if explicit:
        return _decide_explicit(study, explicit, pool)
    patient = normalize_identifier(study.patient_id)
    accession = normalize_identifier(study.accession_number)
    if patient is None:
        # Nothing to check the order's MRN against: never link, but show the accession's orders to a human.
        plausible = [o for o in pool.values() if accession and _accession_of(o) == accession and _is_open(o, study)]
        return _unmatched(REASON_PATIENT_ID_MISSING, plausible)
    if accession is not None:
        return _decide_accession(study, patient, accession, pool, window_days)
    return _decide_mrn_modality_date(study, patient, pool, window_days)


def _decide_explicit(study: StudyFacts, order_id: str, pool: dict[str, OrderFacts]) -> Decision:
    """The uploader named the order; still refuse cancelled, foreign-patient and already-taken orders."""
    order = pool.get(order_id)
    if order is None:
        return _unmatched(REASON_EXPLICIT_NOT_FOUND)
    if not _is_open(order, study):
        return _unmatched(REASON_ORDER_CANCELLED)
    patient = normalize_identifier(study.patient_id)
    if patient is None:
        return _unmatched(REASON_PATIENT_ID_MISSING, [order])
    if normalize_identifier(order.mrn) != patient:
        return _unmatched(REASON_PATIENT_MISMATCH)
    if _linked_elsewhere(order, study):
        return _unmatched(REASON_ALREADY_LINKED, [order])
    return _link(order, RULE_EXPLICIT)


def _decide_accession(
    study: StudyFacts, patient: str, accession: str, pool: dict[str, OrderFacts], window_days: int
) -> Decision:
    """Accession match, but only to an order of the same patient: a reused or mistyped accession must not
    carry a study over to someone else's order."""
    matches = [o for o in pool.values() if _accession_of(o) == accession]
    if not matches:
        # Deliberately no fallback to rule 3: an accession typo must reach a human. The orders rule 3
        # would have found are listed as candidates to make that human's job quick.
        return _unmatched(REASON_ACCESSION_NO_ORDER, _mrn_modality_date_candidates(study, patient, pool, window_days))
    open_matches = [o for o in matches if _is_open(o, study)]
    if not open_matches:
        return _unmatched(REASON_ORDER_CANCELLED)
    consistent = [o for o in open_matches if normalize_identifier(o.mrn) == patient]
    if not consistent:
        return _unmatched(REASON_PATIENT_MISMATCH)
    if len(consistent) > 1:
        return _unmatched(REASON_AMBIGUOUS, consistent)
    order = consistent[0]
    if _linked_elsewhere(order, study):
        return _unmatched(REASON_ALREADY_LINKED, [order])
    return _link(order, RULE_ACCESSION)


def _decide_mrn_modality_date(
    study: StudyFacts, patient: str, pool: dict[str, OrderFacts], window_days: int
) -> Decision:
    """Fallback for studies without accession (no worklist at the modality): same patient, same modality,
    scheduled within ``window_days`` of the study date, and exactly one such order."""
    candidates = _mrn_modality_date_candidates(study, patient, pool, window_days)
    if len(candidates) == 1:
        return _link(candidates[0], RULE_MRN_MODALITY_DATE)
    if candidates:
        return _unmatched(REASON_AMBIGUOUS, candidates)
    return _unmatched(REASON_NO_MATCH)


def _mrn_modality_date_candidates(
    study: StudyFacts, patient: str, pool: dict[str, OrderFacts], window_days: int
) -> list[OrderFacts]:
    """Open, unlinked orders of ``patient`` for one of the study's modalities, scheduled near the study date."""
    study_day = _calendar_date(study.study_date)
    if study_day is None:
        return []
    modalities = {m for m in (normalize_identifier(m) for m in study.modalities) if m is not None}
    found: list[OrderFacts] = []
    for order in pool.values():
        order_day = _calendar_date(order.scheduled_start)
        if (
            _is_open(order, study)
            and not _linked_elsewhere(order, study)
            and normalize_identifier(order.mrn) == patient
            and normalize_identifier(order.modality) in modalities
            and order_day is not None
            and abs((study_day - order_day).days) <= window_days
        ):
            found.append(order)
    return found


def _dedupe(orders: Iterable[OrderFacts]) -> dict[str, OrderFacts]:
    """Index by order id; the caller's look-ups overlap, but two different facts for one id are a bug."""
    pool: dict[str, OrderFacts] = {}
    for order in orders:
        key = order.order_id.strip(_PADDING)
        known = pool.setdefault(key, order)
        if known != order:
            raise ValueError(f"conflicting facts for order {key!r}")
    return pool


def _accession_of(order: OrderFacts) -> str | None:
    return normalize_identifier(order.accession_number)


def _same_uid(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and a.strip(_PADDING) == b.strip(_PADDING) != ""


def _is_open(order: OrderFacts, study: StudyFacts) -> bool:
    """Not cancelled; an order already linked to this study stays usable whatever its status (idempotence)."""
    if _same_uid(order.linked_study_uid, study.study_instance_uid):
        return True
    return order.status.strip().lower() != CANCELLED


def _linked_elsewhere(order: OrderFacts, study: StudyFacts) -> bool:
    linked = (order.linked_study_uid or "").strip(_PADDING)
    return bool(linked) and not _same_uid(linked, study.study_instance_uid)


def _calendar_date(value: date | None) -> date | None:
    """The calendar date as written: a timezone-aware datetime keeps its own offset's date (no conversion)."""
    if isinstance(value, datetime):
        return value.date()
    return value


def _link(order: OrderFacts, rule: str) -> Decision:
    return Decision(order_id=order.order_id, rule=rule, reason=None, candidates=(order.order_id,))


def _unmatched(reason: str, plausible: Iterable[OrderFacts] = ()) -> Decision:
    return Decision(order_id=None, rule=None, reason=reason, candidates=tuple(sorted({o.order_id for o in plausible})))
