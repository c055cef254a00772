"""One upload's files: validated, stored in Orthanc, recorded and matched once per study (``Batch``)."""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from pydicom import Dataset

from ...core import dicom_file, errors, header_scan
from ...core.metrics import UPLOAD_FAILURES
from ...core.study_identity import orthanc_study_id
from ...services import Services
from ...store import upload_log as uploads
from .. import ingest, observation, study_resolution

MB = 1024 * 1024
CHUNK = MB
UID_KEYWORDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
IDENTITY_TAGS = header_scan.IDENTITY  # PatientID and the three UIDs: what a batch keeps of a header
# Orthanc's error codes when its storage area cannot take the file (a full volume: ENOSPC is CannotWriteFile;
# MaximumStorageSize reached is FullStorage): not the file's fault, so errors.StorageFull (503), never 400.
ORTHANC_STORAGE_REFUSALS = frozenset({14, 19})  # CannotWriteFile, FullStorage
# With Orthanc's index in PostgreSQL, how long a file waits for its study's hold to be seen by the other nodes
# (core/holds.py ready_for: one round of app/hold_exchange.py, or a renewal after a blip) before it is refused.
HOLD_PUBLISHED_WITHIN_SECONDS = 5.0


class UploadRejected(Exception):
    """A file or request that is refused: ``kind`` says why in the error vocabulary (core/errors.py);
    ``header`` is the file's dataset when it could be read far enough to say which study it belongs to."""

    def __init__(self, kind: type[errors.DomainError], detail: str, header: Dataset | None = None) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.header = header

    @property
    def error(self) -> errors.DomainError:
        return self.kind(self.detail)


def check_dicom(data: bytes | memoryview, converted: dicom_file.Converted | None = None) -> Dataset:
    """A readable, complete DICOM Part 10 file with the UIDs Orthanc needs (the same reading as ``/validate``:
    a truncated file is refused here, not stored); returns its header (PatientID and the UIDs at least).

    What cannot be read as a DICOM file (not DICOM, unreadable, cut short, no Part 10 header) is ``Malformed``
    (400, what the EHR's client expects for an invalid DICOM file); a readable DICOM file lacking a UID is
    ``Invalid`` (422): its content, not its form, is what is wrong. ``converted``: the values a batch's earlier
    files converted already (``dicom_file.parse``), not converted again."""
    # The common file (explicit VR little endian, well formed) is read by header_scan, about 2.5 times faster
    # than pydicom's whole reading; what it declines is read by pydicom, which also words each refusal.
    ds = header_scan.identity(data, converted)
    parsed = None
    if ds is None:
        try:  # the header is what is checked
            parsed = dicom_file.parse(data, defer_size=dicom_file.BULK_VALUE_BYTES, converted=converted)
        except dicom_file.DicomFileError as exc:
            raise UploadRejected(errors.Malformed, str(exc)) from None
        ds = parsed.dataset
    try:  # read once; a value over 16 KB is read (and converted) only here
        identity = {keyword: str(ds.get(keyword, "")) for keyword in ("PatientID", *UID_KEYWORDS)}
    except Exception as exc:  # noqa: BLE001 - e.g. an unknown VR on a long PatientID (was a 500)
        if parsed is not None and parsed.problems:
            raise UploadRejected(errors.Malformed, f"incomplete DICOM file: {parsed.problems[0]}") from None
        raise UploadRejected(errors.Malformed, f"not a readable DICOM file ({type(exc).__name__}: {exc})") from None
    for keyword, value in identity.items():  # recorded as text: PostgreSQL refuses NUL in text (was a 500)
        if "\x00" in value.rstrip("\x00 "):
            raise UploadRejected(errors.Malformed, f"{keyword} holds a NUL character")
    missing = next((keyword for keyword in UID_KEYWORDS if not identity[keyword].strip()), None)
    # (header_scan only answers for a complete Part 10 file.) Cut short: refused, but counted against its study
    # when its UIDs were read. A bare dataset: /validate reports it, the archive stores Part 10 files only.
    if parsed is not None and parsed.problems:
        raise UploadRejected(errors.Malformed, f"incomplete DICOM file: {parsed.problems[0]}",
                             ds if missing is None else None)
    if parsed is not None and not parsed.has_preamble:
        raise UploadRejected(errors.Malformed, "not a DICOM Part 10 file (no preamble and 'DICM' prefix)")
    if missing is not None:
        raise UploadRejected(errors.Invalid, f"{missing} is missing")
    return ds


