"""PostgreSQL frozen (SIGSTOP: a hung database or a partition) and stopped mid-ingest, with real processes.

While it is away: C-STORE is accepted, viewer tokens read (the gate needs no database), ``/health`` and the
EHR routes answer 503 with Retry-After within ``BOUND`` seconds, and twice Orthanc's HTTP threads of
concurrent requests are all answered within it (none holds a thread waiting on the database). Once it is
back, the stored study is linked once, with one link audit row and one ingest row, and the viewer reads are
counted once. A stack of its own (it freezes and stops its database); the freeze is always thawed.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests

from ehr_stack.stack import Stack
from tests.conftest import Client, running_stack
from tests.dicom_factory import make_study, send
from tests.integration.helpers import accession, mrn, order_fields, put_order, query
from tests.integration.viewer_helpers import FRAME_ACCEPT, StoredStudy, as_viewer, store_study, viewer_token
from tests.waiting import eventually

pytestmark = pytest.mark.integration

BOUND = 5.0  # seconds: what the issue allows a request while the database is away
HTTP_THREADS = 50  # orthanc-config/orthanc.json HttpThreadsCount
API = "/api/v1/dicom"
RECOVERY = 90.0  # the ingest worker's retries back off up to 30 s


@pytest.fixture(scope="module")
def own_stack() -> Iterator[Stack]:
    with running_stack("database-faults") as stack:
        yield stack


@contextmanager
def frozen(stack: Stack) -> Iterator[None]:
    """PostgreSQL's processes SIGSTOP'd: connections are accepted by the kernel and never answered."""
    assert len(stack.postgres.pids()) > 1  # the postmaster and its children
    stack.postgres.freeze()
    try:
        yield
    finally:
        stack.postgres.thaw()


@contextmanager
def stopped(stack: Stack) -> Iterator[None]:
    stack.postgres.stop()
    try:
        yield
    finally:
        stack.postgres.start()


def timed(call: Callable[[], requests.Response]) -> tuple[requests.Response, float]:
    began = time.monotonic()
    answer = call()
    return answer, time.monotonic() - began


def assert_unavailable(answer: requests.Response, took: float, what: str) -> None:
    assert answer.status_code == 503, f"{what}: {answer.status_code} {answer.text[:300]}"
    assert int(answer.headers["Retry-After"]) > 0, what
    assert took < BOUND, f"{what} answered after {took:.1f} s"


class Ehr:
    """The EHR's calls, with tokens minted once (a burst measures the plugin, not the test's signing)."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.auth = {role: {"Authorization": f"Bearer {client.token(role)}"}
                     for role in ("ehr-service", "doctor", "technician")}

    def call(self, method: str, path: str, role: str, base: str | None = None, **kwargs: Any) -> requests.Response:
        headers = {**self.auth[role], **kwargs.pop("headers", {})}
        return requests.request(method, (base or self.client.base) + path, headers=headers, timeout=20, **kwargs)


def health(stack: Stack) -> requests.Response:
    return requests.get(f"{stack.url}{API}/health", timeout=20)


def assert_health_and_routes_refuse_fast(stack: Stack, ehr: Ehr, order_id: str, upload: Path) -> None:
    answer, took = timed(lambda: health(stack))
    assert_unavailable(answer, took, "GET /health")
    assert answer.json()["status"] == "unhealthy" and answer.json()["database"].startswith("unavailable")
    new_order = str(uuid.uuid4())
    sample: list[tuple[str, Callable[[], requests.Response]]] = [
        ("GET /orders/{id}", lambda: ehr.call("GET", f"{API}/orders/{order_id}", "ehr-service")),
        ("GET /studies", lambda: ehr.call("GET", f"{API}/studies?limit=5", "doctor")),
        ("PUT /orders/{id}", lambda: ehr.call("PUT", f"{API}/orders/{new_order}", "ehr-service",
                                              json=order_fields())),
        ("POST /upload", lambda: ehr.call("POST", f"{API}/upload", "technician", data=upload.read_bytes(),
                                          headers={"Content-Type": "application/dicom", "X-Order-Id": order_id})),
        ("GET /orders/{id} on the API port", lambda: ehr.call("GET", f"{API}/orders/{order_id}", "ehr-service",
                                                              base=stack.api_url)),
    ]
    for what, call in sample:
        answer, took = timed(call)
        assert_unavailable(answer, took, what)
        assert answer.json()["detail"], what


