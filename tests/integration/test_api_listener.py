"""The plugin's own API listener: the same routes with form uploads, query strings and early size checks."""

from __future__ import annotations

import contextlib
import re
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from ehr_imaging.config import Settings
from tests.conftest import Client
from tests.dicom_factory import make_study
from tests.integration.helpers import accession, mrn, order, put_order
from tests.integration.raw_http import until_closed
from tests.waiting import eventually

pytestmark = pytest.mark.integration


def test_a_form_upload_with_its_order_links_at_once(api: Client, tmp_path: Path) -> None:
    patient = mrn()
    order_id = put_order(api, mrn=patient, accession_number=accession())
    uid, files = make_study(tmp_path, patient_id=patient, accession=None, study_date="20261120", instances=1)
    answer = api.request("POST", "/api/v1/dicom/upload", "technician", data={"order_id": order_id},
                         files={"file": ("ct.dcm", files[0].read_bytes(), "application/dicom")})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["status"], body["study_instance_uid"], body["order_id"]) == ("uploaded", uid, order_id)
    assert order(api, order_id)["match_rule"] == "explicit"


def test_the_same_routes_answer_on_both_ports(api: Client, client: Client) -> None:
    assert api.get("/api/v1/dicom/health").json()["status"] == "healthy"
    assert api.get("/api/v1/dicom/stats").status_code == 401
    via_api, via_orthanc = api.get("/api/v1/dicom/stats", "nurse"), client.get("/api/v1/dicom/stats", "nurse")
    assert via_api.json().keys() == via_orthanc.json().keys()
    assert api.get("/api/v1/dicom/orders?limit=1", "admin").json()["limit"] == 1


@pytest.mark.parametrize("path", ["/system", "/dicom-web/studies", "/app/explorer.html", "/api/v1/dicom/../../system",
                                  "/api/v1/dicom/nothing-here"])
def test_only_the_plugin_api_is_served(api: Client, path: str) -> None:
    answer = api.get(path, "admin")
    assert answer.status_code == 404
    assert answer.json()["detail"].startswith("no route")


def test_a_malformed_form_is_a_clear_400(api: Client) -> None:
    answer = api.request("POST", "/api/v1/dicom/upload", "technician", data=b"--x\r\nbroken",
                         headers={"Content-Type": "multipart/form-data; boundary=zz"})
    assert answer.status_code == 400, answer.text
    assert answer.json()["detail"]


def test_an_oversized_body_is_refused_before_it_is_read(api: Client) -> None:
    """413 answers on the headers alone: the listener never reads (nor stores) the announced 50 GB."""
    url = urlsplit(api.base)
    token = api.token("technician")
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall((f"POST /api/v1/dicom/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                      "Content-Type: application/dicom\r\nContent-Length: 53687091200\r\n\r\n").encode())
        received = b""
        while b'"}' not in received:  # the JSON detail ends the answer; it may come in several packets
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
        answer = received.decode()
    assert answer.startswith("HTTP/1.1 413"), answer
    assert '"detail"' in answer


def _raw(api: Client, data: bytes) -> bytes:
    url = urlsplit(api.base)
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(data)
        received = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:  # closed with the rest of what we sent unread: the answer came before
                return received
            if not chunk:
                return received
            received += chunk


def test_any_transfer_coding_is_refused(api: Client) -> None:
    """A body framed by a transfer coding could be framed differently by a proxy in front: refused."""
    smuggled = (b"POST /api/v1/dicom/admin/logout HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n"
                b"Content-Length: 4\r\n\r\n0\r\n\r\nGET /api/v1/dicom/health HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = _raw(api, smuggled)
    assert answer.startswith(b"HTTP/1.1 411") and answer.count(b"HTTP/1.1 ") == 1, answer


STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3}) ")  # anywhere: a smuggled answer may follow a body
SMUGGLED = b"GET /api/v1/dicom/health HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.mark.parametrize(("name", "head", "status"), [
    ("two Content-Length", b"POST /api/v1/dicom/admin/logout HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
                           b"Content-Length: 45\r\n\r\n", 400),
    ("Content-Length 2_0", b"POST /api/v1/dicom/admin/logout HTTP/1.1\r\nHost: x\r\nContent-Length: 2_0\r\n\r\n",
     400),
    ("Transfer-Encoding with a space", b"POST /api/v1/dicom/admin/logout HTTP/1.1\r\nHost: x\r\n"
                                       b"Transfer-Encoding : chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", 400),
    ("obs-fold", b"POST /api/v1/dicom/admin/logout HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nX-A: a\r\n"
                 b" Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("HTTP/0.9", b"GET /api/v1/dicom/health\r\n\r\n", 400),
    ("bare LF", b"GET /api/v1/dicom/health HTTP/1.1\nHost: x\n\n", 400),
    ("no Host on HTTP/1.1", b"GET /api/v1/dicom/health HTTP/1.1\r\n\r\n", 400),
    ("Transfer-Encoding chunked", b"POST /api/v1/dicom/admin/logout HTTP/1.1\r\nHost: x\r\n"
                                  b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 411),
])
def test_a_smuggling_shape_gets_one_refusal_and_the_connection_closes(api: Client, name: str, head: bytes,
                                                                      status: int) -> None:
    """Each head a proxy could frame differently: refused with one JSON answer; what follows is never read."""
    started = time.monotonic()
    answer = _raw(api, head + SMUGGLED)
    statuses = [int(code) for code in STATUS_LINE.findall(answer)]
    assert statuses == [status], (name, answer)
    assert b"application/json" in answer and b'"detail"' in answer, answer
    assert time.monotonic() - started < 5, "answered at once, not at a timeout"


