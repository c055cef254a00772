"""Study-to-order matching: each rule and reason, normalization, the date window, idempotence, and the
safety property (a link never crosses patients) over a seeded fuzz of synthetic cases."""

from __future__ import annotations

import dataclasses
import random
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest

from ehr_imaging.core.matching import (
    REASONS,
    RULES,
    Decision,
    OrderFacts,
    StudyFacts,
    decide,
    normalize_identifier,
)

UID = "1.2.826.0.1.3680043.8.498.77.1"
OTHER_UID = "1.2.826.0.1.3680043.8.498.77.2"
MRN = "MRN-200001"
ACC = "ACC-2026-1001"
DAY = date(2026, 3, 10)


def study(**changes: Any) -> StudyFacts:
    base = StudyFacts(
        study_instance_uid=UID, patient_id=MRN, accession_number=ACC, modalities=frozenset({"CT"}), study_date=DAY,
    )
    return dataclasses.replace(base, **changes)


def order(order_id: str = "ORD-1", **changes: Any) -> OrderFacts:
    base = OrderFacts(
        order_id=order_id, accession_number=ACC, mrn=MRN, modality="CT", scheduled_start=datetime(2026, 3, 10, 9, 30),
        status="scheduled",
    )
    return dataclasses.replace(base, **changes)


def outcome(decision: Decision) -> tuple[str | None, str | None, str | None]:
    return decision.order_id, decision.rule, decision.reason


# --- normalization ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "expected"), [
    (None, None),
    ("", None),
    ("    ", None),
    ("\x00", None),
    ("MRN-200001", "MRN-200001"),
    ("MRN-200001  ", "MRN-200001"),
    ("  MRN-200001", "MRN-200001"),
    ("mrn-200001", "MRN-200001"),
    ("ACC-2026-1001\x00", "ACC-2026-1001"),
    ("ACC-2026-1001 \x00", "ACC-2026-1001"),
    ("\tacc-2026-1001\r\n", "ACC-2026-1001"),
    ("MRN 200001", "MRN 200001"),  # inner characters are data, not padding
    ("ACC-2026-1O01", "ACC-2026-1O01"),  # letter O stays a letter O
])
def test_normalize_identifier(raw: str | None, expected: str | None) -> None:
    assert normalize_identifier(raw) == expected


def test_normalization_forgives_padding_and_case_but_not_typos() -> None:
    assert normalize_identifier("acc-2026-1001  ") == normalize_identifier("ACC-2026-1001")
    assert normalize_identifier("ACC-2026-1O01") != normalize_identifier("ACC-2026-1001")
    assert normalize_identifier("MRN-20001") != normalize_identifier("MRN-200001")


# --- rule 1: explicit --------------------------------------------------------------------------------

EXPLICIT_CASES: list[tuple[str, StudyFacts, list[OrderFacts], tuple[str | None, str | None, str | None]]] = [
    ("links", study(explicit_order_id="ORD-1"), [order()], ("ORD-1", "explicit", None)),
    ("links whatever the accession, modality and date",
     study(explicit_order_id="ORD-1", accession_number="EXT-1", modalities=frozenset({"MR"}), study_date=None),
     [order(scheduled_start=None)], ("ORD-1", "explicit", None)),
    ("padded explicit id", study(explicit_order_id=" ORD-1 "), [order()], ("ORD-1", "explicit", None)),
    ("padded lower-case PatientID", study(explicit_order_id="ORD-1", patient_id="mrn-200001  "), [order()],
     ("ORD-1", "explicit", None)),
    ("not found", study(explicit_order_id="ORD-9"), [order()], (None, None, "explicit order not found")),
    ("order ids are not case-folded", study(explicit_order_id="ord-1"), [order()],
     (None, None, "explicit order not found")),
    ("cancelled", study(explicit_order_id="ORD-1"), [order(status="cancelled")], (None, None, "order cancelled")),
    ("other patient", study(explicit_order_id="ORD-1"), [order(mrn="MRN-200002")], (None, None, "patient mismatch")),
    ("order without MRN", study(explicit_order_id="ORD-1"), [order(mrn=None)], (None, None, "patient mismatch")),
    ("no PatientID", study(explicit_order_id="ORD-1", patient_id=None), [order()],
     (None, None, "patient id missing")),
    ("linked to another study", study(explicit_order_id="ORD-1"), [order(linked_study_uid=OTHER_UID)],
     (None, None, "order already linked to another study")),
    ("linked to this study, completed", study(explicit_order_id="ORD-1"),
     [order(status="completed", linked_study_uid=UID)], ("ORD-1", "explicit", None)),
    ("cancelled and linked elsewhere reports the cancellation first", study(explicit_order_id="ORD-1"),
     [order(status="cancelled", linked_study_uid=OTHER_UID)], (None, None, "order cancelled")),
    ("no fallback to the accession rule when the explicit order is unknown", study(explicit_order_id="ORD-9"),
     [order("ORD-2")], (None, None, "explicit order not found")),
    ("explicit wins over another order's accession match", study(explicit_order_id="ORD-1"),
     [order(accession_number="ACC-OTHER"), order("ORD-2")], ("ORD-1", "explicit", None)),
    ("empty explicit id is no explicit id", study(explicit_order_id="  "), [order()], ("ORD-1", "accession", None)),
]


