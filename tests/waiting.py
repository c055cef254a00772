"""The one wait of the test suite: ``eventually(check)`` polls until the check holds, or fails naming what it awaited.

Tests wait for a positive signal (a row recorded, a job finished, a study stable), never for a fixed time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(check: Callable[[], T | None], *, timeout: float, what: str, interval: float = 0.3) -> T:
    """Call ``check`` until it returns something other than None or False (returned), at most ``timeout``
    seconds. An AssertionError raised by ``check`` counts as "not yet" too (and is quoted if time runs out).
    Fails with an AssertionError saying what was awaited, for how long, and the last thing seen."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = check()
        except AssertionError as exc:
            value, last = None, exc
        else:
            last = value
        if value is not None and value is not False:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s (last seen: {last!r:.500})")
        time.sleep(interval)
