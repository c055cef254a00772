"""The offline sync protocol: declare, send the bytes (verified against the declaration), acknowledge."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from typing import IO, Any

from ...core import captured_media, errors
from ...core.auth import Principal
from ...core.errors import NotFound
from ...core.metrics import UPLOAD_FAILURES
from ...core.ownership import owner_or_admin
from ...core.upload_rules import OfflineDeclaration, content_problem, uid_mismatches
from ...services import Services
from ...store import upload_log as uploads
from .batch import CHUNK, UID_KEYWORDS, Batch, FileResult, StudyOutcome, UploadRejected, check_dicom
from .captures import Capture, store_capture

# --- offline sync --------------------------------------------------------------------------------------


def sha256_and_size(stream: IO[bytes]) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    while chunk := stream.read(CHUNK):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def offline_status(services: Services, upload_id: uuid.UUID, caller: Principal) -> uploads.OfflineUploadRecord:
    """The declaration, to the user who made it (or an admin); anyone else gets the same 404 as for none."""
    row = uploads.get_offline(services.engine, upload_id)
    if row is None or not owner_or_admin(row.declared_by, caller):
        raise UploadRejected(errors.NotFound, f"offline upload {upload_id} not found")
    return row


def offline_binary(services: Services, upload_id: uuid.UUID, stream: IO[bytes], caller: Principal,
                   claimed: str | None = None) -> dict[str, Any]:
    """Verify the bytes against the declaration (size, sha256, UIDs), store them, audit them. Re-sending
    after success answers the same status and stores nothing twice. One at a time per upload_id.

    A photo or document (JPEG, PNG, PDF: ``claimed`` is what the request says it is) is declared like a file:
    its size and sha256, and the UIDs the new instance is to get (the client makes them, as for a DICOM file
    it wrote), with the ``order_id`` whose patient it belongs to; Orthanc then builds it with those UIDs."""
    with uploads.offline_lock(services.engine, upload_id):
        row = offline_status(services, upload_id, caller)
        uploaded_by = caller.subject
        declared = OfflineDeclaration(row.sop_instance_uid, row.series_instance_uid, row.study_instance_uid,
                                      row.size, row.sha256, row.patient_id, row.order_id, row.file_name)
        name = row.file_name or row.sop_instance_uid

        def reject(kind: type[errors.DomainError], detail: str) -> UploadRejected:
            services.metrics.count(UPLOAD_FAILURES)
            uploads.record_failed(services.engine, uploaded_by=uploaded_by, source="offline", file_names=[name],
                                  size=row.size, error=detail, study_uid=row.study_instance_uid,
                                  patient_id=row.patient_id)
            return UploadRejected(kind, detail)

        digest, size = sha256_and_size(stream)
        problem = content_problem(declared, size=size, sha256=digest)
        if problem is not None:
            raise reject(errors.Invalid, problem)
        if row.status in ("STORED", "ACK_RECEIVED") and _in_orthanc(services, row.orthanc_instance_id):
            return {"upload_id": str(upload_id), "status": row.status}
        stream.seek(0)
        data = stream.read()
        if data[128:132] != b"DICM" and captured_media.sniff(data) is not None:
            return _offline_capture(services, upload_id, row, data, claimed, uploaded_by, reject)
        try:
            header = check_dicom(data)
        except UploadRejected as exc:
            raise reject(exc.kind, exc.detail) from None
        wrong = uid_mismatches(declared, {k: str(header.get(k, "")) for k in UID_KEYWORDS})
        if wrong:
            raise reject(errors.Invalid, f"the file's {', '.join(wrong)} differ from the declared ones")
        with Batch(services, uploaded_by=uploaded_by, source="offline", order_id=row.order_id,
                   patient_id=row.patient_id) as batch:
            result = batch.add(name, data)
            studies = batch.finish()
        return _stored(services, upload_id, row, result, studies)


def _stored(services: Services, upload_id: uuid.UUID, row: uploads.OfflineUploadRecord, result: FileResult,
            studies: dict[str, StudyOutcome]) -> dict[str, Any]:
    """The declaration marked STORED once its instance is in Orthanc and its study recorded."""
    study = studies.get(row.study_instance_uid)
    if result.status != "stored" or study is None or study.orthanc_study_id is None:
        raise UploadRejected(result.failure if result.status == "failed" else errors.Conflict,
                             result.error or "the file could not be stored")
    uploads.offline_stored(services.engine, upload_id, orthanc_instance_id=result.orthanc_instance_id or "",
                           orthanc_study_id=study.orthanc_study_id, upload_log_id=study.upload_log_id)
    return {"upload_id": str(upload_id), "status": "STORED", "study_instance_uid": row.study_instance_uid,
            "orthanc_instance_id": result.orthanc_instance_id}


def _offline_capture(services: Services, upload_id: uuid.UUID, row: uploads.OfflineUploadRecord, data: bytes,
                     claimed: str | None, uploaded_by: str,
                     reject: Callable[[type[errors.DomainError], str], UploadRejected]) -> dict[str, Any]:
    name = row.file_name or row.sop_instance_uid
    if not row.order_id:
        raise reject(errors.Invalid, "a photo or document sent offline needs the order_id in its declaration"
                                     " (its patient and accession come from the order)")
    kind = claimed or captured_media.claimed_type("", row.file_name or "") or captured_media.sniff(data) or ""
    capture = Capture(name, data, kind, row.order_id,
                      uids=(row.study_instance_uid, row.series_instance_uid, row.sop_instance_uid))
    with Batch(services, uploaded_by=uploaded_by, source="offline", order_id=row.order_id,
               patient_id=row.patient_id) as batch:
        try:
            result = store_capture(services, batch, capture)
        except UploadRejected as exc:
            raise reject(exc.kind, exc.detail) from None
        studies = batch.finish()
    return _stored(services, upload_id, row, result, studies)


def offline_ack(services: Services, upload_id: uuid.UUID, caller: Principal) -> dict[str, Any]:
    """ACK only what is in Orthanc now and audited: then the client may delete its copy."""
    row = offline_status(services, upload_id, caller)
    if row.status == "ACK_RECEIVED":
        return {"upload_id": str(upload_id), "status": "ACK_RECEIVED"}
    if row.status != "STORED":
        raise UploadRejected(errors.Conflict, f"upload is {row.status}: send the binary first")
    if not _in_orthanc(services, row.orthanc_instance_id):
        raise UploadRejected(errors.Conflict, "the instance is not in the archive (deleted?): send the binary again")
    if not uploads.upload_row_exists(services.engine, row.upload_log_id):
        raise UploadRejected(errors.Conflict, "the upload is not audited yet")
    uploads.offline_acked(services.engine, upload_id)
    return {"upload_id": str(upload_id), "status": "ACK_RECEIVED"}


def _in_orthanc(services: Services, orthanc_instance_id: str | None) -> bool:
    if not orthanc_instance_id:
        return False
    try:
        services.pacs.get_json(f"/instances/{orthanc_instance_id}")
    except NotFound:
        return False
    return True

