"""DICOM uploads by the EHR and its users: files go into Orthanc and through the same matching.

Routes are thin: the work (validate, store, record per study, ZIP members, jobs, offline sync) is in
``app/uploading``. An upload may name its order (``order_id``): the explicit rule, still subject to the
patient check. A rejected upload stores nothing and leaves a failed audit row.

On the plugin's API port files are multipart fields (options as form fields ``order_id``,
``patient_id``), or the raw body. On Orthanc's own port only the raw body works (``Content-Type:
application/dicom`` or ``application/zip``, options as ``X-Order-Id``/``X-Patient-Id`` headers): Orthanc
1.10's HTTP server splits ``multipart/form-data`` bodies itself and answers them without asking the
plugin (see api/listener.py). ``upload-image`` takes a JPEG, PNG or PDF the same ways (raw: ``image/jpeg``,
``image/png``, ``application/pdf``) and has Orthanc make it DICOM (app/uploading/captures.py).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from ..app import uploading
from ..core import captured_media, errors
from ..core.auth import Principal
from ..core.metrics import UPLOAD_FAILURES
from ..core.ownership import owner_or_admin
from ..core.upload_rules import DeclarationError, parse_declaration
from ..store import upload_log as uploads
from . import presenters
from .context import Api
from .router import Request, Response, UploadedFile, json_response

SOURCE = "api"
ZIP_SOURCE = "cd_import"
OFFLINE_SOURCE = "offline"
DICOM_TYPES = ("application/dicom", "application/octet-stream", "multipart/form-data")
ZIP_TYPES = ("application/zip", "application/x-zip-compressed", "application/octet-stream", "multipart/form-data")
IMAGE_TYPES = ("image/jpeg", "image/jpg", "image/png", "application/pdf", "application/octet-stream",
               "multipart/form-data")
JOBS_PATH = "/api/v1/dicom/upload-jobs"


def upload(api: Api, request: Request) -> Response:
    """Upload one DICOM file (multipart field `file` or raw application/dicom body)."""
    settings = api.services.settings
    began = time.monotonic()
    files = _received(api, request, SOURCE, DICOM_TYPES, "send the DICOM file as the multipart field 'file', or as"
                      " the body with Content-Type: application/dicom", "file", began, "file")
    if files[0].size > settings.MaxFileSizeMb * uploading.MB:
        raise _refuse(api, request, SOURCE, files, uploading.UploadRejected(
            errors.TooLarge, f"file larger than {settings.MaxFileSizeMb} MB"), began)
    with _batch(api, request, SOURCE) as work:
        result = work.add(files[0].filename, files[0].content())
        studies = work.finish()
    if result.status != "stored":
        raise result.failure(f"{result.file_name}: {result.error}")
    return json_response(_uploaded(result, studies[result.study_instance_uid or ""]))


def upload_image(api: Api, request: Request) -> Response:
    """Upload a photo (JPEG, PNG) or a document (PDF): Orthanc makes it DICOM for the order's or the given patient."""
    settings = api.services.settings
    began = time.monotonic()
    files = _received(api, request, SOURCE, IMAGE_TYPES, "send a JPEG, PNG or PDF as the multipart field 'file',"
                      " or as the body with Content-Type: image/jpeg, image/png or application/pdf", "file", began,
                      "file")
    file = files[0]
    if file.size > settings.MaxFileSizeMb * uploading.MB:
        raise _refuse(api, request, SOURCE, files, uploading.UploadRejected(
            errors.TooLarge, f"file larger than {settings.MaxFileSizeMb} MB"), began)
    claimed = captured_media.claimed_type(file.content_type, file.filename)
    if claimed is None:
        raise _refuse(api, request, SOURCE, files, uploading.UploadRejected(
            errors.UnsupportedMedia, f"{file.filename}: send a JPEG, PNG or PDF (by its Content-Type or its name's"
                                     " extension)"), began)
    capture = uploading.Capture(file.filename, file.read_bytes(), claimed, request.option("order_id"),
                                {name: request.option(name) for name in uploading.CAPTURE_FIELDS})
    with _batch(api, request, SOURCE) as work:
        try:
            result = uploading.store_capture(api.services, work, capture)
        except uploading.UploadRejected as exc:
            raise _refuse(api, request, SOURCE, files, exc, began) from None
        studies = work.finish()
    if result.status != "stored":
        raise result.failure(f"{result.file_name}: {result.error}")
    return json_response(_uploaded(result, studies[result.study_instance_uid or ""], content_type=claimed,
                                   sop_class_uid=captured_media.SOP_CLASSES[claimed]))


