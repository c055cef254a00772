"""The main tags of a stored study as Orthanc reports them (``/studies/{id}`` and its series), for the tags route."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

PATIENT_TAGS = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "OtherPatientIDs")
STUDY_TAGS = ("StudyInstanceUID", "StudyDate", "StudyTime", "StudyDescription", "AccessionNumber", "StudyID",
              "ReferringPhysicianName", "InstitutionName", "RequestedProcedureDescription")
SERIES_TAGS = ("SeriesInstanceUID", "SeriesNumber", "SeriesDescription", "Modality", "BodyPartExamined",
               "Manufacturer", "StationName", "ProtocolName", "SeriesDate", "SeriesTime")


def study_tags(study: Mapping[str, Any], series: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Orthanc's ``/studies/{id}`` and ``/studies/{id}/series`` answers -> the main tags of a stored study."""
    rows: list[dict[str, Any]] = sorted(
        ({**_pick(s.get("MainDicomTags", {}), SERIES_TAGS), "orthanc_series_id": s.get("ID"),
          "number_of_instances": len(s.get("Instances", []))} for s in series),
        key=lambda s: (_number(s.get("SeriesNumber")), s.get("SeriesInstanceUID") or ""),
    )
    modalities = sorted({str(s["Modality"]).upper() for s in rows if s.get("Modality")})
    return {
        "study_instance_uid": study.get("MainDicomTags", {}).get("StudyInstanceUID"),
        "orthanc_study_id": study.get("ID"),
        "patient": _pick(study.get("PatientMainDicomTags", {}), PATIENT_TAGS),
        "study": _pick(study.get("MainDicomTags", {}), STUDY_TAGS),
        "modalities": modalities,
        "number_of_series": len(rows),
        "number_of_instances": sum(int(s["number_of_instances"]) for s in rows),
        "series": rows,
    }


def _pick(tags: Mapping[str, Any], keywords: Iterable[str]) -> dict[str, str | None]:
    return {k: (str(tags[k]).strip() if tags.get(k) is not None else None) for k in keywords}


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("inf")
