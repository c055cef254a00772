"""Limits of the API port and of study downloads, on a stack of their own with small limits.

Deadlines (head, body rate, a client that stops reading), the total connection cap, and downloads: at most
``MaxConcurrentDownloads`` at once on both ports (503 + Retry-After), and on Orthanc's port, which builds a
ZIP whole in memory, only studies up to ``MaxOrthancPortDownloadMb`` (413 naming the API port).
"""

from __future__ import annotations

import io
import socket
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pydicom
import pytest
import requests

from tests.conftest import Client, running_stack
from tests.dicom_factory import make_study
from tests.integration.helpers import mrn
from tests.integration.raw_http import until_closed
from tests.waiting import eventually

pytestmark = pytest.mark.integration

API = "/api/v1/dicom"
LIMITS = {
    "ApiRequestHeaderTimeoutSeconds": 2, "ApiRequestBodyMinBytesPerSecond": 2000, "ApiIdleTimeoutSeconds": 3,
    "ApiMaxConnections": 24, "ApiMaxConnectionsPerAddress": 8, "MaxConcurrentDownloads": 1,
    "MaxOrthancPortDownloadMb": 8,
}


@pytest.fixture(scope="module")
def stack() -> Iterator[object]:
    with running_stack("api-limits", extra_settings=LIMITS) as started:
        yield started


@pytest.fixture(scope="module")
def client(stack: object) -> Client:
    return Client(stack)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def api(stack: object) -> Client:
    return Client(stack, stack.api_url)  # type: ignore[arg-type, attr-defined]


def _store(client: Client, directory: Path, *, instances: int, side: int | None = None) -> str:
    uid, files = make_study(directory, patient_id=mrn(), accession=None, study_date="20261120", instances=instances)
    for path in files:
        data = path.read_bytes()
        if side is not None:  # a large image: side x side 16-bit pixels
            ds = pydicom.dcmread(path)
            ds.Rows = ds.Columns = side
            ds.PixelData = bytes(side * side * 2)
            buffer = io.BytesIO()
            ds.save_as(buffer)
            data = buffer.getvalue()
        answer = client.request("POST", f"{API}/upload", "technician", data=data,
                                headers={"Content-Type": "application/dicom"})
        assert answer.status_code == 200, answer.text
    return uid


@pytest.fixture(scope="module")
def small_study(client: Client, tmp_path_factory: pytest.TempPathFactory) -> str:
    return _store(client, tmp_path_factory.mktemp("small"), instances=2)


@pytest.fixture(scope="module")
def large_study(client: Client, tmp_path_factory: pytest.TempPathFactory) -> str:
    return _store(client, tmp_path_factory.mktemp("large"), instances=5, side=2048)  # 5 x 8 MB


def _connect(api: Client, source: str = "127.0.0.1") -> socket.socket:
    url = urlsplit(api.base)
    sock = socket.socket()
    sock.bind((source, 0))
    sock.settimeout(1)
    sock.connect((url.hostname, url.port))
    return sock




def test_a_head_trickling_past_the_deadline_is_answered_408(api: Client) -> None:
    with _connect(api) as sock:
        sock.sendall(b"GET /api/v1/dicom/health HTTP/1.1\r\nHost: x\r\n")
        received, elapsed = until_closed(sock, b"X-Slow: 1\r\n", 15)
    assert 2 <= elapsed < 5, elapsed
    assert received.startswith(b"HTTP/1.1 408 ") and b"did not arrive within 2 s" in received, received


def test_a_body_slower_than_the_minimum_rate_is_answered_408(api: Client) -> None:
    """100 bytes/s against a 2000 bytes/s minimum: cut after the 2 s grace, not after the whole body."""
    with _connect(api) as sock:
        sock.sendall(b"POST /api/v1/dicom/validate HTTP/1.1\r\nHost: x\r\nContent-Type: application/dicom\r\n"
                     b"Content-Length: 1000000\r\n\r\n")
        received, elapsed = until_closed(sock, b"z" * 100, 15)
    assert elapsed < 6, elapsed
    assert not received or (received.startswith(b"HTTP/1.1 408 ") and b"slower than 2000 bytes/s" in received)


