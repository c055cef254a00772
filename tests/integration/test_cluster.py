"""Two Orthanc nodes with the plugin share one PostgreSQL (Orthanc's index and the plugin's schema) and one
storage: a study whose halves arrive through each node at once is linked exactly once; a viewer token minted
on one node reads on the other (QIDO and a frame), and a revocation made on one is enforced on the other within
the documented refresh interval; the shared change log is followed by one node at a time (its cursor's lease)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import text

from ehr_imaging.app.ingest_worker import POLL_SECONDS
from ehr_imaging.core.study_identity import orthanc_study_id
from ehr_stack.stack import Stack
from tests.conftest import Client, running_second_node, running_stack
from tests.dicom_factory import make_study, send
from tests.integration.helpers import (
    STABLE_WAIT,
    accession,
    execute,
    finished_job,
    mrn,
    order,
    put_order,
    query,
    schema_connection,
    wait_for_ingest,
)
from tests.integration.viewer_helpers import FRAME_ACCEPT, as_viewer, store_study, viewer_token
from tests.waiting import eventually
from tests.zip_factory import files_zip

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def two_nodes() -> Iterator[tuple[Stack, Stack]]:
    with running_stack("cluster-node-a", index="postgresql") as first, \
            running_second_node(first, "cluster-node-b") as second:
        yield first, second


def test_one_study_through_two_nodes_is_linked_once(two_nodes: tuple[Stack, Stack], tmp_path: Path) -> None:
    first, second = two_nodes
    a, b = Client(first), Client(second)
    patient, acc = mrn(), accession()
    order_id = put_order(a, mrn=patient, accession_number=acc)
    uid, files = make_study(tmp_path, patient_id=patient, accession=acc, study_date="20261120", instances=6)
    senders = [threading.Thread(target=send, args=(node, half))
               for node, half in ((first, files[:3]), (second, files[3:]))]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join()
    wait_for_ingest(a, uid, 6)
    assert order(b, order_id)["study_instance_uid"] == uid
    assert order(a, order_id)["number_of_images"] == 6
    audit = query(a, "SELECT action FROM ehr_imaging.link_audit WHERE study_instance_uid = :u", u=uid)
    assert audit == [("auto-link",)]
    # Both nodes see the same study (one shared index).
    for client in (a, b):
        assert client.get("/api/v1/dicom/stats", "admin").json()["total_instances"] >= 6


def test_a_logout_on_one_node_ends_the_session_on_the_other(two_nodes: tuple[Stack, Stack]) -> None:
    """Issue 9: the ended session is shared through PostgreSQL; the other node reloads it within 5 s."""

    from ehr_imaging.core.auth import SESSION_COOKIE

    first, second = two_nodes
    browser = requests.Session()
    signed_in = browser.get(f"{first.url}/api/v1/dicom/admin/login", auth=first.admin_auth, allow_redirects=False,
                            timeout=10)
    assert signed_in.status_code == 302
    cookie = {"Cookie": f"{SESSION_COOKIE}={browser.cookies.get(SESSION_COOKIE)}"}
    assert requests.get(f"{second.url}/system", headers=cookie, timeout=10).status_code == 200
    assert browser.post(f"{first.url}/api/v1/dicom/admin/logout", timeout=10).status_code == 204
    assert requests.get(f"{first.url}/system", headers=cookie, timeout=10).status_code == 403  # at once here

    def refused_there() -> int | None:
        status = requests.get(f"{second.url}/system", headers=cookie, timeout=10).status_code
        return None if status == 200 else status

    assert eventually(refused_there, timeout=15, what="the other node to refuse the ended session",
                      interval=0.5) == 403


# The documented refresh of every node's revoked-token list (README "Viewer tokens and what they open", and
# app/token_revocations.RevocationList's refresh_seconds); the margin covers one reload's own time.
REVOCATION_REFRESH_SECONDS = 5.0
REVOCATION_MARGIN_SECONDS = 3.0


def test_a_viewer_token_minted_on_one_node_reads_on_the_other_until_revoked_there(
        two_nodes: tuple[Stack, Stack], tmp_path: Path) -> None:
    first, second = two_nodes
    a, b = Client(first), Client(second)
    study = store_study(a, tmp_path, instances=2)
    issued = viewer_token(a, subject="dr-cluster", study_uids=[study.uid])
    token = issued["token"]
    qido = f"/ehr-imaging/dicom-web/studies?PatientID={study.patient_id}"  # the scoped QIDO viewers use
    frame = f"/dicom-web/studies/{study.uid}/series/{study.series}/instances/{study.instances[0]}/frames/1"
    found = as_viewer(b, token, qido)
    assert found.status_code == 200, found.text
    assert [item["0020000D"]["Value"][0] for item in found.json()] == [study.uid]
    pixels = as_viewer(b, token, frame, headers={"Accept": FRAME_ACCEPT})
    assert pixels.status_code == 200 and len(pixels.content) > 10000

    revoked = a.request("POST", "/api/v1/dicom/viewer-token/revoke", json={"token_id": issued["token_id"]},
                        headers={"Authorization": f"Bearer {a.token('doctor', 'dr-cluster')}"})
    assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
    began = time.monotonic()
    assert as_viewer(a, token, frame, headers={"Accept": FRAME_ACCEPT}).status_code == 403  # at once on A

    def refused_on_b() -> int | None:
        status = as_viewer(b, token, frame, headers={"Accept": FRAME_ACCEPT}).status_code
        return None if status == 200 else status

    assert eventually(refused_on_b, timeout=REVOCATION_REFRESH_SECONDS + REVOCATION_MARGIN_SECONDS,
                      what="node B to refuse the token revoked on node A", interval=0.25) == 403
    assert time.monotonic() - began <= REVOCATION_REFRESH_SECONDS + REVOCATION_MARGIN_SECONDS
    assert as_viewer(b, token, qido).status_code == 401


def test_the_shared_change_log_is_followed_by_one_node_and_the_other_takes_over(
        two_nodes: tuple[Stack, Stack], tmp_path: Path) -> None:
    """Issue 12.1: both nodes share Orthanc's index, so one change log and one cursor row; its lease makes one node
    the follower. A study sent through the node that does not follow is recorded once; when the follower stops
    (its lease given up at Orthanc's stop), the other follows from the cursor."""
    first, second = two_nodes
    a, b = Client(first), Client(second)
    name = {node.config.http_port: f"{socket.gethostname()}:{node.config.http_port}" for node in (first, second)}
    rows = eventually(lambda: query(a, "SELECT log_id, holder FROM ehr_imaging.ingest_cursors") or None, timeout=15,
                      what="the shared change log's cursor")
    assert len(rows) == 1 and rows[0][1] in name.values(), rows  # one log (one index), one follower
    # The second node made the follower (its lease given to it, as if it had started first).
    marker = len(first.log_file.read_text())
    execute(first, "UPDATE ehr_imaging.ingest_cursors SET holder = :h, lease_until = now() + interval '1 hour'",
            h=name[second.config.http_port])
    if rows[0][1] == name[first.config.http_port]:
        eventually(lambda: "follows Orthanc's change log now" in first.log_file.read_text()[marker:], timeout=10,
                   what="the first node to see the second follow")
    patient, acc = mrn(), accession()
    order_id = put_order(a, mrn=patient, accession_number=acc)
    uid, files = make_study(tmp_path / "one", patient_id=patient, accession=acc, study_date="20261120", instances=2)
    send(first, files)  # through the node that does not follow
    wait_for_ingest(a, uid, 2)
    assert order(a, order_id)["study_instance_uid"] == uid
    uploads = query(a, "SELECT count(*) FROM ehr_imaging.dicom_upload_logs WHERE study_instance_uid = :u", u=uid)
    audit = query(a, "SELECT action FROM ehr_imaging.link_audit WHERE study_instance_uid = :u", u=uid)
    assert (uploads, audit) == ([(1,)], [("auto-link",)])

    marker = len(first.log_file.read_text())
    second.stop()
    try:
        later, more = make_study(tmp_path / "two", patient_id=mrn(), accession=None, study_date="20261120",
                                 instances=2)
        send(first, more)
        wait_for_ingest(a, later, 2)
        assert "resuming Orthanc's change log after change" in first.log_file.read_text()[marker:]
        assert query(a, "SELECT holder FROM ehr_imaging.ingest_cursors") == [(name[first.config.http_port],)]
    finally:
        second.start()
    assert b.get("/api/v1/dicom/health").status_code == 200



STALLED_JOB_FILES = 450  # a ZIP job (over UploadJobAboveFiles) that runs well over a second


def uploads(client: Client, study_uid: str) -> list[tuple[Any, ...]]:
    return query(client, "SELECT upload_status, number_of_files FROM ehr_imaging.dicom_upload_logs"
                         " WHERE study_instance_uid = :u", u=study_uid)


def test_an_upload_job_stalled_on_one_node_is_not_recorded_half_by_the_follower_on_the_other(
        two_nodes: tuple[Stack, Stack], tmp_path: Path) -> None:
    """Issue 12: an upload holds its studies from the ingest worker until it records them itself, and with one
    shared index the follower of the change log may be the other node. Here a ZIP job on the first node stalls
    halfway (the test locks the job's row: its next progress write waits, as on a slow database) until Orthanc has
    logged the study stable: the second node, following the log, sees the first node's hold (its row in
    upload_holds) and records nothing of the study; released, the job records it once, and the follower's own
    record after that adds no row."""
    first, second = two_nodes
    api = Client(first, first.api_url)
    name = {node.config.http_port: f"{socket.gethostname()}:{node.config.http_port}" for node in (first, second)}
    execute(first, "UPDATE ehr_imaging.ingest_cursors SET holder = :h, lease_until = now() + interval '1 hour'",
            h=name[second.config.http_port])  # the second node follows; the upload goes through the first
    patient = mrn()
    uid, files = make_study(tmp_path / "stalled", patient_id=patient, accession=None, study_date="20261120",
                            instances=STALLED_JOB_FILES)
    study_id = orthanc_study_id(patient, uid)
    orthanc = Client(first)  # Orthanc's own routes (the change log) are on its port, not the API's
    since = int(orthanc.get("/changes?last", auth=first.admin_auth).json()["Last"])
    try:
        with schema_connection(first) as locker:
            answer = api.request("POST", "/api/v1/dicom/upload-zip", "technician",
                                 files={"file": ("cd.zip", files_zip(files), "application/zip")})
            assert answer.status_code == 202, answer.text
            job_id = answer.json()["job_id"]
            holders = eventually(lambda: query(api, "SELECT node FROM ehr_imaging.upload_holds WHERE"
                                                    " orthanc_study_id = :s", s=study_id) or None,
                                 timeout=30, interval=0.01, what="the job's hold in upload_holds")
            locker.execute(text("SELECT 1 FROM ehr_imaging.upload_jobs WHERE job_id = :j FOR UPDATE"), {"j": job_id})
            assert holders == [(name[first.config.http_port],)]

            def logged_stable() -> bool:
                changes = orthanc.get(f"/changes?since={since}&limit=1000", auth=first.admin_auth).json()["Changes"]
                return any(c["ChangeType"] == "StableStudy" and c["ID"] == study_id for c in changes)

            eventually(logged_stable, timeout=STABLE_WAIT, what="Orthanc to log the stalled study stable")
            time.sleep(3 * POLL_SECONDS)  # the follower's rounds that would have recorded it
            [(processed,)] = query(api, "SELECT processed_files FROM ehr_imaging.upload_jobs WHERE job_id = :j",
                                   j=job_id)
            # Stalled halfway: part of the study in Orthanc (its hold was published before its first file went
            # in, so the stall may come before the job's first progress write).
            in_orthanc = len(orthanc.get(f"/studies/{study_id}/instances", auth=first.admin_auth).json())
            assert 0 < in_orthanc < STALLED_JOB_FILES and processed < STALLED_JOB_FILES, (in_orthanc, processed)
            assert uploads(api, uid) == []  # the follower passed the held study over
            locker.rollback()
        status = finished_job(api, f"/api/v1/dicom/upload-jobs/{job_id}")
    finally:
        execute(first, "UPDATE ehr_imaging.ingest_cursors SET lease_until = now()")
    assert (status["status"], status["successful"]) == ("completed", STALLED_JOB_FILES), status
    time.sleep(3 * POLL_SECONDS)  # the follower's record of the released study, which adds no row
    assert uploads(api, uid) == [("success", STALLED_JOB_FILES)]
    assert eventually(lambda: not query(api, "SELECT 1 FROM ehr_imaging.upload_holds WHERE orthanc_study_id = :s",
                                        s=study_id), timeout=5, what="the released hold to leave upload_holds")


