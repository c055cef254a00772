"""Delivering the outbox's events to the EHR's endpoints: one thread per endpoint, off every request and ingest
thread, so a refused, failing or slow endpoint delays only its own events.

Each round claims the endpoint's due deliveries (store/outbox.claim: row locks with SKIP LOCKED, so several
nodes share the work and each attempt is made by one; each study's earliest undelivered event only, so a
study's events arrive in order), POSTs each signed body (core/events.py) with a short timeout, and records
the outcome: delivered (a 2xx), or retried with backoff until ``EventRetryHours`` after its first attempt,
then failed. At least once: an attempt whose outcome could not be recorded (a node stopped, the database
gone) is made again; receivers dedupe on ``event_id``.
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta

from ..core import events
from ..services import Services
from ..store import db, outbox

BATCH = 10  # deliveries one round claims (each study's next only)
IDLE_SECONDS = 1.0  # between rounds with nothing due: a study.arrived goes out within a second or two


class DeliveryFailed(Exception):
    """An attempt did not deliver; the message says how (never the URL's secrets or the body)."""


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None  # a 3xx is not a delivery (and a POST is never re-sent elsewhere)


_OPENER = urllib.request.build_opener(_NoRedirects())


def post(url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> None:
    """One POST; returns on a 2xx answer, else DeliveryFailed."""
    request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")
    try:
        with _OPENER.open(request, timeout=timeout) as answer:
            answer.read(65536)
    except urllib.error.HTTPError as exc:
        raise DeliveryFailed(f"HTTP {exc.code}") from None
    except urllib.error.URLError as exc:
        raise DeliveryFailed(f"not reached: {type(exc.reason).__name__}: {exc.reason}") from None
    except (TimeoutError, OSError) as exc:
        raise DeliveryFailed(f"not reached: {type(exc).__name__}: {exc}") from None


Sender = Callable[[str, bytes, Mapping[str, str], float], None]


class EndpointWorker:
    """The delivery thread of one endpoint."""

    def __init__(self, services: Services, endpoint: events.Endpoint, *, send: Sender = post,
                 log_warning: Callable[[str], None], log_error: Callable[[str], None]) -> None:
        self._services = services
        self._endpoint = endpoint
        self._send = send
        self._log_warning = log_warning
        self._log_error = log_error
        self._failing = False
        settings = services.settings
        self._timeout = float(settings.EventTimeoutSeconds)
        # Longer than a whole round of attempts: no other node takes a claimed delivery while it is being sent.
        self._lease = timedelta(seconds=BATCH * (self._timeout + 2) + 30)
        self._retry_for = timedelta(hours=settings.EventRetryHours)
        self._thread = threading.Thread(target=self._run, name="ehr-events", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def run_once(self) -> int:
        """One round: claim, attempt, record. Returns how many were attempted."""
        engine = self._services.engine
        claimed = outbox.claim(engine, [self._endpoint.url], limit=BATCH, lease=self._lease)
        for delivery in claimed:
            self._attempt(delivery)
        return len(claimed)

    def _attempt(self, delivery: outbox.Claimed) -> None:
        payload = events.body(delivery.event)
        headers = {"Content-Type": "application/json", "User-Agent": "ehr-imaging",
                   events.SIGNATURE_HEADER: events.signature(self._endpoint.secret, int(time.time()), payload),
                   "X-EhrImaging-Event-Id": delivery.event.event_id, "X-EhrImaging-Event-Type": delivery.event.type}
        try:
            self._send(self._endpoint.url, payload, headers, self._timeout)
        except DeliveryFailed as exc:
            self._failed(delivery, str(exc))
            return
        outbox.delivered(self._services.engine, delivery.seq, delivery.endpoint)
        if self._failing:
            self._failing = False
            self._log_warning(f"ehr-imaging: events to {events.display_url(self._endpoint.url)} are delivered again")

    def _failed(self, delivery: outbox.Claimed, error: str) -> None:
        now = datetime.now(UTC)
        retry_at = events.next_attempt(delivery.attempts, delivery.retry_since, now,
                                       base_seconds=self._services.settings.EventRetryBaseSeconds,
                                       retry_for=self._retry_for,
                                       max_seconds=self._services.settings.EventRetryMaxSeconds)
        outbox.attempt_failed(self._services.engine, delivery.seq, delivery.endpoint, error, retry_at)
        where = events.display_url(self._endpoint.url)
        if retry_at is None:
            self._log_error(f"ehr-imaging: event {delivery.event.event_id} to {where} failed for good after"
                            f" {delivery.attempts} attempts ({error}); POST .../events/{{id}}/redeliver sends it again")
        elif not self._failing:
            self._failing = True
            self._log_warning(f"ehr-imaging: events to {where} not delivered ({error}); retrying with backoff")

    def _run(self) -> None:
        delay = IDLE_SECONDS
        while True:
            try:
                attempted = self.run_once()
                delay = IDLE_SECONDS
            except db.UNAVAILABLE:  # the database is away: the outbox waits in it, nothing is lost
                attempted, delay = 0, min(delay * 2, 10.0)
            except Exception as exc:  # noqa: BLE001 - a bug must not end delivery for good
                self._log_error(f"ehr-imaging: event delivery to {events.display_url(self._endpoint.url)} failed"
                                f" ({type(exc).__name__}: {exc})")
                attempted, delay = 0, min(delay * 2, 30.0)
            if not attempted:
                time.sleep(delay)


PRUNE_EVERY_SECONDS = 3600.0


def prune_forever(services: Services, log_error: Callable[[str], None]) -> None:
    """Every hour: events every endpoint received, older than EventRetentionDays, leave the outbox (any node
    may do it; rows are taken with SKIP LOCKED). Failed and pending ones stay until delivered."""
    keep = timedelta(days=services.settings.EventRetentionDays)
    while True:
        try:
            outbox.prune_delivered(services.engine, keep)
        except Exception as exc:  # noqa: BLE001 - the next hour tries again
            log_error(f"ehr-imaging: delivered events not pruned ({type(exc).__name__}); will retry")
        time.sleep(PRUNE_EVERY_SECONDS)


def start_delivery(services: Services, *, log_warning: Callable[[str], None],
                   log_error: Callable[[str], None]) -> list[EndpointWorker]:
    """A delivery thread per configured endpoint, and the outbox's pruning (none configured: neither)."""
    workers = [EndpointWorker(services, endpoint, log_warning=log_warning, log_error=log_error)
               for endpoint in services.event_endpoints]
    for worker in workers:
        worker.start()
    if workers:
        threading.Thread(target=prune_forever, args=(services, log_error), name="ehr-events-prune",
                         daemon=True).start()
    return workers
