"""What the ingest worker does with one change of Orthanc's log, and with several stable studies at once.

The worker (app/ingest_worker.py) decides which changes to handle and when the cursor moves; this holds how a
change is handled: a STABLE study recorded and matched (several per transaction in a flood, app/ingest.py
record_stable_studies), a DELETED one audited, an ARRIVED one's order marked in progress (best effort), and the
attempts per study (a study that keeps failing for anything but the database away is given up after
MAX_ATTEMPTS; make reconcile tries it again).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..services import Services
from ..store import db
from ..store.links import LinkOutcome
from .ingest import process_stable_study, record_stable_studies, studies_arrived, study_arrived, study_deleted

MAX_ATTEMPTS = 5
STABLE, DELETED, ARRIVED = "stable", "deleted", "arrived"


class ChangeHandler:
    def __init__(self, services: Services, log_warning: Callable[[str], None],
                 log_error: Callable[[str], None]) -> None:
        self._services = services
        self._log_warning = log_warning
        self._log_error = log_error
        self._attempts: dict[tuple[str, str], int] = {}

    def flush(self, pending: list[tuple[int, str, str]], queued_at: float) -> list[tuple[int, str, str]]:
        """Handle the changes read from the log, ``(change, kind, study)``: the new studies first, then the
        stable ones (a study's NEW_STUDY comes before its STABLE_STUDY; the worker flushes before a study's
        NEW_STUDY should its STABLE_STUDY be waiting), each kind in one transaction when there are several.
        An empty list once every one is handled; raises as ``record`` does."""
        self._arrivals([study for _, kind, study in pending if kind == ARRIVED])
        self.record([study for _, kind, study in pending if kind == STABLE], queued_at)
        return []

    def _arrivals(self, studies: list[str]) -> None:
        if len(studies) > 1:
            try:
                studies = studies_arrived(self._services, studies)
            except Exception as exc:  # noqa: BLE001 - best effort: never holding the log
                if isinstance(exc, db.UNAVAILABLE):
                    self._log_warning(f"ehr-imaging: orders of {len(studies)} new studies not marked in progress"
                                      f" ({type(exc).__name__})")
                    return
        for study in studies:
            self._arrived(study)

    def record(self, studies: list[str], queued_at: float) -> None:
        """Record stable studies, all in one transaction when there are several. While the database is away
        it raises with nothing of the batch recorded (the caller's cursor stays before the batch). A study
        that fails never fails its batch-mates: it is retried alone (its own MAX_ATTEMPTS), and a batch whose
        transaction failed as a whole (rolled back) is recorded again one study at a time; it raises once the
        others are recorded."""
        studies = list(dict.fromkeys(studies))
        if len(studies) > 1:
            try:
                recorded = record_stable_studies(self._services, studies)
            except db.UNAVAILABLE:
                raise
            except Exception as exc:  # noqa: BLE001 - rolled back as a whole: one by one now, each its own attempts
                self._log_warning(f"ehr-imaging: a batch of {len(studies)} stable studies failed"
                                  f" ({type(exc).__name__}: {exc}): recording them one by one")
            else:
                for study, outcome in recorded.outcomes.items():
                    self._recorded(STABLE, study, outcome, queued_at)
                for study, why in recorded.failed.items():
                    self._log_warning(f"ehr-imaging: stable study {study} failed in a batch ({why}): alone now")
                studies = [study for study in studies if study in recorded.failed]
        failure: Exception | None = None
        for study in studies:
            try:
                self.handle(STABLE, study, queued_at)
            except db.UNAVAILABLE:
                raise
            except Exception as exc:  # noqa: BLE001 - its batch-mates after it are recorded first
                failure = failure or exc
        if failure is not None:
            raise failure  # the cursor stays before the batch: replayed (idempotently) after the pause

    def handle(self, kind: str, study: str, queued_at: float) -> bool:
        """Handle one change; True once handled (or given up: a bad study after MAX_ATTEMPTS). Raises to have it
        retried after a pause (the database away: waited for indefinitely)."""
        if kind == ARRIVED:
            self._arrived(study)
            return True
        key = (kind, study)
        try:
            if kind == DELETED:
                for message in study_deleted(self._services, study):
                    self._log_warning(message)
            else:
                self._recorded(kind, study, process_stable_study(self._services, study), queued_at)
                return True
        except Exception as exc:
            attempts = self._attempts.get(key, 0) + 1
            self._attempts[key] = attempts
            self._log_error(f"ehr-imaging: {kind} study {study} failed (attempt {attempts},"
                            f" {type(exc).__name__}: {exc})")
            if isinstance(exc, db.UNAVAILABLE) or attempts < MAX_ATTEMPTS:
                raise
            # Anything but the database away is a bug or a bad study: given up; make reconcile tries it again.
            self._log_error(f"ehr-imaging: {kind} study {study} given up after {attempts} attempts")
        self._attempts.pop(key, None)
        return True

    def _recorded(self, kind: str, study: str, outcome: LinkOutcome | None, queued_at: float) -> None:
        self._attempts.pop((kind, study), None)
        if outcome is not None and outcome.new_instances:  # (a replay, or a study its upload recorded: no match)
            self._services.metrics.matched(time.monotonic() - queued_at)
        if outcome is not None and outcome.order_id is None:
            self._log_warning(f"ehr-imaging: study {study} unmatched: {outcome.reason}")

    def _arrived(self, study: str) -> None:
        """Best effort, once: an order in progress is a transient state (the link completes it), never worth
        holding the log while the database is away."""
        try:
            study_arrived(self._services, study)
        except Exception as exc:  # noqa: BLE001 - the stable study's link still completes the order
            self._log_warning(f"ehr-imaging: order of study {study} not marked in progress ({type(exc).__name__})")
