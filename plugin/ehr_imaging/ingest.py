"""What happens when a study becomes stable: read it from Orthanc, record the ingest, match it.

Runs on the ingest worker thread (hooks/ingest.py), never on Orthanc's storage path.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import Counter
from datetime import date, datetime, time
from typing import Any

from .core.coercion import COERCED_TAGS, tag_changes
from .services import Services
from .store import links

# Orthanc's "Origin" instance metadata -> the upload_source the EHR knows.
ORIGIN_TO_SOURCE = {"DicomProtocol": "modality", "RestApi": "manual", "Plugins": "api", "Lua": "api",
                    "WebDav": "manual"}


# Studies an API upload is writing on this node: the upload records them itself once all its files are
# in, so the worker must not record half of one when STABLE_STUDY fires during a long upload.
_held: Counter[str] = Counter()
_held_lock = threading.Lock()


def orthanc_study_id(patient_id: str, study_instance_uid: str) -> str:
    """The ID Orthanc gives a study: SHA-1 of ``PatientID|StudyInstanceUID`` in five dashed groups. Lets an
    upload hold its study from the worker before the first file is stored."""
    digest = hashlib.sha1(f"{patient_id}|{study_instance_uid}".encode(), usedforsecurity=False).hexdigest()
    return "-".join(digest[i:i + 8] for i in range(0, 40, 8))


def hold(orthanc_study_id: str) -> None:
    with _held_lock:
        _held[orthanc_study_id] += 1


def release(orthanc_study_id: str) -> None:
    with _held_lock:
        _held[orthanc_study_id] -= 1
        if _held[orthanc_study_id] <= 0:
            del _held[orthanc_study_id]


def is_held(orthanc_study_id: str) -> bool:
    with _held_lock:
        return _held[orthanc_study_id] > 0


def observe_study(services: Services, orthanc_study_id: str) -> links.StudyObservation | None:
    """The study's facts as Orthanc holds them; None if it is gone (deleted meanwhile)."""
    pacs = services.pacs
    try:
        study = pacs.get_json(f"/studies/{orthanc_study_id}")
        stats = pacs.get_json(f"/studies/{orthanc_study_id}/statistics")
        series = pacs.get_json(f"/studies/{orthanc_study_id}/series")
    except Exception:  # noqa: BLE001 - Orthanc answers 404 for a study deleted before we got to it
        return None
    tags = study.get("MainDicomTags", {})
    patient = study.get("PatientMainDicomTags", {})
    modalities = sorted({s.get("MainDicomTags", {}).get("Modality", "").strip().upper() for s in series} - {""})
    source, uploaded_by = _origin(pacs, series)
    return links.StudyObservation(
        study_instance_uid=tags.get("StudyInstanceUID", ""),
        orthanc_study_id=orthanc_study_id,
        patient_id=_text(patient.get("PatientID")),
        patient_name=_text(patient.get("PatientName")),
        accession_number=_text(tags.get("AccessionNumber")),
        study_date=parse_da(tags.get("StudyDate")),
        study_time=parse_tm(tags.get("StudyTime")),
        study_description=_text(tags.get("StudyDescription")),
        modalities=tuple(modalities),
        number_of_series=len(series),
        number_of_instances=int(stats.get("CountInstances", 0)),
        total_size_bytes=int(stats.get("DiskSize", 0)),
        upload_source=source,
        uploaded_by=uploaded_by,
    )


def process_stable_study(services: Services, orthanc_study_id: str) -> links.LinkOutcome | None:
    if is_held(orthanc_study_id):
        return None  # an upload in progress records it at its end (or hands it back if that fails)
    seen = observe_study(services, orthanc_study_id)
    if seen is None or not seen.study_instance_uid or is_held(orthanc_study_id):
        return None  # (held again: an upload began while the study was being read)
    outcome = links.record_ingest(services.engine, seen, services.match_policy)
    if services.settings.CoerceTags and outcome.order_id is not None:
        coerce_tags(services, seen)
    return outcome


