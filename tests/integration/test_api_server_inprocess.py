"""The API port's server (waitress + our checks) in this process, with a tiny router: no Orthanc needed.

What the real-stack tests cannot easily reach: pipelined requests, waitress's own refusals answered as
JSON, a streamed answer that fails half-way, and the slot of a download that is never read. Each runs
twice: over plain HTTP and over the listener's TLS (``ApiTlsCertificateFile``), which must change nothing.
"""

from __future__ import annotations

import json
import re
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from ehr_imaging.api.api_server import Limits
from ehr_imaging.api.downloads import DownloadSlots
from ehr_imaging.api.listener import ApiListener
from ehr_imaging.api.router import PUBLIC, Request, Response, Router, json_response
from ehr_imaging.api.tls_channel import server_context
from ehr_imaging.core.auth import Authenticator, BasicAuthenticator
from ehr_stack.certs import ensure_certificates
from tests.integration.raw_http import Endpoint
from tests.waiting import eventually

pytestmark = pytest.mark.integration
STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3}) ")  # anywhere: a second answer may follow a body
SLOTS = DownloadSlots(1)


def _stream(request: Request) -> Response:
    def chunks() -> Iterator[bytes]:
        yield b"first-"
        if request.query.get("fail"):
            raise RuntimeError("the store went away")
        yield b"second"

    return Response(stream=SLOTS.take().hold(chunks()), content_type="application/zip")


@pytest.fixture(scope="module", params=["http", "https"])
def port(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoint]:
    tls: ssl.SSLContext | None = None
    client: ssl.SSLContext | None = None
    if request.param == "https":
        files = ensure_certificates(Path(tmp_path_factory.mktemp("tls")), ["127.0.0.1"])
        tls, client = server_context(str(files.server_pem)), ssl.create_default_context(cafile=str(files.ca_file))
    router = Router(Authenticator(users=None, admins=BasicAuthenticator({}), sessions=None),  # type: ignore[arg-type]
                    lambda message: None)  # public routes only: never asked
    router.add("GET", "/api/v1/dicom/echo", lambda r: json_response({"query": r.query}), roles=PUBLIC)
    router.add("GET", "/api/v1/dicom/stream", _stream, roles=PUBLIC)
    errors: list[str] = []
    listener = ApiListener(router, host="127.0.0.1", port=0, max_body_bytes=1024 * 1024, log_error=errors.append,
                           limits=Limits(max_body_bytes=1024 * 1024, header_timeout=2, threads=2), tls_context=tls)
    listener.start()
    yield Endpoint(listener.port, client)
    listener.stop()


def _exchange(port: Endpoint, data: bytes) -> bytes:
    with port.connect(timeout=5) as sock:
        sock.sendall(data)
        received = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, ssl.SSLEOFError):  # closed with our excess unread: what came before counts
                return received
            if not chunk:
                return received
            received += chunk


def test_pipelined_requests_are_answered_in_order(port: Endpoint) -> None:
    answer = _exchange(port, b"GET /api/v1/dicom/echo?n=1 HTTP/1.1\r\nHost: x\r\n\r\n"
                             b"GET /api/v1/dicom/echo?n=2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert STATUS_LINE.findall(answer) == [b"200", b"200"], answer
    assert answer.index(b'"n": "1"') < answer.index(b'"n": "2"')


def test_waitress_refusals_are_json_too(port: Endpoint) -> None:
    answer = _exchange(port, b"GET /api/v1/dicom/echo HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n")
    assert STATUS_LINE.findall(answer) == [b"431"], answer[:200]
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"Content-Type: application/json" in head and json.loads(body)["detail"]


def test_a_stream_that_fails_half_way_is_cut_not_ended(port: Endpoint) -> None:
    answer = _exchange(port, b"GET /api/v1/dicom/stream?fail=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 ") and b"first-" in answer
    assert not answer.endswith(b"0\r\n\r\n"), answer  # no last chunk: the client knows it is truncated
    whole = _exchange(port, b"GET /api/v1/dicom/stream HTTP/1.1\r\nHost: x\r\n\r\n")
    assert whole.endswith(b"0\r\n\r\n") and b"second" in whole  # and the failed one gave its slot back


def test_the_answer_to_a_client_that_left_gives_its_slot_back(port: Endpoint) -> None:
    with port.connect(timeout=5) as sock:
        sock.sendall(b"GET /api/v1/dicom/stream HTTP/1.1\r\nHost: x\r\n\r\n")
    # Until the server has seen the first client leave, its slot answers 503 (kept alive: ask for a close).
    def slot_free() -> bool:
        answer = _exchange(port, b"GET /api/v1/dicom/stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        if answer.startswith(b"HTTP/1.1 200 "):
            return True
        assert answer.startswith(b"HTTP/1.1 503 "), answer
        return False

    eventually(slot_free, timeout=5, what="the slot of the client that left to be free", interval=0.1)
