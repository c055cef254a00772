"""A ZIP written as it is sent: one member at a time, never the whole archive in memory.

``zipfile`` writes to a non-seekable stream with data descriptors, so each member's bytes can leave as
soon as they are written; the caller supplies the members lazily (a file is read only when its turn
comes). Members are stored, not deflated: DICOM pixel data barely compresses and deflating costs CPU
on Orthanc's threads.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable, Iterable, Iterator


class _Sink(io.RawIOBase):
    """A write-only, non-seekable stream whose bytes are taken out after each write."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._written = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self._chunks.append(bytes(data))
        self._written += len(data)
        return len(data)

    def tell(self) -> int:
        return self._written

    def take(self) -> bytes:
        out, self._chunks = b"".join(self._chunks), []
        return out


def zip_stream(members: Iterable[tuple[str, Callable[[], bytes]]]) -> Iterator[bytes]:
    """Chunks of a ZIP of ``(name, read)`` members, in order; ``read`` is called when the member is written."""
    sink = _Sink()
    with zipfile.ZipFile(sink, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, read in members:
            with archive.open(name, mode="w", force_zip64=True) as member:
                member.write(read())
            yield sink.take()
    yield sink.take()


def safe_member_name(*parts: str) -> str:
    """A member path from free text (series descriptions...): no separators, dots or controls inside parts."""
    cleaned = []
    for part in parts:
        text = "".join(ch if ch.isalnum() or ch in " -_." else "_" for ch in part).strip(" .") or "_"
        cleaned.append(text[:100])  # a UID (64) with its instance number and extension fits
    return "/".join(cleaned)
