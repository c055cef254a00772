"""Upload audit rows, upload jobs (large ZIPs) and offline-sync uploads in PostgreSQL; jobs and offline uploads
come back as values (``UploadJobRecord``, ``OfflineUploadRecord``)."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Engine, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from ..core.study_identity import StudyObservation
from .models import DicomUploadLog, OfflineUpload, UploadJob

if TYPE_CHECKING:
    from ..core.upload_rules import OfflineDeclaration

_Record = TypeVar("_Record", "UploadJobRecord", "OfflineUploadRecord")


@dataclass(frozen=True)
class UploadAudit:
    """What one upload brought for one study; its audit row is written from this."""

    number_of_files: int
    total_size_bytes: int
    file_names: list[str] = field(default_factory=list)
    status: str = "success"  # success | partial (some of the study's files failed) | failed
    error: str | None = None
    duration: float | None = None


def study_row(seen: StudyObservation, order_id: str | None, audit: UploadAudit) -> DicomUploadLog:
    """The audit row of one ingest of a study (the caller adds it inside its transaction)."""
    return DicomUploadLog(
        id=uuid.uuid4(), patient_id=seen.patient_id, order_id=order_id, uploaded_by=seen.uploaded_by,
        study_instance_uid=seen.study_instance_uid, orthanc_study_id=seen.orthanc_study_id,
        number_of_files=audit.number_of_files, total_size_bytes=audit.total_size_bytes,
        file_names=list(audit.file_names), original_patient_id=seen.patient_id,
        original_patient_name=seen.patient_name, original_accession_number=seen.accession_number,
        original_study_date=seen.study_date.strftime("%Y%m%d") if seen.study_date else None,
        original_modality=",".join(seen.modalities) or None, upload_status=audit.status,
        error_message=audit.error[:2000] if audit.error else None, upload_source=seen.upload_source,
        upload_duration_seconds=audit.duration,
    )


def record_failed(engine: Engine, *, uploaded_by: str, source: str, file_names: list[str], size: int,
                  error: str, study_uid: str | None = None, patient_id: str | None = None,
                  duration: float | None = None) -> None:
    """A rejected upload stores nothing in Orthanc but leaves this row."""
    with Session(engine) as session, session.begin():
        session.add(DicomUploadLog(
            study_instance_uid=study_uid or "", uploaded_by=uploaded_by, upload_source=source,
            file_names=file_names, number_of_files=len(file_names), total_size_bytes=size,
            upload_status="failed", error_message=error[:2000], patient_id=patient_id,
            upload_duration_seconds=duration,
        ))


# --- upload jobs -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UploadJobRecord:
    """A ZIP upload job: who created it, on which node, its progress and, once done, its per-file results."""

    job_id: uuid.UUID
    status: str  # queued | running | completed | failed
    created_by: str
    node: str
    source: str
    file_name: str | None
    order_id: str | None
    patient_id: str | None
    total_files: int
    processed_files: int
    successful: int
    failed: int
    results: list[dict[str, Any]] | None
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime


def create_job(engine: Engine, *, created_by: str, node: str, source: str, file_name: str | None,
               order_id: str | None, patient_id: str | None, total_files: int) -> uuid.UUID:
    job_id = uuid.uuid4()
    with Session(engine) as session, session.begin():
        session.add(UploadJob(job_id=job_id, status="queued", created_by=created_by, node=node, source=source,
                              file_name=file_name, order_id=order_id, patient_id=patient_id,
                              total_files=total_files, processed_files=0, successful=0, failed=0))
    return job_id


def job_progress(engine: Engine, job_id: uuid.UUID, *, processed: int, successful: int, failed: int) -> None:
    with Session(engine) as session, session.begin():
        session.execute(update(UploadJob).where(UploadJob.job_id == job_id).values(
            status="running", processed_files=processed, successful=successful, failed=failed,
            started_at=func.coalesce(UploadJob.started_at, func.now()), updated_at=func.now()))


def finish_job(engine: Engine, job_id: uuid.UUID, *, status: str, results: list[dict[str, Any]],
               successful: int, failed: int, error: str | None = None) -> None:
    with Session(engine) as session, session.begin():
        session.execute(update(UploadJob).where(UploadJob.job_id == job_id).values(
            status=status, results=results, processed_files=len(results), successful=successful, failed=failed,
            error=error, finished_at=func.now(), updated_at=func.now()))


def get_job(engine: Engine, job_id: uuid.UUID) -> UploadJobRecord | None:
    with Session(engine) as session:
        row = session.get(UploadJob, job_id)
        return _values(UploadJobRecord, row) if row else None


def interrupted_jobs(engine: Engine, node: str, keep: set[uuid.UUID]) -> list[UploadJobRecord]:
    """At start-up: this node's jobs still queued or running (a restart interrupted them), except ``keep``."""
    with Session(engine) as session:
        rows = session.scalars(select(UploadJob).where(
            UploadJob.node == node, UploadJob.status.in_(("queued", "running")), UploadJob.job_id.not_in(keep))
            .order_by(UploadJob.created_at)).all()
        return [_values(UploadJobRecord, row) for row in rows]


