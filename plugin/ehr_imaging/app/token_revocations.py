"""Revoked viewer tokens, known to every node without a database call per request.

Each node keeps the set of revoked, unexpired token ids in memory and reloads it from PostgreSQL every
``refresh_seconds``; a revocation made on this node applies at once, one made on another node within
that interval. Until the first load succeeds (PostgreSQL down at start) viewer tokens are refused:
a revocation must never be forgotten, and a viewer token can always be minted again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class RevocationList:
    def __init__(self, load: Callable[[], dict[str, float]], *, refresh_seconds: float = 5.0,
                 log_error: Callable[[str], None] = print, clock: Callable[[], float] = time.time,
                 what: str = "viewer tokens") -> None:
        self._what = what  # also used for ended admin sessions (plugin.py)
        self._load = load
        self._refresh = refresh_seconds
        self._log_error = log_error
        self._clock = clock
        self._revoked: dict[str, float] = {}
        self._loaded = threading.Event()
        self._lock = threading.Lock()

    @property
    def ready(self) -> bool:
        return self._loaded.is_set()

    def is_revoked(self, token_id: str | None) -> bool:
        """True for a revoked token, and for every token while the list has never been loaded."""
        if not self._loaded.is_set():
            return True
        return token_id is None or token_id in self._revoked

    def add(self, token_id: str, expires_at: float) -> None:
        with self._lock:
            self._revoked[token_id] = expires_at

    def refresh(self) -> None:
        loaded = self._load()
        now = self._clock()
        with self._lock:
            # Keep local revocations the database may not show yet; drop what has expired anyway.
            merged = {**{k: v for k, v in self._revoked.items() if v > now}, **loaded}
            self._revoked = merged
        self._loaded.set()

    def start(self) -> None:
        threading.Thread(target=self._run, name=f"ehr-revocations-{self._what.replace(' ', '-')}", daemon=True).start()

    def _run(self) -> None:
        failures = 0
        while True:
            try:
                self.refresh()
                failures = 0
            except Exception as exc:  # noqa: BLE001 - keep the last known list; say so once in a while
                failures += 1
                if failures in (1, 10) or failures % 100 == 0:
                    self._log_error(f"ehr-imaging: cannot reload revoked {self._what} ({type(exc).__name__})")
            # Until the first load (the schema may not exist yet at start), try again soon.
            time.sleep(self._refresh if self.ready else min(self._refresh, 0.5))
