"""The viewer access audit: who (token subject) read which study, when, how many requests and bytes.

The HTTP filter records every viewer request here, in memory, aggregated per token and study; a
background thread adds the counts to PostgreSQL every ``flush_seconds`` in one transaction (an upsert
per token and study, never a row per frame). While PostgreSQL is down the counts stay here and are
added on the next successful flush, so none is lost short of the process dying (then at most one
interval's counts). ``flush()`` also runs when Orthanc stops.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

from ..store.viewer_tokens import AccessCount


class AccessLog:
    def __init__(self, write: Callable[[Iterable[AccessCount]], None], *, flush_seconds: float = 5.0,
                 log_error: Callable[[str], None] = print, clock: Callable[[], float] = time.time) -> None:
        self._write = write
        self._flush_seconds = flush_seconds
        self._log_error = log_error
        self._clock = clock
        self._pending: dict[tuple[str, str], AccessCount] = {}
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()

    def record(self, token_id: str, subject: str, study_uid: str, *, allowed: bool, size: int = 0) -> None:
        now = self._clock()
        key = (token_id, study_uid)
        with self._lock:
            old = self._pending.get(key)
            self._pending[key] = AccessCount(
                token_id, study_uid, subject,
                first_at=old.first_at if old else now, last_at=now,
                requests=(old.requests if old else 0) + (1 if allowed else 0),
                denied=(old.denied if old else 0) + (0 if allowed else 1),
                bytes=(old.bytes if old else 0) + (size if allowed else 0),
            )

    def flush(self) -> int:
        """Write what is pending; on failure put it back (merged with what arrived meanwhile)."""
        with self._flush_lock:
            with self._lock:
                batch, self._pending = self._pending, {}
            if not batch:
                return 0
            try:
                self._write(batch.values())
            except Exception:
                with self._lock:
                    for key, count in batch.items():
                        self._pending[key] = _merge(count, self._pending.get(key))
                raise
            return len(batch)

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
