"""``api.http_strict``: request heads two parsers could read differently are refused (RFC 9112)."""

from __future__ import annotations

import pytest

from ehr_imaging.api.http_strict import Head, Refusal, check_head

MB = 1024 * 1024


def head(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def test_a_plain_request_passes() -> None:
    verdict = check_head(head("POST /api/v1/dicom/upload?x=1 HTTP/1.1", "Host: x", "Content-Length: 20",
                              "X-Empty:", "X-Tab:\tv\t"), MB)
    assert verdict == Head("POST", "1.1", 20)


def test_http_1_0_needs_no_host() -> None:
    assert check_head(head("GET / HTTP/1.0"), MB) == Head("GET", "1.0", 0)


@pytest.mark.parametrize(("lines", "status", "detail"), [
    (("POST / HTTP/1.1", "Host: x", "Content-Length: 0", "Content-Length: 40"), 400, "more than one content-length"),
    (("POST / HTTP/1.1", "Host: x", "Content-Length: 3", "content-length: 3"), 400, "more than one content-length"),
    (("POST / HTTP/1.1", "Host: x", "Content-Length: 2_0"), 400, "invalid Content-Length"),
    (("POST / HTTP/1.1", "Host: x", "Content-Length: +20"), 400, "invalid Content-Length"),
    (("POST / HTTP/1.1", "Host: x", "Content-Length: 20, 20"), 400, "invalid Content-Length"),
    (("POST / HTTP/1.1", "Host: x", "Content-Length: 0x14"), 400, "invalid Content-Length"),
    (("POST / HTTP/1.1", "Host: x", "Content-Length: "), 400, "invalid Content-Length"),
    (("POST / HTTP/1.1", "Host: x", "Transfer-Encoding : chunked"), 400, "malformed header field"),
    (("POST / HTTP/1.1", "Host: x", "Transfer-Encoding\t: chunked"), 400, "malformed header field"),
    (("GET / HTTP/1.1", "Host: x", "X-A: a", "  folded"), 400, "obsolete line folding"),
    (("GET / HTTP/1.1", "Host: x", "X-A: a", "\tTransfer-Encoding: chunked"), 400, "obsolete line folding"),
    (("GET / HTTP/1.1", " Host: x"), 400, "obsolete line folding"),
    (("GET /",), 400, "HTTP/0.9"),
    (("GET / HTTP/2.0", "Host: x"), 505, "HTTP/2.0"),
    (("GET / HTTP/1.1",), 400, "Host"),
    (("GET / HTTP/1.1", "Host: a", "Host: b"), 400, "more than one host"),
    (("GET / HTTP/1.1", "Host: x", "Authorization: Bearer a", "Authorization: Bearer b"), 400, "authorization"),
    (("get / HTTP/1.1", "Host: x"), 400, "request line"),
    (("GET  / HTTP/1.1", "Host: x"), 400, "request line"),
    (("GET / HTTP/1.1 ", "Host: x"), 400, "request line"),
    (("GET http://x/ HTTP/1.1", "Host: x"), 400, "origin-form"),
    (("GET / HTTP/1.1", "Host: x", "X-A: a\x00b"), 400, "malformed header field"),
    (("GET / HTTP/1.1", "Host: x", "X A: b"), 400, "malformed header field"),
    (("GET / HTTP/1.1", "Host: x", ": b"), 400, "malformed header field"),
    (("POST / HTTP/1.1", "Host: x", "Transfer-Encoding: chunked"), 411, "Content-Length"),
    (("POST / HTTP/1.0", "Transfer-Encoding: chunked", "Content-Length: 5"), 411, "Content-Length"),
    (("POST / HTTP/1.1", "Host: x", "Content-Length: 1048577"), 413, "larger than 1 MB"),
])
def test_smuggling_shapes_are_refused(lines: tuple[str, ...], status: int, detail: str) -> None:
    verdict = check_head(head(*lines), MB)
    assert isinstance(verdict, Refusal), verdict
    assert verdict.status == status
    assert detail.lower() in verdict.detail.lower()


@pytest.mark.parametrize("raw", [b"GET / HTTP/1.1\nHost: x\r\n\r\n", b"GET / HTTP/1.1\r\nHost: x\rX: y\r\n\r\n",
                                 b"GET / HTTP/1.1\r\nHost: x\r\r\n\r\n"])
def test_bare_cr_or_lf_is_refused(raw: bytes) -> None:
    verdict = check_head(raw, MB)
    assert isinstance(verdict, Refusal) and verdict.status == 400 and "CRLF" in verdict.detail


def test_exactly_the_limit_is_allowed() -> None:
    assert check_head(head("POST / HTTP/1.1", "Host: x", f"Content-Length: {MB}"), MB) == Head("POST", "1.1", MB)