def _identity(header: Dataset) -> Dataset:
    """The elements of a checked header that the batch uses (its UIDs and PatientID), in a dataset of their own:
    the header read keeps the whole file's bytes (its deferred pixel data) alive, this does not."""
    kept = Dataset()
    for tag in IDENTITY_TAGS:
        if tag in header:
            kept[tag] = header[tag]  # the element as converted (no reference to the file), not validated again
    return kept


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
    failure: type[errors.DomainError] = errors.Invalid  # why it failed, when it did (a single upload's answer)

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
    manager: leaving it releases the studies it held, and hands unrecorded ones to the ingest worker.
    Left by an unexpected error before ``finish`` (a bug, a fault below), it records what it stored so far
    (``interrupted``: its rows say the upload stopped) before the error goes on to be answered."""

    def __init__(self, services: Services, *, uploaded_by: str, source: str, order_id: str | None = None,
                 patient_id: str | None = None) -> None:
        self._services = services
        self.uploaded_by, self.source, self.order_id, self.patient_id = uploaded_by, source, order_id, patient_id
        self.results: list[FileResult] = []
        self.studies: dict[str, StudyOutcome] = {}
        self._parts: dict[str, _Study] = {}
        self._held: set[str] = set()
        self._not_seen: set[str] = set()  # held studies the other nodes may not see (their files refused)
        self._recorded: set[str] = set()
        self._collisions: dict[tuple[str, str], str | None] = {}
        self._converted: dicom_file.Converted = {}  # header values its files converted (check_dicom)
        self._began = time.monotonic()
        self._finishing = False
        self.interrupted: str | None = None  # why the batch stopped before its last file, when it did

    def __enter__(self) -> Batch:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc is not None and not self._finishing and isinstance(exc, Exception):
            self._record_interrupted(exc)
        for orthanc_id in self._held:
            self._services.holds.release(orthanc_id)
            if orthanc_id not in self._recorded:
                self._services.ingest_later(orthanc_id)
        self._held.clear()

    @property
    def successful(self) -> int:
        return sum(1 for r in self.results if r.status == "stored")

    @property
    def failed(self) -> int:
        return len(self.results) - self.successful

    def fail(self, file_name: str, error: str, size: int = 0, kind: type[errors.DomainError] = errors.Invalid,
             header: Dataset | None = None) -> FileResult:
        result = FileResult(file_name, "failed", size, error=error, failure=kind)
        self._services.metrics.count(UPLOAD_FAILURES)
        if header is not None:
            result.study_instance_uid = str(header.StudyInstanceUID)
            result.series_instance_uid = str(header.SeriesInstanceUID)
            result.sop_instance_uid = str(header.SOPInstanceUID)
        self.results.append(result)
        self._parts.setdefault(result.study_instance_uid or "", _Study()).failed.append(result)
        return result

    def add(self, file_name: str, data: bytes | memoryview) -> FileResult:
        """Validate one file and store it in Orthanc; a bad file is a failed result, never an exception.
        ``data`` may be a view of the request body: it is passed to Orthanc without a copy."""
        try:
            header = check_dicom(data, self._converted)
        except UploadRejected as exc:
            return self.fail(file_name, exc.detail, len(data), exc.kind, exc.header)
        return self._store(file_name, len(data), header,
                           lambda: self._services.pacs.post_json_bytes("/instances", data))

    def add_all(self, files: Iterable[tuple[str, bytes | memoryview]]) -> list[FileResult]:
        """``add`` each file, in order and with the same results, but all of them checked first, then stored:
        the check is Python and the store Orthanc's C++; alternating them, each check ran with the caches
        Orthanc's store had just filled, at about twice its cost (README "REST uploads"). The files' headers
        are kept meanwhile (their UIDs and PatientID only, not the datasets)."""
        checked: list[tuple[str, bytes | memoryview, Dataset | UploadRejected]] = []
        for file_name, data in files:
            try:
                checked.append((file_name, data, _identity(check_dicom(data, self._converted))))
            except UploadRejected as exc:
                if exc.header is not None:
                    exc.header = _identity(exc.header)
                checked.append((file_name, data, exc))
        results = []
        for file_name, data, header in checked:
            if isinstance(header, UploadRejected):
                results.append(self.fail(file_name, header.detail, len(data), header.kind, header.header))
            else:
                results.append(self._store(file_name, len(data), header,
                                           partial(self._services.pacs.post_json_bytes, "/instances", data)))
        return results

    def add_created(self, file_name: str, size: int, header: Dataset, create: Callable[[], Any]) -> FileResult:
        """An instance Orthanc builds and stores itself (``/tools/create-dicom``): ``header`` holds the UIDs and
        PatientID it is given, so the study is checked and held before it exists, as for a file."""
        return self._store(file_name, size, header, create)

    def _store(self, file_name: str, size: int, header: Dataset, store: Callable[[], Any]) -> FileResult:
        patient_id, study_uid = str(header.get("PatientID", "")), str(header.StudyInstanceUID)
        conflict = self._collision(study_uid, patient_id)
        if conflict is not None:
            return self.fail(file_name, conflict, size, errors.Conflict, header)
        # Held before the file goes in, so the worker never records a study this upload is still writing.
        held = orthanc_study_id(patient_id, study_uid)
        self._hold(held)
        # (A study refused once is refused at once after: its hold may have lapsed, and a job's files must not
        # each wait.)
        wait = 0.0 if held in self._not_seen else HOLD_PUBLISHED_WITHIN_SECONDS
        if not self._services.holds.ready_for(held, wait):
            self._not_seen.add(held)
            return self.fail(file_name, "not stored: this node could not tell the cluster's other nodes which studies"
                             " its uploads are writing (the database out of its reach); nothing of this file was"
                             " kept, send it again later", size, errors.Unavailable, header)
        try:
            stored = store()
        except errors.ArchiveError as exc:  # Orthanc refused the file: say so, it stored nothing
            if exc.code in ORTHANC_STORAGE_REFUSALS:
                return self.fail(file_name, f"not stored: the archive's storage is full or cannot be written"
                                 f" ({exc.description}); nothing of this file was kept, send it again later",
                                 size, errors.StorageFull, header)
            return self.fail(file_name, f"Orthanc refused the file: {exc.description}", size, errors.Malformed,
                             header)
        study_id = str(stored["ParentStudy"])
        self._hold(study_id)  # the same ID, unless Orthanc reads the PatientID differently
        result = FileResult(file_name, "stored", size, str(header.StudyInstanceUID),
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
            self._services.holds.hold(orthanc_study_id)
            self._held.add(orthanc_study_id)

    def _record_interrupted(self, exc: Exception) -> None:
        """Record the files stored before an unexpected error (its kind only: the message may hold anything);
        if that fails too, the held studies still go to the ingest worker (``__exit__``)."""
        self.interrupted = (f"the upload stopped after {len(self.results)} file(s) on an internal error"
                            f" ({type(exc).__name__}); the files after were not read")
        try:
            self.finish()
        except Exception as failure:  # noqa: BLE001 - the first error is the one answered
            exc.add_note(f"ehr-imaging: recording the stored files failed too ({type(failure).__name__})")

    def finish(self) -> dict[str, StudyOutcome]:
        """Record and match each study once (one audit row per study), and a failed row for the files
        that belong to no study or to a study none of whose files could be stored."""
        self._finishing = True
        duration = time.monotonic() - self._began
        for study_uid, part in self._parts.items():
            names = [r.file_name for r in part.stored + part.failed]
            notes = [f"{r.file_name}: {r.error}" for r in part.failed]
            notes += [self.interrupted] if self.interrupted else []
            errors = "; ".join(notes) or None
            if part.orthanc_study_id is None:  # nothing stored: the rejected files' own row
                uploads.record_failed(self._services.engine, uploaded_by=self.uploaded_by, source=self.source,
                                      file_names=names, size=sum(r.size for r in part.failed), error=errors or "",
                                      study_uid=study_uid or None, patient_id=self.patient_id, duration=duration)
                continue
            audit = uploads.UploadAudit(
                number_of_files=len(part.stored), total_size_bytes=sum(r.size for r in part.stored),
                file_names=names, status="partial" if part.failed or self.interrupted else "success", error=errors,
                duration=duration)
            self.studies[study_uid] = self._record(study_uid, part.orthanc_study_id, audit, names)
        return self.studies

    def _record(self, study_uid: str, orthanc_id: str, audit: uploads.UploadAudit, names: list[str]) -> StudyOutcome:
        services = self._services
        seen = observation.observe_study(services, orthanc_id, origin=False)  # its source and uploader: ours
        outcome = None if seen is None else ingest.record(services, dataclasses.replace(
            seen, upload_source=self.source, uploaded_by=self.uploaded_by, explicit_order_id=self.order_id), audit)
        self._recorded.add(orthanc_id)
        if outcome is None:  # deleted by someone else while it was being uploaded (or recorded)
            error = "the study was deleted while it was being uploaded"
            for result in self._parts[study_uid].stored:
                result.status, result.error, result.failure = "failed", error, errors.Conflict
                services.metrics.count(UPLOAD_FAILURES)
            uploads.record_failed(services.engine, uploaded_by=self.uploaded_by, source=self.source,
                                  file_names=names, size=audit.total_size_bytes, error=error, study_uid=study_uid,
                                  patient_id=self.patient_id, duration=audit.duration)
            return StudyOutcome(study_uid, None, None, error, "failed", 0, None)
        services.revisit_study(orthanc_id)
        return StudyOutcome(study_uid, orthanc_id, outcome.order_id, outcome.reason, audit.status,
                            audit.number_of_files, outcome.upload_log_id)

    def storage_refusal(self) -> errors.DomainError | None:
        """The request's answer when its files were refused for now (Orthanc's storage full, or the cluster's
        holds out of reach: errors.Unavailable) and none was stored (503), else None: with some files stored, the
        per-file results say which were not. Files refused for several reasons: the answer whose Retry-After is
        longest (storage full, a minute, over holds out of reach, 5 s): a retry sooner would be refused again."""
        if self.successful:
            return None
        first_of_each: dict[type[errors.DomainError], FileResult] = {}
        for r in self.results:
            if r.status == "failed" and issubclass(r.failure, errors.Unavailable):
                first_of_each.setdefault(r.failure, r)
        answers = [r.failure(f"{r.file_name}: {r.error}") for r in first_of_each.values()]
        return max(answers, key=lambda answer: getattr(answer, "retry_after_seconds", 0), default=None)

    def summary(self) -> dict[str, Any]:
        return {"total_files": len(self.results), "successful": self.successful, "failed": self.failed,
                "results": [r.to_json() for r in self.results],
                "studies": [s.to_json() for s in self.studies.values()]}


# --- limits ------------------------------------------------------------------------------------------


def check_files(services: Services, sizes: list[int]) -> None:
    """The request-wide limits of a multi-file upload (413), before anything is stored."""
    settings = services.settings
    if not sizes:
        raise UploadRejected(errors.Malformed, "send at least one file in the field 'files'")
    if len(sizes) > settings.MaxFilesPerUpload:
        raise UploadRejected(errors.TooLarge, f"{len(sizes)} files; at most {settings.MaxFilesPerUpload} per upload")
    if max(sizes) > settings.MaxFileSizeMb * MB:
        raise UploadRejected(errors.TooLarge, f"a file is larger than {settings.MaxFileSizeMb} MB")
    if sum(sizes) > settings.MaxUploadSizeMb * MB:
        raise UploadRejected(errors.TooLarge, f"upload larger than {settings.MaxUploadSizeMb} MB")


