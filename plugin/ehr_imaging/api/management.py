"""Study downloads, thumbnails, rendered frames, clinical summaries, and the upload history.

The images come from Orthanc in process: the ZIP is written as it is sent, one stored file at a time
(core/zipstream.py; chunked on the API port, joined on Orthanc's port), the thumbnail Orthanc's
``/preview``, a PNG frame its ``/rendered`` (``window-center``/``window-width`` when given, else the file's
modality LUT and VOI), a JPEG frame the DICOMweb plugin's rendered frame (``window``, ``quality``; Orthanc's
own ``/rendered`` picks JPEG only from an Accept header, which an in-process call cannot send).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

from ..core.errors import NotFound
from ..core.summary import SummaryOptionsError, clinical_summary, first_image_series, ordered_instances, parse_options
from ..core.zipstream import safe_member_name, zip_stream
from ..services import Pacs
from ..store import studies
from . import presenters
from .context import Api
from .downloads import refuse_if_too_large_here
from .router import ApiError, Request, Response, json_response
from .studies import study_or_404
from .validation import query_int

MAX_PAGE = 500
FORMATS = {"png": "image/png", "jpeg": "image/jpeg", "jpg": "image/jpeg"}


def download(api: Api, request: Request) -> Response:
    """The study as a ZIP of its DICOM files (a folder per series), streamed one file at a time
    (on Orthanc's port: joined, so only up to MaxOrthancPortDownloadMb); MaxConcurrentDownloads at once."""
    services, pacs, settings = api.services, api.services.pacs, api.services.settings
    uid = request.params["study_uid"]
    orthanc_id = study_or_404(services, uid)
    if not request.can_stream:
        size = int(pacs.get_json(f"/studies/{orthanc_id}/statistics").get("UncompressedSize") or 0)
        refuse_if_too_large_here(request, size, settings.MaxOrthancPortDownloadMb, settings.ApiPort)
    slot = api.downloads.take()
    return Response(stream=slot.hold(zip_stream(_study_members(pacs, orthanc_id))),
                    content_type="application/zip",
                    headers={"Content-Disposition": f'attachment; filename="{_file_name(uid)}.zip"'})


def thumbnail(api: Api, request: Request) -> Response:
    """PNG preview of the study's representative image (middle image of its first image series)."""
    pacs = api.services.pacs
    instances = _first_series_instances(pacs, study_or_404(api.services, request.params["study_uid"]))
    if not instances:
        raise ApiError(404, "the study holds no image")
    instance = instances[len(instances) // 2]
    return Response(body=_rendered(pacs, instance, f"/instances/{instance}/preview"), content_type="image/png")


def render(api: Api, request: Request) -> Response:
    """One frame as PNG or JPEG: the file's modality LUT and VOI, or the window/level given."""
    pacs = api.services.pacs
    q = request.query
    image_format = (q.get("format") or "png").lower()
    if image_format not in FORMATS:
        raise ApiError(422, "format: must be png or jpeg")
    frame = query_int(q, "frame", 1, 1, 1_000_000)
    quality = query_int(q, "quality", 90, 1, 100)
    window, level = _float_param(q, "window"), _float_param(q, "level")
    if (window is None) != (level is None):
        raise ApiError(422, "window and level: give both or neither")
    if window is not None and window <= 0:
        raise ApiError(422, "window: must be positive")
    sop_uid = request.params["sop_instance_uid"].strip()
    instance = pacs.lookup(sop_uid, "Instance") if sop_uid else None
    if instance is None:
        raise ApiError(404, f"instance {sop_uid} not found")
    try:
        frames = pacs.get_json(f"/instances/{instance}/frames")
    except Exception:  # noqa: BLE001 - Orthanc answers an error for an instance without pixel data
        raise ApiError(404, f"instance {sop_uid} has no image frames") from None
    if frame > len(frames):
        raise ApiError(404, f"frame {frame} not found: the instance has {len(frames)} frame(s)")
    if FORMATS[image_format] == "image/png":
        args = f"?window-center={level}&window-width={window}" if window is not None else ""
        body = _rendered(pacs, instance, f"/instances/{instance}/frames/{frame - 1}/rendered{args}")
    else:
        series = pacs.get_json(f"/instances/{instance}/series")
        study = pacs.get_json(f"/instances/{instance}/study")
        args = f"?quality={quality}" + (f"&window={level},{window},linear" if window is not None else "")
        body = _rendered(pacs, instance, f"/dicom-web/studies/{study['MainDicomTags']['StudyInstanceUID']}"
                         f"/series/{series['MainDicomTags']['SeriesInstanceUID']}/instances/{sop_uid}"
                         f"/frames/{frame}/rendered{args}", after_plugins=True)
    return Response(body=body, content_type=FORMATS[image_format])


def summary(api: Api, request: Request) -> Response:
    """Clinical summary of a study for reports: text and structured data."""
    try:
        options = parse_options(request.json())
    except SummaryOptionsError as exc:
        raise ApiError(422, str(exc)) from None
    services, pacs = api.services, api.services.pacs
    uid = request.params["study_uid"]
    orthanc_id = study_or_404(services, uid)
    study = pacs.get_json(f"/studies/{orthanc_id}")
    series = pacs.get_json(f"/studies/{orthanc_id}/series")
    study_tags: dict[str, Any] = {**study.get("PatientMainDicomTags", {}), **study.get("MainDicomTags", {})}
    modalities = sorted({str(s.get("MainDicomTags", {}).get("Modality", "")).strip() for s in series} - {""})
    study_tags["ModalitiesInStudy"] = "\\".join(modalities)
    instances = _first_series_instances(pacs, orthanc_id)
    instance_tags = pacs.get_json(f"/instances/{instances[0]}/tags?simplify") if instances else {}
    text, structured = clinical_summary(
        study_tags, instance_tags, options, number_of_series=len(series),
        number_of_instances=sum(len(s.get("Instances", [])) for s in series))
    return json_response({"study_instance_uid": uid, "summary": text, "structured_data": structured})


def list_uploads(api: Api, request: Request) -> Response:
    """Upload history (every ingest and rejected upload), newest first."""
    return _uploads(api, request, None)


def patient_uploads(api: Api, request: Request) -> Response:
    """A patient's upload history (their orders, their MRN, or rows naming them)."""
    patient_id = request.params["patient_id"].strip()
    if not patient_id or len(patient_id) > 128:
        raise ApiError(422, "patient_id: must be 1 to 128 characters")
    return _uploads(api, request, patient_id)


def _uploads(api: Api, request: Request, patient_id: str | None) -> Response:
    q = request.query
    status = q.get("status") or None
    if status is not None and status not in studies.UPLOAD_STATUSES:
        raise ApiError(422, f"status: must be one of {', '.join(studies.UPLOAD_STATUSES)}")
    source = q.get("source") or None
    if source is not None and len(source) > 20:
        raise ApiError(422, "source: at most 20 characters")
    where = studies.UploadFilter(status=status, source=source, patient_id=patient_id,
                                 limit=query_int(q, "limit", 50, 1, MAX_PAGE),
                                 offset=query_int(q, "offset", 0, 0, 10**9))
    total, items = studies.uploads(api.services.engine, where)
    return json_response({"total": total, "limit": where.limit, "offset": where.offset,
                          "items": [presenters.upload(item) for item in items]})


def get_upload(api: Api, request: Request) -> Response:
    """One upload audit row."""
    try:
        upload_id = uuid.UUID(request.params["upload_id"])
    except ValueError:
        raise ApiError(422, "upload_id: must be a UUID") from None
    found = studies.upload(api.services.engine, upload_id)
    if found is None:
        raise ApiError(404, f"upload {upload_id} not found")
    return json_response(presenters.upload(found))


def _first_series_instances(pacs: Pacs, orthanc_study_id: str) -> list[str]:
    series = first_image_series(pacs.get_json(f"/studies/{orthanc_study_id}/series"))
    if series is None:
        return []
    return ordered_instances(pacs.get_json(f"/series/{series['ID']}/instances"))


def _float_param(query: dict[str, str], name: str) -> float | None:
    value = (query.get(name) or "").strip()
    if not value:
        return None
    try:
        number = float(value)
    except ValueError:
        raise ApiError(422, f"{name}: must be a number") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise ApiError(422, f"{name}: must be a finite number")
    return number


def _file_name(uid: str) -> str:
    """A UID is digits and dots; anything else is dropped so the header cannot be bent."""
    return "".join(c for c in uid if c.isalnum() or c in ".-_") or "study"


def _rendered(pacs: Pacs, instance_id: str, uri: str, *, after_plugins: bool = False) -> bytes:
    """An image Orthanc renders; 422 naming the transfer syntax when it cannot decode the pixels
    (e.g. JPEG 2000 without a decoder plugin), instead of a bare 500."""
    try:
        return pacs.get_bytes(uri, after_plugins=after_plugins)
    except Exception:  # noqa: BLE001 - Orthanc's error says little; the transfer syntax says why
        try:
            syntax = pacs.get_json(f"/instances/{instance_id}/metadata?expand").get("TransferSyntax", "unknown")
        except NotFound:  # gone meanwhile
            raise ApiError(404, "the instance is gone") from None
        raise ApiError(422, f"Orthanc cannot render this image (transfer syntax {syntax})") from None


def _study_members(pacs: Pacs, orthanc_study_id: str) -> Iterator[tuple[str, Callable[[], bytes]]]:
    """``(name, read)`` for every instance: ``<series>/<instance number>-<SOPInstanceUID>.dcm``; each file is
    read from Orthanc only when the ZIP gets to it."""
    for series in pacs.get_json(f"/studies/{orthanc_study_id}/series"):
        tags = series.get("MainDicomTags", {})
        folder = " ".join(str(tags.get(k, "")).strip() for k in ("SeriesNumber", "Modality", "SeriesDescription"))
        for instance in pacs.get_json(f"/series/{series['ID']}/instances"):
            itags = instance.get("MainDicomTags", {})
            name = f"{str(itags.get('InstanceNumber', '')).strip()}-{itags.get('SOPInstanceUID', instance['ID'])}.dcm"
            yield safe_member_name(folder.strip() or series["ID"], name), _reader(pacs, instance["ID"])


def _reader(pacs: Pacs, instance_id: str) -> Callable[[], bytes]:
    return lambda: pacs.get_bytes(f"/instances/{instance_id}/file")