@pytest.mark.parametrize(("s", "orders", "expected"), [c[1:] for c in EXPLICIT_CASES],
                         ids=[c[0] for c in EXPLICIT_CASES])
def test_explicit_rule(s: StudyFacts, orders: list[OrderFacts], expected: tuple[str | None, ...]) -> None:
    assert outcome(decide(s, orders)) == expected


# --- rule 2: accession ---------------------------------------------------------------------------------

ACCESSION_CASES: list[tuple[str, StudyFacts, list[OrderFacts], tuple[str | None, str | None, str | None]]] = [
    ("links", study(), [order()], ("ORD-1", "accession", None)),
    ("lower-case, padded accession", study(accession_number="acc-2026-1001   "), [order()],
     ("ORD-1", "accession", None)),
    ("padded PatientID", study(patient_id="MRN-200001    "), [order()], ("ORD-1", "accession", None)),
    ("lower-case order fields", study(), [order(accession_number="acc-2026-1001", mrn="mrn-200001")],
     ("ORD-1", "accession", None)),
    ("modality and date are not checked", study(modalities=frozenset({"MR"}), study_date=date(2025, 1, 1)),
     [order()], ("ORD-1", "accession", None)),
    ("reused accession, one consistent", study(), [order(mrn="MRN-200002"), order("ORD-2")],
     ("ORD-2", "accession", None)),
    ("reused accession, third patient", study(patient_id="MRN-200003"),
     [order(mrn="MRN-200002"), order("ORD-2")], (None, None, "patient mismatch")),
    ("other patient", study(), [order(mrn="MRN-200002")], (None, None, "patient mismatch")),
    ("order without MRN", study(), [order(mrn=None)], (None, None, "patient mismatch")),
    ("two consistent", study(), [order(), order("ORD-2")], (None, None, "ambiguous")),
    ("two consistent, one linked elsewhere", study(), [order(), order("ORD-2", linked_study_uid=OTHER_UID)],
     (None, None, "ambiguous")),
    ("only cancelled", study(), [order(status="cancelled")], (None, None, "order cancelled")),
    ("cancelled other patient", study(), [order(status="cancelled", mrn="MRN-200002")],
     (None, None, "order cancelled")),
    ("cancelled plus open reissue", study(), [order(status="cancelled"), order("ORD-2")],
     ("ORD-2", "accession", None)),
    ("cancelled own plus open other patient", study(), [order(status="cancelled"), order("ORD-2", mrn="MRN-200002")],
     (None, None, "patient mismatch")),
    ("status is compared without case or padding", study(), [order(status=" Cancelled ")],
     (None, None, "order cancelled")),
    ("linked to another study", study(), [order(linked_study_uid=OTHER_UID)],
     (None, None, "order already linked to another study")),
    ("linked to this study (padded uid), cancelled since", study(), [order(status="cancelled",
                                                                            linked_study_uid=UID + "\x00")],
     ("ORD-1", "accession", None)),
    ("typo: letter O for digit 0", study(accession_number="ACC-2026-1O01"), [order()],
     (None, None, "accession matches no order")),
    ("unknown accession", study(accession_number="ACC-2026-9999"), [], (None, None, "accession matches no order")),
    ("unknown accession, rule 3 would match: no fallback", study(accession_number="ACC-2026-9999"),
     [order(accession_number=None)], (None, None, "accession matches no order")),
    ("no PatientID", study(patient_id=None), [order()], (None, None, "patient id missing")),
    ("PatientID only padding", study(patient_id="  \x00"), [order()], (None, None, "patient id missing")),
    ("no PatientID, unknown accession", study(patient_id=None, accession_number="ACC-X"), [],
     (None, None, "patient id missing")),
    ("inner space in PatientID is not forgiven", study(patient_id="MRN 200001"), [order()],
     (None, None, "patient mismatch")),
]


