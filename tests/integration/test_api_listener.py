"""The plugin's own API listener: the same routes with form uploads, query strings and early size checks."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from ehr_imaging.api.listener import MAX_CONNECTIONS
from tests.conftest import Client
from tests.dicom_factory import make_study
from tests.integration.test_matching import accession, mrn, order, put_order

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
    assert answer.status_code in (400, 422), answer.text
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
            chunk = sock.recv(65536)
            if not chunk:
                return received
            received += chunk


def test_any_transfer_coding_is_refused(api: Client) -> None:
    """A body framed by a transfer coding could be framed differently by a proxy in front: refused."""
    smuggled = (b"POST /api/v1/dicom/admin/logout HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n"
                b"Content-Length: 4\r\n\r\n0\r\n\r\nGET /api/v1/dicom/health HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = _raw(api, smuggled)
    assert answer.startswith(b"HTTP/1.1 411") and answer.count(b"HTTP/1.1 ") == 1, answer


def test_connections_beyond_the_cap_are_closed_at_once(api: Client) -> None:
    url = urlsplit(api.base)
    held = [socket.create_connection((url.hostname, url.port), timeout=10) for _ in range(MAX_CONNECTIONS)]
    try:
        time.sleep(0.5)
        with socket.create_connection((url.hostname, url.port), timeout=10) as extra:
            extra.sendall(b"GET /api/v1/dicom/health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert extra.recv(100) == b""  # closed without an answer: no thread for it
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the held connections' threads end once their sockets close
        if api.get("/api/v1/dicom/health").status_code == 200:
            return
        time.sleep(0.2)
    raise AssertionError("the listener did not recover after the connections closed")


def test_a_form_upload_on_orthancs_port_is_refused_not_silently_swallowed(client: Client, tmp_path: Path) -> None:
    """Orthanc 1.10 would answer an empty 200 itself; the filter refuses it so no caller believes it stored."""
    _, files = make_study(tmp_path, patient_id=mrn(), accession=None, study_date="20261120", instances=1)
    answer = client.request("POST", "/api/v1/dicom/upload", "technician",
                            files={"file": ("ct.dcm", files[0].read_bytes(), "application/dicom")})
    assert answer.status_code == 403
