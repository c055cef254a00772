"""Uploads through the EHR API: files validated, stored in Orthanc in process, recorded and matched per study.

Every upload route goes through ``Batch``: each file is checked (pydicom, header only) and stored at once;
the studies are read back from Orthanc and recorded (one audit row per study, matching) once, at the end,
not per file. While a batch runs, its studies are held from the ingest worker (``ingest.hold``), so a
STABLE_STUDY during a long upload does not record half a study; a batch that cannot record (database
down) hands its studies to the worker, which records them when the database is back.

ZIP archives are read member by member from the file the API listener spooled to disk; large ones run
as jobs on a worker thread, with their state in PostgreSQL. The offline sync protocol (declare, send,
acknowledge) is at the end.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import queue
import re
import shutil
import socket
import threading
import time
import uuid
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from pydicom import Dataset

from . import ingest, study_resolution
from .core import tags
from .core.study_identity import orthanc_study_id
from .core.uploads import (
    FAIL,
    READ,
    ZipMember,
    archive_problem,
    central_directory_problem,
    classify_member,
    content_problem,
    uid_mismatches,
)
from .core.uploads import OfflineDeclaration as OfflineDeclaration
from .private_dirs import UnsafeDirectory, private_directory
from .services import Services
from .store import uploads

MB = 1024 * 1024
CHUNK = MB
UID_KEYWORDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")


class UploadRejected(Exception):
    """A file or request that is refused: ``status`` is the HTTP answer; ``header`` the file's dataset when
    it could be read far enough to say which study it belongs to."""

    def __init__(self, status: int, detail: str, header: Dataset | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.header = header


def check_dicom(data: bytes) -> Dataset:
    """A readable, complete DICOM Part 10 file with the UIDs Orthanc needs (the same reading as ``/validate``:
    a truncated file is refused here, not stored); returns its dataset."""
    try:
        parsed = tags.parse(data)
    except tags.DicomFileError as exc:
        raise UploadRejected(422, str(exc)) from None
    if parsed.problems:  # cut short: refused, but counted against its study when its UIDs were read
        has_uids = all(str(parsed.dataset.get(k, "")).strip() for k in UID_KEYWORDS)
        raise UploadRejected(422, f"incomplete DICOM file: {parsed.problems[0]}",
                             parsed.dataset if has_uids else None)
    if not parsed.has_preamble:  # /validate reports bare datasets; the archive stores Part 10 files only
        raise UploadRejected(422, "not a DICOM Part 10 file (no preamble and 'DICM' prefix)")
    ds = parsed.dataset
    for keyword in UID_KEYWORDS:
        if not str(ds.get(keyword, "")).strip():
            raise UploadRejected(422, f"{keyword} is missing")
    return ds


@dataclass
class FileResult:
    file_name: str
    status: str  # stored | failed
    size: int
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    sop_instance_uid: str | None = None
    orthanc_instance_id: str | None = None
    already_stored: bool = False
    error: str | None = None
    http_status: int = 200  # what a single-file upload answers for it

    def to_json(self) -> dict[str, Any]:
        return {"file_name": self.file_name, "status": self.status, "study_instance_uid": self.study_instance_uid,
                "series_instance_uid": self.series_instance_uid, "sop_instance_uid": self.sop_instance_uid,
                "orthanc_instance_id": self.orthanc_instance_id, "already_stored": self.already_stored,
                "error": self.error}


@dataclass
class StudyOutcome:
    study_instance_uid: str
    orthanc_study_id: str | None
    order_id: str | None
    match_reason: str | None
    upload_status: str
    number_of_files: int
    upload_log_id: uuid.UUID | None

    def to_json(self) -> dict[str, Any]:
        return {"study_instance_uid": self.study_instance_uid, "orthanc_study_id": self.orthanc_study_id,
                "order_id": self.order_id, "match": match_json(self.order_id, self.match_reason),
                "upload_status": self.upload_status, "number_of_files": self.number_of_files,
                "upload_id": str(self.upload_log_id) if self.upload_log_id else None}


def match_json(order_id: str | None, reason: str | None) -> dict[str, Any]:
    return {"status": "linked" if order_id else "unmatched", "reason": None if order_id else reason}


@dataclass
class _Study:
    orthanc_study_id: str | None = None
    stored: list[FileResult] = field(default_factory=list)
    failed: list[FileResult] = field(default_factory=list)


class Batch:
    """The files of one upload request (or job): ``add`` each, then ``finish`` once. Use as a context
    manager: leaving it releases the studies it held, and hands unrecorded ones to the ingest worker."""

    def __init__(self, services: Services, *, uploaded_by: str, source: str, order_id: str | None = None,
                 patient_id: str | None = None) -> None:
        self._services = services
        self.uploaded_by, self.source, self.order_id, self.patient_id = uploaded_by, source, order_id, patient_id
        self.results: list[FileResult] = []
        self.studies: dict[str, StudyOutcome] = {}
        self._parts: dict[str, _Study] = {}
        self._held: set[str] = set()
        self._recorded: set[str] = set()
        self._collisions: dict[tuple[str, str], str | None] = {}
        self._began = time.monotonic()

    def __enter__(self) -> Batch:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for orthanc_id in self._held:
            ingest.release(orthanc_id)
            if orthanc_id not in self._recorded:
                self._services.ingest_later(orthanc_id)
        self._held.clear()

    @property
    def successful(self) -> int:
        return sum(1 for r in self.results if r.status == "stored")

    @property
    def failed(self) -> int:
        return len(self.results) - self.successful

    def fail(self, file_name: str, error: str, size: int = 0, status: int = 422,
             header: Dataset | None = None) -> FileResult:
        result = FileResult(file_name, "failed", size, error=error, http_status=status)
        if header is not None:
            result.study_instance_uid = str(header.StudyInstanceUID)
            result.series_instance_uid = str(header.SeriesInstanceUID)
            result.sop_instance_uid = str(header.SOPInstanceUID)
        self.results.append(result)
        self._parts.setdefault(result.study_instance_uid or "", _Study()).failed.append(result)
        return result

    def add(self, file_name: str, data: bytes) -> FileResult:
        """Validate one file and store it in Orthanc; a bad file is a failed result, never an exception."""
        try:
            header = check_dicom(data)
        except UploadRejected as exc:
            return self.fail(file_name, exc.detail, len(data), exc.status, exc.header)
        patient_id, study_uid = str(header.get("PatientID", "")), str(header.StudyInstanceUID)
        conflict = self._collision(study_uid, patient_id)
        if conflict is not None:
            return self.fail(file_name, conflict, len(data), 409, header)
        # Held before the file goes in, so the worker never records a study this upload is still writing.
        self._hold(orthanc_study_id(patient_id, study_uid))
        try:
            stored = self._services.pacs.post_json_bytes("/instances", data)
        except Exception as exc:  # noqa: BLE001 - Orthanc refused the file: say so, it stored nothing
            return self.fail(file_name, f"Orthanc refused the file: {exc}", len(data), 400, header)
        study_id = str(stored["ParentStudy"])
        self._hold(study_id)  # the same ID, unless Orthanc reads the PatientID differently
        result = FileResult(file_name, "stored", len(data), str(header.StudyInstanceUID),
                            str(header.SeriesInstanceUID), str(header.SOPInstanceUID), str(stored["ID"]),
                            already_stored=stored.get("Status") == "AlreadyStored")
        self.results.append(result)
        part = self._parts.setdefault(result.study_instance_uid or "", _Study())
        part.orthanc_study_id = study_id
        part.stored.append(result)
        return result

    def _collision(self, study_uid: str, patient_id: str) -> str | None:
        """Why this StudyInstanceUID must not be stored under this PatientID (asked once per study and patient)."""
        key = (study_uid, patient_id)
        if key not in self._collisions:
            self._collisions[key] = study_resolution.upload_collision(self._services, study_uid, patient_id)
        return self._collisions[key]

    def _hold(self, orthanc_study_id: str) -> None:
        if orthanc_study_id not in self._held:
            ingest.hold(orthanc_study_id)
            self._held.add(orthanc_study_id)

    def finish(self) -> dict[str, StudyOutcome]:
        """Record and match each study once (one audit row per study), and a failed row for the files
        that belong to no study or to a study none of whose files could be stored."""
        duration = time.monotonic() - self._began
        for study_uid, part in self._parts.items():
            names = [r.file_name for r in part.stored + part.failed]
            errors = "; ".join(f"{r.file_name}: {r.error}" for r in part.failed) or None
            if part.orthanc_study_id is None:  # nothing stored: the rejected files' own row
                uploads.record_failed(self._services.engine, uploaded_by=self.uploaded_by, source=self.source,
                                      file_names=names, size=sum(r.size for r in part.failed), error=errors or "",
                                      study_uid=study_uid or None, patient_id=self.patient_id, duration=duration)
                continue
            audit = uploads.UploadAudit(
                number_of_files=len(part.stored), total_size_bytes=sum(r.size for r in part.stored),
                file_names=names, status="partial" if part.failed else "success", error=errors, duration=duration)
            self.studies[study_uid] = self._record(study_uid, part.orthanc_study_id, audit, names)
        return self.studies

    def _record(self, study_uid: str, orthanc_id: str, audit: uploads.UploadAudit, names: list[str]) -> StudyOutcome:
        services = self._services
        seen = ingest.observe_study(services, orthanc_id)
        if seen is None:  # deleted by someone else while it was being uploaded
            self._recorded.add(orthanc_id)
            error = "the study was deleted while it was being uploaded"
            for result in self._parts[study_uid].stored:
                result.status, result.error, result.http_status = "failed", error, 409
            uploads.record_failed(services.engine, uploaded_by=self.uploaded_by, source=self.source,
                                  file_names=names, size=audit.total_size_bytes, error=error, study_uid=study_uid,
                                  patient_id=self.patient_id, duration=audit.duration)
            return StudyOutcome(study_uid, None, None, error, "failed", 0, None)
        seen = dataclasses.replace(seen, upload_source=self.source, uploaded_by=self.uploaded_by,
                                   explicit_order_id=self.order_id)
        outcome = ingest.record(services, seen, audit)
        self._recorded.add(orthanc_id)
        services.revisit_study(orthanc_id)
        return StudyOutcome(study_uid, orthanc_id, outcome.order_id, outcome.reason, audit.status,
                            audit.number_of_files, outcome.upload_log_id)

    def summary(self) -> dict[str, Any]:
        return {"total_files": len(self.results), "successful": self.successful, "failed": self.failed,
                "results": [r.to_json() for r in self.results],
                "studies": [s.to_json() for s in self.studies.values()]}


# --- limits ------------------------------------------------------------------------------------------


def check_files(services: Services, sizes: list[int]) -> None:
    """The request-wide limits of a multi-file upload (413), before anything is stored."""
    settings = services.settings
    if not sizes:
        raise UploadRejected(400, "send at least one file in the field 'files'")
    if len(sizes) > settings.MaxFilesPerUpload:
        raise UploadRejected(413, f"{len(sizes)} files; at most {settings.MaxFilesPerUpload} per upload")
    if max(sizes) > settings.MaxFileSizeMb * MB:
        raise UploadRejected(413, f"a file is larger than {settings.MaxFileSizeMb} MB")
    if sum(sizes) > settings.MaxUploadSizeMb * MB:
        raise UploadRejected(413, f"upload larger than {settings.MaxUploadSizeMb} MB")


# --- ZIP archives --------------------------------------------------------------------------------------


@dataclass
class Archive:
    """A ZIP whose directory was read and checked; the members are read later, one at a time."""

    members: list[zipfile.ZipInfo]
    readable: int  # members that are not skipped
    uncompressed_bytes: int


def open_archive(services: Services, stream: IO[bytes]) -> tuple[zipfile.ZipFile, Archive]:
    """Read the central directory and apply the limits (413) before any member is read."""
    settings = services.settings
    problem = _directory_problem(stream, settings.MaxFilesPerUpload)
    if problem is not None:
        raise UploadRejected(413, problem)
    try:
        archive = zipfile.ZipFile(stream)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise UploadRejected(422, f"not a readable ZIP archive ({exc})") from None
    infos = archive.infolist()
    members = [zip_member(info) for info in infos]
    problem = archive_problem(members, max_files=settings.MaxFilesPerUpload, max_file_bytes=settings.MaxFileSizeMb * MB,
                              max_total_bytes=settings.MaxZipUncompressedMb * MB)
    if problem is not None:
        archive.close()
        raise UploadRejected(413, problem)
    readable = [m for m in members if classify_member(m).action != "skip"]
    return archive, Archive(infos, len(readable), sum(m.file_size for m in readable))


_END_RECORD = getattr(zipfile, "_EndRecData")  # noqa: B009 - zipfile's own end-record reader: what ZipFile uses


def _directory_problem(stream: IO[bytes], max_files: int) -> str | None:
    """The central directory checked before ``zipfile`` parses it (413), or None (no end record: ZipFile's 422)."""
    def read_at(offset: int, size: int) -> bytes:
        stream.seek(offset)
        return stream.read(size)

    try:
        end = _END_RECORD(stream)
        return central_directory_problem(end, read_at, max_files=max_files) if end else None
    except (OSError, zipfile.BadZipFile):
        return None  # ZipFile reports it
    finally:
        stream.seek(0)


def zip_member(info: zipfile.ZipInfo) -> ZipMember:
    return ZipMember(info.filename, info.file_size, info.is_dir(), info.flag_bits, info.external_attr)


def read_members(archive: zipfile.ZipFile, infos: list[zipfile.ZipInfo],
                 max_file_bytes: int) -> Iterator[tuple[str, bytes | None, str | None]]:
    """(name, content, None) for each member to read, (name, None, error) for a refused or unreadable one;
    skipped members (directories, DICOMDIR) are left out. One member in memory at a time."""
    for info in infos:
        verdict = classify_member(zip_member(info))
        if verdict.action == FAIL:
            yield info.filename, None, verdict.reason
        elif verdict.action == READ:
            try:
                with archive.open(info) as member:
                    data = member.read(max_file_bytes + 1)  # zipfile never returns more than the declared size
                if len(data) > max_file_bytes:
                    yield info.filename, None, f"file larger than {max_file_bytes // MB} MB"
                else:
                    yield info.filename, data, None
            except (zipfile.BadZipFile, NotImplementedError, RuntimeError, zlib.error, EOFError, OSError) as exc:
                yield info.filename, None, f"unreadable archive member ({type(exc).__name__}: {exc})"


def store_archive(batch: Batch, archive: zipfile.ZipFile, infos: list[zipfile.ZipInfo], max_file_bytes: int,
                  progress: Callable[[Batch], None] | None = None) -> None:
    for name, data, error in read_members(archive, infos, max_file_bytes):
        if data is None:
            batch.fail(name, error or "unreadable")
        else:
            batch.add(name, data)
        if progress is not None:
            progress(batch)


def is_large(services: Services, archive: Archive) -> bool:
    settings = services.settings
    return (archive.readable > settings.UploadJobAboveFiles
            or archive.uncompressed_bytes > settings.UploadJobAboveMb * MB)


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
    is in PostgreSQL, so any node answers the poll. A restart loses the archive: at start the node marks
    its own unfinished jobs failed (the files already stored stay, and are recorded by the ingest catch-up).
    """

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
            raise UploadRejected(503, "large ZIP uploads run as jobs, and this node's job folder is not usable"
                                      " (see Orthanc's log); send fewer or smaller files") from None

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
        """At start-up: fail this node's interrupted jobs (once the database and Orthanc answer)."""
        with contextlib.suppress(UploadRejected):  # logged: say at start-up, not at the first large upload
            _ = self.directory
        self._ensure_started()

    def _fail_interrupted(self) -> None:
        delay, attempts = 1.0, 0
        while True:
            attempts += 1
            try:
                uploads.fail_interrupted_jobs(self._services.engine, self.node(), keep=set(self._mine))
                try:
                    folder = self.directory
                except UploadRejected:  # nothing of ours to sweep in a folder that is not ours
                    return
                for stale in folder.glob("*.zip"):
                    if stale.stem not in {str(job_id) for job_id in self._mine}:
                        stale.unlink(missing_ok=True)
                return
            except Exception as exc:  # noqa: BLE001 - database not ready, or its migrations not applied yet
                if attempts >= 3:
                    self._services.log_error(f"ehr-imaging: upload jobs not ready ({type(exc).__name__}: {exc});"
                                             " retrying")
                time.sleep(delay)
                delay = min(delay * 2, 30.0)

    def _run(self) -> None:
        self._fail_interrupted()
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
    data: bytes | None


def keep_copy(upload: UploadedSource, target: Path) -> None:
    if upload.path is not None:
        try:
            os.link(upload.path, target)  # the listener deletes its own name for the file afterwards
            return
        except OSError:
            shutil.copyfile(upload.path, target)  # another file system
            return
    target.write_bytes(upload.data or b"")


# --- offline sync --------------------------------------------------------------------------------------


def sha256_and_size(stream: IO[bytes]) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    while chunk := stream.read(CHUNK):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def offline_status(services: Services, upload_id: uuid.UUID, caller: str, admin: bool) -> Any:
    """The declaration, to the user who made it (or an admin); anyone else gets the same 404 as for none."""
    row = uploads.get_offline(services.engine, upload_id)
    if row is None or (row.declared_by != caller and not admin):
        raise UploadRejected(404, f"offline upload {upload_id} not found")
    return row


def offline_binary(services: Services, upload_id: uuid.UUID, stream: IO[bytes], uploaded_by: str,
                   admin: bool = False) -> dict[str, Any]:
    """Verify the bytes against the declaration (size, sha256, UIDs), store them, audit them. Re-sending
    after success answers the same status and stores nothing twice. One at a time per upload_id."""
    with uploads.offline_lock(services.engine, upload_id):
        row = offline_status(services, upload_id, uploaded_by, admin)
        declared = OfflineDeclaration(row.sop_instance_uid, row.series_instance_uid, row.study_instance_uid,
                                      row.size, row.sha256, row.patient_id, row.order_id, row.file_name)
        name = row.file_name or row.sop_instance_uid

        def reject(status: int, detail: str) -> UploadRejected:
            uploads.record_failed(services.engine, uploaded_by=uploaded_by, source="offline", file_names=[name],
                                  size=row.size, error=detail, study_uid=row.study_instance_uid,
                                  patient_id=row.patient_id)
            return UploadRejected(status, detail)

        digest, size = sha256_and_size(stream)
        problem = content_problem(declared, size=size, sha256=digest)
        if problem is not None:
            raise reject(422, problem)
        if row.status in ("STORED", "ACK_RECEIVED") and _in_orthanc(services, row.orthanc_instance_id):
            return {"upload_id": str(upload_id), "status": row.status}
        stream.seek(0)
        data = stream.read()
        try:
            header = check_dicom(data)
        except UploadRejected as exc:
            raise reject(exc.status, exc.detail) from None
        wrong = uid_mismatches(declared, {k: str(header.get(k, "")) for k in UID_KEYWORDS})
        if wrong:
            raise reject(422, f"the file's {', '.join(wrong)} differ from the declared ones")
        with Batch(services, uploaded_by=uploaded_by, source="offline", order_id=row.order_id,
                   patient_id=row.patient_id) as batch:
            result = batch.add(name, data)
            studies = batch.finish()
        study = studies.get(row.study_instance_uid)
        if result.status != "stored" or study is None or study.orthanc_study_id is None:
            raise UploadRejected(result.http_status if result.http_status != 200 else 409,
                                 result.error or "the file could not be stored")
        uploads.offline_stored(services.engine, upload_id, orthanc_instance_id=result.orthanc_instance_id or "",
                               orthanc_study_id=study.orthanc_study_id, upload_log_id=study.upload_log_id)
        return {"upload_id": str(upload_id), "status": "STORED", "study_instance_uid": row.study_instance_uid,
                "orthanc_instance_id": result.orthanc_instance_id}


def offline_ack(services: Services, upload_id: uuid.UUID, caller: str, admin: bool = False) -> dict[str, Any]:
    """ACK only what is in Orthanc now and audited: then the client may delete its copy."""
    row = offline_status(services, upload_id, caller, admin)
    if row.status == "ACK_RECEIVED":
        return {"upload_id": str(upload_id), "status": "ACK_RECEIVED"}
    if row.status != "STORED":
        raise UploadRejected(409, f"upload is {row.status}: send the binary first")
    if not _in_orthanc(services, row.orthanc_instance_id):
        raise UploadRejected(409, "the instance is not in the archive (deleted?): send the binary again")
    if not uploads.upload_row_exists(services.engine, row.upload_log_id):
        raise UploadRejected(409, "the upload is not audited yet")
    uploads.offline_acked(services.engine, upload_id)
    return {"upload_id": str(upload_id), "status": "ACK_RECEIVED"}


def _in_orthanc(services: Services, orthanc_instance_id: str | None) -> bool:
    if not orthanc_instance_id:
        return False
    try:
        services.pacs.get_json(f"/instances/{orthanc_instance_id}")
    except Exception:  # noqa: BLE001 - Orthanc answers 404 for an unknown instance
        return False
    return True
