"""Uploads when Orthanc fails under them (issue 12, item 3), on the in-memory Orthanc: a full storage area is a
503 with Retry-After for what could not be stored, nothing recorded as stored; a ZIP job a restart interrupted
is run again once from its archive at the next start, and failed (its archive removed) if interrupted again."""

from __future__ import annotations

import dataclasses
import io
import os
import uuid
import zipfile
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from ehr_imaging.api.router import headers_of, status_of
from ehr_imaging.app.uploading import Batch, JobRunner
from ehr_imaging.core import errors
from ehr_imaging.services import Services
from ehr_imaging.store import upload_log as uploads
from tests.app.conftest import Handed
from tests.app.records import mrn, upload_rows
from tests.dicom_factory import make_study
from tests.fakes.orthanc import FakeOrthanc
from tests.waiting import eventually


class FailingAfter(FakeOrthanc):
    """Orthanc that stores ``room`` more files, then raises ``error`` for each one after."""

    def __init__(self, room: int, error: Exception) -> None:
        super().__init__()
        self.room = room
        self.error = error

    def post_json_bytes(self, uri: str, body: bytes | memoryview) -> Any:
        if uri == "/instances":
            if self.room <= 0:
                raise self.error
            self.room -= 1
        return super().post_json_bytes(uri, body)


def full_storage(room: int) -> FailingAfter:
    """Refusing as Orthanc does on ENOSPC (its CannotWriteFile)."""
    return FailingAfter(room, errors.ArchiveError("/instances", "Cannot write to file", 14))


def broken_after(room: int) -> FailingAfter:
    """Failing as no Orthanc error does (a bug, a fault below it)."""
    return FailingAfter(room, RuntimeError("something unexpected"))


def test_a_full_storage_refuses_with_503_and_records_nothing_as_stored(services: Services, tmp_path: Path) -> None:
    uid, files = make_study(tmp_path, patient_id=mrn(), accession=None, study_date="20261120", instances=2)
    full = full_storage(room=0)
    with Batch(dataclasses.replace(services, pacs=full), uploaded_by="tech", source="api") as batch:
        for path in files:
            batch.add(path.name, path.read_bytes())
        batch.finish()
    assert [r.status for r in batch.results] == ["failed", "failed"]
    refusal = batch.storage_refusal()
    assert isinstance(refusal, errors.StorageFull)
    assert (status_of(refusal), headers_of(refusal)) == (503, {"Retry-After": "60"})
    assert "storage is full" in refusal.detail
    assert status_of(batch.results[0].failure("")) == 503  # a single upload's answer
    assert full.instances == {} and batch.studies == {}
    assert [row[0] for row in upload_rows(services, uid)] == ["failed"]


def test_files_refused_for_several_reasons_get_the_longest_retry_after(services: Services) -> None:
    """Holds out of reach (5 s) first, then a full storage (a minute): the request's 503 says a minute, as a
    retry after 5 s would find the storage still full."""
    with Batch(services, uploaded_by="tech", source="api") as batch:
        batch.fail("a.dcm", "not stored: the holds are out of reach", kind=errors.Unavailable)
        batch.fail("b.dcm", "not stored: the storage is full", kind=errors.StorageFull)
        batch.fail("c.dcm", "not DICOM", kind=errors.Malformed)
    refusal = batch.storage_refusal()
    assert isinstance(refusal, errors.StorageFull) and refusal.detail == "b.dcm: not stored: the storage is full"
    assert headers_of(refusal) == {"Retry-After": "60"}


def test_with_some_files_stored_the_others_are_failed_results_not_a_503(services: Services, tmp_path: Path) -> None:
    uid, files = make_study(tmp_path, patient_id=mrn(), accession=None, study_date="20261120", instances=3)
    with Batch(dataclasses.replace(services, pacs=full_storage(room=1)), uploaded_by="tech", source="api") as batch:
        for path in files:
            batch.add(path.name, path.read_bytes())
        batch.finish()
    assert [r.status for r in batch.results] == ["stored", "failed", "failed"]
    assert batch.storage_refusal() is None
    assert [(row[0], row[3]) for row in upload_rows(services, uid)] == [("partial", 1)]


