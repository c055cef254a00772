"""A ``multipart/form-data`` body held whole, split into its parts without copying them (the API port's fast path).

waitress has the whole body before the handler runs (in memory, or in a temporary file the listener maps into
memory), so its parts are found with ``find`` over one buffer and handed on as views of it: no per-part copy,
no temporary file per part. Only the plainest shape is read here, the one browsers and HTTP libraries send:
the body starts with the delimiter, each part has a ``Content-Disposition`` with a ``name`` (and at most a
``Content-Type``), parts end at the next delimiter, the closing delimiter is there. Anything else, well-formed
or not, gets ``None``: the listener then hands the body to python-multipart, which reads it or refuses it as
it always did, so every refusal stays python-multipart's (``tests/unit/test_form_parts.py`` compares the two
on valid and broken bodies).
"""

from __future__ import annotations

import mmap
import re
from dataclasses import dataclass

from python_multipart.multipart import parse_options_header

Whole = bytes | mmap.mmap

# python-multipart's own bounds (MAX_HEADER_COUNT, MAX_HEADER_SIZE): beyond them it refuses; here, it decides.
MAX_HEADERS = 8
MAX_HEADER_LINE = 4096
HEADERS = frozenset({b"content-disposition", b"content-type"})
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


@dataclass(frozen=True)
class Part:
    field: bytes  # the ``name`` of its Content-Disposition
    file_name: bytes | None  # its ``filename``; None: a text field
    content_type: str | None
    content: memoryview  # a view of the body, not a copy


def split(data: Whole, boundary: bytes) -> list[Part] | None:
    """The parts of ``data`` (the whole request body: bytes, or a memory map of it) in order, or None when it is
    not in the plain shape above (then python-multipart decides)."""
    if not boundary or len(boundary) > 200:
        return None
    delimiter = b"--" + boundary
    separator = b"\r\n" + delimiter
    if data[:len(delimiter) + 2] != delimiter + b"\r\n":
        return None
    view = memoryview(data)
    parts: list[Part] = []
    at = len(delimiter) + 2
    while True:
        head_end = data.find(b"\r\n\r\n", at)
        if head_end < 0 or head_end - at > MAX_HEADERS * (MAX_HEADER_LINE + 2) or data[at:at + 2] == b"\r\n":
            return None
        head = data[at:head_end]
        if separator in head:
            return None
        part = _part(head)
        if part is None:
            return None
        start = head_end + 4
        end = data.find(separator, start)
        if end < 0:
            return None
        after = data[end + len(separator):end + len(separator) + 2]
        parts.append(Part(part[0], part[1], part[2], view[start:end]))
        if after == b"--":
            return parts
        if after != b"\r\n":
            return None
        at = end + len(separator) + 2


def _part(head: bytes) -> tuple[bytes, bytes | None, str | None] | None:
    """(field name, file name, content type) from a part's header lines, as python-multipart reads them."""
    lines = head.split(b"\r\n")
    if len(lines) > MAX_HEADERS:
        return None
    headers: dict[bytes, bytes] = {}
    for line in lines:
        name, colon, value = line.partition(b":")
        if (not colon or len(line) > MAX_HEADER_LINE or b"\r" in line or b"\n" in line
                or _TOKEN.fullmatch(name) is None):
            return None
        key = name.lower()
        if key not in HEADERS or key in headers:
            return None
        headers[key] = value.strip(b" \t")
    disposition = headers.get(b"content-disposition")
    if disposition is None:
        return None
    _, options = parse_options_header(disposition)
    field = options.get(b"name")
    if field is None:
        return None
    content_type = headers.get(b"content-type")
    return field, options.get(b"filename"), content_type.decode("latin-1") if content_type is not None else None
