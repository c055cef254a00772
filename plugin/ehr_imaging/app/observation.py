"""A study's facts as Orthanc holds them (StudyObservation), read for one study or for a batch of them.

One study: its resource, statistics, series and first instance's metadata (four in-process calls). A batch
(the ingest worker in a flood): the studies, their series and their first instances each in one
``/tools/bulk-content`` call (Orthanc 1.10 answers the resources it holds and leaves out the others), and the
statistics study by study (Orthanc has no bulk form of them): a study's calls from about four to one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..core.dicom_values import parse_da, parse_tm
from ..core.errors import NotFound
from ..core.study_identity import StudyObservation
from ..services import Services

# Orthanc's "Origin" instance metadata -> the upload_source the EHR knows.
ORIGIN_TO_SOURCE = {"DicomProtocol": "modality", "RestApi": "manual", "Plugins": "api", "Lua": "api",
                    "WebDav": "manual"}


def observe_study(services: Services, orthanc_study_id: str, *, origin: bool = True) -> StudyObservation | None:
    """The study's facts as Orthanc holds them; None if it is gone (deleted meanwhile). ``origin=False``: who
    sent it is not read (an upload knows: it says so itself)."""
    pacs = services.pacs
    try:
        study = pacs.get_json(f"/studies/{orthanc_study_id}")
        stats = pacs.get_json(f"/studies/{orthanc_study_id}/statistics")
        series = pacs.get_json(f"/studies/{orthanc_study_id}/series")
    except NotFound:  # deleted before we got to it
        return None
    if not origin:
        return _observation(orthanc_study_id, study, stats, series, ("api", None))
    first = _first_instance(series)
    return _observation(orthanc_study_id, study, stats, series,
                        _origin(pacs.get_json(f"/instances/{first}/metadata?expand") if first else None))


def observe_studies(services: Services, orthanc_study_ids: Sequence[str]) -> dict[str, StudyObservation | None]:
    """observe_study for several studies, in bulk. A study gone is None; one whose statistics Orthanc failed to
    answer is left out (for the caller to observe alone, and to see why)."""
    pacs = services.pacs
    studies = bulk(services, "Study", orthanc_study_ids)
    series = bulk(services, "Series", [s for study in studies.values() for s in study.get("Series", [])])
    stats: dict[str, Any] = {}
    for study_id in studies:
        try:
            stats[study_id] = pacs.get_json(f"/studies/{study_id}/statistics")
        except NotFound:
            studies[study_id] = None  # deleted meanwhile
        except Exception:  # noqa: BLE001 - observed alone by the caller, which says why
            continue
    in_order = {study_id: [series[s] for s in study.get("Series", []) if s in series]
                for study_id, study in studies.items() if study is not None}
    firsts = {study_id: _first_instance(its) for study_id, its in in_order.items()}
    metadata = {i: found.get("Metadata", {}) for i, found in
                bulk(services, "Instance", [f for f in firsts.values() if f], metadata=True).items()}
    observed: dict[str, StudyObservation | None] = {s: None for s in orthanc_study_ids if s not in studies}
    for study_id, study in studies.items():
        first = firsts.get(study_id)
        if study is None:
            observed[study_id] = None
        elif study_id in stats and (first is None or first in metadata):  # (else: observed alone)
            observed[study_id] = _observation(study_id, study, stats[study_id], in_order[study_id],
                                              _origin(metadata[first] if first else None))
    return observed


def bulk(services: Services, level: str, ids: Sequence[str], *, metadata: bool = False) -> dict[str, Any]:
    """The resources of ``level`` Orthanc holds among ``ids`` (its answers by ID), in one call."""
    if not ids:
        return {}
    found = services.pacs.post_json("/tools/bulk-content", {"Resources": list(dict.fromkeys(ids)),
                                                             "Level": level, "Metadata": metadata})
    return {str(resource["ID"]): resource for resource in found}


def _first_instance(series: list[dict[str, Any]]) -> str | None:
    instances = series[0].get("Instances", []) if series else []
    return str(instances[0]) if instances else None


def _observation(orthanc_study_id: str, study: dict[str, Any], stats: dict[str, Any], series: list[dict[str, Any]],
                 sender: tuple[str, str | None]) -> StudyObservation:
    tags = study.get("MainDicomTags", {})
    patient = study.get("PatientMainDicomTags", {})
    modalities = sorted({s.get("MainDicomTags", {}).get("Modality", "").strip().upper() for s in series} - {""})
    source, uploaded_by = sender
    return StudyObservation(
        study_instance_uid=tags.get("StudyInstanceUID", ""),
        orthanc_study_id=orthanc_study_id,
        patient_id=text(patient.get("PatientID")),
        patient_name=text(patient.get("PatientName")),
        accession_number=text(tags.get("AccessionNumber")),
        study_date=parse_da(tags.get("StudyDate")),
        study_time=parse_tm(tags.get("StudyTime")),
        study_description=text(tags.get("StudyDescription")),
        modalities=tuple(modalities),
        number_of_series=len(series),
        number_of_instances=int(stats.get("CountInstances", 0)),
        total_size_bytes=int(stats.get("DiskSize", 0)),
        upload_source=source,
        uploaded_by=uploaded_by,
    )


def _origin(metadata: dict[str, Any] | None) -> tuple[str, str | None]:
    """Who sent the study, from its first instance's metadata (Origin, RemoteAET / RemoteIP); no instance:
    a person, unknown."""
    if metadata is None:
        return "manual", None
    origin = metadata.get("Origin", "")
    source = ORIGIN_TO_SOURCE.get(origin, "manual")
    if origin == "DicomProtocol":
        return source, metadata.get("RemoteAET") or None
    return source, metadata.get("HttpUsername") or metadata.get("RemoteIP") or None


def text(value: Any) -> str | None:
    """A tag's text, stripped; None when absent or empty."""
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value or None
