"""The event outbox (``event_outbox``, ``event_deliveries``): the one module that writes and reads it.

A change that is an event (a link, an unmatch, a later batch, a deletion, an order status change, a first
instance) calls one of the ``study_*`` / ``order_status_changed`` writers with its own session, so the event
is committed with the change or not at all. One delivery row per endpoint that takes the type
(``configure``, from the setting ``EventEndpoints``); no endpoint: nothing is written. The delivery worker
(app/event_delivery.py) claims due rows with ``FOR UPDATE SKIP LOCKED`` (several nodes, each row to one of
them), the earliest undelivered of each study and endpoint first (core.events.sendable), and records what
became of each attempt here.
"""

from __future__ import annotations

import uuid
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, delete, exists, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session, aliased

from ..core import events
from ..core.errors import NotFound
from .event_models import EventDelivery, OutboxEvent

# The endpoints' URLs and the types each takes, per engine (configure): the writers find them by their
# session's engine, so the change functions need no extra argument and tests without events write none.
_ROUTES: weakref.WeakKeyDictionary[Any, tuple[tuple[str, frozenset[str]], ...]] = weakref.WeakKeyDictionary()
MAX_ERROR = 500


def configure(engine: Engine, endpoints: Iterable[events.Endpoint]) -> None:
    """Where the events written through ``engine`` go (the composition root, once)."""
    _ROUTES[engine] = tuple((e.url, e.types) for e in endpoints)


def _routes(session: Session) -> tuple[tuple[str, frozenset[str]], ...]:
    return _ROUTES.get(session.get_bind(), ())


def add(session: Session, event_type: str, *, study_uid: str | None, order_id: str | None,
        patient_id: str | None, data: Mapping[str, Any]) -> uuid.UUID | None:
    """Within the caller's transaction: the event, and a pending delivery to each endpoint taking its type."""
    urls = [url for url, types in _routes(session) if event_type in types]
    if not urls:
        return None
    event_id = uuid.uuid4()
    key = events.ordering_key(study_uid, order_id)
    row = OutboxEvent(event_id=event_id, type=event_type, study_instance_uid=study_uid, order_id=order_id,
                      patient_id=patient_id, ordering_key=key, payload=dict(data), occurred_at=datetime.now(UTC))
    session.add(row)
    session.flush()  # its seq: the order of the changes (each study's are serialised by its lock)
    for url in urls:
        session.add(EventDelivery(event_seq=row.seq, endpoint=url, ordering_key=key, status=events.PENDING,
                                  attempts=0))
    return event_id


# --- the writers of the changes (what each event says) ------------------------------------------------------

def study_linked(session: Session, link: Any, order: Any, *, rule: str | None, actor: str,
                 patient_mismatch_accepted: bool = False) -> None:
    add(session, events.STUDY_LINKED, study_uid=link.study_instance_uid, order_id=order.order_id,
        patient_id=order.patient_id, data={
            "rule": rule, "actor": actor, "accession_number": link.accession_number, "mrn": link.patient_id,
            "number_of_series": link.number_of_series, "number_of_instances": link.number_of_instances,
            "patient_mismatch_accepted": patient_mismatch_accepted})


def study_unmatched(session: Session, link: Any, *, reason: str | None, candidates: Sequence[str],
                    actor: str, previous_order_id: str | None = None) -> None:
    add(session, events.STUDY_UNMATCHED, study_uid=link.study_instance_uid, order_id=previous_order_id,
        patient_id=None, data={
            "reason": reason, "candidate_orders": list(candidates), "actor": actor,
            "accession_number": link.accession_number, "mrn": link.patient_id,
            "number_of_instances": link.number_of_instances})


def study_updated(session: Session, link: Any, *, new_instances: int, patient_id: str | None) -> None:
    add(session, events.STUDY_UPDATED, study_uid=link.study_instance_uid, order_id=link.order_id,
        patient_id=patient_id, data={
            "number_of_series": link.number_of_series, "number_of_instances": link.number_of_instances,
            "new_instances": new_instances, "total_size_bytes": link.total_size_bytes,
            "modalities": list(link.modalities or ())})


def study_deleted(session: Session, study: Any, *, order_id: str | None, actor: str, reason: str) -> None:
    add(session, events.STUDY_DELETED, study_uid=study.study_instance_uid, order_id=order_id, patient_id=None,
        data={"actor": actor, "reason": reason, "accession_number": study.accession_number,
              "mrn": study.patient_id, "number_of_instances": study.number_of_instances})


