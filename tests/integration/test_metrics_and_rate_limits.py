"""Operators' metrics and the upload rate limit, on a stack of their own (metrics published every second,
small upload allowances).

Metrics: each one is scraped from Orthanc's ``/tools/metrics-prometheus`` (administrator credentials) before
and after the action that moves it. Rate limits: per caller (token subject), on every upload route and both
ports; above the allowance 429 with ``Retry-After`` and a JSON detail, nothing stored; on the API port a
client that sends ``Expect: 100-continue`` gets the 429 instead of the 100 Continue, before it sends its body.
"""

from __future__ import annotations

import io
import json
import socket
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pydicom
import pytest
import requests

from ehr_imaging.core import metrics as m
from ehr_imaging.core.matching import REASON_NO_MATCH, REASON_PATIENT_MISMATCH
from ehr_stack.stack import Stack
from ehr_stack.tokens import mint_dev_token
from tests.conftest import Client, running_stack
from tests.dicom_factory import make_study
from tests.integration.helpers import accession, mrn, put_order, query, stable_in_orthanc, wait_for_ingest
from tests.integration.viewer_helpers import as_viewer
from tests.waiting import eventually

pytestmark = pytest.mark.integration

API = "/api/v1/dicom"
REQUESTS_PER_MINUTE = 3
MEGABYTES_PER_MINUTE = 2
SETTINGS = {"Timezone": "America/Chicago", "MetricsIntervalSeconds": 1, "DeletionApproval": "required",
            "UploadRequestsPerMinute": REQUESTS_PER_MINUTE, "UploadMegabytesPerMinute": MEGABYTES_PER_MINUTE}
PUBLISHED = 15.0  # seconds: the publisher runs every second


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with running_stack("metrics", extra_settings=SETTINGS) as started:
        yield started


@pytest.fixture(scope="module")
def client(stack: Stack) -> Client:
    return Client(stack)


@pytest.fixture(scope="module")
def api(stack: Stack) -> Client:
    return Client(stack, stack.api_url)


def caller(stack: Stack, role: str = "technician", subject: str | None = None) -> dict[str, str]:
    """A bearer token of a caller of its own: each has its own upload allowance."""
    subject = subject or f"{role}-{uuid.uuid4().hex[:8]}"
    return {"Authorization": f"Bearer {mint_dev_token(stack, role=role, subject=subject, ttl_seconds=600)}"}


def scrape(stack: Stack) -> dict[str, float]:
    answer = requests.get(f"{stack.url}/tools/metrics-prometheus", auth=stack.admin_auth, timeout=30)
    assert answer.status_code == 200, answer.text
    values = {}
    for line in answer.text.splitlines():
        if line and not line.startswith("#"):
            name, value, *_ = line.split()
            values[name] = float(value)
    return values


def until(stack: Stack, name: str, test: Any, what: str) -> dict[str, float]:
    """Scrape until ``test(value of name)`` holds; the whole scrape."""
    def check() -> dict[str, float] | None:
        values = scrape(stack)
        return values if name in values and test(values[name]) else None

    return eventually(check, timeout=PUBLISHED, what=f"{name} {what}", interval=0.5)


def upload(client: Client, data: bytes, headers: dict[str, str], **extra: str) -> requests.Response:
    return client.request("POST", f"{API}/upload", data=data,
                          headers={"Content-Type": "application/dicom", **headers, **extra})


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def instance_stored(client: Client, sop_uid: str) -> bool:
    found = client.request("POST", "/tools/lookup", auth=client.stack.admin_auth, data=sop_uid).json()
    return any(match["Type"] == "Instance" for match in found)


# --- metrics ------------------------------------------------------------------------------------------------

def test_orthanc_publishes_every_metric_of_the_catalogue(stack: Stack) -> None:
    """MetricsEnabled is on (Orthanc's default, said in the configuration): every name is there, once the
    publisher has run (the latest match latency once a study was matched, the pending deletion requests once
    that table exists)."""
    expected = m.NAMES - {m.MATCH_LATENCY, m.DELETION_REQUESTS_PENDING}
    values = eventually(lambda: (lambda v: v if expected <= set(v) else None)(scrape(stack)), timeout=PUBLISHED,
                        what="every metric of the catalogue", interval=0.5)
    assert values[m.DATABASE_UP] == 1


