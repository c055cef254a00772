"""Large ZIP uploads as jobs on this node's worker thread, their state in PostgreSQL."""

from __future__ import annotations

import contextlib
import os
import queue
import re
import shutil
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ...core import errors
from ...private_dirs import UnsafeDirectory, private_directory
from ...services import Services
from ...store import upload_log as uploads
from .archives import open_archive, store_archive
from .batch import MB, Batch, UploadRejected

# --- jobs ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobRequest:
    job_id: uuid.UUID
    path: Path
    uploaded_by: str
    source: str
    order_id: str | None
    patient_id: str | None


class JobRunner:
    """Runs upload jobs of this node one after the other on a worker thread.

    The job's archive lives on this node's disk, so a job is run by the node that received it; its state
    is in PostgreSQL, so any node answers the poll. A job a restart interrupted is run again, once, from its
    archive at the node's next start (files stored before the restart answer ``already_stored``: nothing is
    stored twice); interrupted again, or its archive gone, it is marked failed (the files already stored
    stay, and are recorded by the ingest worker).
    """

    RESUMED = ".resumed.zip"  # the archive of a job run again after a restart: not run a third time

    PROGRESS_EVERY_SECONDS = 1.0

    def __init__(self, services: Services) -> None:
        self._services = services
        self._queue: queue.Queue[JobRequest] = queue.Queue()
        self._mine: set[uuid.UUID] = set()  # jobs this process queued: the start-up sweep leaves them alone
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def directory(self) -> Path:
        """This node's job folder in ``UploadJobDir``: private (``private_dirs``), or jobs are refused (503)."""
        configured = self._services.settings.UploadJobDir
        try:
            if not configured:
                raise UnsafeDirectory("EhrImaging.UploadJobDir is not set (a private folder on this node's disk)")
            base = private_directory(Path(configured))
            # one folder per node: its start-up sweep is its own
            return private_directory(base / re.sub(r"[^A-Za-z0-9_.-]", "_", self.node()))
        except UnsafeDirectory as exc:
            self._services.log_error(f"ehr-imaging: upload jobs refused: {exc}")
            raise UploadRejected(errors.Unavailable, "large ZIP uploads run as jobs, and this node's job folder is"
                                 " not usable (see Orthanc's log); send fewer or smaller files") from None

    def node(self) -> str:
        """This Orthanc node (host name and HTTP port: two nodes on one host differ by port)."""
        return self._services.node or socket.gethostname()

    def submit(self, upload: UploadedSource, *, uploaded_by: str, source: str, order_id: str | None,
               patient_id: str | None, total_files: int) -> uuid.UUID:
        """Keep the archive (a hard link to the listener's spooled file, else a copy) and queue the job."""
        self._ensure_started()
        folder = self.directory  # checked before the job exists: a refused job leaves no row behind
        job_id = uploads.create_job(self._services.engine, created_by=uploaded_by, node=self.node(), source=source,
                                    file_name=upload.filename, order_id=order_id, patient_id=patient_id,
                                    total_files=total_files)
        self._mine.add(job_id)
        path = folder / f"{job_id}.zip"
        keep_copy(upload, path)
        self._queue.put(JobRequest(job_id, path, uploaded_by, source, order_id, patient_id))
        return job_id

    def _ensure_started(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="ehr-upload-jobs", daemon=True)
                self._thread.start()

    def start(self) -> None:
        """At start-up: resume or fail this node's interrupted jobs (once the database and Orthanc answer)."""
        with contextlib.suppress(UploadRejected):  # logged: say at start-up, not at the first large upload
            _ = self.directory
        self._ensure_started()

    def _wait_for_orthanc(self) -> None:
        """Until Orthanc answers in-process calls: the worker starts once migrated, which at a restart can be
        before Orthanc itself has started, and a resumed job's first lookup must not fail for that."""
        delay = 0.2
        while True:
            try:
                self._services.pacs.system()
                return
            except Exception:  # noqa: BLE001 - Orthanc still starting
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _resume_interrupted(self) -> None:
        self._wait_for_orthanc()
        delay, attempts = 1.0, 0
        while True:
            attempts += 1
            try:
                self._resume_or_fail()
                return
            except Exception as exc:  # noqa: BLE001 - database not ready, or its migrations not applied yet
                if attempts >= 3:
                    self._services.log_error(f"ehr-imaging: upload jobs not ready ({type(exc).__name__}: {exc});"
                                             " retrying")
                time.sleep(delay)
                delay = min(delay * 2, 30.0)

    def _resume_or_fail(self) -> None:
        """At start-up: run this node's interrupted jobs again from their archives (once), fail the others,
        and remove archives no job will read."""
        engine = self._services.engine
        try:
            folder: Path | None = self.directory
        except UploadRejected:  # nothing of ours to resume or sweep in a folder that is not ours
            folder = None
        for job in uploads.interrupted_jobs(engine, self.node(), keep=set(self._mine)):
            archive = folder / f"{job.job_id}.zip" if folder is not None else None
            if archive is None or not archive.is_file():
                continue  # gone, or already run again once (its archive renamed): failed below
            again = archive.rename(archive.with_name(f"{job.job_id}{self.RESUMED}"))
            uploads.requeue_job(engine, job.job_id)
            self._mine.add(job.job_id)
            self._queue.put(JobRequest(job.job_id, again, job.created_by, job.source, job.order_id, job.patient_id))
            self._services.log_warning(f"ehr-imaging: upload job {job.job_id} interrupted by a restart: running it"
                                       " again from its archive")
        uploads.fail_interrupted_jobs(engine, self.node(), keep=set(self._mine))
        if folder is None:
            return
        for stale in folder.glob("*.zip"):
            if stale.name.split(".", 1)[0] not in {str(job_id) for job_id in self._mine}:
                stale.unlink(missing_ok=True)

    def _run(self) -> None:
        self._resume_interrupted()
        while True:
            job = self._queue.get()
            try:
                self.run_job(job)
            except Exception as exc:  # noqa: BLE001 - one bad job must not stop the others (run_job recorded it)
                self._services.log_error(f"ehr-imaging: upload job {job.job_id} failed: {type(exc).__name__}: {exc}")
            finally:
                job.path.unlink(missing_ok=True)
                self._queue.task_done()

    def run_job(self, job: JobRequest) -> None:
        engine = self._services.engine
        last = 0.0

        def progress(batch: Batch) -> None:
            nonlocal last
            if time.monotonic() - last >= self.PROGRESS_EVERY_SECONDS:
                last = time.monotonic()
                try:  # progress is a courtesy to pollers: a database blip must not stop the job
                    uploads.job_progress(engine, job.job_id, processed=len(batch.results),
                                         successful=batch.successful, failed=batch.failed)
                except Exception as exc:  # noqa: BLE001 - the final state is written at the end
                    self._services.log_error(f"ehr-imaging: upload job {job.job_id}: progress not saved ({exc})")

        uploads.job_progress(engine, job.job_id, processed=0, successful=0, failed=0)
        batch = Batch(self._services, uploaded_by=job.uploaded_by, source=job.source, order_id=job.order_id,
                      patient_id=job.patient_id)
        try:
            with job.path.open("rb") as stream, batch:
                archive, checked = open_archive(self._services, stream)
                with archive:
                    store_archive(batch, archive, checked.members, self._services.settings.MaxFileSizeMb * MB,
                                  progress)
                batch.finish()
        except Exception as exc:
            # Say what was stored before the failure: those files are in Orthanc (and recorded by the worker).
            uploads.finish_job(engine, job.job_id, status="failed", results=[r.to_json() for r in batch.results],
                               successful=batch.successful, failed=batch.failed,
                               error=f"{type(exc).__name__}: {exc}")
            raise
        uploads.finish_job(engine, job.job_id, status="completed", results=[r.to_json() for r in batch.results],
                           successful=batch.successful, failed=batch.failed)


class UploadedSource(Protocol):
    """What a job needs of the uploaded archive (``api.router.UploadedFile`` fits)."""

    filename: str
    path: Path | None
    data: bytes | memoryview | None


def keep_copy(upload: UploadedSource, target: Path) -> None:
    if upload.path is not None:
        try:
            os.link(upload.path, target)  # the listener deletes its own name for the file afterwards
            return
        except OSError:
            shutil.copyfile(upload.path, target)  # another file system
            return
    target.write_bytes(upload.data or b"")