def coerce_tags(services: Services, seen: links.StudyObservation) -> None:
    """Make a linked study's PatientID, PatientName and AccessionNumber agree with its order.

    Orthanc's modify keeps the UIDs and replaces the stored instances (KeepSource false); Orthanc gives
    the result a new study ID, whose STABLE_STUDY comes back here and finds nothing left to change.
    The current values are the study's *shared* tags: a tag missing there differs between instances
    (a later batch with the old values), so the whole study is modified again. Checked at each
    STABLE_STUDY, so every node converges without an in-memory cache; it reads the study's files,
    which is why coercion is off by default and never runs on the storage path.
    """
    order = links.linked_order(services.engine, seen.study_instance_uid)
    if order is None:
        return
    shared = services.pacs.get_json(f"/studies/{seen.orthanc_study_id}/shared-tags?simplify")
    current = {tag: shared.get(tag) if isinstance(shared.get(tag), str) else None for tag in COERCED_TAGS}
    changes = tag_changes(current, order)
    if not changes:
        return
    modification = {"Replace": changes, "Keep": ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"],
                    "Force": True}
    if "PatientID" in changes:
        new_study_id = _move_to_patient(services, seen.orthanc_study_id, modification)
    else:
        # Same PatientID: Orthanc's IDs (hashes of PatientID and the UIDs) do not change, the modified
        # copies overwrite the originals, so the source must be kept (deleting it would delete them).
        result = services.pacs.post_json(f"/studies/{seen.orthanc_study_id}/modify",
                                         {**modification, "KeepSource": True, "Synchronous": True})
        new_study_id = result["ID"]
    links.record_coercion(services.engine, seen.study_instance_uid, new_study_id, current, changes)


def _move_to_patient(services: Services, orthanc_study_id: str, modification: dict[str, Any]) -> str:
    """Orthanc 1.10 refuses a new PatientID in a study-level modify: rewrite instance by instance,
    store every copy, and only then delete the originals (a failure part-way loses nothing)."""
    pacs = services.pacs
    new_study_id = ""
    for instance in pacs.get_json(f"/studies/{orthanc_study_id}/instances"):
        modified = pacs.post_bytes(f"/instances/{instance['ID']}/modify", json.dumps(modification))
        stored = json.loads(pacs.post_bytes("/instances", modified))
        new_study_id = stored["ParentStudy"]
    pacs.delete(f"/studies/{orthanc_study_id}")
    return new_study_id


def _origin(pacs: Any, series: list[dict[str, Any]]) -> tuple[str, str | None]:
    """Who sent the study, from the first instance's metadata (Origin, RemoteAET / RemoteIP)."""
    instances = series[0].get("Instances", []) if series else []
    if not instances:
        return "manual", None
    metadata = pacs.get_json(f"/instances/{instances[0]}/metadata?expand")
    origin = metadata.get("Origin", "")
    source = ORIGIN_TO_SOURCE.get(origin, "manual")
    if origin == "DicomProtocol":
        return source, metadata.get("RemoteAET") or None
    return source, metadata.get("HttpUsername") or metadata.get("RemoteIP") or None


def _text(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value or None


def parse_da(value: Any) -> date | None:
    """DICOM DA (YYYYMMDD); None when absent or malformed (matching then skips the date rule)."""
    text = str(value or "").strip()
    if len(text) != 8 or not (text.isascii() and text.isdigit()):
        return None  # strptime alone would read "202611" as 2026-01-01
    try:
        return datetime.strptime(text, "%Y%m%d").date()
    except ValueError:
        return None


def parse_tm(value: Any) -> time | None:
    """DICOM TM (HHMMSS.FFFFFF, any trailing part optional)."""
    text = str(value or "").strip().split(".")[0]
    if not (text.isascii() and text.isdigit()) or len(text) not in (2, 4, 6):
        return None
    parts = [int(text[i:i + 2]) for i in range(0, len(text), 2)] + [0, 0]
    try:
        return time(parts[0], parts[1], parts[2])
    except ValueError:
        return None
