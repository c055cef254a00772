"""What waits for a person: unmatched studies and quarantined StudyInstanceUID collisions, and where one
study stands."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, func, literal, null, select, union_all
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session

from ..core.study_identity import REASON_COLLISION
from .models import ImagingOrder, StudyLink, StudyUidCollision
from .orders import to_dict as order_dict


def unmatched(engine: Engine, *, limit: int, offset: int) -> tuple[int, list[dict[str, Any]]]:
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


def _item(row: Any) -> dict[str, Any]:
    return {
        "study_instance_uid": row["study_instance_uid"], "orthanc_study_id": row["orthanc_study_id"],
        "patient_id": row["patient_id"], "patient_name": row["patient_name"],
        "accession_number": row["accession_number"],
        "study_date": row["study_date"].isoformat() if row["study_date"] else None,
        "modalities": list(row["modalities"] or []), "number_of_series": row["number_of_series"],
        "number_of_instances": row["number_of_instances"], "reason": row["reason"],
        "candidate_order_ids": list(row["candidates"] or []), "upload_source": row["upload_source"],
        "uploaded_by": row["uploaded_by"], "first_seen_at": row["first_seen_at"].isoformat(),
        # A collision: the Orthanc study recorded under the StudyInstanceUID it was sent with (the other
        # patient's), and that StudyInstanceUID; it is now under ``study_instance_uid``, its own. Else None.
        "collides_with_orthanc_study_id": row["collides_with"],
        "original_study_instance_uid": row["original_uid"],
    }


def match_status(engine: Engine, study_uid: str) -> dict[str, Any]:
    """Where a study stands: linked (with its order), unmatched (why, candidates) or unknown yet; and the
    Orthanc studies quarantined under its StudyInstanceUID."""
    with Session(engine) as session:
        quarantined = sorted(session.scalars(
            select(func.coalesce(StudyUidCollision.quarantine_orthanc_study_id, StudyUidCollision.orthanc_study_id))
            .where(StudyUidCollision.study_instance_uid == study_uid)).all())
        link = session.get(StudyLink, study_uid)
        if link is None:
            return {"study_instance_uid": study_uid, "status": "unknown", "order_id": None, "match_rule": None,
                    "reason": None, "candidate_order_ids": [], "order": None,
                    "quarantined_orthanc_study_ids": quarantined}
        order = session.get(ImagingOrder, link.order_id) if link.order_id else None
        return {
            "study_instance_uid": study_uid, "status": "linked" if order else "unmatched",
            "order_id": link.order_id, "match_rule": link.match_rule, "reason": link.match_reason,
            "candidate_order_ids": list(link.candidates or []), "order": order_dict(order) if order else None,
            "quarantined_orthanc_study_ids": quarantined,
        }
