"""Deletion requests and deletions for admins: list, approve (never by the requester), reject with a reason;
the deletion log (restorable or not), restore a deleted study, purge what is past its retention.

``DELETE /studies/{uid}`` itself is api/studies.delete_study (it answers with ``deleted_json`` or, when
approval is required, ``pending_json``).
"""

from __future__ import annotations

import uuid
from typing import Any

from ..app import deletion, deletion_recovery
from ..core import errors
from ..store import deletions
from . import presenters
from .context import Api
from .router import Request, Response, json_response
from .validation import query_bool, query_choice, query_page

MAX_REASON = 1000


def deleted_json(done: deletion.Deletion) -> dict[str, Any]:
    """The answer of a deletion that happened (DELETE without approval, or an approval)."""
    row = presenters.deletion(done.record)
    return {
        "status": "deleted", "study_instance_uid": done.facts.study_instance_uid,
        "orthanc_study_id": done.facts.orthanc_study_id, "order_id": done.order_id,
        "deleted_series": done.facts.number_of_series, "deleted_instances": done.facts.number_of_instances,
        "reason": done.reason, "deleted_by": done.deleted_by, "deletion_id": str(done.record.id),
        **{name: row[name] for name in ("deletion_request_id", "approved_by", "restorable", "files_kept_until")},
    }


def pending_json(request: deletions.RequestRecord) -> dict[str, Any]:
    """The 202 answer of a deletion that waits for approval."""
    return {**presenters.deletion_request(request), "status": "pending_approval"}


def list_requests(api: Api, request: Request) -> Response:
    """Deletion requests, newest first; ``?status=pending|approved|rejected|expired``."""
    status = query_choice(request.query, "status", deletions.REQUEST_STATUSES)
    limit, offset = query_page(request.query)
    total, items = deletions.requests(api.services.engine, status=status, limit=limit, offset=offset)
    return json_response(presenters.page(total, limit, offset, [presenters.deletion_request(item) for item in items]))


def approve(api: Api, request: Request) -> Response:
    """Approve a pending request: the study is deleted now. Never by the person who asked (403)."""
    assert request.principal is not None
    if request.principal.via != "jwt":
        # People are told apart by their EHR identity; a shared account (basic, its Explorer session) could be
        # the requester under another name.
        raise errors.Forbidden("approve with your own EHR identity (a bearer token), not an administrator account")
    done = deletion.approve(api.services, _uuid(request, "request_id"), actor=_subject(request))
    return json_response(deleted_json(done))


def reject(api: Api, request: Request) -> Response:
    """Reject a pending request with a reason; nothing is deleted."""
    body = request.json()
    reason = body.get("reason") if isinstance(body, dict) else None
    if not isinstance(reason, str) or not reason.strip():
        raise errors.Invalid("reason: is required (JSON body {\"reason\"})")
    if len(reason) > MAX_REASON:
        raise errors.Invalid(f"reason: at most {MAX_REASON} characters")
    rejected = deletion.reject(api.services, _uuid(request, "request_id"), actor=_subject(request),
                               reason=reason.strip())
    return json_response(presenters.deletion_request(rejected))


def list_deletions(api: Api, request: Request) -> Response:
    """The deletion log, newest first; ``?study_uid=``, ``?restorable=true|false``."""
    limit, offset = query_page(request.query)
    total, items = deletions.deletions(api.services.engine, study_uid=request.query.get("study_uid") or None,
                                       restorable=query_bool(request.query, "restorable"), limit=limit,
                                       offset=offset)
    return json_response(presenters.page(total, limit, offset, [presenters.deletion(item) for item in items]))


def restore(api: Api, request: Request) -> Response:
    """A deleted study back in Orthanc bit for bit, recorded, linked to its order again if it is still open."""
    done = deletion_recovery.restore(api.services, _uuid(request, "deletion_id"), actor=_subject(request))
    return json_response({
        "status": "restored", "deletion_id": str(done.deletion.id),
        "study_instance_uid": done.deletion.study_instance_uid, "orthanc_study_id": done.orthanc_study_id,
        "restored_instances": done.restored_instances, "order_id": done.order_id,
        "match": {"status": "linked" if done.order_id else "unmatched",
                  "reason": None if done.order_id else done.match_reason},
        "restored_by": done.deletion.restored_by, "restored_at": presenters.deletion(done.deletion)["restored_at"],
    })


def purge(api: Api, request: Request) -> Response:
    """Remove now the kept files of every deletion past its retention (the worker does it hourly)."""
    purged = deletion_recovery.purge(api.services)
    return json_response({"purged": len(purged), "deletion_ids": [str(d) for d in purged]})


def _uuid(request: Request, name: str) -> uuid.UUID:
    try:
        return uuid.UUID(request.params[name])
    except ValueError:
        raise errors.NotFound(f"{name.replace('_', ' ')} {request.params[name]} not found") from None


def _subject(request: Request) -> str:
    assert request.principal is not None  # the router authenticated this route
    return request.principal.subject