def study_arrived(session: Session, *, study_uid: str, orthanc_study_id: str, accession: str | None,
                  mrn: str | None, order_id: str | None, late: bool = False) -> None:
    """Under the study's lock: its study.arrived, once per life of the study (none since its last deletion).
    Written at NEW_STUDY; ``late`` by the study's first record when that could not be (the database away,
    an upload recording the study before its NEW_STUDY was handled)."""
    if not any(events.STUDY_ARRIVED in types for _, types in _routes(session)):
        return
    last = session.scalar(select(OutboxEvent.type).where(
        OutboxEvent.study_instance_uid == study_uid,
        OutboxEvent.type.in_([events.STUDY_ARRIVED, events.STUDY_DELETED])).order_by(OutboxEvent.seq.desc()).limit(1))
    if last == events.STUDY_ARRIVED:
        return
    add(session, events.STUDY_ARRIVED, study_uid=study_uid, order_id=order_id, patient_id=None,
        data={"orthanc_study_id": orthanc_study_id, "accession_number": accession, "mrn": mrn, "late": late})


def order_status_changed(session: Session, order: Any, *, to: str, study_uid: str | None, reason: str) -> None:
    add(session, events.ORDER_STATUS_CHANGED, study_uid=study_uid, order_id=order.order_id,
        patient_id=order.patient_id, data={"from_status": order.status, "to_status": to, "reason": reason,
                                           "accession_number": order.accession_number})


# --- delivery --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Claimed:
    """A delivery this node holds for one attempt (until ``lease`` runs out, then any node may retry it)."""

    seq: int
    endpoint: str
    event: events.Event
    attempts: int  # this attempt included
    retry_since: datetime


def claim(engine: Engine, endpoints: Sequence[str], *, limit: int, lease: timedelta) -> list[Claimed]:
    """Due deliveries to these endpoints, each study's earliest undelivered only, locked (another node skips
    them) and leased: their next attempt is pushed past the lease, so a node that dies mid-attempt leaves them
    to be retried (at least once)."""
    if not endpoints:
        return []
    earlier = aliased(EventDelivery)
    waiting = exists().where(earlier.endpoint == EventDelivery.endpoint,
                             earlier.ordering_key == EventDelivery.ordering_key,
                             earlier.event_seq < EventDelivery.event_seq, earlier.status == events.PENDING)
    with Session(engine) as session, session.begin():
        now = session.scalar(select(func.now()))
        assert now is not None
        rows = session.scalars(select(EventDelivery).where(
            EventDelivery.status == events.PENDING, EventDelivery.endpoint.in_(list(endpoints)),
            EventDelivery.next_attempt_at <= now, ~waiting,
        ).order_by(EventDelivery.event_seq).limit(limit).with_for_update(skip_locked=True)).all()
        chosen = {(d.seq, d.endpoint) for d in events.sendable(
            [events.Delivery(r.event_seq, r.endpoint, r.ordering_key, r.status, r.next_attempt_at) for r in rows], now)}
        rows = [r for r in rows if (r.event_seq, r.endpoint) in chosen]
        stored = {e.seq: e for e in session.scalars(select(OutboxEvent).where(
            OutboxEvent.seq.in_([r.event_seq for r in rows])))}
        claimed = []
        for row in rows:
            row.attempts += 1
            row.last_attempt_at = now
            row.next_attempt_at = now + lease
            claimed.append(Claimed(row.event_seq, row.endpoint, _event(stored[row.event_seq]), row.attempts,
                                   row.retry_since))
        return claimed


def delivered(engine: Engine, seq: int, endpoint: str) -> None:
    with Session(engine) as session, session.begin():
        session.execute(update(EventDelivery).where(EventDelivery.event_seq == seq, EventDelivery.endpoint == endpoint)
                        .values(status=events.DELIVERED, delivered_at=func.now(), last_error=None))


def attempt_failed(engine: Engine, seq: int, endpoint: str, error: str, next_attempt_at: datetime | None) -> None:
    """An attempt failed (``error`` says how, without secrets): try again then, or (None) give up: failed."""
    values: dict[str, Any] = {"last_error": error[:MAX_ERROR]}
    if next_attempt_at is None:
        values["status"] = events.FAILED
    else:
        values["next_attempt_at"] = next_attempt_at
    with Session(engine) as session, session.begin():
        session.execute(update(EventDelivery).where(
            EventDelivery.event_seq == seq, EventDelivery.endpoint == endpoint,
            EventDelivery.status == events.PENDING).values(**values))