@pytest.mark.parametrize(("s", "orders", "expected"), [c[1:] for c in ACCESSION_CASES],
                         ids=[c[0] for c in ACCESSION_CASES])
def test_accession_rule(s: StudyFacts, orders: list[OrderFacts], expected: tuple[str | None, ...]) -> None:
    assert outcome(decide(s, orders)) == expected


# --- rule 3: MRN + modality + date -----------------------------------------------------------------------

def no_acc(**changes: Any) -> StudyFacts:
    return study(accession_number=None, **changes)


def at(day: date, hour: int = 10, tz: timezone | None = None) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=tz)


MRN_DATE_CASES: list[tuple[str, StudyFacts, list[OrderFacts], tuple[str | None, str | None, str | None]]] = [
    ("same day", no_acc(), [order()], ("ORD-1", "mrn_modality_date", None)),
    ("2 days after", no_acc(), [order(scheduled_start=at(DAY - timedelta(days=2)))],
     ("ORD-1", "mrn_modality_date", None)),
    ("exactly 3 days after", no_acc(), [order(scheduled_start=at(DAY - timedelta(days=3), 0))],
     ("ORD-1", "mrn_modality_date", None)),
    ("exactly 3 days before", no_acc(), [order(scheduled_start=at(DAY + timedelta(days=3), 23))],
     ("ORD-1", "mrn_modality_date", None)),
    ("4 days after", no_acc(), [order(scheduled_start=at(DAY - timedelta(days=4), 23))],
     (None, None, "no matching order")),
    ("4 days before", no_acc(), [order(scheduled_start=at(DAY + timedelta(days=4), 0))],
     (None, None, "no matching order")),
    ("5 days after", no_acc(), [order(scheduled_start=at(DAY - timedelta(days=5)))],
     (None, None, "no matching order")),
    ("aware, 3 days in its own offset (4 in UTC)", no_acc(),
     [order(scheduled_start=datetime(2026, 3, 13, 23, 30, tzinfo=timezone(timedelta(hours=-5))))],
     ("ORD-1", "mrn_modality_date", None)),
    ("aware, 4 days in its own offset (3 in UTC)", no_acc(),
     [order(scheduled_start=datetime(2026, 3, 6, 0, 30, tzinfo=timezone(timedelta(hours=2))))],
     (None, None, "no matching order")),
    ("aware UTC same day", no_acc(), [order(scheduled_start=at(DAY, tz=UTC))], ("ORD-1", "mrn_modality_date", None)),
    ("wrong modality", no_acc(), [order(modality="MR")], (None, None, "no matching order")),
    ("order without modality", no_acc(), [order(modality=None)], (None, None, "no matching order")),
    ("lower-case modalities", no_acc(modalities=frozenset({"ct "})), [order(modality="ct")],
     ("ORD-1", "mrn_modality_date", None)),
    ("multi-modality study", no_acc(modalities=frozenset({"CT", "SR"})), [order()],
     ("ORD-1", "mrn_modality_date", None)),
    ("same day, two modalities, picks the study's", no_acc(modalities=frozenset({"MR"})),
     [order(), order("ORD-2", modality="MR")], ("ORD-2", "mrn_modality_date", None)),
    ("two orders same modality same day", no_acc(), [order(), order("ORD-2", accession_number="ACC-2")],
     (None, None, "ambiguous")),
    ("study covering both ordered modalities", no_acc(modalities=frozenset({"PT", "CT"})),
     [order(), order("ORD-2", modality="PT")], (None, None, "ambiguous")),
    ("other patient", no_acc(), [order(mrn="MRN-200002")], (None, None, "no matching order")),
    ("order without MRN", no_acc(), [order(mrn=None)], (None, None, "no matching order")),
    ("only cancelled", no_acc(), [order(status="cancelled")], (None, None, "no matching order")),
    ("cancelled plus open", no_acc(), [order(status="cancelled"), order("ORD-2")],
     ("ORD-2", "mrn_modality_date", None)),
    ("only order linked elsewhere", no_acc(), [order(linked_study_uid=OTHER_UID)], (None, None, "no matching order")),
    ("linked elsewhere does not make the other ambiguous", no_acc(),
     [order(linked_study_uid=OTHER_UID), order("ORD-2")], ("ORD-2", "mrn_modality_date", None)),
    ("linked to this study, cancelled since", no_acc(), [order(status="cancelled", linked_study_uid=UID)],
     ("ORD-1", "mrn_modality_date", None)),
    ("no study date", no_acc(study_date=None), [order()], (None, None, "no matching order")),
    ("no scheduled start", no_acc(), [order(scheduled_start=None)], (None, None, "no matching order")),
    ("study date given as a datetime", no_acc(study_date=datetime(2026, 3, 13, 8)), [order()],
     ("ORD-1", "mrn_modality_date", None)),
    ("empty accession counts as none", study(accession_number=""), [order()], ("ORD-1", "mrn_modality_date", None)),
    ("no orders", no_acc(), [], (None, None, "no matching order")),
    ("no PatientID", no_acc(patient_id=None), [order()], (None, None, "patient id missing")),
]


