"""DICOM uploads by the EHR and its users: a file goes into Orthanc and through the same matching.

An upload may name its order (``X-Order-Id``): the explicit rule, still subject to the patient check.
A rejected file stores nothing and leaves a failed audit row.

On the plugin's API port the file is the multipart field ``file`` (options as form fields
``order_id``, ``patient_id``), or the raw body. On Orthanc's own port only the raw body works
(``Content-Type: application/dicom``, options as ``X-Order-Id``/``X-Patient-Id`` headers): Orthanc 1.10's
HTTP server splits ``multipart/form-data`` bodies itself and answers them without asking the plugin
(see api/listener.py).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

from pydicom import Dataset, dcmread
from pydicom.errors import InvalidDicomError
from pydicom.filebase import DicomBytesIO

from .. import ingest
from ..core import auth
from ..services import Services
from ..store import links, uploads
from .router import ApiError, Request, Response, Router, json_response

UPLOADERS = (auth.DOCTOR, auth.TECHNICIAN, auth.RADIOLOGIST, auth.ADMIN, auth.EHR_SERVICE)
SOURCE = "api"
ACCEPTED_TYPES = ("application/dicom", "application/octet-stream")


def register(router: Router, services: Services) -> None:
    settings = services.settings

    def upload(request: Request) -> Response:
        began = time.monotonic()
        principal = request.principal
        assert principal is not None
        if request.content_type not in (*ACCEPTED_TYPES, "multipart/form-data"):
            raise ApiError(415, "send the DICOM file as the multipart field 'file', or as the body with"
                                " Content-Type: application/dicom")
        files = request.uploaded_files("file")
        if len(files) != 1:
            raise ApiError(400, "send exactly one file in the field 'file'")
        data = files[0].read_bytes()
        order_id = request.option("order_id")
        patient_id = request.option("patient_id")
        file_name = files[0].filename

        def reject(status: int, detail: str, study_uid: str | None = None) -> ApiError:
            uploads.record_failed(services.engine, uploaded_by=principal.subject, source=SOURCE,
                                  file_names=[file_name], size=len(data), error=detail, study_uid=study_uid,
                                  patient_id=patient_id, duration=time.monotonic() - began)
            return ApiError(status, detail)

        if len(data) > settings.MaxFileSizeMb * 1024 * 1024:
            raise reject(413, f"file larger than {settings.MaxFileSizeMb} MB")
        header = _check_dicom(data, reject)
        study_uid = str(header.StudyInstanceUID)
        try:
            stored = services.pacs.post_json_bytes("/instances", data)
        except Exception as exc:  # noqa: BLE001 - Orthanc refused the file: say so, store nothing
            raise reject(400, f"Orthanc refused the file: {exc}", study_uid) from None
        seen = ingest.observe_study(services, stored["ParentStudy"])
        if seen is None:
            raise reject(409, "the study was deleted while it was being uploaded", study_uid)
        seen = dataclasses.replace(seen, upload_source=SOURCE, uploaded_by=principal.subject,
                                   explicit_order_id=order_id)
        outcome = links.record_ingest(services.engine, seen, services.match_policy)
        services.revisit_study(stored["ParentStudy"])
        return json_response({
            "status": "uploaded", "already_stored": stored.get("Status") == "AlreadyStored",
            "study_instance_uid": study_uid, "orthanc_study_id": stored["ParentStudy"],
            "series_instance_uid": str(header.SeriesInstanceUID), "sop_instance_uid": str(header.SOPInstanceUID),
            "orthanc_instance_id": stored["ID"], "order_id": outcome.order_id,
            "match": {"status": "linked" if outcome.order_id else "unmatched", "reason": outcome.reason},
        })

    router.add("POST", "/api/v1/dicom/upload", upload, roles=UPLOADERS)


def _check_dicom(data: bytes, reject: Callable[..., ApiError]) -> Dataset:
    """A readable DICOM file with the UIDs Orthanc needs; returns its header (no pixel data)."""
    try:
        ds = dcmread(DicomBytesIO(data), stop_before_pixels=True)
    except (InvalidDicomError, EOFError, ValueError, TypeError, OSError) as exc:
        raise reject(422, f"file: not a valid DICOM file ({type(exc).__name__})") from None
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        if not str(ds.get(keyword, "")).strip():
            raise reject(422, f"file: {keyword} is missing")
    return ds