def assert_a_burst_is_answered_in_time(stack: Stack, ehr: Ehr, order_id: str) -> None:
    """Twice Orthanc's HTTP threads at once (orders and health checks): each answered 503 within the bound."""
    def one(index: int) -> tuple[requests.Response, float]:
        if index % 2:
            return timed(lambda: health(stack))
        return timed(lambda: ehr.call("GET", f"{API}/orders/{order_id}", "ehr-service"))

    with ThreadPoolExecutor(max_workers=2 * HTTP_THREADS) as pool:
        results = list(pool.map(one, range(2 * HTTP_THREADS)))
    slowest = max(took for _, took in results)
    print(f"{len(results)} concurrent requests answered, the slowest in {slowest:.2f} s")  # shown with -s
    for index, (answer, took) in enumerate(results):
        assert_unavailable(answer, took, f"request {index} of the burst (slowest {slowest:.1f} s)")


def read_as_viewer(client: Client, token: str, study: StoredStudy) -> None:
    """What OHIF does for a study: metadata, a frame, the scoped QIDO of the patient's studies."""
    metadata = as_viewer(client, token, f"/dicom-web/studies/{study.uid}/metadata")
    assert metadata.status_code == 200, metadata.text
    frame = as_viewer(client, token, f"/dicom-web/studies/{study.uid}/series/{study.series}/instances/"
                                     f"{study.instances[0]}/frames/1", headers={"Accept": FRAME_ACCEPT})
    assert frame.status_code == 200 and len(frame.content) > 1000
    found = as_viewer(client, token, f"/ehr-imaging/dicom-web/studies?PatientID={study.patient_id}")
    assert found.status_code == 200, found.text
    assert [item["0020000D"]["Value"][0] for item in found.json()] == [study.uid]


def log_since(stack: Stack, offset: int) -> str:
    return stack.log_file.read_text()[offset:]


def count(client: Client, table: str, uid: str) -> int:
    rows = query(client, f"SELECT count(*) FROM ehr_imaging.{table} WHERE study_instance_uid = :u", u=uid)
    return int(rows[0][0])


def linked_once(client: Client, order_id: str, uid: str, instances: int) -> None:
    """Once the database is back: the study recorded and linked to the order once, each audit row once."""
    def linked() -> bool:
        rows = query(client, "SELECT study_instance_uid FROM ehr_imaging.imaging_orders WHERE order_id = :o",
                     o=order_id)
        return bool(rows) and rows[0][0] == uid

    eventually(linked, timeout=RECOVERY, what=f"order {order_id} linked to {uid} once the database is back",
               interval=0.5)
    eventually(lambda: query(client, "SELECT number_of_instances FROM ehr_imaging.study_links"
                                     " WHERE study_instance_uid = :u", u=uid) == [(instances,)],
               timeout=RECOVERY, what=f"study {uid} recorded with {instances} instances", interval=0.5)
    assert count(client, "link_audit", uid) == 1
    assert query(client, "SELECT action FROM ehr_imaging.link_audit WHERE study_instance_uid = :u",
                 u=uid) == [("auto-link",)]
    assert count(client, "dicom_upload_logs", uid) == 1


def viewer_reads_counted(client: Client, study: StoredStudy, tokens: int, requests_made: int) -> None:
    """The viewer reads made while the database was away reach the access log once, added to the others
    (one row per token and study)."""
    eventually(lambda: query(client, "SELECT count(*), sum(request_count) FROM ehr_imaging.viewer_access_log"
                                     " WHERE study_instance_uid = :u", u=study.uid) == [(tokens, requests_made)],
               timeout=30, what=f"{requests_made} viewer reads of {study.uid} in {tokens} access-log rows",
               interval=0.5)


def not_stored(client: Client, path: Path) -> bool:
    """The upload refused with 503 stored nothing in Orthanc either."""
    sop = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
    found = client.request("POST", "/tools/lookup", auth=client.stack.admin_auth, data=sop)
    assert found.status_code == 200
    return bool(found.json() == [])


