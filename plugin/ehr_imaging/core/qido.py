"""Study-level QIDO-RS for the scoped root, from Orthanc's own find: the query and the DICOM JSON answer.

Orthanc 1.10's in-process REST calls drop query strings, so the DICOMweb plugin's ``/studies?…`` cannot
be asked from inside Orthanc; its matching is Orthanc's ``/tools/find`` anyway. This module turns QIDO
matching keys into a find query (the scope always added as a StudyInstanceUID list) and a found study
into the DICOM JSON object QIDO answers with (PS3.18 F.2).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

# QIDO matching keys (keyword or tag, any case) -> Orthanc find keywords.
MATCHING_KEYS = {
    "patientid": "PatientID", "00100020": "PatientID",
    "patientname": "PatientName", "00100010": "PatientName",
    "studydate": "StudyDate", "00080020": "StudyDate",
    "studytime": "StudyTime", "00080030": "StudyTime",
    "accessionnumber": "AccessionNumber", "00080050": "AccessionNumber",
    "modalitiesinstudy": "ModalitiesInStudy", "00080061": "ModalitiesInStudy",
    "studydescription": "StudyDescription", "00081030": "StudyDescription",
}
MAX_LIMIT = 1000

# Study-level attributes answered: tag, VR, keyword, and whether Orthanc keeps it with the patient.
_STUDY_ATTRIBUTES = (
    ("00080020", "DA", "StudyDate", False), ("00080030", "TM", "StudyTime", False),
    ("00080050", "SH", "AccessionNumber", False), ("00080090", "PN", "ReferringPhysicianName", False),
    ("00081030", "LO", "StudyDescription", False), ("00100010", "PN", "PatientName", True),
    ("00100020", "LO", "PatientID", True), ("00100030", "DA", "PatientBirthDate", True),
    ("00100040", "CS", "PatientSex", True), ("0020000D", "UI", "StudyInstanceUID", False),
    ("00200010", "SH", "StudyID", False),
)


class QueryError(ValueError):
    """A QIDO parameter Orthanc cannot answer (HTTP 400)."""


def find_request(query: Mapping[str, str], study_uids: Iterable[str]) -> dict[str, Any]:
    """Orthanc ``/tools/find`` body for a study-level QIDO restricted to ``study_uids``."""
    find: dict[str, str] = {}
    for key, value in query.items():
        keyword = MATCHING_KEYS.get(key.lower())
        if keyword is not None and value.strip():
            find[keyword] = value.strip()
    find["StudyInstanceUID"] = "\\".join(study_uids)
    request: dict[str, Any] = {"Level": "Study", "Expand": True, "Query": find, "Limit": MAX_LIMIT}
    lowered = {k.lower(): v for k, v in query.items()}
    for name, target in (("limit", "Limit"), ("offset", "Since")):
        if name in lowered:
            text = lowered[name].strip()
            if not text.isdigit():
                raise QueryError(f"{name} must be a non-negative integer")
            request[target] = min(int(text), MAX_LIMIT) if name == "limit" else int(text)
    if lowered.get("fuzzymatching", "false").lower() not in ("false", ""):
        raise QueryError("fuzzy matching is not supported")
    return request


def study_json(study: Mapping[str, Any], modalities: Iterable[str], series_count: int,
               instance_count: int) -> dict[str, Any]:
    """One QIDO study result from an expanded Orthanc study."""
    main = study.get("MainDicomTags", {})
    patient = study.get("PatientMainDicomTags", {})
    out: dict[str, Any] = {}
    for tag, vr, keyword, of_patient in _STUDY_ATTRIBUTES:
        value = str((patient if of_patient else main).get(keyword, "") or "").strip()
        out[tag] = _element(vr, [value] if value else [])
    out["00080061"] = _element("CS", sorted(set(modalities)))
    out["00201206"] = _element("IS", [series_count])
    out["00201208"] = _element("IS", [instance_count])
    return out


def _element(vr: str, values: list[Any]) -> dict[str, Any]:
    if not values:
        return {"vr": vr}
    if vr == "PN":
        return {"vr": vr, "Value": [{"Alphabetic": v} for v in values]}
    return {"vr": vr, "Value": values}