@pytest.mark.parametrize(("s", "orders", "expected"), [c[1:] for c in MRN_DATE_CASES],
                         ids=[c[0] for c in MRN_DATE_CASES])
def test_mrn_modality_date_rule(s: StudyFacts, orders: list[OrderFacts], expected: tuple[str | None, ...]) -> None:
    assert outcome(decide(s, orders)) == expected


@pytest.mark.parametrize(("window", "days_off", "linked"), [
    (0, 0, True), (0, 1, False), (1, 1, True), (1, 2, False), (7, 7, True), (7, 8, False),
])
def test_window_days_parameter(window: int, days_off: int, linked: bool) -> None:
    decision = decide(no_acc(), [order(scheduled_start=at(DAY + timedelta(days=days_off)))], window_days=window)
    assert decision.linked is linked


def test_negative_window_is_refused() -> None:
    with pytest.raises(ValueError, match="window_days"):
        decide(no_acc(), [order()], window_days=-1)


# --- candidates for the reconciliation queue ---------------------------------------------------------------

@pytest.mark.parametrize(("s", "orders", "candidates"), [
    (study(), [order()], ("ORD-1",)),
    (study(), [order("ORD-3"), order("ORD-2"), order("ORD-9", mrn="MRN-200002")], ("ORD-2", "ORD-3")),
    (study(), [order(mrn="MRN-200002")], ()),  # another patient's order is never offered
    (study(), [order(linked_study_uid=OTHER_UID)], ("ORD-1",)),
    (no_acc(), [order("ORD-B"), order("ORD-A")], ("ORD-A", "ORD-B")),
    (no_acc(), [order(modality="MR")], ()),
    (study(accession_number="ACC-2026-1O01"), [order(accession_number="ACC-2026-1001")], ("ORD-1",)),
    (study(patient_id=None), [order(), order("ORD-2", accession_number="OTHER")], ("ORD-1",)),
    (study(explicit_order_id="ORD-1", patient_id="MRN-200002"), [order()], ()),
    (study(explicit_order_id="ORD-1"), [order(linked_study_uid=OTHER_UID)], ("ORD-1",)),
])
def test_candidates(s: StudyFacts, orders: list[OrderFacts], candidates: tuple[str, ...]) -> None:
    assert decide(s, orders).candidates == candidates


# --- idempotence, cancellation, input hygiene ---------------------------------------------------------------

IDEMPOTENCE_CASES = [
    ("explicit", study(explicit_order_id="ORD-1"), [order(), order("ORD-2")]),
    ("accession", study(), [order(), order("ORD-2", accession_number="ACC-2")]),
    ("mrn_modality_date", no_acc(), [order(), order("ORD-2", modality="MR")]),
]