# --- the admin routes --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DeliveryRecord:
    endpoint: str  # its URL
    status: str
    attempts: int
    next_attempt_at: datetime | None  # None once delivered or failed
    last_attempt_at: datetime | None
    delivered_at: datetime | None
    last_error: str | None


@dataclass(frozen=True)
class EventRecord:
    event: events.Event
    deliveries: tuple[DeliveryRecord, ...]


def _event(row: OutboxEvent) -> events.Event:
    return events.Event(str(row.event_id), row.type, row.occurred_at, row.study_instance_uid, row.order_id,
                        row.patient_id, dict(row.payload))


def _records(session: Session, rows: Sequence[OutboxEvent]) -> list[EventRecord]:
    deliveries: dict[int, list[DeliveryRecord]] = {}
    for d in session.scalars(select(EventDelivery).where(EventDelivery.event_seq.in_([r.seq for r in rows]))
                             .order_by(EventDelivery.endpoint)):
        deliveries.setdefault(d.event_seq, []).append(DeliveryRecord(
            d.endpoint, d.status, d.attempts, d.next_attempt_at if d.status == events.PENDING else None,
            d.last_attempt_at, d.delivered_at, d.last_error))
    return [EventRecord(_event(r), tuple(deliveries.get(r.seq, ()))) for r in rows]


def search(engine: Engine, *, status: str | None, limit: int, offset: int) -> tuple[int, list[EventRecord]]:
    """Events newest first; ``status``: those with a delivery in that status."""
    query = select(OutboxEvent)
    if status is not None:
        query = query.where(exists().where(EventDelivery.event_seq == OutboxEvent.seq, EventDelivery.status == status))
    with Session(engine) as session:
        total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
        rows = session.scalars(query.order_by(OutboxEvent.seq.desc()).limit(limit).offset(offset)).all()
        return total, _records(session, rows)


def redeliver(engine: Engine, event_id: uuid.UUID) -> EventRecord:
    """Send the event again to every endpoint taking its type (delivered, failed or pending alike: due now,
    its retries counted afresh), still after the earlier undelivered events of its study. NotFound if unknown."""
    with Session(engine) as session, session.begin():
        row = session.scalars(select(OutboxEvent).where(OutboxEvent.event_id == event_id)).first()
        if row is None:
            raise NotFound(f"event {event_id} not found")
        for url, types in _routes(session):
            if row.type in types:  # an endpoint configured since the event was written gets it too
                session.execute(insert(EventDelivery).values(
                    event_seq=row.seq, endpoint=url, ordering_key=row.ordering_key, status=events.PENDING,
                    attempts=0).on_conflict_do_nothing())
        session.execute(update(EventDelivery).where(EventDelivery.event_seq == row.seq).values(
            status=events.PENDING, attempts=0, next_attempt_at=func.now(), retry_since=func.now(), delivered_at=None))
        return _records(session, [row])[0]


def delivery_counts(engine: Engine) -> dict[str, int]:
    """How many deliveries are in each status (``pending``, ``failed``, ``delivered``), every endpoint's."""
    with Session(engine) as session:
        rows = session.execute(select(EventDelivery.status, func.count()).group_by(EventDelivery.status)).all()
    counts = {status: 0 for status in events.STATUSES}
    counts.update({str(status): int(count) for status, count in rows})
    return counts


def prune_delivered(engine: Engine, older_than: timedelta, *, batch: int = 1000) -> int:
    """Remove events that every endpoint received and that are older than ``older_than`` (their deliveries go
    with them); an event with a pending or failed delivery is kept. Returns how many were removed."""
    cutoff = datetime.now(UTC) - older_than
    undelivered = exists().where(EventDelivery.event_seq == OutboxEvent.seq, EventDelivery.status != "delivered")
    removed = 0
    while True:
        with Session(engine) as session, session.begin():
            seqs = list(session.scalars(select(OutboxEvent.seq).where(OutboxEvent.occurred_at < cutoff, ~undelivered)
                                        .order_by(OutboxEvent.seq).limit(batch).with_for_update(skip_locked=True)))
            if seqs:
                session.execute(delete(EventDelivery).where(EventDelivery.event_seq.in_(seqs)))
                session.execute(delete(OutboxEvent).where(OutboxEvent.seq.in_(seqs)))
        removed += len(seqs)
        if len(seqs) < batch:
            return removed