@dataclass(frozen=True)
class Scene:
    """What each fault starts from: a study a viewer token has read, an order, a study for it not yet sent, and a
    file to upload."""

    viewed: StoredStudy
    token: str
    order_id: str
    uid: str
    files: list[Path]
    upload: Path


def set_scene(client: Client, tmp_path: Path, *, instances: int) -> Scene:
    viewed = store_study(client, tmp_path / "viewed")
    token = viewer_token(client, study_uids=[viewed.uid])["token"]
    read_as_viewer(client, token, viewed)
    patient, number = mrn(), accession()
    order_id = put_order(client, mrn=patient, accession_number=number)
    uid, files = make_study(tmp_path / "stored", patient_id=patient, accession=number, study_date="20261120",
                            instances=instances)
    _, [upload] = make_study(tmp_path / "upload", patient_id=patient, accession=None, study_date="20261120",
                             instances=1)
    return Scene(viewed, token, order_id, uid, files, upload)


def test_a_frozen_database_never_holds_a_request_and_nothing_is_lost(own_stack: Stack, tmp_path: Path) -> None:
    client = Client(own_stack)
    ehr = Ehr(client)
    scene = set_scene(client, tmp_path, instances=3)
    viewed, token, order_id, uid, files, upload = (scene.viewed, scene.token, scene.order_id, scene.uid, scene.files,
                                                   scene.upload)
    fresh_token = viewer_token(client, study_uids=[viewed.uid])["token"]  # minted, never used before the freeze
    assert health(own_stack).status_code == 200

    logged = len(own_stack.log_file.read_text())
    with frozen(own_stack):
        # At once, before the monitor has noticed: the requests that find a connection waiting are cut free,
        # those waiting for an HTTP thread behind them are answered from the breaker.
        assert_a_burst_is_answered_in_time(own_stack, ehr, order_id)
        send(own_stack, files)  # a modality keeps storing
        read_as_viewer(client, token, viewed)  # the gate's caches: no database on a viewer's path
        read_as_viewer(client, fresh_token, viewed)  # a token not seen before: verified without the database
        assert_health_and_routes_refuse_fast(own_stack, ehr, order_id, upload)
        assert_a_burst_is_answered_in_time(own_stack, ehr, order_id)  # and once it has
        assert not_stored(client, upload)
        # The ingest worker is not stuck either (the study uploaded above turns stable meanwhile): each
        # attempt fails, to be retried once the database is back.
        eventually(lambda: "stable study " in log_since(own_stack, logged) and " failed (attempt 2,"
                   in log_since(own_stack, logged), timeout=30,
                   what="the ingest worker's attempts to fail (not hang) while the database is frozen")

    eventually(lambda: health(own_stack).status_code == 200, timeout=30, what="/health 200 after the thaw")
    linked_once(client, order_id, uid, 3)
    viewer_reads_counted(client, viewed, 2, 9)
    assert ehr.call("GET", f"{API}/orders/{order_id}", "ehr-service").json()["study_instance_uid"] == uid
    log = own_stack.log_file.read_text()
    assert "the database is unavailable (no answer within" in log and "the database answers again" in log
    assert " waiting connections" in log  # the hung ones were cut free (the monitor's own at least)


def test_a_database_stopped_mid_ingest_loses_nothing(own_stack: Stack, tmp_path: Path) -> None:
    eventually(lambda: health(own_stack).status_code == 200, timeout=30, what="/health 200 to begin with")
    client = Client(own_stack)
    ehr = Ehr(client)
    scene = set_scene(client, tmp_path, instances=4)
    viewed, token, order_id, uid, files, upload = (scene.viewed, scene.token, scene.order_id, scene.uid, scene.files,
                                                   scene.upload)

    send(own_stack, files[:2])  # half the study arrives, and the database stops before it is stable
    with stopped(own_stack):
        send(own_stack, files[2:])
        read_as_viewer(client, token, viewed)
        assert_health_and_routes_refuse_fast(own_stack, ehr, order_id, upload)
        assert_a_burst_is_answered_in_time(own_stack, ehr, order_id)
        assert not_stored(client, upload)

    eventually(lambda: health(own_stack).status_code == 200, timeout=30, what="/health 200 once restarted")
    linked_once(client, order_id, uid, 4)
    viewer_reads_counted(client, viewed, 1, 6)
