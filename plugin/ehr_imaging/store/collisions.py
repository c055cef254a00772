"""Quarantined Orthanc studies: a StudyInstanceUID already recorded under another patient (core.study_identity).

A quarantined study is kept in Orthanc (nothing a modality sent is lost) but has no ``study_links`` row: no
order, no study query, no viewer token ever reaches it. It is listed in the reconciliation queue until it is
deleted in Orthanc (its DELETED change removes the row).
"""

from __future__ import annotations

from sqlalchemy import Engine, delete, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from ..core.study_identity import REASON_COLLISION, StudyObservation
from .models import LinkAudit, StudyLink, StudyUidCollision

SYSTEM_ACTOR = "ehr-imaging"


def quarantine(session: Session, seen: StudyObservation, recorded: StudyLink) -> bool:
    """Within the study's locked transaction: record (or refresh) ``seen`` as a collision with ``recorded``.
    Returns True the first time (an audit row says so), False when it was already quarantined."""
    values = {
        "orthanc_study_id": seen.orthanc_study_id, "study_instance_uid": seen.study_instance_uid,
        "patient_id": seen.patient_id, "patient_name": seen.patient_name,
        "accession_number": seen.accession_number, "study_date": seen.study_date,
        "modalities": list(seen.modalities), "number_of_series": seen.number_of_series,
        "number_of_instances": seen.number_of_instances,
        "total_size_bytes": seen.total_size_bytes, "upload_source": seen.upload_source,
        "uploaded_by": seen.uploaded_by, "recorded_orthanc_study_id": recorded.orthanc_study_id,
        "recorded_patient_id": recorded.patient_id,
    }
    refreshed = {k: v for k, v in values.items() if k not in ("orthanc_study_id", "upload_source", "uploaded_by")}
    statement = insert(StudyUidCollision).values(**values).on_conflict_do_update(
        index_elements=[StudyUidCollision.orthanc_study_id], set_={**refreshed, "updated_at": func.now()},
    ).returning(StudyUidCollision.first_seen_at == StudyUidCollision.updated_at)
    first_time = bool(session.execute(statement).scalar())
    if first_time:
        session.add(LinkAudit(
            study_instance_uid=recorded.study_instance_uid, order_id=None, action="quarantine", actor=SYSTEM_ACTOR,
            reason=f"{REASON_COLLISION}: Orthanc study {values['orthanc_study_id']} carries this StudyInstanceUID"
                   f" under another PatientID; the recorded study {recorded.orthanc_study_id} is unchanged"))
    return first_time


def is_quarantined(engine: Engine, orthanc_study_id: str) -> bool:
    with Session(engine) as session:
        return session.get(StudyUidCollision, orthanc_study_id) is not None


def quarantined_ids(engine: Engine, study_uids: list[str]) -> set[str]:
    """The quarantined Orthanc studies among those carrying these StudyInstanceUIDs."""
    if not study_uids:
        return set()
    with Session(engine) as session:
        return set(session.scalars(select(StudyUidCollision.orthanc_study_id)
                                   .where(StudyUidCollision.study_instance_uid.in_(study_uids))).all())


def forget(engine: Engine, orthanc_study_id: str) -> bool:
    """The quarantined study was deleted in Orthanc: it leaves the queue. True when it was quarantined."""
    with Session(engine) as session, session.begin():
        result = session.execute(delete(StudyUidCollision).where(
            StudyUidCollision.orthanc_study_id == orthanc_study_id).returning(StudyUidCollision.study_instance_uid))
        return result.first() is not None
