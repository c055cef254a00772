"""Per-caller rate limits (requests per minute and bytes per minute): two token buckets per caller, pure.

Each caller (a token subject) has a bucket of requests and one of bytes, each holding at most one minute's
allowance and refilled continuously. A request is admitted when one request and its bytes are there; a
request larger than a whole minute's bytes is admitted from a full bucket and leaves a debt, so a large
file is slowed, never refused forever. A refusal says how long to wait. The clock is injected (tests), and
the state is this process's memory: the limits hold per Orthanc node.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

MB = 1024 * 1024


@dataclass
class _Buckets:
    requests: float
    size: float
    at: float


@dataclass(frozen=True)
class Refusal:
    """Why a request waits: the limit it hit and the whole seconds until it would be admitted."""

    limit: str  # "requests" or "megabytes"
    retry_after_seconds: int


class RateLimiter:
    """``requests_per_minute`` / ``megabytes_per_minute`` per caller; 0 switches that limit off."""

    def __init__(self, requests_per_minute: int, megabytes_per_minute: int, clock: Callable[[], float], *,
                 max_callers: int = 10000) -> None:
        self.requests_per_minute = requests_per_minute
        self.bytes_per_minute = megabytes_per_minute * MB
        self._clock = clock
        self._max_callers = max_callers
        self._callers: OrderedDict[str, _Buckets] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return bool(self.requests_per_minute or self.bytes_per_minute)

    def admit(self, caller: str, size: int, *, consume: bool = True) -> Refusal | None:
        """None: admitted (and counted, unless ``consume`` is False: a look before the body is read)."""
        if not self.enabled:
            return None
        with self._lock:
            buckets = self._refilled(caller)
            refusal = self._refusal(buckets, max(size, 0))
            if refusal is None and consume:
                buckets.requests -= 1
                buckets.size -= max(size, 0)
            return refusal

    def _refilled(self, caller: str) -> _Buckets:
        now = self._clock()
        buckets = self._callers.get(caller)
        if buckets is None:
            buckets = _Buckets(float(self.requests_per_minute), float(self.bytes_per_minute), now)
            self._callers[caller] = buckets
            while len(self._callers) > self._max_callers:  # the least recently seen caller is forgotten
                self._callers.popitem(last=False)
        else:
            self._callers.move_to_end(caller)
            elapsed = max(now - buckets.at, 0.0)
            buckets.requests = min(float(self.requests_per_minute),
                                   buckets.requests + elapsed * self.requests_per_minute / 60)
            buckets.size = min(float(self.bytes_per_minute), buckets.size + elapsed * self.bytes_per_minute / 60)
            buckets.at = now
        return buckets

    def _refusal(self, buckets: _Buckets, size: int) -> Refusal | None:
        if self.requests_per_minute and buckets.requests < 1:
            return Refusal("requests", _seconds(1 - buckets.requests, self.requests_per_minute / 60))
        if self.bytes_per_minute:
            needed = min(size, self.bytes_per_minute)  # a bigger request waits for a full bucket
            if buckets.size < needed:
                return Refusal("megabytes", _seconds(needed - buckets.size, self.bytes_per_minute / 60))
        return None


def _seconds(missing: float, per_second: float) -> int:
    return max(1, math.ceil(missing / per_second - 1e-9))  # 1e-9: 0.95 + 0.05 is not quite 1.0 in floats
