"""A strict reading of an HTTP/1.1 request head (RFC 9112), done before the server library parses it.

A proxy in front and the API port must agree on where each request ends, or a second request can be
smuggled inside the first one's body. So every head that two reasonable parsers could read differently
is refused, not repaired: no obs-fold, no space before a field's colon, no bare CR or LF, no control
characters, no transfer coding, exactly one all-digits ``Content-Length``, exactly one ``Host`` on
HTTP/1.1, only ``HTTP/1.0`` and ``HTTP/1.1`` (HTTP/0.9 has no head to check). Pure: bytes in, a verdict out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

# RFC 9110 5.6.2 token; the method is case-sensitive and every registered one is upper case.
_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_REQUEST_LINE = re.compile(rb"(?P<method>[!#$%&'*+\-.^_`|~0-9A-Z]+) (?P<target>[\x21-\x7e]+) HTTP/(?P<version>\d\.\d)")
_FIELD = re.compile(rb"(?P<name>" + _TOKEN + rb"):[ \t]*(?P<value>[^\x00-\x08\x0a-\x1f\x7f]*?)[ \t]*")
_DIGITS = re.compile(rb"[0-9]{1,18}")
# Fields a request carries at most once: a second copy is how two parsers come to disagree.
_SINGLE = frozenset({b"host", b"content-length", b"content-type", b"authorization", b"transfer-encoding"})


@dataclass(frozen=True)
class Refusal:
    """Why a request head is refused: the status to answer (then the connection closes) and a detail."""

    status: int
    detail: str
    headers: Mapping[str, str] = field(default_factory=dict)  # sent with the answer (Retry-After)


@dataclass(frozen=True)
class Head:
    """What the strict reading found (the server library still does its own parse)."""

    method: str
    version: str
    content_length: int


def check_head(head: bytes, max_body_bytes: int) -> Head | Refusal:
    """The head (request line and fields, up to the blank line that ends it), read strictly."""
    head = head[:-4] if head.endswith(b"\r\n\r\n") else head.removesuffix(b"\r\n")
    if b"\n" in head.replace(b"\r\n", b"") or b"\r" in head.replace(b"\r\n", b""):
        return Refusal(400, "bare CR or LF in the request head: lines end with CRLF")
    request_line, *lines = head.split(b"\r\n")
    match = _REQUEST_LINE.fullmatch(request_line)
    if match is None:
        if re.fullmatch(rb"[A-Z]+ [\x21-\x7e]+", request_line):
            return Refusal(400, "HTTP/0.9 requests are not served: send HTTP/1.1")
        return Refusal(400, "malformed request line")
    version = match["version"].decode()
    if version not in ("1.0", "1.1"):
        return Refusal(505, f"HTTP/{version} is not supported: send HTTP/1.1")
    if not match["target"].startswith(b"/"):
        return Refusal(400, "the request target must be a path (origin-form)")
    seen: dict[bytes, bytes] = {}
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            return Refusal(400, "obsolete line folding in the request head")
        field = _FIELD.fullmatch(line)
        if field is None:
            return Refusal(400, "malformed header field (a name, a colon right after it, then the value)")
        name = field["name"].lower()
        if name in seen and name in _SINGLE:
            return Refusal(400, f"more than one {name.decode()} header")
        seen[name] = field["value"]
    if b"transfer-encoding" in seen:
        # Any coding, not only chunked: a proxy might frame the body by it while we go by Content-Length.
        return Refusal(411, "send a Content-Length (transfer codings are not accepted)")
    if version == "1.1" and not seen.get(b"host"):
        return Refusal(400, "HTTP/1.1 requests need one Host header")
    length = 0
    if b"content-length" in seen:
        if not _DIGITS.fullmatch(seen[b"content-length"]):
            return Refusal(400, "invalid Content-Length: digits only")
        length = int(seen[b"content-length"])
    if length > max_body_bytes:
        return Refusal(413, f"request body larger than {max_body_bytes // (1024 * 1024)} MB")
    return Head(match["method"].decode(), version, length)
