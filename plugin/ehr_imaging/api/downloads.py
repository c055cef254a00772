"""Limits of study downloads: how many at once (both ports), and how large on Orthanc's port.

orthanc-python 4.0 has no streaming answer for a plain body (``RestOutput`` offers ``AnswerBuffer`` and, for
``multipart/related`` only, ``StartMultipartAnswer``/``SendMultipartItem``): on Orthanc's port a ZIP is built
whole in memory before it is sent. So a study larger than ``MaxOrthancPortDownloadMb`` is refused there
(413, pointing to the API port, which streams it), and at most ``MaxConcurrentDownloads`` ZIPs are being
built or sent at once (503 with ``Retry-After`` beyond): a slot is taken before the first byte and given
back when the answer has been sent, cut, or dropped.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator

from ..core import errors
from .router import Request

RETRY_AFTER_SECONDS = 5


class DownloadSlots:
    """A counting limit whose slots travel with the answer they were taken for."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._free = threading.BoundedSemaphore(limit)

    def take(self) -> Slot:
        if not self._free.acquire(blocking=False):
            raise errors.Unavailable(f"{self.limit} study downloads are already under way; retry shortly",
                                     RETRY_AFTER_SECONDS)
        return Slot(self._free)


class Slot:
    """Given back once, by ``release`` (idempotent), at the end of ``hold``'s stream, or when collected."""

    def __init__(self, free: threading.BoundedSemaphore) -> None:
        self._free: threading.BoundedSemaphore | None = free
        self._lock = threading.Lock()

    def release(self) -> None:
        with self._lock:
            free, self._free = self._free, None
        if free is not None:
            free.release()

    def hold(self, stream: Iterable[bytes]) -> HeldStream:
        return HeldStream(stream, self)

    def __del__(self) -> None:
        self.release()


class HeldStream:
    """A stream that gives its slot back when it ends, fails, or is closed unread (WSGI calls ``close``)."""

    def __init__(self, stream: Iterable[bytes], slot: Slot) -> None:
        self._stream = stream
        self._slot = slot

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._stream
        finally:
            self._slot.release()

    def close(self) -> None:
        close = getattr(self._stream, "close", None)
        try:
            if close is not None:
                close()
        finally:
            self._slot.release()


def refuse_if_too_large_here(request: Request, size_bytes: int, limit_mb: int, api_port: int) -> None:
    """On Orthanc's port (no streaming there), 413 for a study over ``limit_mb``, naming where to get it."""
    if request.can_stream or size_bytes <= limit_mb * 1024 * 1024:
        return
    where = (f"the plugin's API port {api_port}: GET {request.path} there, streamed" if api_port
             else "the plugin's API port (ApiPort, not enabled on this node: ask the administrator)")
    size_mb = -(-size_bytes // (1024 * 1024))
    raise errors.TooLarge(f"the study is {size_mb} MB; Orthanc's port serves downloads up to {limit_mb} MB "
                          f"(MaxOrthancPortDownloadMb): download it from {where}")
