"""The upload history: every ingest and every rejected upload, newest first (auditing roles)."""

from __future__ import annotations

import uuid

from ..core import errors
from ..store import studies
from . import presenters
from .context import Api
from .router import Request, Response, json_response
from .validation import query_int

MAX_PAGE = 500


def list_uploads(api: Api, request: Request) -> Response:
    """Upload history (every ingest and rejected upload), newest first."""
    return _uploads(api, request, None)


def patient_uploads(api: Api, request: Request) -> Response:
    """A patient's upload history (their orders, their MRN, or rows naming them)."""
    patient_id = request.params["patient_id"].strip()
    if not patient_id or len(patient_id) > 128:
        raise errors.Invalid("patient_id: must be 1 to 128 characters")
    return _uploads(api, request, patient_id)


def _uploads(api: Api, request: Request, patient_id: str | None) -> Response:
    q = request.query
    status = q.get("status") or None
    if status is not None and status not in studies.UPLOAD_STATUSES:
        raise errors.Invalid(f"status: must be one of {', '.join(studies.UPLOAD_STATUSES)}")
    source = q.get("source") or None
    if source is not None and len(source) > 20:
        raise errors.Invalid("source: at most 20 characters")
    where = studies.UploadFilter(status=status, source=source, patient_id=patient_id,
                                 patient_scope=request.patients,  # a scoped caller: their patients' rows only
                                 limit=query_int(q, "limit", 50, 1, MAX_PAGE),
                                 offset=query_int(q, "offset", 0, 0, 10**9))
    total, items = studies.uploads(api.services.engine, where)
    return json_response(presenters.page(total, where.limit, where.offset, [presenters.upload(item) for item in items]))


def get_upload(api: Api, request: Request) -> Response:
    """One upload audit row."""
    try:
        upload_id = uuid.UUID(request.params["upload_id"])
    except ValueError:
        raise errors.Invalid("upload_id: must be a UUID") from None
    found = studies.upload(api.services.engine, upload_id)
    if found is None:
        raise errors.NotFound(f"upload {upload_id} not found")
    return json_response(presenters.upload(found))