def test_recorded_linked_unmatched_by_reason_and_match_latency_move(client: Client, stack: Stack,
                                                                   tmp_path: Path) -> None:
    before = until(stack, m.DATABASE_UP, lambda v: v == 1, "to be 1")
    patient, acc = mrn(), accession()
    order_id = put_order(client, mrn=patient, accession_number=acc)
    linked_uid, [linked_file] = make_study(tmp_path / "a", patient_id=patient, accession=acc, study_date="20261120",
                                           instances=1)
    nobody_uid, [nobody_file] = make_study(tmp_path / "b", patient_id=mrn(), accession=None, study_date="20261120",
                                           instances=1)
    other_order = put_order(client, mrn=mrn(), accession_number=accession())
    _, [wrong_file] = make_study(tmp_path / "c", patient_id=mrn(), accession=None, study_date="20261120",
                                         instances=1)
    # Orthanc's own REST API (as a modality's gateway would): recorded by the ingest worker once stable.
    for path in (linked_file, nobody_file):
        assert client.request("POST", "/instances", auth=stack.admin_auth, data=path.read_bytes()).status_code == 200
    # An upload naming another patient's order: unmatched, "patient mismatch".
    answer = upload(client, wrong_file.read_bytes(), caller(stack), **{"X-Order-Id": other_order})
    assert answer.status_code == 200, answer.text
    assert answer.json()["match"]["reason"] == REASON_PATIENT_MISMATCH
    wait_for_ingest(client, linked_uid, 1)
    wait_for_ingest(client, nobody_uid, 1)

    mismatch, no_match = m.unmatched_name(REASON_PATIENT_MISMATCH), m.unmatched_name(REASON_NO_MATCH)
    after = until(stack, m.STUDIES_RECORDED, lambda v: v == before[m.STUDIES_RECORDED] + 3, "to count 3 more")
    after = until(stack, m.MATCHES, lambda v: v >= before[m.MATCHES] + 2, "to count the worker's 2 studies")
    assert after[m.STUDIES_LINKED] == before[m.STUDIES_LINKED] + 1
    assert after[m.STUDIES_UNMATCHED] == before[m.STUDIES_UNMATCHED] + 2
    assert after[mismatch] == before[mismatch] + 1
    assert after[no_match] == before[no_match] + 1
    assert after[m.MATCH_LATENCY] > 0  # from the study's arrival in the queue to its recorded decision
    assert after[m.MATCH_LATENCY_SUM] > before[m.MATCH_LATENCY_SUM]
    assert query(client, "SELECT order_id FROM ehr_imaging.study_links WHERE study_instance_uid = :u",
                 u=linked_uid) == [(order_id,)]


def test_filter_refusals_by_reason_and_viewer_requests_move(client: Client, stack: Stack, tmp_path: Path) -> None:
    patient = mrn()
    order_id = put_order(client, mrn=patient, accession_number=accession())
    uid, [path] = make_study(tmp_path, patient_id=patient, accession=None, study_date="20261120", instances=1)
    answer = upload(client, path.read_bytes(), caller(stack), **{"X-Order-Id": order_id})
    assert answer.status_code == 200, answer.text
    minted = client.request("POST", f"{API}/viewer-token", json={"study_uids": [uid]},
                            headers=caller(stack, "doctor"))
    assert minted.status_code == 200, minted.text
    viewer = minted.json()["token"]
    credentials, not_admin, scope = (m.refusal_name(kind) for kind in
                                     (m.REFUSAL_CREDENTIALS, m.REFUSAL_NOT_ADMIN, m.REFUSAL_VIEWER_SCOPE))
    before = scrape(stack)

    assert requests.get(f"{stack.url}/system", timeout=30).status_code == 403  # no credentials
    assert client.get("/system", headers=caller(stack, "doctor")).status_code == 403  # a person: not an admin
    assert as_viewer(client, viewer, f"/dicom-web/studies/{uid}/series").status_code == 200
    assert as_viewer(client, viewer, "/dicom-web/studies/1.2.826.0.1.3680043.99.1/series").status_code == 403

    after = until(stack, m.VIEWER_REQUESTS, lambda v: v == before[m.VIEWER_REQUESTS] + 1, "to count 1 more")
    after = until(stack, m.FILTER_REFUSALS, lambda v: v == before[m.FILTER_REFUSALS] + 3, "to count 3 more")
    assert after[credentials] == before[credentials] + 1
    assert after[not_admin] == before[not_admin] + 1
    assert after[scope] == before[scope] + 1


