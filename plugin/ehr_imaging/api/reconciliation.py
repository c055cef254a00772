"""Reconciliation for people: the unmatched queue, manual link and unlink (both audited)."""

from __future__ import annotations

from typing import Any

from ..core import auth
from ..services import Services
from ..store import links
from ..store import orders as order_store
from ..store import reconciliation as queue
from .router import ApiError, Request, Response, Router, json_response
from .validation import query_int

RECONCILERS = auth.RECONCILING
MAY_FORCE = frozenset(auth.FORCE_LINKING)
READERS = auth.VIEWING  # the match status names the order (and its patient)


def register(router: Router, services: Services) -> None:
    engine = services.engine

    def list_unmatched(request: Request) -> Response:
        limit = query_int(request.query, "limit", 50, 1, 500)
        offset = query_int(request.query, "offset", 0, 0, 10**9)
        total, items = queue.unmatched(engine, limit=limit, offset=offset)
        return json_response({"total": total, "limit": limit, "offset": offset, "items": items})

    def link(request: Request) -> Response:
        body = _object(request)
        order_id = body.get("order_id")
        if not isinstance(order_id, str) or not order_id:
            raise ApiError(422, "order_id: is required")
        force = body.get("force", False) is True
        principal = _principal(request)
        if force and not principal.has_any_role(MAY_FORCE):
            raise ApiError(403, "force: only admins and radiologists may link across a patient mismatch")
        orthanc_id = links.link_manually(engine, request.params["study_uid"], order_id,
                                         actor=principal.subject, force=force)
        services.revisit_study(orthanc_id)
        return json_response({"status": "linked", "study_instance_uid": request.params["study_uid"],
                              "order": order_store.get(engine, order_id)})

    def unlink(request: Request) -> Response:
        body = _object(request) if request.body else {}
        reason = body.get("reason")
        if reason is not None and not isinstance(reason, str):
            raise ApiError(422, "reason: must be a string")
        order_id = links.unlink(engine, request.params["study_uid"], actor=_principal(request).subject,
                                reason=reason)
        return json_response({"status": "unlinked", "study_instance_uid": request.params["study_uid"],
                              "order_id": order_id})

    def match(request: Request) -> Response:
        return json_response(queue.match_status(engine, request.params["study_uid"]))

    router.add("GET", "/api/v1/dicom/unmatched", list_unmatched, roles=RECONCILERS)
    router.add("GET", "/api/v1/dicom/studies/{study_uid}/match", match, roles=READERS)
    router.add("POST", "/api/v1/dicom/studies/{study_uid}/link", link, roles=RECONCILERS)
    router.add("POST", "/api/v1/dicom/studies/{study_uid}/unlink", unlink, roles=RECONCILERS)


def _object(request: Request) -> dict[str, Any]:
    body = request.json()
    if not isinstance(body, dict):
        raise ApiError(422, "body: must be a JSON object")
    return body


def _principal(request: Request) -> auth.Principal:
    assert request.principal is not None  # the router authenticated this route
    return request.principal
