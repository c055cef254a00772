"""The storage volume full (issue 12, item 3): Orthanc's storage directory is a small tmpfs made for the test.
Filled up, C-STORE is refused with a DICOM failure status (Orthanc keeps running), REST uploads answer 503 with
Retry-After and a JSON detail, and nothing is recorded as stored (no study link, no successful upload row);
once space is freed, the next C-STORE and upload are stored and linked to their orders."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ehr_stack.dicom import DCMTK_ENV
from ehr_stack.stack import Stack
from tests.conftest import Client, keep_log, stack_dir, start_stack
from tests.dicom_factory import make_study, send
from tests.integration.helpers import accession, instances_of, mrn, order, put_order, query, wait_for_ingest

pytestmark = pytest.mark.integration

VOLUME_MB = 8
FILLER = ".filler"  # in the storage directory: Orthanc's own files are in two-level hex folders beside it


@pytest.fixture(scope="module")
def small_volume_stack() -> Iterator[Stack]:
    var_dir = stack_dir()
    storage = var_dir / "orthanc" / "storage"  # Stack.storage_dir of a stack in var_dir
    storage.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={VOLUME_MB}m,mode=0700", "tmpfs", str(storage)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        shutil.rmtree(var_dir, ignore_errors=True)
        pytest.skip(f"cannot mount a small tmpfs for Orthanc's storage: {mounted.stderr.strip()}")
    started: Stack | None = None
    try:
        started = start_stack(var_dir, extra_settings={"Timezone": "UTC"})
        assert started.storage_dir == storage
        yield started
    finally:
        if started is not None:
            keep_log(started, "storage-full")
            started.stop()
        subprocess.run(["umount", str(storage)], check=False)
        shutil.rmtree(var_dir, ignore_errors=True)


def fill(storage: Path, leave: int) -> Path:
    """Fill the volume until ``leave`` bytes are free (less than one instance)."""
    stats = os.statvfs(storage)
    free = stats.f_bavail * stats.f_frsize
    filler = storage / FILLER
    with filler.open("ab") as handle:
        handle.write(b"\0" * max(free - leave, 0))
    return filler


def recorded(client: Client, study_uid: str) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    links = query(client, "SELECT order_id, number_of_instances FROM ehr_imaging.study_links"
                  " WHERE study_instance_uid = :u", u=study_uid)
    rows = query(client, "SELECT upload_status, number_of_files, orthanc_study_id, order_id"
                 " FROM ehr_imaging.dicom_upload_logs WHERE study_instance_uid = :u", u=study_uid)
    return links, rows


def test_a_full_volume_refuses_cleanly_and_recovers(small_volume_stack: Stack, tmp_path: Path) -> None:
    stack = small_volume_stack
    client, api = Client(stack), Client(stack, stack.api_url)
    filler = fill(stack.storage_dir, leave=8 * 1024)

    # C-STORE: a DICOM failure status for each file, and Orthanc still answers.
    patient, acc = mrn(), accession()
    order_id = put_order(client, mrn=patient, accession_number=acc)
    uid, files = make_study(tmp_path / "dimse", patient_id=patient, accession=acc, study_date="20261120",
                            instances=2)
    refused = subprocess.run(["storescu", "-v", "-aet", stack.config.modality_aet, "-aec", stack.config.orthanc_aet,
                              "-R", "-to", "30", "127.0.0.1", str(stack.config.dicom_port), *map(str, files)],
                             capture_output=True, text=True, timeout=120, env=DCMTK_ENV)
    output = refused.stdout + refused.stderr
    assert refused.returncode != 0, output
    assert "Received Store Response (Refused: OutOfResources)" in output, output  # 0xA700
    assert client.get("/system", auth=stack.admin_auth).status_code == 200
    assert instances_of(client, uid) == 0

    # REST uploads: 503 with Retry-After and a JSON detail, on both ports, one file and several.
    upload_patient = mrn()
    upload_order = put_order(client, mrn=upload_patient, accession_number=accession())
    upload_uid, upload_files = make_study(tmp_path / "rest", patient_id=upload_patient, accession=None,
                                          study_date="20261120", instances=2)
    for target in (client, api):
        answer = target.request("POST", "/api/v1/dicom/upload", "technician", data=upload_files[0].read_bytes(),
                                headers={"Content-Type": "application/dicom", "X-Order-Id": upload_order})
        assert answer.status_code == 503, answer.text
        assert answer.headers["Retry-After"] == "60"
        assert answer.headers["Content-Type"].startswith("application/json")
        assert "storage" in answer.json()["detail"]
    several = api.request("POST", "/api/v1/dicom/upload-multiple", "technician",
                          files=[("files", (f.name, f.read_bytes(), "application/dicom")) for f in upload_files],
                          data={"order_id": upload_order})
    assert several.status_code == 503, several.text
    assert several.headers["Retry-After"] == "60" and "storage" in several.json()["detail"]
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as members:
        for path in upload_files:
            members.writestr(path.name, path.read_bytes())
    zipped = api.request("POST", "/api/v1/dicom/upload-zip", "technician", data={"order_id": upload_order},
                         files={"file": ("cd.zip", archive.getvalue(), "application/zip")})
    assert zipped.status_code == 503, zipped.text  # small: stored at once, not as a job
    assert zipped.headers["Retry-After"] == "60" and "storage" in zipped.json()["detail"]
    assert instances_of(client, upload_uid) == 0
    # Nothing half-recorded: no link, no study record, no upload row saying something was stored.
    for study_uid in (uid, upload_uid):
        links, rows = recorded(client, study_uid)
        assert links == [], links
        # a refused upload's own audit row says it failed and points at no stored study and no order
        assert all(row[0] == "failed" and row[2:] == (None, None) for row in rows), rows
    assert order(client, order_id)["study_instance_uid"] is None
    assert order(client, upload_order)["study_instance_uid"] is None
    assert client.get("/system", auth=stack.admin_auth).status_code == 200

    # Space again: the modality's resend and the EHR's retry are stored and linked.
    filler.unlink()
    send(stack, files)
    wait_for_ingest(client, uid, 2)
    assert order(client, order_id)["study_instance_uid"] == uid
    retried = api.request("POST", "/api/v1/dicom/upload-multiple", "technician",
                          files=[("files", (f.name, f.read_bytes(), "application/dicom")) for f in upload_files],
                          data={"order_id": upload_order})
    assert retried.status_code == 200, retried.text
    assert (retried.json()["successful"], retried.json()["failed"]) == (2, 0)
    assert order(client, upload_order)["study_instance_uid"] == upload_uid
    assert instances_of(client, upload_uid) == 2
    links, rows = recorded(client, upload_uid)
    assert links == [(upload_order, 2)]
    assert [row[:2] for row in rows if row[0] != "failed"] == [("success", 2)]
