"""The API port's TLS and the plain-HTTP redirect port, in this process with a tiny router (no Orthanc).

The listener's guarantees over HTTPS (``tls_channel.py``): a handshake that never comes is a head that never
arrives, plain HTTP to the TLS port gets nothing, the 413 comes before the body is read, the per-address
cap, a stalled reader is cut off, large raw bodies are spooled and forms parsed as over HTTP. The redirect
port: every method answered 308 to HTTPS at the end of the head, no body read, nothing else served.
"""

from __future__ import annotations

import json
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from ehr_imaging.api.api_server import Limits
from ehr_imaging.api.downloads import DownloadSlots
from ehr_imaging.api.listener import ApiListener
from ehr_imaging.api.redirect import RedirectListener
from ehr_imaging.api.router import PUBLIC, Request, Response, Router, json_response
from ehr_imaging.api.tls_channel import server_context
from ehr_imaging.core.auth import Authenticator, BasicAuthenticator
from ehr_stack.certs import TlsFiles, ensure_certificates
from tests.integration.raw_http import Endpoint, until_closed
from tests.waiting import eventually

pytestmark = pytest.mark.integration
API = "/api/v1/dicom"
SLOTS = DownloadSlots(1)
PER_ADDRESS = 3


def _stream(request: Request) -> Response:
    def chunks() -> Iterator[bytes]:
        for _ in range(256):  # 256 MB: far more than any socket buffer holds
            yield b"z" * (1024 * 1024)

    return Response(stream=SLOTS.take().hold(chunks()), content_type="application/zip")


def _body(request: Request) -> Response:
    size = request.body_path.stat().st_size if request.body_path else len(request.body)
    return json_response({"size": size, "spooled": request.body_path is not None,
                          "files": {f.field: f.size for f in request.files}, "form": request.form, "tls": request.tls})


@dataclass
class Servers:
    files: TlsFiles
    api: Endpoint  # HTTPS
    redirect: int  # plain HTTP, redirects only
    errors: list[str]

    @property
    def https(self) -> str:
        return f"https://127.0.0.1:{self.api.port}"


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    files = ensure_certificates(Path(tmp_path_factory.mktemp("tls")), ["127.0.0.1", "localhost"])
    router = Router(Authenticator(users=None, admins=BasicAuthenticator({}), sessions=None),  # type: ignore[arg-type]
                    lambda message: None)  # public routes only: never asked
    router.add("GET", f"{API}/echo", lambda r: json_response({"query": r.query, "tls": r.tls}), roles=PUBLIC)
    router.add("POST", f"{API}/body", _body, roles=PUBLIC)
    router.add("GET", f"{API}/stream", _stream, roles=PUBLIC)
    errors: list[str] = []
    limits = Limits(max_body_bytes=64 * 1024 * 1024, header_timeout=2, idle_timeout=3, per_address=PER_ADDRESS,
                    threads=2)
    listener = ApiListener(router, host="127.0.0.1", port=0, max_body_bytes=limits.max_body_bytes,
                           log_error=errors.append, limits=limits, tls_context=server_context(str(files.server_pem)))
    listener.start()
    redirect = RedirectListener(host="127.0.0.1", port=0, api_base=f"https://127.0.0.1:{listener.port}",
                                public_base="https://pacs.example:8042", log_error=errors.append,
                                limits=Limits(max_body_bytes=0, header_timeout=2, per_address=PER_ADDRESS, threads=1))
    redirect.start()
    client = ssl.create_default_context(cafile=str(files.ca_file))
    yield Servers(files, Endpoint(listener.port, client), redirect.port, errors)
    redirect.stop()
    listener.stop()


def _get(servers: Servers, path: str, **kwargs: object) -> requests.Response:
    return requests.get(servers.https + path, verify=str(servers.files.ca_file), timeout=30, **kwargs)  # type: ignore[arg-type]


def _read_all(sock: socket.socket) -> bytes:
    received = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, ssl.SSLEOFError):
            return received
        if not chunk:
            return received
        received += chunk


