"""What waits for a person: unmatched studies and quarantined StudyInstanceUID collisions, and where one
study stands (as values: ``QueueEntry``, ``MatchStatus``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import Engine, func, literal, null, select, union_all
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session

from ..core.study_identity import REASON_COLLISION
from .models import ImagingOrder, StudyLink, StudyUidCollision
from .orders import Order, order_of


@dataclass(frozen=True)
class QueueEntry:
    """A study waiting for a person: unmatched (``reason``, ``candidate_order_ids``), or quarantined."""

    study_instance_uid: str
    orthanc_study_id: str
    patient_id: str | None
    patient_name: str | None
    accession_number: str | None
    study_date: date | None
    modalities: tuple[str, ...]
    number_of_series: int
    number_of_instances: int
    reason: str | None
    candidate_order_ids: tuple[str, ...]
    upload_source: str | None
    uploaded_by: str | None
    first_seen_at: datetime
    # A collision: the Orthanc study recorded under the StudyInstanceUID it was sent with (the other
    # patient's), and that StudyInstanceUID; it is now under ``study_instance_uid``, its own. Else None.
    collides_with_orthanc_study_id: str | None
    original_study_instance_uid: str | None


@dataclass(frozen=True)
class MatchStatus:
    """Where a study stands: ``linked`` (with its order), ``unmatched`` (why, candidates) or ``unknown`` yet;
    and the Orthanc studies quarantined under its StudyInstanceUID."""

    study_instance_uid: str
    status: str
    order_id: str | None
    match_rule: str | None
    reason: str | None
    candidate_order_ids: tuple[str, ...]
    order: Order | None
    quarantined_orthanc_study_ids: tuple[str, ...]


def unmatched(engine: Engine, *, limit: int, offset: int) -> tuple[int, list[QueueEntry]]:
    """The reconciliation queue, oldest first: studies without an order, and Orthanc studies quarantined
    because their StudyInstanceUID is recorded under another patient (reason ``study uid collision``)."""
    link, collision = StudyLink, StudyUidCollision
    unlinked = select(
        link.study_instance_uid, link.orthanc_study_id, link.patient_id, link.patient_name, link.accession_number,
        link.study_date, link.modalities, link.number_of_series, link.number_of_instances,
        link.match_reason.label("reason"), link.candidates, link.upload_source, link.uploaded_by,
        link.first_seen_at, null().label("collides_with"), null().label("original_uid"),
    ).where(link.order_id.is_(None))
    quarantined = select(
        func.coalesce(collision.quarantine_study_instance_uid, collision.study_instance_uid),
        func.coalesce(collision.quarantine_orthanc_study_id, collision.orthanc_study_id),
        collision.patient_id, collision.patient_name,
        collision.accession_number, collision.study_date, collision.modalities, collision.number_of_series,
        collision.number_of_instances, literal(REASON_COLLISION).label("reason"),
        literal([], JSONB).label("candidates"), collision.upload_source, collision.uploaded_by,
        collision.first_seen_at, collision.recorded_orthanc_study_id.label("collides_with"),
        collision.study_instance_uid.label("original_uid"),
    )
    queue = union_all(unlinked, quarantined).subquery()
    with Session(engine) as session:
        total = session.scalar(select(func.count()).select_from(queue)) or 0
        rows = session.execute(select(queue).order_by(queue.c.first_seen_at, queue.c.study_instance_uid,
                                                      queue.c.orthanc_study_id).limit(limit).offset(offset)).all()
        return total, [_item(row._mapping) for row in rows]


def _item(row: Any) -> QueueEntry:
    return QueueEntry(
        row["study_instance_uid"], row["orthanc_study_id"], row["patient_id"], row["patient_name"],
        row["accession_number"], row["study_date"], tuple(row["modalities"] or ()), row["number_of_series"],
        row["number_of_instances"], row["reason"], tuple(row["candidates"] or ()), row["upload_source"],
        row["uploaded_by"], row["first_seen_at"], row["collides_with"], row["original_uid"])


def match_status(engine: Engine, study_uid: str) -> MatchStatus:
    """Where a study stands (``MatchStatus``)."""
    with Session(engine) as session:
        quarantined = tuple(sorted(session.scalars(
            select(func.coalesce(StudyUidCollision.quarantine_orthanc_study_id, StudyUidCollision.orthanc_study_id))
            .where(StudyUidCollision.study_instance_uid == study_uid)).all()))
        link = session.get(StudyLink, study_uid)
        if link is None:
            return MatchStatus(study_uid, "unknown", None, None, None, (), None, quarantined)
        order = session.get(ImagingOrder, link.order_id) if link.order_id else None
        return MatchStatus(study_uid, "linked" if order else "unmatched", link.order_id, link.match_rule,
                           link.match_reason, tuple(link.candidates or ()), order_of(order) if order else None,
                           quarantined)
