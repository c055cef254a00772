"""A bounded, in-memory limiter of failed sign-ins (admin HTTP basic), per user name and per address.

``max_failures`` failures of one key within ``window_seconds`` lock that key for ``lockout_seconds``;
a success clears the user's count. At most ``max_keys`` keys are tracked (the oldest are forgotten),
so a flood of made-up user names or addresses cannot grow it without bound. Per node, not shared:
an attacker who spreads attempts over N nodes gets N times the budget, still a bounded one.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field


@dataclass
class _Entry:
    failures: list[float] = field(default_factory=list)
    locked_until: float = 0.0


class FailureLimiter:
    def __init__(self, *, max_failures: int = 10, window_seconds: float = 300.0, lockout_seconds: float = 300.0,
                 max_keys: int = 10000, clock: Callable[[], float] = time.monotonic) -> None:
        if max_failures < 1:
            raise ValueError("max_failures must be at least 1")
        self.max_failures = max_failures
        self.window = window_seconds
        self.lockout = lockout_seconds
        self._max_keys = max_keys
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def locked(self, keys: Iterable[str]) -> bool:
        """Is any of these keys (``user:x``, ``ip:y``) locked out now?"""
        now = self._clock()
        with self._lock:
            return any((entry := self._entries.get(key)) is not None and entry.locked_until > now for key in keys)

    def failed(self, keys: Iterable[str]) -> None:
        now = self._clock()
        with self._lock:
            for key in keys:
                entry = self._entries.pop(key, None) or _Entry()
                entry.failures = [t for t in entry.failures if t > now - self.window] + [now]
                if len(entry.failures) >= self.max_failures:
                    entry.locked_until = now + self.lockout
                    entry.failures = []
                self._entries[key] = entry
            while len(self._entries) > self._max_keys:
                self._entries.popitem(last=False)

    def succeeded(self, keys: Iterable[str]) -> None:
        with self._lock:
            for key in keys:
                self._entries.pop(key, None)
