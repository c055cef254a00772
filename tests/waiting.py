"""The one wait of the test suite: ``eventually(check)`` polls until the check holds, or fails naming what it
awaited. Tests wait for a positive signal (a row recorded, a job finished, a study stable), never a fixed time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(check: Callable[[], T | None], *, timeout: float, what: str, interval: float = 0.3) -> T:
    """Call ``check`` until it returns something other than None or False, and return that; at most ``timeout``
    seconds, then fail with an AssertionError naming ``what`` was awaited and the last value seen. An
    exception raised by ``check`` (an assertion on an intermediate answer) fails at once: it is not retried."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value is not None and value is not False:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"waited {timeout:g} s for {what}; last seen: {value!r}")
        time.sleep(interval)