def test_a_body_at_a_fair_rate_is_read(api: Client) -> None:
    """A body sent in pieces but above the minimum rate arrives whole (the validate route answers it)."""
    body = b"x" * 30000
    with _connect(api) as sock:
        sock.settimeout(10)
        sock.sendall(b"POST /api/v1/dicom/validate HTTP/1.1\r\nHost: x\r\nContent-Type: application/dicom\r\n"
                     + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode())
        for start in range(0, len(body), 10000):  # 10 kB/s over 3 s
            sock.sendall(body[start:start + 10000])
            time.sleep(1)  # the scenario: a client sending its body in pieces, a second apart
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 401 "), answer  # read whole, then refused for want of a token


def test_connections_beyond_the_total_cap_are_closed_at_once(api: Client) -> None:
    held = [_connect(api, f"127.0.2.{n}") for n in range(1, 25)]
    try:
        # Once the listener has taken the 24 held connections, one more is closed at once, unanswered.
        eventually(lambda: _closed_unanswered(api), timeout=5, what="a connection beyond the cap to be closed",
                   interval=0.1)
    finally:
        for sock in held:
            sock.close()
    eventually(lambda: _health_answered(api), timeout=10, interval=0.2,
               what="the listener to answer again once the held connections closed")


def _closed_unanswered(api: Client) -> bool:
    """One more connection asking for /health: True if closed without an answer, False if answered."""
    with _connect(api) as extra:
        extra.sendall(b"GET /api/v1/dicom/health HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            received = extra.recv(100)
        except ConnectionResetError:  # closed before its request was read: a reset
            return True
    assert received == b"" or received.startswith(b"HTTP/1.1 200 "), received
    return received == b""


def _health_answered(api: Client) -> bool:
    try:
        return api.get(f"{API}/health").status_code == 200
    except requests.ConnectionError:
        return False  # a pooled connection refused while the cap was full


def test_orthancs_port_refuses_a_study_over_its_limit_and_points_to_the_api_port(
        client: Client, api: Client, small_study: str, large_study: str) -> None:
    refused = client.get(f"{API}/download/{large_study}", "doctor")
    assert refused.status_code == 413, refused.text[:300]
    detail = refused.json()["detail"]
    assert "MaxOrthancPortDownloadMb" in detail and f"API port {urlsplit(api.base).port}" in detail, detail
    assert f"{API}/download/{large_study}" in detail
    small = client.get(f"{API}/download/{small_study}", "doctor")
    assert small.status_code == 200 and len(zipfile.ZipFile(io.BytesIO(small.content)).namelist()) == 2
    streamed = api.get(f"{API}/download/{large_study}", "doctor")  # the API port streams any size
    assert streamed.status_code == 200, streamed.text[:300]
    assert len(zipfile.ZipFile(io.BytesIO(streamed.content)).namelist()) == 5


def test_downloads_beyond_the_cap_are_503_until_a_stalled_reader_is_cut_off(
        client: Client, api: Client, small_study: str, large_study: str) -> None:
    """One download at a time here: a second waits for a 503 + Retry-After on either port; a client that stops
    reading loses its slot after ApiIdleTimeoutSeconds (3 s), so a stalled reader cannot keep it."""
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)  # before connect: the window stays small
    stalled.settimeout(10)
    url = urlsplit(api.base)
    stalled.connect((url.hostname, url.port))
    try:
        stalled.sendall(f"GET {API}/download/{large_study} HTTP/1.1\r\nHost: x\r\n"
                        f"Authorization: Bearer {api.token('doctor')}\r\n\r\n".encode())
        assert stalled.recv(65536).startswith(b"HTTP/1.1 200 ")  # it has begun; now it reads nothing more
        for port in (api, client):
            busy = port.get(f"{API}/download/{small_study}", "doctor")
            assert busy.status_code == 503, busy.text[:300]
            assert busy.headers["Retry-After"] and "retry" in busy.json()["detail"]
        started = time.monotonic()

        def slot_free() -> bool:
            answer = api.get(f"{API}/download/{small_study}", "doctor")
            if answer.status_code == 200:
                return True
            assert answer.status_code == 503, answer.text[:300]  # busy while the stalled reader holds the slot
            return False

        eventually(slot_free, timeout=15, what="the stalled reader's download slot to be free", interval=0.5)
        waited = time.monotonic() - started
        assert 1 < waited < 10, waited  # the idle timeout (3 s) cut the stalled one, not its end
    finally:
        stalled.close()
