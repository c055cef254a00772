"""The plugin's metrics for operators: every name once (with what it means), and a thread-safe registry.

Orthanc 1.10's ``SetMetricsValue`` takes a name and a number, no labels, so what Prometheus would carry as a
label is part of the name (``ehr_imaging_studies_unmatched_patient_mismatch``). Counters (``_total``) count
on this node since Orthanc started; gauges are set by whoever knows the value (the publisher reads the
database's, the ingest worker its queue's). The publisher (app/metrics_publisher.py) hands the snapshot to
Orthanc, which serves it at ``/tools/metrics-prometheus``. Pure: no Orthanc here.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass

from .matching import REASONS
from .study_identity import REASON_COLLISION

PREFIX = "ehr_imaging_"


@dataclass(frozen=True)
class Metric:
    name: str
    kind: str  # "counter" (this node, since start) or "gauge"
    help: str


def slug(text: str) -> str:
    """``"order already linked to another study"`` -> ``order_already_linked_to_another_study``."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "other"


STUDIES_RECORDED = PREFIX + "studies_recorded"
STUDIES_LINKED = PREFIX + "studies_linked"
STUDIES_UNMATCHED = PREFIX + "studies_unmatched"
INGEST_QUEUE_DEPTH = PREFIX + "ingest_queue_depth"
INGEST_OLDEST_WAITING = PREFIX + "ingest_oldest_waiting_seconds"
MATCH_LATENCY = PREFIX + "match_latency_seconds"
MATCH_LATENCY_SUM = PREFIX + "match_latency_seconds_sum"
MATCHES = PREFIX + "match_latency_seconds_count"
FILTER_REFUSALS = PREFIX + "filter_refusals_total"
VIEWER_REQUESTS = PREFIX + "viewer_requests_total"
DATABASE_UP = PREFIX + "database_up"
UPLOAD_FAILURES = PREFIX + "upload_failures_total"
UPLOADS_RATE_LIMITED = PREFIX + "uploads_rate_limited_total"
DELETION_REQUESTS_PENDING = PREFIX + "deletion_requests_pending"
AUDIT_SPOOL_RECORDS = PREFIX + "audit_spool_records"
AUDIT_SPOOL_BYTES = PREFIX + "audit_spool_bytes"
EVENTS_PENDING = PREFIX + "events_pending"
EVENTS_FAILED = PREFIX + "events_failed"

UNMATCHED_REASONS = tuple(sorted(REASONS | {REASON_COLLISION}))

# Why the HTTP filter refused a request (hooks/http_filter.py names one of these at each refusal).
REFUSAL_BODY = "body"  # a body it will not take: size, type, a route that reads none, a form on Orthanc's port
REFUSAL_CREDENTIALS = "credentials"  # missing or invalid credentials
REFUSAL_NOT_ADMIN = "not_admin"  # valid credentials, but Orthanc's own API is for administrators only
REFUSAL_VIEWER_SCOPE = "viewer_scope"  # a viewer token asked for something outside its studies
FILTER_REASONS = (REFUSAL_BODY, REFUSAL_CREDENTIALS, REFUSAL_NOT_ADMIN, REFUSAL_VIEWER_SCOPE)


def unmatched_name(reason: str | None) -> str:
    return f"{STUDIES_UNMATCHED}_{slug(reason or 'other')}"


def refusal_name(reason: str) -> str:
    return f"{PREFIX}filter_refusals_{slug(reason)}_total"


CATALOGUE: tuple[Metric, ...] = (
    Metric(STUDIES_RECORDED, "gauge", "studies recorded in the plugin's database (every node's)"),
    Metric(STUDIES_LINKED, "gauge", "recorded studies linked to an order"),
    Metric(STUDIES_UNMATCHED, "gauge", "studies waiting in the reconciliation queue (unmatched or quarantined)"),
    *(Metric(unmatched_name(reason), "gauge", f"... of which unmatched because: {reason}")
      for reason in UNMATCHED_REASONS),
    Metric(INGEST_QUEUE_DEPTH, "gauge", "changes behind Orthanc's last one, plus deletions and studies waiting for"
                                        " this node's ingest worker"),
    Metric(INGEST_OLDEST_WAITING, "gauge", "seconds the worker has been behind (0: none waits)"),
    Metric(MATCH_LATENCY, "gauge", "seconds from the worker reading a study's STABLE_STUDY change to its recorded match"
                                   " decision, for the latest study"),
    Metric(MATCH_LATENCY_SUM, "counter", "the sum of those seconds (with _count: the mean over any range)"),
    Metric(MATCHES, "counter", "studies the ingest worker has recorded and matched"),
    Metric(FILTER_REFUSALS, "counter", "HTTP requests the filter refused (403)"),
    *(Metric(refusal_name(reason), "counter", f"... of which for reason {reason!r}") for reason in FILTER_REASONS),
    Metric(VIEWER_REQUESTS, "counter", "DICOMweb requests with a viewer token that the filter allowed"),
    Metric(DATABASE_UP, "gauge", "1 when the plugin's database answered the last probe, 0 when not"),
    Metric(UPLOAD_FAILURES, "counter", "uploads refused whole, and files of an upload that were not stored"),
    Metric(UPLOADS_RATE_LIMITED, "counter", "upload requests refused with 429 (over a caller's rate limit)"),
    Metric(DELETION_REQUESTS_PENDING, "gauge", "deletion requests waiting for a manager's approval"),
    Metric(AUDIT_SPOOL_RECORDS, "gauge", "audit records in this node's local spool not yet known to be in"
                                         " PostgreSQL (viewer requests, DIMSE audit rows written while it was away)"),
    Metric(AUDIT_SPOOL_BYTES, "gauge", "bytes of the spool's segment files holding them"),
    Metric(EVENTS_PENDING, "gauge", "event deliveries to the EHR's endpoints not delivered yet (retrying or due)"),
    Metric(EVENTS_FAILED, "gauge", "event deliveries given up after EventRetryHours (redeliver sends them again)"),
)
NAMES = frozenset(metric.name for metric in CATALOGUE)


class Metrics:
    """Counters and gauges by name (only names of the catalogue); ``snapshot`` is what gets published."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, float] = {m.name: 0.0 for m in CATALOGUE if m.kind == "counter"}

    def count(self, name: str, amount: float = 1.0) -> None:
        _check(name)
        with self._lock:
            self._values[name] = self._values.get(name, 0.0) + amount

    def set(self, name: str, value: float) -> None:
        _check(name)
        with self._lock:
            self._values[name] = float(value)

    def refused(self, reason: str) -> None:
        """One request refused by the HTTP filter, for ``reason`` (one of ``FILTER_REASONS``)."""
        with self._lock:
            for name in (FILTER_REFUSALS, refusal_name(reason if reason in FILTER_REASONS else REFUSAL_BODY)):
                self._values[name] = self._values.get(name, 0.0) + 1

    def matched(self, seconds: float) -> None:
        """One study recorded and matched ``seconds`` after it was queued."""
        with self._lock:
            self._values[MATCH_LATENCY] = seconds
            self._values[MATCH_LATENCY_SUM] = self._values.get(MATCH_LATENCY_SUM, 0.0) + seconds
            self._values[MATCHES] = self._values.get(MATCHES, 0.0) + 1

    def get(self, name: str) -> float | None:
        with self._lock:
            return self._values.get(name)

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            return dict(self._values)


def _check(name: str) -> None:
    if name not in NAMES:
        raise KeyError(f"unknown metric {name!r}: declare it in core/metrics.py CATALOGUE")