def upload_multiple(api: Api, request: Request) -> Response:
    """Upload several DICOM files (multipart field `files`, repeated); reported per file."""
    began = time.monotonic()
    files = _received(api, request, SOURCE, DICOM_TYPES, "send the DICOM files as the multipart field 'files'"
                      " (repeated)", "files", began)
    try:
        uploading.check_files(api.services, [f.size for f in files])
    except uploading.UploadRejected as exc:
        raise _refuse(api, request, SOURCE, files, exc, began) from None
    with _batch(api, request, SOURCE) as work:
        work.add_all((file.filename, file.content()) for file in files)  # views of the body, not copies
        work.finish()
    _raise_storage_refusal(work)
    return json_response(work.summary())


def upload_zip(api: Api, request: Request) -> Response:
    """Upload a ZIP of DICOM files or a DICOMDIR medium (multipart field `file` or raw application/zip)."""
    services = api.services
    began = time.monotonic()
    files = _received(api, request, ZIP_SOURCE, ZIP_TYPES, "send the ZIP as the multipart field 'file', or as the"
                      " body with Content-Type: application/zip", "file", began, "ZIP archive")
    source = files[0]
    with source.open() as stream:
        try:
            archive, checked = uploading.open_archive(services, stream)
        except uploading.UploadRejected as exc:
            raise _refuse(api, request, ZIP_SOURCE, files, exc, began) from None
        with archive:
            if uploading.is_large(services, checked):
                archive.close()
                try:
                    job_id = api.jobs.submit(source, uploaded_by=_principal(request).subject, source=ZIP_SOURCE,
                                             order_id=request.option("order_id"),
                                             patient_id=request.option("patient_id"), total_files=checked.readable)
                except uploading.UploadRejected as exc:  # no usable job folder (503)
                    raise _refuse(api, request, ZIP_SOURCE, files, exc, began) from None
                return json_response({"job_id": str(job_id), "status": "queued", "total_files": checked.readable,
                                      "status_url": f"{JOBS_PATH}/{job_id}"}, 202)
            with _batch(api, request, ZIP_SOURCE) as work:
                uploading.store_archive(work, archive, checked.members, services.settings.MaxFileSizeMb * uploading.MB)
                work.finish()
    _raise_storage_refusal(work)
    return json_response(work.summary())


def upload_job(api: Api, request: Request) -> Response:
    """Progress of a ZIP upload job (results once it is done)."""
    job = uploads.get_job(api.services.engine, _uuid(request.params["job_id"], "job_id", errors.NotFound))
    if job is None or not owner_or_admin(job.created_by, _principal(request)):
        raise errors.NotFound(f"upload job {request.params['job_id']} not found")
    return json_response(presenters.upload_job(job))


def offline_metadata(api: Api, request: Request) -> Response:
    """Offline sync, step 1: declare a file (UIDs, size, sha256) and get its upload_id."""
    try:
        declared = parse_declaration(request.json(), max_size=api.services.settings.MaxFileSizeMb * uploading.MB)
    except DeclarationError as exc:
        raise errors.Invalid(str(exc)) from None
    except OverflowError as exc:
        raise errors.TooLarge(str(exc)) from None
    caller = _principal(request)
    row = uploads.declare_offline(api.services.engine, declared, caller.subject)
    if not owner_or_admin(row.declared_by, caller):
        # Neither who declared it nor its upload_id: only that the exact file (its sha256) is known already.
        raise errors.Conflict("this file (same SOP Instance UID and sha256) is already declared for offline sync;"
                              " send it with POST /api/v1/dicom/upload instead")
    return json_response({"upload_id": str(row.upload_id), "status": row.status})


