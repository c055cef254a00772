"""Orthanc killed (SIGKILL) in the middle of work, then started again as ``make up`` does (issue 12, item 3):
a 600-instance C-STORE the modality sends again, a ZIP upload job, a multi-file REST upload the EHR retries.
Each test checks what the EHR and the modality see afterwards (Orthanc's instances, the order's link, the
upload history, the unmatched queue, the job's status), never how the ingest worker got there."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from ehr_stack.dicom import DCMTK_ENV
from ehr_stack.procs import pid_alive
from ehr_stack.stack import Stack
from tests.conftest import Client, running_stack
from tests.dicom_factory import make_study, send
from tests.integration.helpers import (
    accession,
    finished_job,
    instances_of,
    mrn,
    order,
    put_order,
    query,
    wait_for_ingest,
)
from tests.waiting import eventually
from tests.zip_factory import files_zip

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    """A stack of its own: these tests kill its Orthanc."""
    with running_stack("process-faults", extra_settings={"Timezone": "UTC"}) as started:
        yield started


def kill_when(stack: Stack, client: Client, study_uid: str, at_least: int) -> None:
    """SIGKILL Orthanc as soon as ``at_least`` instances of the study are stored (and reap it: it is our child)."""
    eventually(lambda: instances_of(client, study_uid) >= at_least, timeout=120, interval=0.05,
               what=f"{at_least} instances of {study_uid} stored before the kill")
    pid = stack.orthanc_pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):  # reaped already (subprocess reaps children it lost track of)
        os.waitpid(pid, 0)
    assert not pid_alive(pid)


def restart(stack: Stack) -> None:
    """What ``make up`` does: PostgreSQL is still up, Orthanc is not running, start it and wait until healthy."""
    stack.start()
    assert stack.healthy()


def upload_rows(client: Client, study_uid: str) -> list[tuple[Any, ...]]:
    return query(client, "SELECT upload_status, order_id, number_of_files, upload_source"
                 " FROM ehr_imaging.dicom_upload_logs WHERE study_instance_uid = :u ORDER BY uploaded_at", u=study_uid)


def link_history(client: Client, study_uid: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    links = query(client, "SELECT order_id, number_of_instances FROM ehr_imaging.study_links"
                  " WHERE study_instance_uid = :u", u=study_uid)
    audit = query(client, "SELECT action, order_id FROM ehr_imaging.link_audit WHERE study_instance_uid = :u",
                  u=study_uid)
    return links, audit


def unmatched_uids(client: Client) -> set[str]:
    answer = client.get("/api/v1/dicom/unmatched?limit=500", "ehr-service")
    assert answer.status_code == 200, answer.text
    return {item["study_instance_uid"] for item in answer.json()["items"]}


def test_a_c_store_killed_midway_and_sent_again_is_linked_once(stack: Stack, tmp_path: Path) -> None:
    client = Client(stack)
    patient, acc = mrn(), accession()
    order_id = put_order(client, mrn=patient, accession_number=acc)
    uid, files = make_study(tmp_path, patient_id=patient, accession=acc, study_date="20261120", instances=600)
    sender = subprocess.Popen(
        ["storescu", "-aet", stack.config.modality_aet, "-aec", stack.config.orthanc_aet, "-to", "30",
         "127.0.0.1", str(stack.config.dicom_port), *map(str, files)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=DCMTK_ENV, text=True)
    try:
        kill_when(stack, client, uid, 200)
        sender.communicate(timeout=60)
    finally:
        if sender.poll() is None:
            sender.kill()
            sender.wait()
    assert sender.returncode != 0, "the modality's association should have broken with the kill"

    restart(stack)
    before = instances_of(client, uid)
    assert 200 <= before < 600, before  # what survived the kill, nothing more
    send(stack, files)  # the modality sends the whole study again
    wait_for_ingest(client, uid, 600)

    assert instances_of(client, uid) == 600
    linked = order(client, order_id)
    assert (linked["study_instance_uid"], linked["number_of_images"]) == (uid, 600)
    links, audit = link_history(client, uid)
    assert links == [(order_id, 600)]
    assert audit == [("auto-link", order_id)]
    # One coherent history: every row a success for this order, each instance counted once across rows.
    rows = upload_rows(client, uid)
    assert rows and all(row[:2] == ("success", order_id) and row[2] > 0 for row in rows), rows
    assert sum(row[2] for row in rows) == 600, rows
    assert uid not in unmatched_uids(client)



def test_a_zip_job_interrupted_by_a_restart_finishes_without_storing_twice(stack: Stack, tmp_path: Path) -> None:
    client, api = Client(stack), Client(stack, stack.api_url)
    patient = mrn()
    order_id = put_order(client, mrn=patient, accession_number=accession())
    uid, files = make_study(tmp_path, patient_id=patient, accession=None, study_date="20261120", instances=400)
    answer = api.request("POST", "/api/v1/dicom/upload-zip", "technician",
                         files={"file": ("cd.zip", files_zip(files), "application/zip")}, data={"order_id": order_id})
    assert answer.status_code == 202, answer.text
    status_url = answer.json()["status_url"]
    kill_when(stack, client, uid, 100)
    restart(stack)

    # The job is run again from its archive at the start (never left "running"), and completes: every file
    # once, those stored before the kill answering already_stored, one study, linked once.
    status = finished_job(api, status_url)
    assert status["status"] == "completed", (status["error"], status["processed_files"])
    assert (status["total_files"], status["processed_files"], status["successful"], status["failed"]) == \
        (400, 400, 400, 0)
    results = status["results"]
    assert {r["status"] for r in results} == {"stored"}
    assert len({r["sop_instance_uid"] for r in results}) == 400
    assert sum(1 for r in results if r["already_stored"]) >= 100  # stored before the kill, not stored again
    assert instances_of(client, uid) == 400
    wait_for_ingest(client, uid, 400)
    links, audit = link_history(client, uid)
    assert links == [(order_id, 400)]
    assert len(audit) == 1 and audit[0][1] == order_id, audit
    rows = upload_rows(client, uid)
    # The job's own row says the whole archive; before it, at most one row for what the first run stored.
    assert rows[-1][:3] == ("success", order_id, 400) and rows[-1][3] == "cd_import", rows
    assert all(row[:2] == ("success", order_id) for row in rows) and len(rows) <= 2, rows
    assert uid not in unmatched_uids(client)
    assert "interrupted by a restart: running it again from its archive" in stack.log_file.read_text()


def test_a_zip_job_interrupted_twice_fails_clearly_and_the_ehr_s_resend_stores_nothing_twice(
        stack: Stack, tmp_path: Path) -> None:
    """A job is run again once: a second restart in its middle fails it (no crash loop on an archive that
    kills the server), with an error that says so; sending the ZIP again completes, storing nothing twice."""
    client, api = Client(stack), Client(stack, stack.api_url)
    patient = mrn()
    order_id = put_order(client, mrn=patient, accession_number=accession())
    uid, files = make_study(tmp_path, patient_id=patient, accession=None, study_date="20261120", instances=400)
    data = files_zip(files)
    answer = api.request("POST", "/api/v1/dicom/upload-zip", "technician",
                         files={"file": ("cd.zip", data, "application/zip")}, data={"order_id": order_id})
    assert answer.status_code == 202, answer.text
    status_url = answer.json()["status_url"]
    kill_when(stack, client, uid, 60)
    restart(stack)
    first = instances_of(client, uid)
    kill_when(stack, client, uid, first + 60)  # in the middle of the job's second run
    restart(stack)

    status = finished_job(api, status_url)
    assert status["status"] == "failed", status
    assert "interrupted by a restart of the server (twice" in status["error"], status
    assert "not stored twice" in status["error"]
    stored = instances_of(client, uid)
    assert first + 60 <= stored < 400, stored
    assert list(stack.upload_job_dir.glob("*/*.zip")) == []  # its archive is not kept for a third run

    again = api.request("POST", "/api/v1/dicom/upload-zip", "technician",
                        files={"file": ("cd.zip", data, "application/zip")}, data={"order_id": order_id})
    assert again.status_code == 202, again.text
    resent = finished_job(api, again.json()["status_url"])
    assert (resent["status"], resent["successful"], resent["failed"]) == ("completed", 400, 0), resent
    assert sum(1 for r in resent["results"] if r["already_stored"]) == stored
    assert instances_of(client, uid) == 400
    wait_for_ingest(client, uid, 400)
    links, audit = link_history(client, uid)
    assert links == [(order_id, 400)]
    assert len(audit) == 1 and audit[0][1] == order_id, audit


def test_a_multi_file_upload_cut_by_a_kill_and_retried_is_stored_once(stack: Stack, tmp_path: Path) -> None:
    client, api = Client(stack), Client(stack, stack.api_url)
    patient = mrn()
    order_id = put_order(client, mrn=patient, accession_number=accession())
    uid, files = make_study(tmp_path, patient_id=patient, accession=None, study_date="20261120", instances=400)
    parts = [("files", (path.name, path.read_bytes(), "application/dicom")) for path in files]
    cut: list[BaseException] = []

    def first_try() -> None:
        try:
            api.request("POST", "/api/v1/dicom/upload-multiple", "technician", files=parts,
                        data={"order_id": order_id})
        except requests.RequestException as exc:
            cut.append(exc)

    sender = threading.Thread(target=first_try)
    sender.start()
    kill_when(stack, client, uid, 150)
    sender.join(timeout=60)
    assert not sender.is_alive() and cut, "the first upload should have been cut off by the kill"
    restart(stack)
    before = instances_of(client, uid)
    assert 150 <= before < 400, before

    retry = Client(stack, stack.api_url).request("POST", "/api/v1/dicom/upload-multiple", "technician", files=parts,
                                                 data={"order_id": order_id})
    assert retry.status_code == 200, retry.text
    summary = retry.json()
    assert (summary["total_files"], summary["successful"], summary["failed"]) == (400, 400, 0)
    assert sum(1 for r in summary["results"] if r["already_stored"]) == before
    assert [(s["study_instance_uid"], s["order_id"]) for s in summary["studies"]] == [(uid, order_id)]
    assert instances_of(client, uid) == 400
    wait_for_ingest(client, uid, 400)
    links, audit = link_history(client, uid)
    assert links == [(order_id, 400)]
    assert audit == [(audit[0][0], order_id)] and audit[0][0] in ("auto-link", "link"), audit
    rows = upload_rows(client, uid)
    # The retry's own row says the whole upload; before it, at most one row for what the cut-off try stored.
    assert rows[-1][:3] == ("success", order_id, 400), rows
    assert all(row[0] == "success" and row[1] == order_id for row in rows), rows
    assert [row[2] for row in rows[:-1]] in ([], [before]), rows
    assert uid not in unmatched_uids(client)
