"""Hands the metrics to Orthanc every ``MetricsIntervalSeconds``, from one thread.

Each round it reads what only the database knows (studies recorded, linked, unmatched by reason; pending
deletion requests; event deliveries pending and failed; whether the database answers at all) and what the
worker's queue says, then publishes every value of ``services.metrics`` through ``publish``
(``pacs.set_metric``: Orthanc's ``SetMetricsValue``, served at ``/tools/metrics-prometheus``). The database's
numbers are the same on every node sharing it; the counters are this node's. A database that does not answer
sets ``database_up`` to 0 and leaves its gauges at their last values.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Mapping

from ..core import metrics
from ..services import Services
from ..store import db, outbox
from ..store import metrics as metric_store


class MetricsPublisher:
    def __init__(self, services: Services, publish: Callable[[str, float], None], *,
                 sources: tuple[Callable[[], Mapping[str, float]], ...] = (),
                 log_error: Callable[[str], None] = print) -> None:
        self._services = services
        self._publish = publish
        self._sources = sources  # gauges of other parts (the ingest worker's queue)
        self._log_error = log_error
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ehr-metrics", daemon=True)
        self._failing = False

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        interval = float(self._services.settings.MetricsIntervalSeconds)
        while not self._stop.is_set():
            self.publish_once()
            self._stop.wait(interval)

    def publish_once(self) -> None:
        registry = self._services.metrics
        self._read_database(registry)
        for source in self._sources:
            for name, value in source().items():
                registry.set(name, value)
        try:
            for name, value in sorted(registry.snapshot().items()):
                self._publish(name, value)
            self._failing = False
        except Exception as exc:  # noqa: BLE001 - the next round tries again; say so once
            if not self._failing:
                self._log_error(f"ehr-imaging: publishing metrics failed ({type(exc).__name__}: {exc})")
            self._failing = True

    def _read_database(self, registry: metrics.Metrics) -> None:
        engine = self._services.engine
        try:
            db.ping(engine)
        except Exception:  # noqa: BLE001 - down (or not reachable): that is the measurement
            registry.set(metrics.DATABASE_UP, 0)
            return
        registry.set(metrics.DATABASE_UP, 1)
        try:
            counts = metric_store.study_counts(engine)
        except Exception:  # noqa: BLE001 - a schema not migrated yet, or the database went away meanwhile
            pass
        else:
            registry.set(metrics.STUDIES_RECORDED, counts.recorded)
            registry.set(metrics.STUDIES_LINKED, counts.linked)
            registry.set(metrics.STUDIES_UNMATCHED, sum(counts.unmatched.values()))
            for reason in metrics.UNMATCHED_REASONS:
                registry.set(metrics.unmatched_name(reason), counts.unmatched.get(reason, 0))
        # A schema not migrated yet, or the database gone meanwhile: keep the last value.
        with contextlib.suppress(Exception):
            registry.set(metrics.DELETION_REQUESTS_PENDING, metric_store.pending_deletion_requests(engine))
        with contextlib.suppress(Exception):
            deliveries = outbox.delivery_counts(engine)
            registry.set(metrics.EVENTS_PENDING, deliveries["pending"])
            registry.set(metrics.EVENTS_FAILED, deliveries["failed"])
