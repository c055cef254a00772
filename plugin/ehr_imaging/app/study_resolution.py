"""Which Orthanc study a StudyInstanceUID names: the one recorded for its patient, never another's.

Orthanc may hold several studies under one StudyInstanceUID (a UID reused under another PatientID,
core.study_identity). Everything the plugin serves by StudyInstanceUID (study routes, images, viewer tokens)
resolves here: to the Orthanc study recorded for that UID; a study not recorded yet (still arriving) only
when Orthanc holds exactly one study with that UID and it is not quarantined. An upload that would put a
study under another patient's StudyInstanceUID is refused before anything is stored.
"""

from __future__ import annotations

from typing import Any

from ..core.errors import Conflict, NotFound
from ..core.study_identity import REASON_COLLISION, Arrival, StudyCopy, classify_arrival, orthanc_study_id
from ..services import Services
from ..store import collisions
from ..store import studies as study_store


class StudyConflict(Conflict):
    """The StudyInstanceUID names more than one patient's study and none is recorded: a person must decide."""


def copies_in_orthanc(services: Services, study_uid: str) -> list[StudyCopy]:
    """Every Orthanc study holding this StudyInstanceUID, with its PatientID."""
    copies = []
    for orthanc_id in services.pacs.find_study_ids(study_uid):
        try:
            study: dict[str, Any] = services.pacs.get_json(f"/studies/{orthanc_id}")
        except NotFound:  # deleted between the lookup and the read
            continue
        copies.append(StudyCopy(orthanc_id, study.get("PatientMainDicomTags", {}).get("PatientID")))
    return copies


def resolve(services: Services, study_uids: list[str]) -> dict[str, str]:
    """StudyInstanceUID -> the Orthanc study it names, for those that name one (absent: not stored).
    StudyConflict when one is held by several patients' studies and none of them is recorded."""
    recorded = study_store.recorded(services.engine, study_uids)
    found = {uid: record.orthanc_study_id for uid, record in recorded.items()}
    unrecorded = [uid for uid in study_uids if uid not in recorded]
    quarantined = collisions.quarantined_ids(services.engine, unrecorded)
    for uid in unrecorded:
        candidates = [i for i in services.pacs.find_study_ids(uid) if i not in quarantined]
        if len(candidates) > 1:
            raise StudyConflict(f"{REASON_COLLISION}: StudyInstanceUID {uid} is held by {len(candidates)} studies"
                                " of different patients; see the reconciliation queue")
        if candidates:
            found[uid] = candidates[0]
    return found


def resolve_one(services: Services, study_uid: str) -> str | None:
    return resolve(services, [study_uid]).get(study_uid) if study_uid else None


def stored_study(services: Services, study_uid: str) -> str:
    """The Orthanc ID of the stored study a StudyInstanceUID names (for the use cases that read its images);
    NotFound when none."""
    orthanc_id = resolve_one(services, study_uid.strip())
    if orthanc_id is None:
        raise NotFound(f"study {study_uid} not found")
    return orthanc_id


def upload_collision(services: Services, study_uid: str, patient_id: str) -> str | None:
    """Why a file of this StudyInstanceUID and PatientID must not be stored, or None: its UID is already
    held (recorded, or stored and still arriving) under another patient."""
    arriving = StudyCopy(orthanc_study_id(patient_id, study_uid), patient_id)
    record = study_store.recorded(services.engine, [study_uid]).get(study_uid)
    if record is not None:
        held = [(StudyCopy(record.orthanc_study_id, record.patient_id), record.linked, record.accepted_patient_id)]
    else:
        held = [(copy, False, None) for copy in copies_in_orthanc(services, study_uid)]
    for copy, linked, accepted in held:
        arrival = classify_arrival(copy, arriving, recorded_still_stored=True, accepted_patient_id=accepted,
                                   coerce=services.settings.CoerceTags and linked)
        if arrival is Arrival.COLLISION:
            return (f"{REASON_COLLISION}: StudyInstanceUID {study_uid} is already held under another PatientID;"
                    " a study is never merged into another patient's record (nothing was stored)")
    return None
