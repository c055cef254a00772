"""Linking studies to orders in PostgreSQL, safely when several Orthanc nodes share the database.

Every change to one study's link happens in one transaction that holds an advisory lock on the
study UID and row locks on the candidate orders, so two nodes (or an ingest and an order update)
never link one study twice or one order to two studies; ``imaging_orders.study_instance_uid`` is
UNIQUE as the last line of defence.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, tzinfo

from sqlalchemy import Engine, func, or_, select
from sqlalchemy.orm import Session

from ..core.errors import Conflict, NotFound
from ..core.matching import Decision, OrderFacts, StudyFacts, decide, normalize_identifier
from ..core.orders import COMPLETED
from ..core.study_identity import REASON_COLLISION, Arrival, StudyCopy, StudyObservation, classify_arrival
from . import collisions, link_candidates, order_status, outbox
from . import upload_log as uploads
from .models import DicomUploadLog, ImagingOrder, LinkAudit, StudyLink
from .orders import Order, order_of
from .study_locks import HeldNow, lock_study, still_held


@dataclass(frozen=True)
class LinkOutcome:
    order_id: str | None
    reason: str | None  # why unmatched
    new_instances: int
    upload_log_id: uuid.UUID | None = None  # the audit row this ingest wrote, if any
    arrival: Arrival = Arrival.SAME  # COLLISION: quarantined; MERGE: to be folded into the recorded study
    quarantine_uid: str | None = None  # COLLISION: the StudyInstanceUID the caller moves the study to


def _always_stored(orthanc_study_id: str) -> bool:
    return True


@dataclass(frozen=True)
class MatchPolicy:
    window_days: int = 3
    timezone: tzinfo = UTC
    order_status_updates: bool = True  # a link completes its order (store/order_status.py)


SYSTEM_ACTOR = "ehr-imaging"
MANUAL_RULE = "manual"


def record_ingest(engine: Engine, seen: StudyObservation, policy: MatchPolicy,
                  audit: uploads.UploadAudit | None = None, *, held_now: HeldNow,
                  still_stored: Callable[[str], bool] = _always_stored, coerce: bool = False) -> LinkOutcome | None:
    """Record what arrived (upload log), keep the study's facts current, and link it if a rule allows.

    Without ``audit`` the upload row counts the instances that are new since the last record (C-STORE,
    stable studies); an API upload passes ``audit`` and gets one row for exactly what it sent.
    An Orthanc study other than the recorded one under the same StudyInstanceUID never changes the record
    (core.study_identity): another patient's is quarantined; ``still_stored`` tells whether the recorded
    Orthanc study still exists, ``coerce`` whether tag coercion may fold the same patient's copy in.

    ``held_now`` (study_locks.still_held): the study was read from Orthanc before its lock was taken; an API
    deletion that ran meanwhile has removed it from Orthanc and its link. Then nothing is written and the
    answer is None: recording it would bring its link back for a study Orthanc no longer holds."""
    with Session(engine) as session, session.begin():
        lock_study(session, seen.study_instance_uid)
        if not still_held(session, {seen.study_instance_uid: seen.orthanc_study_id}, held_now):
            return None
        return record_in(session, seen, policy, audit, still_stored=still_stored, coerce=coerce)


def record_in(session: Session, seen: StudyObservation, policy: MatchPolicy,
              audit: uploads.UploadAudit | None = None, *, still_stored: Callable[[str], bool] = _always_stored,
              coerce: bool = False, read: link_candidates.BatchReads | None = None) -> LinkOutcome:
    """record_ingest within the caller's transaction, the study's lock already held; ``read``: what its batch
    read at once (store/link_batches.py)."""
    quarantined = collisions.moved(session, seen.orthanc_study_id) if read is None else read.moved.get(
        seen.orthanc_study_id)
    if quarantined is not None:  # a colliding study, moved to its own StudyInstanceUID: its counts only
        previous_instances, previous_bytes = collisions.refresh(quarantined, seen)
        seen = dataclasses.replace(seen, upload_source=quarantined.upload_source or seen.upload_source,
                                   uploaded_by=quarantined.uploaded_by)
        row = _upload_row(seen, None, audit, previous_instances, previous_bytes,
                          note=f"{REASON_COLLISION}: quarantined for reconciliation")
        if row is not None:
            session.add(row)
        return LinkOutcome(None, REASON_COLLISION, max(seen.number_of_instances - previous_instances, 0),
                           row.id if row is not None else None, Arrival.COLLISION)
    link = session.get(StudyLink, seen.study_instance_uid) if read is None else read.known.get(seen.study_instance_uid)
    if link is not None and link.orthanc_study_id != seen.orthanc_study_id:
        arrival = classify_arrival(
            StudyCopy(link.orthanc_study_id, link.patient_id), StudyCopy(seen.orthanc_study_id, seen.patient_id),
            recorded_still_stored=still_stored(link.orthanc_study_id), coerce=coerce and link.order_id is not None,
            accepted_patient_id=link.accepted_patient_id)
        if arrival is Arrival.COLLISION:
            # Counted (and audited as an upload) once moved, by the moved study's own ingest above.
            target = collisions.quarantine(session, seen, link).quarantine_study_instance_uid
            return LinkOutcome(None, REASON_COLLISION, 0, None, arrival, target)
        if arrival is Arrival.MERGE:
            return LinkOutcome(link.order_id, link.match_reason, 0, None, arrival)
    previous_instances = link.number_of_instances if link else 0
    previous_bytes = link.total_size_bytes if link else 0
    if link is None:
        outbox.study_arrived(session, study_uid=seen.study_instance_uid, orthanc_study_id=seen.orthanc_study_id,
                             accession=seen.accession_number, mrn=seen.patient_id, order_id=None, late=True)
        # Column defaults apply only at INSERT; matching reads these before that.
        link = StudyLink(study_instance_uid=seen.study_instance_uid, orthanc_study_id=seen.orthanc_study_id,
                         upload_source=seen.upload_source, uploaded_by=seen.uploaded_by, auto_match=True,
                         candidates=[], number_of_instances=0, total_size_bytes=0)
        session.add(link)
    _copy_facts(link, seen)
    _match(session, link, policy, read.candidates if read is not None else None)
    new_instances = max(seen.number_of_instances - previous_instances, 0)
    if previous_instances and new_instances:  # a later batch of a recorded study
        order = session.get(ImagingOrder, link.order_id) if link.order_id else None
        outbox.study_updated(session, link, new_instances=new_instances,
                             patient_id=order.patient_id if order is not None else None)
    row = _upload_row(seen, link.order_id, audit, previous_instances, previous_bytes)
    if row is not None:
        session.add(row)
    return LinkOutcome(link.order_id, link.match_reason, new_instances, row.id if row is not None else None)


def _upload_row(seen: StudyObservation, order_id: str | None, audit: uploads.UploadAudit | None,
                previous_instances: int, previous_bytes: int, note: str | None = None) -> DicomUploadLog | None:
    """The upload audit row of this ingest: an API upload's own (whatever else arrived meanwhile), else one
    for the instances that are new since the last record (none when nothing is new)."""
    new_instances = max(seen.number_of_instances - previous_instances, 0)
    if audit is None and not new_instances:
        return None
    if audit is None:
        audit = uploads.UploadAudit(number_of_files=new_instances,
                                    total_size_bytes=max(seen.total_size_bytes - previous_bytes, 0))
    if note is not None:
        audit = dataclasses.replace(audit, error="; ".join(filter(None, (audit.error, note))))
    return uploads.study_row(seen, order_id, audit)


def rematch_for_order(engine: Engine, order_id: str, policy: MatchPolicy) -> list[str]:
    """After an order changed, try again the unmatched studies it could concern; return the Orthanc IDs of
    those it linked."""
    with Session(engine) as session:
        order = session.get(ImagingOrder, order_id)
        if order is None:
            return []
        keys = [k for k in (normalize_identifier(order.accession_number), normalize_identifier(order.mrn)) if k]
        uids = session.scalars(
            select(StudyLink.study_instance_uid).where(
                StudyLink.order_id.is_(None),
                or_(func.upper(StudyLink.accession_number).in_(keys), func.upper(StudyLink.patient_id).in_(keys)),
            )
        ).all()
    linked = []
    for uid in uids:
        with Session(engine) as session, session.begin():
            lock_study(session, uid)
            link = session.get(StudyLink, uid)
            if link is not None and link.order_id is None and _match(session, link, policy):
                linked.append(link.orthanc_study_id)
    return linked


def _copy_facts(link: StudyLink, seen: StudyObservation) -> None:
    for name in ("orthanc_study_id", "patient_id", "patient_name", "accession_number", "study_date", "study_time",
                 "study_description", "number_of_series", "number_of_instances", "total_size_bytes"):
        setattr(link, name, getattr(seen, name))
    link.modalities = list(seen.modalities)
    if seen.explicit_order_id:
        link.explicit_order_id = seen.explicit_order_id
    if link.first_seen_at is not None:  # a new one's is the server's now() (so a batch's rows go in one INSERT)
        link.updated_at = func.now()


def _match(session: Session, link: StudyLink, policy: MatchPolicy,
           read: Mapping[link_candidates.CandidateKey, list[ImagingOrder]] | None = None) -> bool:
    """Decide on the study's link with the candidate orders locked (``read`` by its batch, if it read them
    for the facts the study has now), then write the outcome.

    A link is final once made (only a person unlinks), and a study a person unlinked is not
    matched automatically again; either way the linked order's counts are kept current.
    """
    if link.order_id is not None:
        linked = session.get(ImagingOrder, link.order_id, with_for_update=True)
        if linked is not None:
            _fill_order(session, linked, link, policy.order_status_updates)
        return True
    if not link.auto_match:
        return False
    study = _study_facts(link)
    key = link_candidates.key_of(study)
    orders = read.get(key) if read is not None else None
    if orders is None:
        orders = link_candidates.candidate_orders(session, [key])[key]
    decision = decide(study, [_facts(o, policy.timezone) for o in orders], window_days=policy.window_days)
    before = (link.match_reason, list(link.candidates or ()))
    _apply(link, decision)
    if decision.order_id is None and (link.match_reason, link.candidates) != before:  # newly, or otherwise, unmatched
        outbox.study_unmatched(session, link, reason=decision.reason, candidates=decision.candidates,
                               actor=SYSTEM_ACTOR)
    if decision.order_id is not None:
        order = next(o for o in orders if o.order_id == decision.order_id)
        outbox.study_linked(session, link, order, rule=decision.rule, actor=SYSTEM_ACTOR)
        _fill_order(session, order, link, policy.order_status_updates)
        session.add(LinkAudit(study_instance_uid=link.study_instance_uid, order_id=order.order_id,
                              action="auto-link", rule=decision.rule, actor=SYSTEM_ACTOR))
    return decision.linked


def _study_facts(link: StudyLink) -> StudyFacts:
    return StudyFacts(
        study_instance_uid=link.study_instance_uid, patient_id=link.patient_id,
        accession_number=link.accession_number, modalities=frozenset(link.modalities or ()),
        study_date=link.study_date, explicit_order_id=link.explicit_order_id,
    )


def _apply(link: StudyLink, decision: Decision) -> None:
    link.order_id = decision.order_id
    link.match_rule = decision.rule
    link.match_reason = decision.reason
    link.candidates = list(decision.candidates)


def _facts(order: ImagingOrder, timezone: tzinfo) -> OrderFacts:
    # StudyDate is the site's local calendar date: compare it with the order's date in the same zone.
    start = order.scheduled_start.astimezone(timezone) if order.scheduled_start else None
    return OrderFacts(
        order_id=order.order_id, accession_number=order.accession_number, mrn=order.mrn, modality=order.modality,
        scheduled_start=start, status=order.status, linked_study_uid=order.study_instance_uid,
    )


def _fill_order(session: Session, order: ImagingOrder, link: StudyLink, status_updates: bool) -> None:
    if status_updates:
        order_status.advance(session, order, COMPLETED, study_uid=link.study_instance_uid,
                             reason="a study is linked to it")
    order.study_instance_uid = link.study_instance_uid
    order.orthanc_study_id = link.orthanc_study_id
    order.number_of_series = link.number_of_series
    order.number_of_images = link.number_of_instances
    order.study_date = link.study_date
    order.study_time = link.study_time
    order.match_rule = link.match_rule
    if order.uploaded_at is None:
        order.uploaded_at = link.first_seen_at or func.now()
        order.uploaded_by = link.uploaded_by
        order.upload_source = link.upload_source
    order.updated_at = func.now()


def known_orthanc_ids(engine: Engine) -> set[str]:
    """Every Orthanc study the plugin has recorded or quarantined."""
    with Session(engine) as session:
        return set(session.scalars(select(StudyLink.orthanc_study_id)).all()) | collisions.known_orthanc_ids(session)


def link_manually(engine: Engine, study_uid: str, order_id: str, *, actor: str, force: bool,
                  status_updates: bool = True) -> str:
    """A person links a study to an order. Conflict when either side is taken, the order is cancelled, or
    the patient differs (unless ``force``: an admin or radiologist who checked); NotFound for either side."""
    with Session(engine) as session, session.begin():
        lock_study(session, study_uid)
        link = session.get(StudyLink, study_uid)
        if link is None:
            raise NotFound(f"study {study_uid} is not known")
        order = session.get(ImagingOrder, order_id, with_for_update=True)
        if order is None:
            raise NotFound(f"order {order_id} not found")
        if link.order_id == order_id:
            return link.orthanc_study_id
        if link.order_id is not None:
            raise Conflict(f"study is linked to order {link.order_id}: unlink it first")
        if order.study_instance_uid not in (None, study_uid):
            raise Conflict(f"order is linked to study {order.study_instance_uid}")
        if order.status == "cancelled":
            raise Conflict("order is cancelled")
        same_patient = normalize_identifier(order.mrn) == normalize_identifier(link.patient_id)
        if not same_patient and not force:
            raise Conflict("patient mismatch: the study's PatientID differs from the order's MRN")
        link.order_id, link.match_rule, link.match_reason, link.candidates = order_id, MANUAL_RULE, None, [order_id]
        link.accepted_patient_id = None if same_patient else link.patient_id
        outbox.study_linked(session, link, order, rule=MANUAL_RULE, actor=actor,
                            patient_mismatch_accepted=not same_patient)
        _fill_order(session, order, link, status_updates)
        session.add(LinkAudit(study_instance_uid=study_uid, order_id=order_id, action="link", rule=MANUAL_RULE,
                              actor=actor, reason=None if same_patient else "patient mismatch accepted"))
        return link.orthanc_study_id


def unlink(engine: Engine, study_uid: str, *, actor: str, reason: str | None) -> str:
    """A person removes a link; the study then waits for a person (no automatic re-link)."""
    with Session(engine) as session, session.begin():
        lock_study(session, study_uid)
        link = session.get(StudyLink, study_uid)
        if link is None:
            raise NotFound(f"study {study_uid} is not known")
        if link.order_id is None:
            raise Conflict("study is not linked")
        order_id = link.order_id
        outbox.study_unmatched(session, link, reason="unlinked manually", candidates=[], actor=actor,
                               previous_order_id=order_id)
        order = session.get(ImagingOrder, order_id, with_for_update=True)
        if order is not None:
            for name in ImagingOrder.MATCH_FIELDS:
                setattr(order, name, None)
            order.updated_at = func.now()
            order_status.reopen(session, order, study_uid=study_uid, reason="its study was unlinked")
        link.order_id, link.match_rule, link.match_reason = None, None, "unlinked manually"
        link.accepted_patient_id = None
        link.auto_match = False
        session.add(LinkAudit(study_instance_uid=study_uid, order_id=order_id, action="unlink", actor=actor,
                              reason=reason))
        return order_id


class LockedStudy:
    """A study under its lock for a tag coercion: its link and order as they are now, and ``record``."""

    def __init__(self, session: Session, link: StudyLink | None) -> None:
        self._session = session
        self._link = link
        order = session.get(ImagingOrder, link.order_id, with_for_update=True) if link and link.order_id else None
        self._order = order
        self.order: Order | None = order_of(order) if order else None
        self.orthanc_study_id = link.orthanc_study_id if link else None
        self.patient_id = link.patient_id if link else None
        self.accepted_patient_id = link.accepted_patient_id if link else None

    def record(self, orthanc_study_id: str, original: dict[str, str | None], changes: dict[str, str]) -> None:
        """Audit the coercion: original and new values on the study's latest upload row, and in link_audit."""
        session, link = self._session, self._link
        if link is None:
            return
        link.orthanc_study_id = orthanc_study_id
        link.patient_id = changes.get("PatientID", link.patient_id)
        link.patient_name = changes.get("PatientName", link.patient_name)
        link.accession_number = changes.get("AccessionNumber", link.accession_number)
        if self._order is not None:
            self._order.orthanc_study_id = orthanc_study_id
        upload = session.scalars(select(DicomUploadLog)
                                 .where(DicomUploadLog.study_instance_uid == link.study_instance_uid)
                                 .order_by(DicomUploadLog.uploaded_at.desc()).limit(1)).first()
        if upload is not None:
            upload.tags_modified = True
            upload.orthanc_study_id = orthanc_study_id
            upload.modified_patient_id = changes.get("PatientID")
            upload.modified_patient_name = changes.get("PatientName")
            upload.modified_accession_number = changes.get("AccessionNumber")
        described = ", ".join(f"{tag}: {original.get(tag)!r} -> {value!r}" for tag, value in sorted(changes.items()))
        session.add(LinkAudit(study_instance_uid=link.study_instance_uid, order_id=link.order_id, action="coerce",
                              actor=SYSTEM_ACTOR, reason=described))


@contextmanager
def coercion(engine: Engine, study_uid: str) -> Iterator[LockedStudy]:
    """Hold the study's lock for a whole tag coercion (the rewrite in Orthanc included): another node's
    ingest, coercion or deletion audit of the same study waits, then sees the coerced study recorded."""
    with Session(engine) as session, session.begin():
        lock_study(session, study_uid)
        yield LockedStudy(session, session.get(StudyLink, study_uid))


def detach_order(session: Session, link: StudyLink, *, actor: str, reason: str) -> str | None:
    """Within a transaction holding the study's lock: free the linked order of a study that goes away.
    The order keeps its EHR fields and its audit; its study fields are cleared; an 'unlink' row says why."""
    order_id = link.order_id
    if order_id is None:
        return None
    order = session.get(ImagingOrder, order_id, with_for_update=True)
    if order is not None:
        for name in ImagingOrder.MATCH_FIELDS:
            setattr(order, name, None)
        order.updated_at = func.now()
        order_status.reopen(session, order, study_uid=link.study_instance_uid, reason=reason)
    link.order_id = None
    session.add(LinkAudit(study_instance_uid=link.study_instance_uid, order_id=order_id, action="unlink",
                          actor=actor, reason=reason))
    return order_id