# --- the API port over TLS -----------------------------------------------------------------------------
def test_requests_verified_against_the_ca_are_answered(servers: Servers) -> None:
    answer = _get(servers, f"{API}/echo?a=1")
    assert answer.status_code == 200
    assert answer.json() == {"query": {"a": "1"}, "tls": True}


def test_a_client_that_does_not_trust_the_ca_gets_nothing(servers: Servers) -> None:
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(servers.https + f"{API}/echo", verify=True, timeout=10)  # the system's CAs only


def test_plain_http_to_the_tls_port_gets_no_answer(servers: Servers) -> None:
    with Endpoint(servers.api.port).connect() as sock:
        sock.sendall(b"GET /api/v1/dicom/echo?secret=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        received = _read_all(sock)
    assert b"HTTP/" not in received and b"secret" not in received, received


def test_a_handshake_that_never_comes_is_cut_at_the_head_deadline(servers: Servers) -> None:
    started = time.monotonic()
    with Endpoint(servers.api.port).connect(timeout=10) as sock:
        received = _read_all(sock)  # sends nothing at all
    assert received == b""
    assert 1.5 <= time.monotonic() - started < 5


def test_a_head_trickling_past_the_deadline_is_answered_408_over_tls(servers: Servers) -> None:
    with servers.api.connect(timeout=1) as sock:
        sock.sendall(b"GET /api/v1/dicom/echo HTTP/1.1\r\nHost: x\r\n")
        received, elapsed = until_closed(sock, b"X-Slow: 1\r\n", 15)
    assert 1.5 <= elapsed < 5, elapsed
    assert received.startswith(b"HTTP/1.1 408 ") and b"did not arrive within 2 s" in received, received


def test_an_oversized_body_is_refused_on_its_head_over_tls(servers: Servers) -> None:
    with servers.api.connect(timeout=5) as sock:
        sock.sendall(b"POST /api/v1/dicom/body HTTP/1.1\r\nHost: x\r\nContent-Type: application/dicom\r\n"
                     b"Content-Length: 53687091200\r\n\r\n")  # 50 GB announced, none sent
        answer = _read_all(sock)
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["detail"].startswith("request body larger than")


def test_a_large_raw_body_is_spooled_and_a_form_parsed_over_tls(servers: Servers) -> None:
    ca = str(servers.files.ca_file)
    raw = requests.post(servers.https + f"{API}/body", data=b"r" * (20 * 1024 * 1024), verify=ca, timeout=60,
                        headers={"Content-Type": "application/dicom"})
    assert raw.status_code == 200
    assert (raw.json()["size"], raw.json()["spooled"]) == (20 * 1024 * 1024, True)
    form = requests.post(servers.https + f"{API}/body", data={"order_id": "o-1"}, verify=ca, timeout=60,
                         files={"file": ("a.dcm", b"d" * 3_000_000, "application/dicom")})
    assert form.status_code == 200
    assert form.json()["files"] == {"file": 3_000_000} and form.json()["form"] == {"order_id": "o-1"}


def test_connections_beyond_the_per_address_cap_are_closed_over_tls(servers: Servers) -> None:
    held = [servers.api.connect(source="127.0.3.1") for _ in range(PER_ADDRESS)]  # each has done its handshake
    try:
        with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):  # closed before a handshake
            servers.api.connect(source="127.0.3.1").close()
        with servers.api.connect(source="127.0.3.2") as other:  # another address is served
            other.sendall(b"GET /api/v1/dicom/echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert _read_all(other).startswith(b"HTTP/1.1 200 ")
    finally:
        for sock in held:
            sock.close()


def test_a_stalled_reader_over_tls_is_cut_off_and_its_slot_given_back(servers: Servers) -> None:
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)  # before connect: the window stays small
    stalled.settimeout(10)
    stalled.connect(("127.0.0.1", servers.api.port))
    assert servers.api.tls is not None
    with servers.api.tls.wrap_socket(stalled, server_hostname="127.0.0.1") as tls:
        tls.sendall(b"GET /api/v1/dicom/stream HTTP/1.1\r\nHost: x\r\n\r\n")
        assert tls.recv(65536).startswith(b"HTTP/1.1 200 ")  # it has begun; now it reads nothing more
        started = time.monotonic()

        def slot_free() -> bool:
            with servers.api.connect(timeout=5) as probe:
                probe.sendall(b"GET /api/v1/dicom/stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                head = probe.recv(12)
            assert head in (b"HTTP/1.1 200", b"HTTP/1.1 503"), head
            return head == b"HTTP/1.1 200"

        eventually(slot_free, timeout=20, what="the stalled reader's slot to be free", interval=0.5)
        assert 1 < time.monotonic() - started < 12  # the idle timeout (3 s) cut it, not the end of 256 MB


# --- the redirect port ---------------------------------------------------------------------------------
def _raw_redirect(servers: Servers, request: bytes) -> tuple[bytes, bytes]:
    with Endpoint(servers.redirect).connect(timeout=5) as sock:
        sock.sendall(request)
        head, _, body = _read_all(sock).partition(b"\r\n\r\n")  # _read_all: it closes after the answer
    return head, body


@pytest.mark.parametrize("method", ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
def test_every_method_on_the_plain_port_gets_only_a_redirect(servers: Servers, method: str) -> None:
    answer = requests.request(method, f"http://127.0.0.1:{servers.redirect}{API}/echo?a=1&b=2", timeout=10,
                              data=b"secret=1" if method not in ("GET", "HEAD") else None, allow_redirects=False)
    assert answer.status_code == 308
    assert answer.headers["Location"] == f"{servers.https}{API}/echo?a=1&b=2"
    assert answer.headers["Connection"] == "close"
    if method == "HEAD":
        assert answer.content == b""
    else:
        assert answer.json() == {"detail": "this port serves no data: use HTTPS",
                                 "location": answer.headers["Location"]}


def test_a_redirect_followed_lands_on_https_with_the_same_request(servers: Servers) -> None:
    answer = requests.get(f"http://127.0.0.1:{servers.redirect}{API}/echo?n=7", timeout=10,
                          verify=str(servers.files.ca_file))
    assert [hop.status_code for hop in answer.history] == [308]
    assert answer.status_code == 200
    assert answer.json() == {"query": {"n": "7"}, "tls": True}


def test_paths_outside_the_api_go_to_the_public_https_url(servers: Servers) -> None:
    head, _ = _raw_redirect(servers, b"GET /ohif/viewer?StudyInstanceUIDs=1.2 HTTP/1.1\r\nHost: evil.example\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 308 ")
    assert b"\r\nLocation: https://pacs.example:8042/ohif/viewer?StudyInstanceUIDs=1.2" in head  # not the Host


def test_the_redirect_never_reads_a_body(servers: Servers) -> None:
    """A body announced but never sent: answered at once (so nothing of a body is ever taken in)."""
    started = time.monotonic()
    head, body = _raw_redirect(servers, b"POST /api/v1/dicom/upload HTTP/1.1\r\nHost: x\r\n"
                                        b"Content-Type: application/dicom\r\nContent-Length: 53687091200\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 308 ") and time.monotonic() - started < 1.5
    assert json.loads(body)["location"] == f"{servers.https}{API}/upload"


def test_a_pipelined_request_behind_a_redirect_is_not_served(servers: Servers) -> None:
    head, body = _raw_redirect(servers, b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 308 ") and b"HTTP/1.1" not in body  # one answer, then closed


def test_the_redirect_port_keeps_the_strict_head_check(servers: Servers) -> None:
    head, body = _raw_redirect(servers, b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 411 ") and b"Location" not in head
    assert json.loads(body)["detail"].startswith("send a Content-Length")


def test_nothing_was_logged_as_an_error(servers: Servers) -> None:
    assert not [e for e in servers.errors if "Traceback" in e or "internal error" in e], servers.errors
