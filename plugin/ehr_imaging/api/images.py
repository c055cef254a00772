"""Study downloads, thumbnails, rendered frames and clinical summaries: parsing and answers.

The images come from app/images.py; the ZIP is written as it is sent, one stored file at a time
(core/zipstream.py; chunked on the API port, joined on Orthanc's port).
"""

from __future__ import annotations

from ..app import images, study_resolution
from ..core import errors
from ..core.summary import SummaryOptionsError, parse_options
from ..core.zipstream import zip_stream
from .context import Api
from .downloads import refuse_if_too_large_here
from .router import Request, Response, json_response
from .validation import query_int

FORMATS = {"png": "image/png", "jpeg": "image/jpeg", "jpg": "image/jpeg"}


def download(api: Api, request: Request) -> Response:
    """The study as a ZIP of its DICOM files (a folder per series), streamed one file at a time
    (on Orthanc's port: joined, so only up to MaxOrthancPortDownloadMb); MaxConcurrentDownloads at once."""
    services, settings = api.services, api.services.settings
    uid = request.params["study_uid"]
    orthanc_id = study_resolution.stored_study(services, uid)
    if not request.can_stream:
        size = images.study_size(services, orthanc_id)
        refuse_if_too_large_here(request, size, settings.MaxOrthancPortDownloadMb, settings.ApiPort)
    slot = api.downloads.take()
    return Response(stream=slot.hold(zip_stream(images.archive_members(services.pacs, orthanc_id))),
                    content_type="application/zip",
                    headers={"Content-Disposition": f'attachment; filename="{_file_name(uid)}.zip"'})


def thumbnail(api: Api, request: Request) -> Response:
    """PNG preview of the study's representative image (middle image of its first image series)."""
    return Response(body=images.thumbnail(api.services, request.params["study_uid"]), content_type="image/png")


def render(api: Api, request: Request) -> Response:
    """One frame as PNG or JPEG: the file's modality LUT and VOI, or the window/level given."""
    q = request.query
    image_format = (q.get("format") or "png").lower()
    if image_format not in FORMATS:
        raise errors.Invalid("format: must be png or jpeg")
    window, level = _float_param(q, "window"), _float_param(q, "level")
    if (window is None) != (level is None):
        raise errors.Invalid("window and level: give both or neither")
    if window is not None and window <= 0:
        raise errors.Invalid("window: must be positive")
    asked = images.Rendering(frame=query_int(q, "frame", 1, 1, 1_000_000), jpeg=image_format != "png",
                             quality=query_int(q, "quality", 90, 1, 100), window=window, level=level)
    body = images.render(api.services, request.params["sop_instance_uid"].strip(), asked)
    return Response(body=body, content_type=FORMATS[image_format])


def summary(api: Api, request: Request) -> Response:
    """Clinical summary of a study for reports: text and structured data."""
    try:
        options = parse_options(request.json())
    except SummaryOptionsError as exc:
        raise errors.Invalid(str(exc)) from None
    uid = request.params["study_uid"]
    text, structured = images.summary(api.services, uid, options)
    return json_response({"study_instance_uid": uid, "summary": text, "structured_data": structured})


def _float_param(query: dict[str, str], name: str) -> float | None:
    value = (query.get(name) or "").strip()
    if not value:
        return None
    try:
        number = float(value)
    except ValueError:
        raise errors.Invalid(f"{name}: must be a number") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise errors.Invalid(f"{name}: must be a finite number")
    return number


def _file_name(uid: str) -> str:
    """A UID is digits and dots; anything else is dropped so the header cannot be bent."""
    return "".join(c for c in uid if c.isalnum() or c in ".-_") or "study"
