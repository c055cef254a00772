"""A study's images and summaries, from Orthanc in process: the files of a download, the thumbnail, one
rendered frame, the clinical summary, and the main tags.

Orthanc does the imaging work: ``/preview`` for the thumbnail, ``/rendered`` for a PNG frame
(``window-center``/``window-width`` when given, else the file's modality LUT and VOI; a frame whose file has no
window is Orthanc's ``/preview`` of it, its own range stretched), the DICOMweb plugin's
rendered frame for JPEG (``window``, ``quality``; Orthanc's own ``/rendered`` picks JPEG only from an Accept
header, which an in-process call cannot send). Which image represents a study, and the summary's text,
are pure rules in core/summary.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ..core import errors
from ..core.study_tags import study_tags as main_study_tags
from ..core.summary import SummaryOptions, clinical_summary, first_image_series, ordered_instances
from ..core.zipstream import safe_member_name
from ..services import Pacs, Services
from . import study_resolution


@dataclass(frozen=True)
class Rendering:
    """One frame as asked: 1-based ``frame``; window and level both or neither."""

    frame: int = 1
    jpeg: bool = False
    quality: int = 90
    window: float | None = None
    level: float | None = None


def study_size(services: Services, orthanc_study_id: str) -> int:
    """The study's uncompressed size in bytes, as Orthanc counts it."""
    return int(services.pacs.get_json(f"/studies/{orthanc_study_id}/statistics").get("UncompressedSize") or 0)


def archive_members(pacs: Pacs, orthanc_study_id: str) -> Iterator[tuple[str, Callable[[], bytes]]]:
    """``(name, read)`` for every instance: ``<series>/<instance number>-<SOPInstanceUID>.dcm``; each file is
    read from Orthanc only when the ZIP gets to it."""
    for series in pacs.get_json(f"/studies/{orthanc_study_id}/series"):
        tags = series.get("MainDicomTags", {})
        folder = " ".join(str(tags.get(k, "")).strip() for k in ("SeriesNumber", "Modality", "SeriesDescription"))
        for instance in pacs.get_json(f"/series/{series['ID']}/instances"):
            itags = instance.get("MainDicomTags", {})
            name = f"{str(itags.get('InstanceNumber', '')).strip()}-{itags.get('SOPInstanceUID', instance['ID'])}.dcm"
            yield safe_member_name(folder.strip() or series["ID"], name), _reader(pacs, instance["ID"])


