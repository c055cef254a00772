"""The node's audit spools kept moving into PostgreSQL, and their depth as metrics.

The ``events`` spool (audit rows written to disk while PostgreSQL was away: DIMSE queries) is replayed every
few seconds while it has records PostgreSQL does not hold yet (store/spool_replay.apply_events: in order,
once). The ``access`` spool is replayed by the access log's own flush (app/access_log.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from ..core import metrics
from ..store.audit_spool import AuditSpool
from ..store.db import Engine
from ..store.spool_replay import apply_events


class SpoolReplayer:
    def __init__(self, engine: Engine, events: AuditSpool, *, interval_seconds: float = 2.0,
                 log_error: Callable[[str], None] = print, log_warning: Callable[[str], None] = print) -> None:
        self._engine = engine
        self._events = events
        self._interval = interval_seconds
        self._log_error = log_error
        self._log_warning = log_warning

    def replay_once(self) -> int:
        if not self._events.behind():
            return 0
        return apply_events(self._engine, self._events, self._log_error)

    def start(self) -> None:
        threading.Thread(target=self._run, name="ehr-audit-spool-replay", daemon=True).start()

    def _run(self) -> None:
        failing = False
        while True:
            time.sleep(self._interval)
            try:
                applied = self.replay_once()
                if applied:
                    self._log_warning(f"ehr-imaging: {applied} spooled audit records written to PostgreSQL")
                failing = False
            except Exception as exc:  # noqa: BLE001 - PostgreSQL away: the records wait on disk
                if not failing:
                    self._log_error(f"ehr-imaging: spooled audit records not written yet ({type(exc).__name__});"
                                    " will retry")
                failing = True


def spool_gauges(*spools: AuditSpool) -> Callable[[], dict[str, float]]:
    """The metrics source: records and bytes of every spool not yet known to be in PostgreSQL."""

    def gauges() -> dict[str, float]:
        records = size = 0
        for spool in spools:
            r, b = spool.depth()
            records += r
            size += b
        return {metrics.AUDIT_SPOOL_RECORDS: records, metrics.AUDIT_SPOOL_BYTES: size}

    return gauges