def test_upload_failures_move(client: Client, stack: Stack) -> None:
    before = until(stack, m.UPLOAD_FAILURES, lambda v: True, "to be published")
    refused = upload(client, b"this is not a DICOM file" * 10, caller(stack))
    assert refused.status_code == 400, refused.text  # not a DICOM file
    until(stack, m.UPLOAD_FAILURES, lambda v: v == before[m.UPLOAD_FAILURES] + 1, "to count 1 more")


def test_pending_deletion_requests_move(client: Client, stack: Stack, tmp_path: Path) -> None:
    """A deletion asked for (DeletionApproval required) waits for a second admin: pending; rejected: gone."""
    before = until(stack, m.DELETION_REQUESTS_PENDING, lambda v: True, "to be published")
    uid, [file] = make_study(tmp_path, patient_id=mrn(), accession=None, study_date="20261120", instances=1)
    assert upload(client, file.read_bytes(), caller(stack)).status_code == 200
    stable_in_orthanc(client, uid)  # and so out of the ingest queue before the next test stops the database
    asked = client.request("DELETE", f"{API}/studies/{uid}", None,  # Orthanc's port: the reason as a header
                           headers={**caller(stack, "radiologist"), "X-Reason": "duplicate"})
    assert asked.status_code == 202 and asked.json()["status"] == "pending_approval", asked.text
    pending = before[m.DELETION_REQUESTS_PENDING]
    until(stack, m.DELETION_REQUESTS_PENDING, lambda v: v == pending + 1, "to count the request")
    request_id = asked.json()["deletion_request_id"]
    rejected = client.request("POST", f"{API}/deletion-requests/{request_id}/reject", None,
                              headers={**caller(stack, "admin"), "Content-Type": "application/json"},
                              data=b'{"reason": "keep it"}')
    assert rejected.status_code == 200, rejected.text
    until(stack, m.DELETION_REQUESTS_PENDING, lambda v: v == pending, "to drop it again")


def test_database_down_and_the_ingest_queue_waiting_for_it_move(client: Client, stack: Stack,
                                                                tmp_path: Path) -> None:
    """Last in this module: it stops the database. A study that becomes stable meanwhile waits in the queue."""
    until(stack, m.INGEST_QUEUE_DEPTH, lambda v: v == 0, "to be 0 (nothing waiting)")
    uid, [path] = make_study(tmp_path, patient_id=mrn(), accession=None, study_date="20261120", instances=1)
    stack.postgres.stop()
    try:
        until(stack, m.DATABASE_UP, lambda v: v == 0, "to be 0 while PostgreSQL is stopped")
        assert client.request("POST", "/instances", auth=stack.admin_auth, data=path.read_bytes()).status_code == 200
        stable_in_orthanc(client, uid)
        waiting = until(stack, m.INGEST_QUEUE_DEPTH, lambda v: v >= 1,
                        "to be 1 or more (the study waits for the database)")
        until(stack, m.INGEST_OLDEST_WAITING, lambda v: v > waiting[m.INGEST_OLDEST_WAITING], "to grow")
    finally:
        stack.postgres.start()
    until(stack, m.DATABASE_UP, lambda v: v == 1, "to be 1 again")
    wait_for_ingest(client, uid, 1)
    after = until(stack, m.INGEST_QUEUE_DEPTH, lambda v: v == 0, "to be 0 again")
    assert after[m.INGEST_OLDEST_WAITING] == 0


# --- rate limits --------------------------------------------------------------------------------------------

def test_over_the_requests_per_minute_an_upload_gets_429_and_nothing_is_stored(
        client: Client, api: Client, stack: Stack, tmp_path: Path) -> None:
    subject = f"tech-{uuid.uuid4().hex[:8]}"
    headers = caller(stack, subject=subject)
    _, files = make_study(tmp_path, patient_id=mrn(), accession=None, study_date="20261120",
                          instances=REQUESTS_PER_MINUTE + 1)
    # Both ports count against one allowance (the node's).
    for index, path in enumerate(files[:REQUESTS_PER_MINUTE]):
        answer = upload(client if index % 2 else api, path.read_bytes(), headers)
        assert answer.status_code == 200, answer.text
    before = scrape(stack)
    last = files[REQUESTS_PER_MINUTE]
    sop = str(pydicom.dcmread(last, stop_before_pixels=True).SOPInstanceUID)
    # Orthanc 1.10's own HTTP server cannot send 429: its port answers the same refusal as 503.
    for port, status in ((api, 429), (client, 503)):
        refused = upload(port, last.read_bytes(), headers)
        assert refused.status_code == status, refused.text
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        assert refused.json()["detail"].startswith(f"rate limit: {REQUESTS_PER_MINUTE} upload requests per minute"
                                                   " per caller on this node")
    assert not instance_stored(client, sop)
    # Audited: the uploads admitted (one row each), and no row of a refused one.
    assert query(client, "SELECT count(*) FROM ehr_imaging.dicom_upload_logs WHERE uploaded_by = :s",
                 s=subject) == [(REQUESTS_PER_MINUTE,)]
    # Another caller still uploads.
    assert upload(api, last.read_bytes(), caller(stack)).status_code == 200
    until(stack, m.UPLOADS_RATE_LIMITED, lambda v: v == before[m.UPLOADS_RATE_LIMITED] + 2, "to count 2 more")