def thumbnail(services: Services, study_uid: str) -> bytes:
    """PNG preview of the study's representative image (middle image of its first image series)."""
    pacs = services.pacs
    instances = _first_series_instances(pacs, study_resolution.stored_study(services, study_uid))
    if not instances:
        raise errors.NotFound("the study holds no image")
    instance = instances[len(instances) // 2]
    return _rendered(pacs, instance, f"/instances/{instance}/preview")


def render(services: Services, sop_instance_uid: str, asked: Rendering) -> bytes:
    """One frame of an instance, rendered by Orthanc as PNG or JPEG."""
    instance = services.pacs.lookup(sop_instance_uid, "Instance") if sop_instance_uid else None
    if instance is None:
        raise errors.NotFound(f"instance {sop_instance_uid} not found")
    return render_instance(services, instance, sop_instance_uid, asked)


def render_instance(services: Services, instance: str, sop_instance_uid: str, asked: Rendering) -> bytes:
    """One frame of the Orthanc instance ``instance`` (whose SOPInstanceUID is given), as PNG or JPEG."""
    pacs = services.pacs
    try:
        frames = pacs.get_json(f"/instances/{instance}/frames")
    except (errors.NotFound, errors.ArchiveError):  # Orthanc's answer for an instance without pixel data
        raise errors.NotFound(f"instance {sop_instance_uid} has no image frames") from None
    if asked.frame > len(frames):
        raise errors.NotFound(f"frame {asked.frame} not found: the instance has {len(frames)} frame(s)")
    windowed = asked.window is not None
    if not asked.jpeg:
        frame = f"/instances/{instance}/frames/{asked.frame - 1}"
        if windowed:
            window = f"window-center={asked.level}&window-width={asked.window}"
            return _rendered(pacs, instance, f"{frame}/rendered?{window}")
        # Orthanc's /rendered without the file's window maps a signed image's full type range (a black picture);
        # its /preview stretches the frame's own range, as a viewer does without a window.
        return _rendered(pacs, instance, f"{frame}/rendered" if _has_window(pacs, instance) else f"{frame}/preview")
    series = pacs.get_json(f"/instances/{instance}/series")
    study = pacs.get_json(f"/instances/{instance}/study")
    args = f"?quality={asked.quality}" + (f"&window={asked.level},{asked.window},linear" if windowed else "")
    return _rendered(pacs, instance, f"/dicom-web/studies/{study['MainDicomTags']['StudyInstanceUID']}"
                     f"/series/{series['MainDicomTags']['SeriesInstanceUID']}/instances/{sop_instance_uid}"
                     f"/frames/{asked.frame}/rendered{args}", after_plugins=True)


def summary(services: Services, study_uid: str, options: SummaryOptions) -> tuple[str, dict[str, Any]]:
    """The clinical summary of a stored study: its text and structured data."""
    pacs = services.pacs
    orthanc_id = study_resolution.stored_study(services, study_uid)
    study = pacs.get_json(f"/studies/{orthanc_id}")
    series = pacs.get_json(f"/studies/{orthanc_id}/series")
    study_tags: dict[str, Any] = {**study.get("PatientMainDicomTags", {}), **study.get("MainDicomTags", {})}
    modalities = sorted({str(s.get("MainDicomTags", {}).get("Modality", "")).strip() for s in series} - {""})
    study_tags["ModalitiesInStudy"] = "\\".join(modalities)
    instances = _first_series_instances(pacs, orthanc_id)
    instance_tags = pacs.get_json(f"/instances/{instances[0]}/tags?simplify") if instances else {}
    return clinical_summary(study_tags, instance_tags, options, number_of_series=len(series),
                            number_of_instances=sum(len(s.get("Instances", [])) for s in series))


def study_tags(services: Services, study_uid: str) -> dict[str, Any]:
    """The main tags of a stored study: patient, study, and its series with modality and counts."""
    orthanc_id = study_resolution.stored_study(services, study_uid)
    try:
        study = services.pacs.get_json(f"/studies/{orthanc_id}")
        series = services.pacs.get_json(f"/studies/{orthanc_id}/series")
    except errors.NotFound:  # deleted between the lookup and the read
        raise errors.NotFound(f"study {study_uid} not found") from None
    return main_study_tags(study, series)


def _first_series_instances(pacs: Pacs, orthanc_study_id: str) -> list[str]:
    series = first_image_series(pacs.get_json(f"/studies/{orthanc_study_id}/series"))
    if series is None:
        return []
    return ordered_instances(pacs.get_json(f"/series/{series['ID']}/instances"))


def _has_window(pacs: Pacs, instance_id: str) -> bool:
    """Whether the file names its own VOI window (Window Center, or a VOI LUT)."""
    for tag in ("0028-1050", "0028-3010"):
        try:
            pacs.get_bytes(f"/instances/{instance_id}/content/{tag}")
        except (errors.NotFound, errors.ArchiveError):
            continue
        return True
    return False


def _rendered(pacs: Pacs, instance_id: str, uri: str, *, after_plugins: bool = False) -> bytes:
    """An image Orthanc renders; Invalid naming the transfer syntax when it cannot decode the pixels
    (e.g. JPEG 2000 without a decoder plugin), instead of a bare internal error."""
    try:
        return pacs.get_bytes(uri, after_plugins=after_plugins)
    except (errors.NotFound, errors.ArchiveError):  # Orthanc's error says little (17 for some decoders' failures)
        try:
            syntax = pacs.get_json(f"/instances/{instance_id}/metadata?expand").get("TransferSyntax", "unknown")
        except errors.NotFound:  # gone meanwhile
            raise errors.NotFound("the instance is gone") from None
        raise errors.Invalid(f"Orthanc cannot render this image (transfer syntax {syntax})") from None


def _reader(pacs: Pacs, instance_id: str) -> Callable[[], bytes]:
    return lambda: pacs.get_bytes(f"/instances/{instance_id}/file")
