"""Quarantined Orthanc studies: a StudyInstanceUID already recorded under another patient (core.study_identity).

A quarantined study is kept (nothing a modality sent is lost) but moved out of the recorded study's
StudyInstanceUID to one of its own (``quarantine_uid``), so that DICOMweb, which finds studies by
StudyInstanceUID alone, never mixes it with the recorded patient's. It has no ``study_links`` row: no order,
no study query, no viewer token reaches it. It is listed in the reconciliation queue until it is deleted in
Orthanc (its DELETED change removes the row).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, delete, func, or_, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from ..core.study_identity import REASON_COLLISION, StudyObservation, orthanc_study_id, quarantine_uid
from .models import LinkAudit, StudyLink, StudyUidCollision

SYSTEM_ACTOR = "ehr-imaging"


def quarantine(session: Session, seen: StudyObservation, recorded: StudyLink) -> StudyUidCollision:
    """Within the recorded study's locked transaction: record ``seen`` (an Orthanc study under ``recorded``'s
    StudyInstanceUID, another patient's) as quarantined, with the StudyInstanceUID and Orthanc study it is
    to be moved to (known before the move, so no node ever records the moved study as a study of its own).
    Its counts are the moved study's, kept by ``refresh``; a link_audit row the first time."""
    target_uid = quarantine_uid(seen.orthanc_study_id)
    values: dict[str, Any] = {
        "orthanc_study_id": seen.orthanc_study_id, "study_instance_uid": seen.study_instance_uid,
        "quarantine_study_instance_uid": target_uid,
        "quarantine_orthanc_study_id": orthanc_study_id(seen.patient_id or "", target_uid),
        "patient_id": seen.patient_id, "patient_name": seen.patient_name, "accession_number": seen.accession_number,
        "study_date": seen.study_date, "modalities": list(seen.modalities), "upload_source": seen.upload_source,
        "uploaded_by": seen.uploaded_by, "recorded_orthanc_study_id": recorded.orthanc_study_id,
        "recorded_patient_id": recorded.patient_id, "number_of_series": 0, "number_of_instances": 0,
        "total_size_bytes": 0,
    }
    inserted = session.execute(insert(StudyUidCollision).values(**values).on_conflict_do_nothing()
                               .returning(StudyUidCollision.orthanc_study_id)).first()
    if inserted is not None:
        session.add(LinkAudit(
            study_instance_uid=recorded.study_instance_uid, order_id=None, action="quarantine", actor=SYSTEM_ACTOR,
            reason=f"{REASON_COLLISION}: Orthanc study {seen.orthanc_study_id} carried this StudyInstanceUID under"
                   f" another PatientID; moved to {target_uid}; the recorded study {recorded.orthanc_study_id}"
                   " is unchanged"))
    row = session.get(StudyUidCollision, seen.orthanc_study_id, with_for_update=True)
    assert row is not None
    return row


def moved(session: Session, orthanc_study_id: str) -> StudyUidCollision | None:
    """The quarantine row of a study that is (to be) in this Orthanc study once moved, locked."""
    return session.scalars(select(StudyUidCollision).where(
        StudyUidCollision.quarantine_orthanc_study_id == orthanc_study_id).with_for_update()).first()


def refresh(row: StudyUidCollision, seen: StudyObservation) -> tuple[int, int]:
    """The moved study as Orthanc holds it now; returns the instances and bytes recorded before."""
    previous = (row.number_of_instances, row.total_size_bytes)
    row.number_of_series, row.number_of_instances = seen.number_of_series, seen.number_of_instances
    row.total_size_bytes, row.modalities = seen.total_size_bytes, list(seen.modalities)
    row.quarantine_orthanc_study_id = seen.orthanc_study_id
    row.updated_at = func.now()
    return previous


def moved_to(engine: Engine, orthanc_study_id: str, moved_orthanc_study_id: str) -> None:
    """The move is done: the Orthanc study it is in (Orthanc's own ID, should it differ from the one foreseen)."""
    with Session(engine) as session, session.begin():
        row = session.get(StudyUidCollision, orthanc_study_id, with_for_update=True)
        if row is not None:
            row.quarantine_orthanc_study_id = moved_orthanc_study_id


def forget_arrival(engine: Engine, orthanc_study_id: str, moved_still_stored: Callable[[str], bool]) -> bool:
    """The study as it arrived was deleted: if it was never moved (the study it was to be moved to is not
    in Orthanc), it leaves the queue. True when a row went."""
    with Session(engine) as session, session.begin():
        row = session.get(StudyUidCollision, orthanc_study_id, with_for_update=True)
        if row is None or (row.quarantine_orthanc_study_id and moved_still_stored(row.quarantine_orthanc_study_id)):
            return False
        session.delete(row)
        return True


def quarantined_ids(engine: Engine, study_uids: list[str]) -> set[str]:
    """The quarantined Orthanc studies (as they arrived, or as moved) holding these StudyInstanceUIDs."""
    if not study_uids:
        return set()
    with Session(engine) as session:
        rows = session.execute(select(StudyUidCollision.orthanc_study_id, StudyUidCollision.quarantine_orthanc_study_id)
                               .where(or_(StudyUidCollision.study_instance_uid.in_(study_uids),
                                          StudyUidCollision.quarantine_study_instance_uid.in_(study_uids))))
        return {orthanc_id for pair in rows for orthanc_id in pair if orthanc_id}


def forget(engine: Engine, orthanc_study_id: str) -> bool:
    """A moved quarantined study was deleted in Orthanc: it leaves the queue. True when it was one. (The study
    it arrived as is deleted by the move itself: ``forget_arrival`` decides about that one.)"""
    with Session(engine) as session, session.begin():
        result = session.execute(delete(StudyUidCollision).where(
            StudyUidCollision.quarantine_orthanc_study_id == orthanc_study_id,
        ).returning(StudyUidCollision.study_instance_uid))
        return result.first() is not None


def known_orthanc_ids(session: Session) -> set[str]:
    rows = session.execute(select(StudyUidCollision.orthanc_study_id, StudyUidCollision.quarantine_orthanc_study_id))
    return {orthanc_id for pair in rows for orthanc_id in pair if orthanc_id}