def test_every_upload_route_is_limited(api: Client, stack: Stack, tmp_path: Path) -> None:
    headers = caller(stack)
    for _ in range(REQUESTS_PER_MINUTE):  # the allowance, spent on requests the route itself refuses (400)
        assert api.request("POST", f"{API}/offline/binary", headers=headers, files={}).status_code in (400, 422)
    _, [path] = make_study(tmp_path, patient_id=mrn(), accession=None, study_date="20261120", instances=1)
    data = path.read_bytes()
    sends: dict[str, dict[str, Any]] = {
        "upload": dict(files={"file": (path.name, data, "application/dicom")}),
        "upload-multiple": dict(files=[("files", (path.name, data, "application/dicom"))]),
        "upload-zip": dict(files={"file": ("study.zip", zip_bytes({path.name: data}), "application/zip")}),
        "offline/binary": dict(files={"file": (path.name, data, "application/dicom")},
                               data={"upload_id": str(uuid.uuid4())}),
    }
    for route, body in sends.items():
        answer = api.request("POST", f"{API}/{route}", headers=headers, **body)
        assert answer.status_code == 429, f"{route}: {answer.status_code} {answer.text}"
        assert int(answer.headers["Retry-After"]) >= 1 and answer.json()["detail"].startswith("rate limit:")


def test_over_the_megabytes_per_minute_an_upload_gets_429(api: Client, stack: Stack, tmp_path: Path) -> None:
    headers = caller(stack)
    _, [path] = make_study(tmp_path, patient_id=mrn(), accession=None, study_date="20261120", instances=1)
    data = path.read_bytes()
    # Two minutes' megabytes: a full bucket admits it and leaves a minute's debt, so the next upload is refused
    # however slowly this machine gets there (a debt of a few kB refilled within a second under load).
    large = data + b"\0" * (2 * MEGABYTES_PER_MINUTE * 1024 * 1024)
    first = api.request("POST", f"{API}/upload-multiple", headers=headers,
                        files=[("files", (path.name, large, "application/dicom"))])
    assert first.status_code == 200, first.text
    refused = upload(api, data, headers)
    assert refused.status_code == 429, refused.text
    assert refused.json()["detail"].startswith(f"rate limit: {MEGABYTES_PER_MINUTE} MB of uploads per minute")
    assert int(refused.headers["Retry-After"]) >= 1


def test_on_the_api_port_the_429_comes_before_the_body_is_sent(api: Client, stack: Stack) -> None:
    """A client that waits for ``100 Continue`` (curl does for large bodies) sends nothing of its body."""
    headers = caller(stack)
    for _ in range(REQUESTS_PER_MINUTE):
        assert upload(api, b"", headers).status_code in (400, 415, 422)  # spent on empty requests
    target = urlsplit(stack.api_url)
    head = (f"POST {API}/upload HTTP/1.1\r\nHost: {target.netloc}\r\nContent-Type: application/dicom\r\n"
            f"Authorization: {headers['Authorization']}\r\nContent-Length: {50 * 1024 * 1024}\r\n"
            "Expect: 100-continue\r\n\r\n").encode()
    with socket.create_connection((target.hostname, target.port), timeout=10) as sock:
        sock.sendall(head)  # the head only: 50 MB announced, not one byte of them sent
        received = b""
        while b"\r\n\r\n" not in received or not received.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    status_line, _, rest = received.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 429 Too Many Requests", received[:300]
    head_part, _, body = rest.partition(b"\r\n\r\n")
    assert b"retry-after:" in head_part.lower()
    assert json.loads(body)["detail"].startswith("rate limit:")