def _slow_connections(api: Client, sources: list[str]) -> list[socket.socket]:
    """One connection per source address, each sending a request line and then one header line."""
    url = urlsplit(api.base)
    held = []
    for source in sources:
        sock = socket.socket()
        sock.bind((source, 0))
        sock.settimeout(5)
        sock.connect((url.hostname, url.port))
        held.append(sock)
    for sock in held:
        with contextlib.suppress(OSError):  # closed at once by the per-address limit
            sock.sendall(b"GET /api/v1/dicom/health HTTP/1.1\r\nX-Slow: 1\r\n")
    return held


def _still_open(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1) != b""
    except BlockingIOError:
        return True  # nothing to read and not closed
    except OSError:
        return False
    finally:
        sock.setblocking(True)


def _health_within(api: Client, seconds: float) -> float:
    started = time.monotonic()
    answer = api.get("/api/v1/dicom/health")
    elapsed = time.monotonic() - started
    assert answer.status_code == 200, answer.text
    assert elapsed < seconds, f"a normal client waited {elapsed:.1f} s"
    return elapsed


def test_70_slow_header_connections_from_one_address_do_not_lock_out_a_normal_client(api: Client) -> None:
    """Issue 9 item 8: one address trickling headers (a line every 10 s) no longer holds the port."""
    held = _slow_connections(api, ["127.0.0.2"] * 70)
    try:
        limit = Settings().ApiMaxConnectionsPerAddress
        open_ones = eventually(lambda: (n := sum(_still_open(sock) for sock in held)) == limit and n, timeout=5,
                               what=f"all but {limit} of the 70 connections closed at once", interval=0.1)
        _health_within(api, 3)  # from 127.0.0.1, while the slow ones are still open
        assert sum(_still_open(sock) for sock in held) == open_ones
    finally:
        for sock in held:
            sock.close()


def test_slow_header_connections_from_many_addresses_hold_no_thread(api: Client) -> None:
    """80 addresses, one slow connection each (under every limit): waiting clients hold sockets, not threads."""
    held = _slow_connections(api, [f"127.0.1.{n}" for n in range(1, 81)])
    try:
        _health_within(api, 3)  # accepted after the 80: the listener has taken (and kept) every one of them
        assert all(_still_open(sock) for sock in held)
        for _ in range(4):
            _health_within(api, 3)
        assert all(_still_open(sock) for sock in held)
    finally:
        for sock in held:
            sock.close()


def test_a_head_not_finished_in_time_is_answered_408(api: Client) -> None:
    """The deadline runs from accept: one header line every second does not keep the connection."""
    url = urlsplit(api.base)
    limit = Settings().ApiRequestHeaderTimeoutSeconds
    with socket.create_connection((url.hostname, url.port), timeout=1) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /api/v1/dicom/health HTTP/1.1\r\nHost: x\r\n")
        received, _ = until_closed(sock, b"X-Slow: 1\r\n", limit + 10)
        elapsed = time.monotonic() - started
    assert limit <= elapsed < limit + 3, elapsed
    assert received.startswith(b"HTTP/1.1 408 ") and b"did not arrive within" in received, received


def test_a_form_upload_on_orthancs_port_is_refused_not_silently_swallowed(client: Client, tmp_path: Path) -> None:
    """Orthanc 1.10 would answer an empty 200 itself; the filter refuses it so no caller believes it stored."""
    _, files = make_study(tmp_path, patient_id=mrn(), accession=None, study_date="20261120", instances=1)
    answer = client.request("POST", "/api/v1/dicom/upload", "technician",
                            files={"file": ("ct.dcm", files[0].read_bytes(), "application/dicom")})
    assert answer.status_code == 403