@pytest.mark.parametrize(("rule", "s", "orders"), IDEMPOTENCE_CASES, ids=[c[0] for c in IDEMPOTENCE_CASES])
@pytest.mark.parametrize("status_after_link", ["scheduled", "in-progress", "completed", "cancelled"])
def test_relinking_a_linked_study_is_idempotent(rule: str, s: StudyFacts, orders: list[OrderFacts],
                                                status_after_link: str) -> None:
    first = decide(s, orders)
    assert first.rule == rule
    after = [dataclasses.replace(o, linked_study_uid=s.study_instance_uid, status=status_after_link)
             if o.order_id == first.order_id else o for o in orders]
    assert decide(s, after) == first
    assert decide(s, after) == decide(s, after)


@pytest.mark.parametrize("s", [study(explicit_order_id="ORD-1"), study(), no_acc()], ids=["explicit", "acc", "mrn"])
def test_cancelled_orders_are_never_linked(s: StudyFacts) -> None:
    decision = decide(s, [order(status="cancelled")])
    assert not decision.linked
    assert decision.reason in {"order cancelled", "no matching order"}


def test_duplicate_orders_are_merged_and_conflicting_duplicates_refused() -> None:
    assert outcome(decide(study(), [order(), order()])) == ("ORD-1", "accession", None)
    with pytest.raises(ValueError, match="conflicting facts"):
        decide(study(), [order(), order(mrn="MRN-200002")])


