"""The database health monitor: one thread pings PostgreSQL, another holds the ping to a deadline.

While a ping goes unanswered past ``timeout`` seconds (a hung or partitioned database), or fails (a stopped
one), the breaker (store/db_guard.py) is open: every route that would take a connection answers 503 with
Retry-After at once, and, for a hung database, the sockets of the connections already waiting are cut so
their threads (Orthanc's HTTP threads, the ingest worker) get an error instead of waiting for ever. The
next answered ping closes it. So a request waits at most about ``interval + timeout`` seconds after the
database stops answering, then none waits at all.

The deadline counts the time the deadline thread saw pass step by step, not the clock between the ping's start
and now: orthanc-python holds the GIL through every call into Orthanc, so one long call (a large file stored)
stops every Python thread, the ping's included, for seconds. A gap between two checks longer than
``STALL_SECONDS`` counts as one step: the database is not judged by a pause of the plugin's own (it opened the
breaker and cut every connection while PostgreSQL was answering; a large upload did it in a CI run).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from ..store.db import Breaker

WATCH_STEP_SECONDS = 0.2  # how often the deadline is checked
STALL_SECONDS = 1.0  # a longer gap between two checks: Python was stopped, the ping too; it counts as one step


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
        self._waited = 0.0  # how long it has waited, as the deadline thread saw it
        self._seen: float = 0.0  # when the deadline thread last looked (or the ping began)
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
            self._started = self._seen = self._clock()
            self._waited = 0.0
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
        now = self._clock()
        with self._lock:
            started = self._started
            if started is None:
                return False
            gap, self._seen = now - self._seen, now
            self._waited += gap if gap <= STALL_SECONDS else WATCH_STEP_SECONDS
            if self._waited <= self._timeout or self._overdue == started:
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