def requeue_job(engine: Engine, job_id: uuid.UUID) -> None:
    """An interrupted job queued again (it runs from the start; its progress counts start again)."""
    with Session(engine) as session, session.begin():
        session.execute(update(UploadJob).where(UploadJob.job_id == job_id).values(
            status="queued", processed_files=0, successful=0, failed=0, updated_at=func.now()))


def fail_interrupted_jobs(engine: Engine, node: str, keep: set[uuid.UUID]) -> int:
    """At start-up: this node's jobs that a restart interrupted and that are not run again are failed (their
    archive is gone, or they were interrupted once already), except ``keep``, those queued since."""
    with Session(engine) as session, session.begin():
        result = session.execute(update(UploadJob).where(
            UploadJob.node == node, UploadJob.status.in_(("queued", "running")),
            UploadJob.job_id.not_in(keep)).values(
            status="failed", error="interrupted by a restart of the server (twice, or its archive was lost);"
                                   " upload the archive again: files already stored are kept, answer"
                                   " already_stored and are not stored twice",
            finished_at=func.now(), updated_at=func.now()))
        return int(result.rowcount or 0)  # type: ignore[attr-defined]


# --- offline sync ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OfflineUploadRecord:
    """One file of the offline sync protocol: its declaration, who made it, and how far it got."""

    upload_id: uuid.UUID
    sop_instance_uid: str
    series_instance_uid: str
    study_instance_uid: str
    size: int
    sha256: str
    patient_id: str | None
    order_id: str | None
    file_name: str | None
    status: str  # METADATA_UPLOADED | BINARY_RECEIVED | STORED | ACK_RECEIVED
    declared_by: str
    orthanc_instance_id: str | None
    orthanc_study_id: str | None
    upload_log_id: uuid.UUID | None
    created_at: datetime
    stored_at: datetime | None
    acked_at: datetime | None


def declare_offline(engine: Engine, declared: OfflineDeclaration, declared_by: str) -> OfflineUploadRecord:
    """The metadata step: a new upload, or the existing one for the same SOP Instance UID and checksum."""
    with Session(engine) as session, session.begin():
        session.execute(insert(OfflineUpload).values(
            upload_id=uuid.uuid4(), sop_instance_uid=declared.sop_instance_uid,
            series_instance_uid=declared.series_instance_uid, study_instance_uid=declared.study_instance_uid,
            size=declared.size, sha256=declared.sha256, patient_id=declared.patient_id,
            order_id=declared.order_id, file_name=declared.file_name, status="METADATA_UPLOADED",
            declared_by=declared_by,
        ).on_conflict_do_nothing(index_elements=["sop_instance_uid", "sha256"]))
        row = session.scalars(select(OfflineUpload).where(
            OfflineUpload.sop_instance_uid == declared.sop_instance_uid,
            OfflineUpload.sha256 == declared.sha256)).one()
        return _values(OfflineUploadRecord, row)


@contextmanager
def offline_lock(engine: Engine, upload_id: uuid.UUID) -> Iterator[None]:
    """One binary step at a time per upload (a client retrying while the first attempt still runs)."""
    with engine.begin() as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"), {"key": f"offline:{upload_id}"})
        yield


def get_offline(engine: Engine, upload_id: uuid.UUID) -> OfflineUploadRecord | None:
    with Session(engine) as session:
        row = session.get(OfflineUpload, upload_id)
        return _values(OfflineUploadRecord, row) if row else None


def offline_stored(engine: Engine, upload_id: uuid.UUID, *, orthanc_instance_id: str, orthanc_study_id: str,
                   upload_log_id: uuid.UUID | None) -> None:
    with Session(engine) as session, session.begin():
        session.execute(update(OfflineUpload).where(OfflineUpload.upload_id == upload_id).values(
            status="STORED", orthanc_instance_id=orthanc_instance_id, orthanc_study_id=orthanc_study_id,
            upload_log_id=func.coalesce(OfflineUpload.upload_log_id, upload_log_id), stored_at=func.now()))


def offline_acked(engine: Engine, upload_id: uuid.UUID) -> None:
    with Session(engine) as session, session.begin():
        session.execute(update(OfflineUpload).where(OfflineUpload.upload_id == upload_id).values(
            status="ACK_RECEIVED", acked_at=func.coalesce(OfflineUpload.acked_at, func.now())))


def upload_row_exists(engine: Engine, upload_log_id: uuid.UUID | None) -> bool:
    if upload_log_id is None:
        return False
    with Session(engine) as session:
        return session.get(DicomUploadLog, upload_log_id) is not None


def _values(record: type[_Record], row: Any) -> _Record:
    """A row's values copied into its record type (same field names as the model's columns)."""
    return record(**{f.name: getattr(row, f.name) for f in dataclasses.fields(record)})