def offline_binary(api: Api, request: Request) -> Response:
    """Offline sync, step 2: the file's bytes (checked against the declaration, then stored)."""
    settings = api.services.settings
    upload_id = _uuid(request.option("upload_id"), "upload_id", errors.Invalid)
    files = [request.single_file("file")]
    if files[0].size > settings.MaxFileSizeMb * uploading.MB:
        raise errors.TooLarge(f"file larger than {settings.MaxFileSizeMb} MB")
    with files[0].open() as stream:
        try:
            caller = _principal(request)
            claimed = captured_media.claimed_type(files[0].content_type, files[0].filename)
            answer = uploading.offline_binary(api.services, upload_id, stream, caller, claimed)
        except uploading.UploadRejected as exc:
            raise exc.error from None
    return json_response(answer)


def offline_ack(api: Api, request: Request) -> Response:
    """Offline sync, step 3: ACK_RECEIVED once the instance is in the archive and audited."""
    body = request.json() if request.body else {}
    given = body.get("upload_id") if isinstance(body, dict) else None
    upload_id = _uuid(given or request.option("upload_id"), "upload_id", errors.Invalid)
    try:
        caller = _principal(request)
        return json_response(uploading.offline_ack(api.services, upload_id, caller))
    except uploading.UploadRejected as exc:
        raise exc.error from None


# --- helpers shared by the handlers ----------------------------------------------------------------------------

def _uploaded(result: uploading.FileResult, study: uploading.StudyOutcome, **extra: str) -> dict[str, Any]:
    """The answer for one stored file: where it went, its study's match and upload row (``extra``: more fields
    after ``already_stored``, as upload-image adds them)."""
    return {
        "status": "uploaded", "already_stored": result.already_stored, **extra,
        "study_instance_uid": result.study_instance_uid, "orthanc_study_id": study.orthanc_study_id,
        "series_instance_uid": result.series_instance_uid, "sop_instance_uid": result.sop_instance_uid,
        "orthanc_instance_id": result.orthanc_instance_id, "order_id": study.order_id,
        "match": uploading.match_json(study.order_id, study.match_reason),
        "upload_id": str(study.upload_log_id) if study.upload_log_id else None,
    }


def _raise_storage_refusal(work: uploading.Batch) -> None:
    """Nothing stored, for now (Orthanc's storage full, the cluster's holds out of reach): the request as a whole
    is refused (503, Retry-After)."""
    refusal = work.storage_refusal()
    if refusal is not None:
        raise refusal


def _batch(api: Api, request: Request, source: str) -> uploading.Batch:
    return uploading.Batch(api.services, uploaded_by=_principal(request).subject, source=source,
                           order_id=request.option("order_id"), patient_id=request.option("patient_id"))


def _refuse(api: Api, request: Request, source: str, files: list[UploadedFile], exc: uploading.UploadRejected,
            began: float) -> errors.DomainError:
    """Audit a request refused as a whole (nothing stored), count it, and answer it."""
    api.services.metrics.count(UPLOAD_FAILURES)
    uploads.record_failed(api.services.engine, uploaded_by=_principal(request).subject, source=source,
                          file_names=[f.filename for f in files], size=sum(f.size for f in files),
                          error=exc.detail, patient_id=request.option("patient_id"),
                          duration=time.monotonic() - began)
    return exc.error


def _received(api: Api, request: Request, source: str, types: tuple[str, ...], hint: str, field: str, began: float,
              what: str | None = None) -> list[UploadedFile]:
    """The request's files (exactly one when ``what`` names it); a request that is refused for its
    shape (415, 400) is audited like any other rejected upload."""
    try:
        _require_type(request, types, hint)
        files = [request.single_file(field, what)] if what else request.uploaded_files(field)
        if not files:
            raise errors.Malformed(f"send the files in the multipart field '{field}'")
    except errors.DomainError as exc:
        raise _refuse(api, request, source, request.files, uploading.UploadRejected(type(exc), exc.detail),
                      began) from None
    return files


def _principal(request: Request) -> Principal:
    assert request.principal is not None  # every route here requires a role
    return request.principal


def _require_type(request: Request, accepted: tuple[str, ...], hint: str) -> None:
    if request.content_type not in accepted:
        raise errors.UnsupportedMedia(hint)


def _uuid(value: Any, name: str, kind: type[errors.DomainError]) -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise kind(f"{name}: not a valid identifier") from None
