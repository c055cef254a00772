"""The viewer access audit: who (token subject) read which study, when, how many requests and bytes.

The HTTP filter records every viewer request here. With a spool (the plugin always has one) each request is
first written to the node's local audit spool (store/audit_spool.py: one ``os.write``, so a killed process
loses none; fsync'd within ``AuditSpoolSyncMillis``), then aggregated in memory per token and study. A
background thread adds the aggregate to PostgreSQL every ``flush_seconds`` in one transaction that also
moves the spool's high-water mark (store/spool_replay.py): the in-memory aggregate is the fast path, the
spool the durable record until that commit. After a restart, or a flush that failed (PostgreSQL away), the
counts are rebuilt from the spool instead, so each request is counted exactly once. A read that cannot be
written to the spool (disk full) is refused by the viewer gate rather than served unaudited.
``flush()`` also runs when Orthanc stops. Without a spool (unit tests): memory only, as before.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

from ..core.audit_record import ACCESS
from ..store.audit_spool import AuditSpool, Snapshot
from ..store.viewer_tokens import AccessCount, add_access

FAILURE_LOG_SECONDS = 60.0  # a failing spool is logged once a minute, not once per frame

# Adds the counts of spool records first..snapshot.last_seq to PostgreSQL (store/spool_replay.apply_access).
ApplySpooled = Callable[[list[AccessCount], int, Snapshot], int]


class AccessLog:
    def __init__(self, write: Callable[[Iterable[AccessCount]], None], *, flush_seconds: float = 5.0,
                 log_error: Callable[[str], None] = print, clock: Callable[[], float] = time.time,
                 spool: AuditSpool | None = None, apply_spooled: ApplySpooled | None = None) -> None:
        self._write = write
        self._flush_seconds = flush_seconds
        self._log_error = log_error
        self._clock = clock
        self._pending: dict[tuple[str, str], AccessCount] = {}
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._spool = spool
        self._apply = apply_spooled
        if (spool is None) != (apply_spooled is None):
            raise ValueError("a spool needs its apply_spooled, and the other way round")
        self._first = spool.last_seq() + 1 if spool is not None else 0  # the first record in _pending
        self._failure_logged = float("-inf")

    def record(self, token_id: str, subject: str, study_uid: str, *, allowed: bool, size: int = 0) -> bool:
        """Count one request; False when it could not be put on durable record (the spool's disk failed):
        the caller refuses a read it cannot audit (app/dicomweb_gate.py)."""
        now = self._clock()
        with self._lock:  # spool order is the aggregate's order: a flush covers records first..last exactly
            if self._spool is not None:
                try:
                    self._spool.append(ACCESS, [token_id, study_uid, subject, now, allowed, size])
                except OSError as exc:
                    if now - self._failure_logged > FAILURE_LOG_SECONDS:
                        self._failure_logged = now
                        self._log_error(f"ehr-imaging: viewer access not written to the audit spool ({exc.strerror});"
                                        " viewer reads are refused until it can be")
                    return False
            add_access(self._pending, token_id, study_uid, subject, now, allowed=allowed, size=size)
        return True

    def flush(self) -> int:
        """Write what is pending; the number of token-and-study counts (or spool records) written."""
        if self._spool is not None and self._apply is not None:
            return self._flush_spooled(self._spool, self._apply)
        with self._flush_lock:
            with self._lock:
                batch, self._pending = self._pending, {}
            if not batch:
                return 0
            try:
                self._write(batch.values())
            except Exception:
                with self._lock:  # put it back, merged with what arrived meanwhile
                    for key, count in batch.items():
                        self._pending[key] = _merge(count, self._pending.get(key))
                raise
            return len(batch)

    def _flush_spooled(self, spool: AuditSpool, apply: ApplySpooled) -> int:
        with self._flush_lock:
            with self._lock:
                if not self._pending and not spool.behind():
                    return 0
                batch, self._pending = self._pending, {}
                first, snapshot = self._first, spool.snapshot()
                self._first = snapshot.last_seq + 1
            # On failure the batch is dropped: the spool holds it, and the next flush reads it back from there.
            return apply(list(batch.values()), first, snapshot)

    def start(self) -> None:
        threading.Thread(target=self._run, name="ehr-viewer-access-log", daemon=True).start()

    def _run(self) -> None:
        while True:
            time.sleep(self._flush_seconds)
            try:
                self.flush()
            except Exception as exc:  # noqa: BLE001 - kept for the next attempt
                self._log_error(f"ehr-imaging: viewer access log not written yet ({type(exc).__name__}); will retry")


def _merge(old: AccessCount, new: AccessCount | None) -> AccessCount:
    if new is None:
        return old
    return AccessCount(old.token_id, old.study_uid, old.subject, min(old.first_at, new.first_at),
                       max(old.last_at, new.last_at), old.requests + new.requests, old.denied + new.denied,
                       old.bytes + new.bytes)
