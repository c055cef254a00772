"""The ingest worker: the one thread that records stable and deleted studies, in the order Orthanc saw them.

Orthanc's storage path stays untouched (no OnStoredInstance work at all): Orthanc itself records
each instance's origin in its metadata, and on STABLE_STUDY the change callback (hooks/changes.py) only
queues the study. This worker thread reads the study and does the database work; while PostgreSQL is down it waits
and retries, so no ingest is lost and none is slowed. At start-up it catches up with studies
Orthanc holds that the database does not know yet (stored while the plugin was down).
A study deleted in Orthanc without the EHR API (Explorer, Orthanc's REST API, storage recycling)
comes as a DELETED change: the same worker audits it and frees its order, in order with the ingests
(so a coercion's own deletion of the original study is seen after the study's new ID is recorded).
The worker reports its queue (depth, the oldest study's wait) and each match's latency to the metrics.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable

from ..core import metrics
from ..services import Services
from ..store import db, links
from .ingest import process_stable_study, study_arrived, study_deleted

MAX_ATTEMPTS = 5
STABLE, DELETED, ARRIVED = "stable", "deleted", "arrived"


class IngestWorker:
    def __init__(self, services: Services, log_warning: Callable[[str], None],
                 log_error: Callable[[str], None]) -> None:
        self._services = services
        self._log_warning = log_warning
        self._log_error = log_error
        # (STABLE or DELETED, Orthanc study ID, when it was queued: time.monotonic())
        self._queue: queue.Queue[tuple[str, str, float]] = queue.Queue()
        self._waiting: deque[float] = deque()  # when each queued study (and the one in hand) was queued
        self._waiting_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="ehr-ingest", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, orthanc_study_id: str) -> None:
        """A study became stable (or must be looked at again): record and match it."""
        self._put(STABLE, orthanc_study_id)

    def submit_arrival(self, orthanc_study_id: str) -> None:
        """A new study's first instance: its order is in progress (before the study is stable)."""
        self._put(ARRIVED, orthanc_study_id)

    def submit_deleted(self, orthanc_study_id: str) -> None:
        """A study was deleted in Orthanc: audit it and free its order (after what was queued before)."""
        self._put(DELETED, orthanc_study_id)

    def _put(self, kind: str, orthanc_study_id: str) -> None:
        queued_at = time.monotonic()
        with self._waiting_lock:
            self._waiting.append(queued_at)
        self._queue.put((kind, orthanc_study_id, queued_at))

    def gauges(self) -> dict[str, float]:
        """The queue's metrics: how many studies wait (the one in hand included), and the oldest's wait."""
        with self._waiting_lock:
            oldest = self._waiting[0] if self._waiting else None
            depth = len(self._waiting)
        age = 0.0 if oldest is None else max(time.monotonic() - oldest, 0.0)
        return {metrics.INGEST_QUEUE_DEPTH: depth, metrics.INGEST_OLDEST_WAITING: round(age, 3)}

    def _arrived(self, study: str) -> None:
        """Best effort, once: an order in progress is a transient state (the link completes it), never worth
        holding the queue while the database is away."""
        try:
            study_arrived(self._services, study)
        except Exception as exc:  # noqa: BLE001 - the stable study's link still completes the order
            self._log_warning(f"ehr-imaging: order of study {study} not marked in progress ({type(exc).__name__})")

    def submit_unknown_studies(self) -> None:
        """At Orthanc's start: queue what Orthanc holds and the database does not know, and the reverse."""
        threading.Thread(target=self._catch_up, name="ehr-ingest-catch-up", daemon=True).start()

    def _catch_up(self) -> None:
        delay = 1.0
        while True:
            try:
                known = links.known_orthanc_ids(self._services.engine)
                break
            except Exception:  # noqa: BLE001 - database not reachable yet: wait for it
                time.sleep(delay)
                delay = min(delay * 2, 30.0)
        # Only stable studies: the others will announce themselves with STABLE_STUDY.
        studies = self._services.pacs.get_json("/studies?expand")
        missing = [s["ID"] for s in studies if s.get("IsStable") and s["ID"] not in known]
        if missing:
            self._log_warning(f"ehr-imaging: catching up with {len(missing)} studies not yet recorded")
        for study in missing:
            self.submit(study)
        # Recorded studies Orthanc no longer holds were deleted while their DELETED change could not be
        # recorded (plugin down, or the database down until Orthanc stopped): audit those deletions now.
        gone = sorted(known - {s["ID"] for s in studies})
        if gone:
            self._log_warning(f"ehr-imaging: {len(gone)} recorded studies are gone from Orthanc: auditing")
        for study in gone:
            self._put(DELETED, study)

    def _run(self) -> None:
        while True:
            kind, study, queued_at = self._queue.get()
            if kind == ARRIVED:
                self._arrived(study)
                self._done()
                continue
            delay, attempts = 1.0, 0
            while True:
                attempts += 1
                try:
                    if kind == DELETED:
                        for message in study_deleted(self._services, study):
                            self._log_warning(message)
                        break
                    outcome = process_stable_study(self._services, study)
                    if outcome is not None:
                        self._services.metrics.matched(time.monotonic() - queued_at)
                    if outcome is not None and outcome.order_id is None:
                        self._log_warning(f"ehr-imaging: study {study} unmatched: {outcome.reason}")
                    break
                except Exception as exc:  # noqa: BLE001 - retried below, never lost silently
                    # An unreachable database is waited for indefinitely; anything else is a bug or a bad
                    # study: a few retries, then the study waits for the catch-up at the next start.
                    transient = isinstance(exc, db.UNAVAILABLE)
                    self._log_error(f"ehr-imaging: {kind} study {study} failed (attempt {attempts},"
                                    f" {type(exc).__name__}: {exc})")
                    if not transient and attempts >= MAX_ATTEMPTS:
                        break
                    time.sleep(delay)
                    delay = min(delay * 2, 30.0)
            self._done()

    def _done(self) -> None:
        with self._waiting_lock:
            self._waiting.popleft()
        self._queue.task_done()