def test_an_unexpected_error_records_the_files_stored_before_it_first(
        services: Services, handed: Handed, tmp_path: Path) -> None:
    """Issue 12, item 6: the two files stored are recorded (a partial row that says why) before the error goes
    on; nothing is left to the ingest worker, and recording what failed is not retried in a loop."""
    uid, files = make_study(tmp_path, patient_id=mrn(), accession=None, study_date="20261201", instances=3)
    broken = broken_after(room=2)
    with pytest.raises(RuntimeError, match="something unexpected"), \
            Batch(dataclasses.replace(services, pacs=broken), uploaded_by="tech-9", source="api") as batch:
        for path in files:
            batch.add(path.name, path.read_bytes())
        batch.finish()
    assert len(broken.instances) == 2
    assert batch.interrupted == ("the upload stopped after 2 file(s) on an internal error (RuntimeError);"
                                 " the files after were not read")
    assert [row[:4] for row in upload_rows(services, uid)] == [("partial", "api", "tech-9", 2)]
    assert batch.studies[uid].upload_status == "partial"
    assert handed.later == []  # recorded here, not handed to the worker


def test_an_error_while_recording_is_not_recorded_twice(services: Services, handed: Handed, tmp_path: Path) -> None:
    """An error raised by ``finish`` itself goes on as it is (no second attempt on the way out); the studies it
    did not record go to the ingest worker, as before."""
    uid, files = make_study(tmp_path, patient_id=mrn(), accession=None, study_date="20261201", instances=1)

    class Failing(Batch):
        def _record(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("recording failed")

    with pytest.raises(RuntimeError, match="recording failed"), \
            Failing(services, uploaded_by="tech-9", source="api") as batch:
        batch.add(files[0].name, files[0].read_bytes())
        batch.finish()
    assert batch.interrupted is None
    assert upload_rows(services, uid) == []
    assert len(handed.later) == 1


def zip_bytes(files: list[Path]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in files:
            archive.writestr(path.name, path.read_bytes())
    return buffer.getvalue()


def test_an_interrupted_job_is_run_again_once_from_its_archive(
        services: Services, orthanc: FakeOrthanc, tmp_path: Path) -> None:
    job_dir = tmp_path / "upload-jobs"
    node = f"node-{uuid.uuid4().hex[:8]}:8042"  # this test's own node: the sweep looks at that node's jobs only
    own = dataclasses.replace(services, settings=dataclasses.replace(services.settings, UploadJobDir=str(job_dir)),
                              node=node)
    runner = JobRunner(own)
    folder = runner.directory
    uid, files = make_study(tmp_path / "study", patient_id=mrn(), accession=None, study_date="20261120",
                            instances=3)
    orthanc.receive(files[0].read_bytes(), origin="Plugins", remote_aet=None)  # stored before the "restart"

    def left_running(archive_name: str | None) -> uuid.UUID:
        job_id = uploads.create_job(own.engine, created_by="tech", node=node, source="cd_import",
                                    file_name="cd.zip", order_id=None, patient_id=None, total_files=3)
        uploads.job_progress(own.engine, job_id, processed=1, successful=1, failed=0)  # "running" when killed
        if archive_name is not None:
            (folder / archive_name.format(job_id)).write_bytes(zip_bytes(files))
        return job_id

    resumed = left_running("{}.zip")
    twice = left_running("{}" + JobRunner.RESUMED)  # already run again once before
    lost = left_running(None)  # its archive gone
    os.chmod(folder, 0o700)
    runner.start()

    def finished(job_id: uuid.UUID) -> uploads.UploadJobRecord | None:
        job = uploads.get_job(own.engine, job_id)
        return job if job is not None and job.status in ("completed", "failed") else None

    done = eventually(lambda: finished(resumed), timeout=20, what="the interrupted job to run again")
    assert (done.status, done.successful, done.failed) == ("completed", 3, 0)
    assert [r["already_stored"] for r in done.results or []] == [True, False, False]
    assert len(orthanc.instances) == 3
    for job_id in (twice, lost):
        failed = eventually(partial(finished, job_id), timeout=20, what=f"job {job_id} to be failed")
        assert failed.status == "failed" and failed.error is not None
        assert "interrupted by a restart of the server (twice, or its archive was lost)" in failed.error
    eventually(lambda: list(folder.glob("*.zip")) == [], timeout=10, what="no archive left for a third run")
    assert [row[:2] for row in upload_rows(own, uid)] == [("success", "cd_import")]