def test_irrelevant_orders_do_not_change_the_decision() -> None:
    noise = [order(f"ORD-N{i}", accession_number=f"ACC-N{i}", mrn=f"MRN-9{i:05d}") for i in range(5)]
    for _, s, orders, _ in EXPLICIT_CASES + ACCESSION_CASES + MRN_DATE_CASES:
        assert decide(s, orders + noise) == decide(s, orders)
        assert decide(s, noise + orders) == decide(s, orders)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"order_id": "ORD-1", "rule": None, "reason": None}, "link needs"),
    ({"order_id": "ORD-1", "rule": "accession", "reason": "ambiguous"}, "link needs"),
    ({"order_id": "ORD-1", "rule": "fuzzy", "reason": None}, "link needs"),
    ({"order_id": None, "rule": "accession", "reason": "ambiguous"}, "unmatched"),
    ({"order_id": None, "rule": None, "reason": "something else"}, "unmatched"),
    ({"order_id": None, "rule": None, "reason": None}, "unmatched"),
])
def test_decision_rejects_inconsistent_fields(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Decision(candidates=(), **kwargs)


def test_decision_candidates_must_be_sorted() -> None:
    with pytest.raises(ValueError, match="sorted"):
        Decision(order_id=None, rule=None, reason="ambiguous", candidates=("B", "A"))
    assert Decision(order_id="A", rule="explicit", reason=None, candidates=("A",)).linked
    assert not Decision(order_id=None, rule=None, reason="ambiguous", candidates=("A", "B")).linked


# --- property-style: order independence and patient safety over a seeded fuzz ------------------------------

_PATIENTS = ["MRN-300001", "MRN-300002", "MRN-300003"]
_ACCESSIONS = ["ACC-2026-2001", "ACC-2026-2002", "ACC-2026-2OO1"]
_MODALITIES = ["CT", "MR", "US", "CR", "DX", "PT", "SR"]
_STATUSES = ["scheduled", "in-progress", "completed", "cancelled"]
_BASE_DAY = date(2026, 5, 10)


def _variant(rng: random.Random, value: str) -> str:
    """The same identifier as a modality might send it: padded, lower-case or NUL-terminated."""
    return rng.choice([value, value + "  ", value.lower(), value + "\x00", " " + value])


def _maybe_id(rng: random.Random, pool: list[str], missing: float) -> str | None:
    if rng.random() < missing:
        return rng.choice([None, "", "   "])
    return _variant(rng, rng.choice(pool))


def _fuzz_case(rng: random.Random, index: int) -> tuple[StudyFacts, list[OrderFacts]]:
    uid = f"1.2.826.0.1.3680043.8.498.88.{index}"
    orders = []
    for n in range(rng.randint(0, 5)):
        tz = rng.choice([None, UTC, timezone(timedelta(hours=-5)), timezone(timedelta(hours=9))])
        day = _BASE_DAY + timedelta(days=rng.randint(-6, 6))
        orders.append(OrderFacts(
            order_id=f"ORD-{index}-{n}",
            accession_number=_maybe_id(rng, _ACCESSIONS, 0.15),
            mrn=_maybe_id(rng, _PATIENTS, 0.1),
            modality=rng.choice([*_MODALITIES[:5], "ct", None]),
            scheduled_start=None if rng.random() < 0.1 else datetime(day.year, day.month, day.day,
                                                                      rng.randint(0, 23), tzinfo=tz),
            status=rng.choice(_STATUSES),
            linked_study_uid=rng.choice([None, None, None, None, uid, "1.2.3.999"]),
        ))
    explicit = None
    if rng.random() < 0.2:
        explicit = rng.choice([o.order_id for o in orders] + ["ORD-UNKNOWN"])
    study_facts = StudyFacts(
        study_instance_uid=uid,
        patient_id=_maybe_id(rng, _PATIENTS, 0.1),
        accession_number=_maybe_id(rng, _ACCESSIONS, 0.5),
        modalities=frozenset(rng.sample(_MODALITIES, rng.randint(1, 3))),
        study_date=None if rng.random() < 0.05 else _BASE_DAY + timedelta(days=rng.randint(-2, 2)),
        explicit_order_id=explicit,
    )
    return study_facts, orders


def _check_invariants(s: StudyFacts, orders: list[OrderFacts], decision: Decision) -> None:
    ids = {o.order_id for o in orders}
    assert set(decision.candidates) <= ids
    assert decision.candidates == tuple(sorted(decision.candidates))
    if not decision.linked:
        assert decision.reason in REASONS and decision.rule is None
        if decision.reason == "ambiguous":
            assert len(decision.candidates) >= 2
        return
    assert decision.rule in RULES and decision.reason is None
    linked = next(o for o in orders if o.order_id == decision.order_id)
    patient = normalize_identifier(s.patient_id)
    # the safety property
    assert patient is not None and normalize_identifier(linked.mrn) == patient
    this_study = linked.linked_study_uid == s.study_instance_uid
    assert linked.linked_study_uid in (None, s.study_instance_uid)
    assert linked.status != "cancelled" or this_study
    if decision.rule == "explicit":
        assert s.explicit_order_id == linked.order_id
        return
    assert s.explicit_order_id is None
    accession = normalize_identifier(s.accession_number)
    if decision.rule == "accession":
        assert normalize_identifier(linked.accession_number) == accession
        same_acc = [o for o in orders if normalize_identifier(o.accession_number) == accession
                    and (o.status != "cancelled" or o.linked_study_uid == s.study_instance_uid)
                    and normalize_identifier(o.mrn) == patient]
        assert [o.order_id for o in same_acc] == [linked.order_id]
    else:
        assert accession is None and s.study_date is not None and linked.scheduled_start is not None
        assert normalize_identifier(linked.modality) in s.modalities
        assert abs((s.study_date - linked.scheduled_start.date()).days) <= 3


def test_fuzz_order_independence_idempotence_and_patient_safety() -> None:
    rng = random.Random(1234)
    rules: dict[str | None, int] = {}
    reasons: dict[str | None, int] = {}
    for index in range(4000):
        s, orders = _fuzz_case(rng, index)
        decision = decide(s, orders)
        rules[decision.rule] = rules.get(decision.rule, 0) + 1
        reasons[decision.reason] = reasons.get(decision.reason, 0) + 1
        _check_invariants(s, orders, decision)
        for _ in range(3):
            shuffled = list(orders)
            rng.shuffle(shuffled)
            assert decide(s, shuffled) == decision
        if decision.linked:
            after = [dataclasses.replace(o, linked_study_uid=s.study_instance_uid) if o.order_id == decision.order_id
                     else o for o in orders]
            assert decide(s, after) == decision
    # the fuzz is not vacuous: every rule links and every reason occurs
    assert set(rules) == {*RULES, None}
    assert min(rules[r] for r in RULES) >= 50
    assert set(reasons) == {*REASONS, None}
