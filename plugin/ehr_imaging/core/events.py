"""Events to the EHR (pure): their types and body, the endpoints they go to, the webhook signature, the retry
schedule and the in-order decision (an event waits while an earlier one of its study is undelivered).

The outbox that holds them is store/outbox.py; the thread that delivers them is app/event_delivery.py.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

STUDY_ARRIVED = "study.arrived"
STUDY_LINKED = "study.linked"
STUDY_UNMATCHED = "study.unmatched"
STUDY_UPDATED = "study.updated"
STUDY_DELETED = "study.deleted"
ORDER_STATUS_CHANGED = "order.status_changed"
EVENT_TYPES = (STUDY_ARRIVED, STUDY_LINKED, STUDY_UNMATCHED, STUDY_UPDATED, STUDY_DELETED, ORDER_STATUS_CHANGED)

PENDING, FAILED, DELIVERED = "pending", "failed", "delivered"
STATUSES = (PENDING, FAILED, DELIVERED)

SIGNATURE_HEADER = "X-EhrImaging-Signature"
MAX_DELAY_SECONDS = 3600.0  # by default, the backoff stops growing at an hour between attempts


@dataclass(frozen=True)
class Endpoint:
    """One receiver of events (setting ``EventEndpoints``): its URL, the HMAC secret, the types it gets."""

    url: str
    secret: str
    types: frozenset[str]

    def __repr__(self) -> str:  # never the secret
        return f"Endpoint({display_url(self.url)!r}, types={sorted(self.types)})"


def parse_endpoints(raw: Sequence[Any]) -> tuple[Endpoint, ...]:
    """The endpoints of the setting; ValueError naming what is wrong (never a secret's value). ``types``
    absent or empty: every type."""
    endpoints: list[Endpoint] = []
    for index, item in enumerate(raw):
        where = f"EventEndpoints[{index}]"
        if not isinstance(item, Mapping):
            raise ValueError(f"{where} must be an object with url, secret and types")
        unknown = sorted(set(item) - {"url", "secret", "types"})
        if unknown:
            raise ValueError(f"{where}: unknown keys {', '.join(unknown)}")
        url, secret, types = item.get("url"), item.get("secret"), item.get("types") or list(EVENT_TYPES)
        if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
            raise ValueError(f"{where}.url must be an http:// or https:// URL")
        if not isinstance(secret, str) or len(secret) < 16:
            raise ValueError(f"{where}.secret must be a string of at least 16 characters")
        if not isinstance(types, list) or not all(isinstance(t, str) and t in EVENT_TYPES for t in types):
            raise ValueError(f"{where}.types must list event types among {', '.join(EVENT_TYPES)}")
        if any(e.url == url for e in endpoints):
            raise ValueError(f"{where}.url is listed twice")
        endpoints.append(Endpoint(url, secret, frozenset(types)))
    return tuple(endpoints)


def display_url(url: str) -> str:
    """An endpoint's URL as answered and logged: no user information, query or fragment (they may hold secrets)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def ordering_key(study_uid: str | None, order_id: str | None) -> str:
    """What events are delivered in order within: the study (an order's own event without a study: the order)."""
    return f"study:{study_uid}" if study_uid else f"order:{order_id or ''}"


@dataclass(frozen=True)
class Event:
    """One event as the outbox keeps it and the body sends it."""

    event_id: str
    type: str
    occurred_at: datetime
    study_instance_uid: str | None
    order_id: str | None
    patient_id: str | None
    data: Mapping[str, Any]


def body(event: Event) -> bytes:
    """The POST body: the same bytes at every attempt (sorted keys), so a retry is signed over the same text."""
    document = {"event_id": event.event_id, "type": event.type, "occurred_at": event.occurred_at.isoformat(),
                "study_instance_uid": event.study_instance_uid, "order_id": event.order_id,
                "patient_id": event.patient_id, "data": dict(event.data)}
    return json.dumps(document, sort_keys=True, separators=(",", ":"), default=str).encode()


def signature(secret: str, timestamp: int, payload: bytes) -> str:
    """``X-EhrImaging-Signature``: ``t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">``."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(secret: str, header: str, payload: bytes, now: int, tolerance_seconds: int = 300) -> bool:
    """What a receiver checks: a v1 signature of this body with this secret, its timestamp within tolerance."""
    fields: dict[str, list[str]] = {}
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        fields.setdefault(key, []).append(value)
    try:
        timestamp = int(fields.get("t", [""])[0])
    except ValueError:
        return False
    if abs(now - timestamp) > tolerance_seconds:
        return False
    expected = signature(secret, timestamp, payload).split("v1=", 1)[1]
    return any(hmac.compare_digest(expected, candidate) for candidate in fields.get("v1", []))


def retry_delay(attempts: int, base_seconds: float, max_seconds: float = MAX_DELAY_SECONDS) -> float:
    """Seconds before the next attempt after ``attempts`` failed ones: base, 2 x base, 4 x base ... at most
    ``max_seconds`` (or the base, if that is longer)."""
    return float(min(base_seconds * 2 ** min(max(attempts - 1, 0), 64), max(max_seconds, base_seconds)))


def next_attempt(attempts: int, first_attempt: datetime, now: datetime, *, base_seconds: float,
                 retry_for: timedelta, max_seconds: float = MAX_DELAY_SECONDS) -> datetime | None:
    """When to try again after a failed attempt, or None: give up (``failed``) once the retries would go past
    ``retry_for`` after the first attempt."""
    at = now + timedelta(seconds=retry_delay(attempts, base_seconds, max_seconds))
    return None if at - first_attempt > retry_for else at


@dataclass(frozen=True)
class Delivery:
    """One event to one endpoint, as the in-order decision sees it."""

    seq: int  # the outbox's order: the order the changes were committed in
    endpoint: str
    key: str  # ordering_key
    status: str
    next_attempt_at: datetime


def sendable(deliveries: Iterable[Delivery], now: datetime) -> list[Delivery]:
    """The deliveries to send now: per endpoint and study, the earliest undelivered one (pending), when it is
    due. A later event waits behind it; one given up (failed) or delivered no longer holds the others."""
    heads: dict[tuple[str, str], Delivery] = {}
    for delivery in sorted(deliveries, key=lambda d: d.seq):
        if delivery.status == PENDING:
            heads.setdefault((delivery.endpoint, delivery.key), delivery)
    return [d for d in sorted(heads.values(), key=lambda d: d.seq) if d.next_attempt_at <= now]
