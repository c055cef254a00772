"""Imaging orders pushed by the EHR: PUT (idempotent upsert), GET, list, DELETE (cancel, kept for audit)."""

from __future__ import annotations

from ..app import orders
from ..core import errors
from ..core.orders import ORDER_STATUSES, OrderValidationError, parse_order, validate_order_id
from ..store import orders as order_store
from . import presenters
from .context import Api
from .router import Request, Response, json_response
from .validation import query_bool, query_int

MAX_PAGE = 500


def put_order(api: Api, request: Request) -> Response:
    services = api.services
    try:
        order = parse_order(request.params["order_id"], request.json())
    except OrderValidationError as exc:
        raise errors.Invalid(str(exc)) from None
    saved, created = orders.push_order(services, order)
    return json_response(presenters.order(saved), 201 if created else 200)


def get_order(api: Api, request: Request) -> Response:
    order_id = request.params["order_id"]
    order = order_store.get(api.services.engine, _checked_id(order_id))
    if order is None:
        raise errors.NotFound(f"order {order_id} not found")
    return json_response(presenters.order(order))


def cancel_order(api: Api, request: Request) -> Response:
    order_id = _checked_id(request.params["order_id"])
    cancelled = order_store.cancel(api.services.engine, order_id)
    if cancelled is None:
        raise errors.NotFound(f"order {order_id} not found")
    return json_response(presenters.order(cancelled))


def list_orders(api: Api, request: Request) -> Response:
    q = request.query
    status = q.get("status") or None
    if status is not None and status not in ORDER_STATUSES:
        raise errors.Invalid(f"status: must be one of {', '.join(ORDER_STATUSES)}")
    where = order_store.OrderFilter(
        status=status, unmatched=query_bool(q, "unmatched"), mrn=q.get("mrn") or None,
        accession=q.get("accession") or None, patient_id=q.get("patient_id") or None,
        limit=query_int(q, "limit", 50, 1, MAX_PAGE), offset=query_int(q, "offset", 0, 0, 10**9),
        patient_scope=request.patients,  # a scoped caller's list: their patients' orders only
    )
    total, items = order_store.search(api.services.engine, where)
    return json_response(presenters.page(total, where.limit, where.offset, [presenters.order(item) for item in items]))


def _checked_id(order_id: str) -> str:
    try:
        return validate_order_id(order_id)
    except OrderValidationError as exc:
        raise errors.Invalid(str(exc)) from None
