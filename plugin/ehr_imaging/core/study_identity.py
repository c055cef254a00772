"""One StudyInstanceUID, more than one Orthanc study: whose is it? (pure)

Orthanc identifies a study by its PatientID *and* StudyInstanceUID, so a StudyInstanceUID reused under
another PatientID (an attacker, or a modality that reuses UIDs) becomes a second Orthanc study, while the
plugin records one study per StudyInstanceUID. The record keeps the Orthanc study it saw first; whatever
else arrives under that UID is decided here, and a study of another patient is never merged, linked or
shown under the recorded patient: it waits in the reconciliation queue for a person.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from datetime import date, time

from .matching import normalize_identifier

REASON_COLLISION = "study uid collision"


@dataclass(frozen=True)
class StudyObservation:
    """A study as Orthanc holds it right now, read by the ingest worker."""

    study_instance_uid: str
    orthanc_study_id: str
    patient_id: str | None
    patient_name: str | None
    accession_number: str | None
    study_date: date | None
    study_time: time | None
    study_description: str | None
    modalities: tuple[str, ...]
    number_of_series: int
    number_of_instances: int
    total_size_bytes: int
    upload_source: str
    uploaded_by: str | None
    explicit_order_id: str | None = None


class Arrival(enum.Enum):
    SAME = "same"  # the recorded Orthanc study itself: keep its facts current
    MOVED = "moved"  # the recorded Orthanc study is gone and the same patient's copy took its place
    MERGE = "merge"  # the same patient under a PatientID spelled differently, recorded one still stored:
    #                  tag coercion folds it into the recorded study
    COLLISION = "collision"  # another patient (or no coercion to fold it in): quarantined for a person


@dataclass(frozen=True)
class StudyCopy:
    """One Orthanc study holding a StudyInstanceUID: its Orthanc ID and its PatientID."""

    orthanc_study_id: str
    patient_id: str | None


def orthanc_study_id(patient_id: str, study_instance_uid: str) -> str:
    """The ID Orthanc gives a study: SHA-1 of ``PatientID|StudyInstanceUID`` in five dashed groups. Lets an
    upload hold its study from the ingest worker before the first file is stored, and a QIDO answer's study
    be told apart from another patient's study under the same UID without asking Orthanc."""
    digest = hashlib.sha1(f"{patient_id}|{study_instance_uid}".encode(), usedforsecurity=False).hexdigest()
    return "-".join(digest[i:i + 8] for i in range(0, 40, 8))


def quarantine_uid(orthanc_study_id: str) -> str:
    """The StudyInstanceUID a colliding study is moved to: a ``2.25`` UID (PS3.5 B.2) derived from the Orthanc
    study it arrived as, so every later batch of that study lands in the same quarantined study."""
    digest = hashlib.sha256(f"ehr-imaging quarantine|{orthanc_study_id}".encode()).digest()
    return f"2.25.{int.from_bytes(digest[:16], 'big')}"


def same_patient(first: str | None, second: str | None) -> bool:
    """PatientIDs that name one patient: equal but for DICOM padding and case (as matching compares MRNs)."""
    return normalize_identifier(first) == normalize_identifier(second)


def classify_arrival(recorded: StudyCopy, arriving: StudyCopy, *, recorded_still_stored: bool, coerce: bool,
                     accepted_patient_id: str | None = None) -> Arrival:
    """What to do with ``arriving``, an Orthanc study with the StudyInstanceUID already recorded as ``recorded``.
    ``accepted_patient_id``: a PatientID a person accepted as the recorded patient's (a forced manual link)."""
    if arriving.orthanc_study_id == recorded.orthanc_study_id:
        return Arrival.SAME
    accepted = accepted_patient_id is not None and same_patient(accepted_patient_id, arriving.patient_id)
    if not same_patient(recorded.patient_id, arriving.patient_id) and not accepted:
        return Arrival.COLLISION
    if not recorded_still_stored:
        return Arrival.MOVED
    return Arrival.MERGE if coerce else Arrival.COLLISION


def conflicting_copies(copies: list[StudyCopy], patient_id: str | None) -> list[StudyCopy]:
    """The Orthanc studies with this StudyInstanceUID that belong to a patient other than ``patient_id``."""
    return [copy for copy in copies if not same_patient(copy.patient_id, patient_id)]
