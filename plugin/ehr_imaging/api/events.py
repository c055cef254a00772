"""The event outbox for admins: list events by delivery status (newest first), send one again.

The events themselves are written by the changes they report (store/outbox.py) and delivered by
app/event_delivery.py; these routes only show and re-queue them.
"""

from __future__ import annotations

import uuid

from ..core import errors, events
from ..store import outbox
from . import presenters
from .context import Api
from .router import Request, Response, json_response
from .validation import query_choice, query_page


def list_events(api: Api, request: Request) -> Response:
    """Events, newest first; ``?status=pending|failed|delivered``: those with a delivery in that status."""
    status = query_choice(request.query, "status", events.STATUSES)
    limit, offset = query_page(request.query)
    total, items = outbox.search(api.services.engine, status=status, limit=limit, offset=offset)
    return json_response(presenters.page(total, limit, offset, [presenters.event(item) for item in items]))


def redeliver(api: Api, request: Request) -> Response:
    """Send an event again to every endpoint taking its type (due now, after its study's earlier events)."""
    try:
        event_id = uuid.UUID(request.params["event_id"])
    except ValueError:
        raise errors.NotFound(f"event {request.params['event_id']} not found") from None
    return json_response(presenters.event(outbox.redeliver(api.services.engine, event_id)))
