"""Reconciliation for people: the unmatched queue, manual link and unlink (both audited)."""

from __future__ import annotations

import dataclasses
from typing import Any

from ..app import orders
from ..core import auth, errors
from ..store import links
from ..store import reconciliation as queue
from . import presenters
from .context import Api
from .router import Request, Response, json_response
from .validation import query_page

MAY_FORCE = frozenset(auth.FORCE_LINKING)


def list_unmatched(api: Api, request: Request) -> Response:
    limit, offset = query_page(request.query)
    total, items = queue.unmatched(api.services.engine, limit=limit, offset=offset)
    return json_response(presenters.page(total, limit, offset, [presenters.queue_entry(item) for item in items]))


def match(api: Api, request: Request) -> Response:
    status = queue.match_status(api.services.engine, request.params["study_uid"])
    if request.patients is not None:
        # Candidate orders and colliding copies may be other patients': not a scoped caller's to see.
        status = dataclasses.replace(status, candidate_order_ids=(), quarantined_orthanc_study_ids=())
    return json_response(presenters.match_status(status))


def link(api: Api, request: Request) -> Response:
    body = _object(request)
    order_id = body.get("order_id")
    if not isinstance(order_id, str) or not order_id:
        raise errors.Invalid("order_id: is required")
    force = body.get("force", False) is True
    principal = _principal(request)
    if force and not principal.has_any_role(MAY_FORCE):
        raise errors.Forbidden("force: only admins and radiologists may link across a patient mismatch")
    order = orders.link_by_hand(api.services, request.params["study_uid"], order_id, actor=principal.subject,
                                force=force)
    return json_response({"status": "linked", "study_instance_uid": request.params["study_uid"],
                          "order": presenters.optional_order(order)})


def unlink(api: Api, request: Request) -> Response:
    body = _object(request) if request.body else {}
    reason = body.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise errors.Invalid("reason: must be a string")
    order_id = links.unlink(api.services.engine, request.params["study_uid"], actor=_principal(request).subject,
                            reason=reason)
    return json_response({"status": "unlinked", "study_instance_uid": request.params["study_uid"],
                          "order_id": order_id})


def _object(request: Request) -> dict[str, Any]:
    body = request.json()
    if not isinstance(body, dict):
        raise errors.Invalid("body: must be a JSON object")
    return body


def _principal(request: Request) -> auth.Principal:
    assert request.principal is not None  # the router authenticated this route
    return request.principal
