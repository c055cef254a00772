"""The contracts (api/schemas.Contract) of the event routes (api/events.py): an outbox event and its deliveries."""

from __future__ import annotations

from ..core.events import EVENT_TYPES, STATUSES
from .schemas import ANY_OBJECT, NSTR, Contract, Schema, array, integer, obj, ok, string

_DELIVERY = obj({"endpoint": string(), "status": string(enum=list(STATUSES)), "attempts": integer(),
                 "next_attempt_at": string("date-time", nullable=True),
                 "last_attempt_at": string("date-time", nullable=True),
                 "delivered_at": string("date-time", nullable=True), "last_error": NSTR})
EVENT: Schema = obj({"event_id": string("uuid"), "type": string(enum=list(EVENT_TYPES)),
                     "occurred_at": string("date-time"), "study_instance_uid": NSTR, "order_id": NSTR,
                     "patient_id": NSTR, "data": ANY_OBJECT, "deliveries": array(_DELIVERY)})

EVENTS = Contract(ok(obj({"total": integer(), "limit": integer(), "offset": integer(), "items": array(EVENT)})),
                  errors={"422": "status is not pending, failed or delivered"})
REDELIVER_EVENT = Contract(ok(EVENT))
