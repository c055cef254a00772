"""The database health monitor: one thread pings PostgreSQL, another holds the ping to a deadline.

While a ping goes unanswered past ``timeout`` seconds (a hung or partitioned database), or fails (a stopped
one), the breaker (store/db_guard.py) is open: every route that would take a connection answers 503 with
Retry-After at once, and, for a hung database, the sockets of the connections already waiting are cut so
their threads (Orthanc's HTTP threads, the ingest worker) get an error instead of waiting for ever. The
next answered ping closes it. So a request waits at most about ``interval + timeout`` seconds after the
database stops answering, then none waits at all.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from ..store.db import Breaker

WATCH_STEP_SECONDS = 0.2  # how often the deadline is checked


class DatabaseMonitor:
    def __init__(self, ping: Callable[[], None], interrupt: Callable[[], int], breaker: Breaker, *,
                 interval: float, timeout: float, log_warning: Callable[[str], None] = print,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._ping = ping
        self._interrupt = interrupt
        self.breaker = breaker
        self._interval = interval
        self._timeout = timeout
        self._log_warning = log_warning
        self._clock = clock
        self._lock = threading.Lock()
        self._started: float | None = None  # when the ping in progress began
        self._overdue: float | None = None  # the start of the ping already declared overdue
        self._stop = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._pinging, name="ehr-db-monitor", daemon=True).start()
        threading.Thread(target=self._watching, name="ehr-db-deadline", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def probe(self) -> None:
        """One ping, with its outcome applied to the breaker (the pinging thread's step; tests call it)."""
        with self._lock:
            self._started = self._clock()
        try:
            with self.breaker.probing():
                self._ping()
        except Exception as exc:  # noqa: BLE001 - any failure: the database is not usable
            self._set_down(f"{type(exc).__name__}")
            return
        finally:
            with self._lock:
                self._started = None
        if self.breaker.is_open:
            self._log_warning("ehr-imaging: the database answers again: EHR routes served again")
        self.breaker.close()

    def watch(self) -> bool:
        """Is the ping in progress overdue? Then open the breaker and cut the waiting connections (once per
        ping). The deadline thread's step; tests call it."""
        with self._lock:
            started = self._started
            if started is None or self._clock() - started <= self._timeout or self._overdue == started:
                return False
            self._overdue = started
        self._set_down(f"no answer within {self._timeout:g} s")
        cut = self._interrupt()
        if cut:
            self._log_warning(f"ehr-imaging: the database does not answer: cut {cut} waiting connections")
        return True

    def _set_down(self, reason: str) -> None:
        if self.breaker.is_open:
            return  # the first reason stands until the database answers again
        self._log_warning(f"ehr-imaging: the database is unavailable ({reason}): EHR routes answer 503"
                          " until it answers again")
        self.breaker.open(reason)

    def _pinging(self) -> None:
        while not self._stop.is_set():
            self.probe()
            self._stop.wait(self._interval)

    def _watching(self) -> None:
        while not self._stop.is_set():
            self.watch()
            self._stop.wait(WATCH_STEP_SECONDS)
