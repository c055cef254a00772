"""Typed SQLAlchemy models of the plugin's tables (the schema comes from the connection's search_path)."""

from __future__ import annotations

import uuid
from datetime import date, datetime, time
from typing import Any

from sqlalchemy import BigInteger, DateTime, ForeignKey, String, func
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class ImagingOrder(Base):
    __tablename__ = "imaging_orders"

    order_id: Mapped[str] = mapped_column(primary_key=True)
    accession_number: Mapped[str | None]
    patient_id: Mapped[str | None]
    mrn: Mapped[str | None]
    patient_family_name: Mapped[str | None]
    patient_given_name: Mapped[str | None]
    birth_date: Mapped[date | None]
    sex: Mapped[str | None]
    modality: Mapped[str | None]
    scheduled_start: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    description: Mapped[str | None]
    referring_physician: Mapped[str | None]
    status: Mapped[str] = mapped_column(default="scheduled")
    station_aet: Mapped[str | None]  # the modality (Scheduled Station AE Title) whose worklist shows it
    # Filled in by matching:
    study_instance_uid: Mapped[str | None]
    orthanc_study_id: Mapped[str | None]
    number_of_series: Mapped[int | None]
    number_of_images: Mapped[int | None]
    study_date: Mapped[date | None]
    study_time: Mapped[time | None]
    uploaded_by: Mapped[str | None]
    uploaded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    upload_source: Mapped[str | None]
    match_rule: Mapped[str | None]
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    EHR_FIELDS = (
        "accession_number", "patient_id", "mrn", "patient_family_name", "patient_given_name", "birth_date", "sex",
        "modality", "scheduled_start", "description", "referring_physician", "status", "station_aet",
    )
    MATCH_FIELDS = (
        "study_instance_uid", "orthanc_study_id", "number_of_series", "number_of_images", "study_date",
        "study_time", "uploaded_at", "uploaded_by", "upload_source", "match_rule",
    )


class StudyLink(Base):
    """The matching state of one study: its facts, and its order or why it has none."""

    __tablename__ = "study_links"

    study_instance_uid: Mapped[str] = mapped_column(primary_key=True)
    orthanc_study_id: Mapped[str]
    patient_id: Mapped[str | None]
    patient_name: Mapped[str | None]
    accession_number: Mapped[str | None]
    study_date: Mapped[date | None]
    study_time: Mapped[time | None]
    study_description: Mapped[str | None]
    modalities: Mapped[list[str]] = mapped_column(ARRAY(String), default=list)
    number_of_series: Mapped[int] = mapped_column(default=0)
    number_of_instances: Mapped[int] = mapped_column(default=0)
    total_size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    explicit_order_id: Mapped[str | None]
    order_id: Mapped[str | None] = mapped_column(ForeignKey("imaging_orders.order_id"))
    match_rule: Mapped[str | None]
    match_reason: Mapped[str | None]
    candidates: Mapped[list[str]] = mapped_column(JSONB, default=list)
    upload_source: Mapped[str | None]
    uploaded_by: Mapped[str | None]
    auto_match: Mapped[bool] = mapped_column(default=True)
    # The study's own PatientID when a person linked it to another patient's order (force): that person
    # accepted it as this patient, so its later batches are this study's, not a collision.
    accepted_patient_id: Mapped[str | None]
    first_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class StudyUidCollision(Base):
    """An Orthanc study whose StudyInstanceUID is recorded under another patient: moved to a StudyInstanceUID of
    its own, never linked or shown under that patient's record; it waits for a person in the reconciliation
    queue (core.study_identity)."""

    __tablename__ = "study_uid_collisions"

    orthanc_study_id: Mapped[str] = mapped_column(primary_key=True)  # as it arrived
    study_instance_uid: Mapped[str]  # as it arrived: the recorded study's
    # Where it was moved, out of the recorded study's StudyInstanceUID (None: not moved, e.g. Orthanc refused).
    quarantine_study_instance_uid: Mapped[str | None]
    quarantine_orthanc_study_id: Mapped[str | None]
    patient_id: Mapped[str | None]
    patient_name: Mapped[str | None]
    accession_number: Mapped[str | None]
    study_date: Mapped[date | None]
    modalities: Mapped[list[str]] = mapped_column(ARRAY(String), default=list)
    number_of_series: Mapped[int] = mapped_column(default=0)
    number_of_instances: Mapped[int] = mapped_column(default=0)
    total_size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    upload_source: Mapped[str | None]
    uploaded_by: Mapped[str | None]
    recorded_orthanc_study_id: Mapped[str]
    recorded_patient_id: Mapped[str | None]
    first_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class LinkAudit(Base):
    """Every link and unlink, automatic or by a person."""

    __tablename__ = "link_audit"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    study_instance_uid: Mapped[str]
    order_id: Mapped[str | None]
    action: Mapped[str]
    rule: Mapped[str | None]
    actor: Mapped[str]
    reason: Mapped[str | None]
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class DicomUploadLog(Base):
    """One row per ingest of a study (the seed plan's columns)."""

    __tablename__ = "dicom_upload_logs"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    patient_id: Mapped[str | None]
    order_id: Mapped[str | None] = mapped_column(ForeignKey("imaging_orders.order_id"))
    uploaded_by: Mapped[str | None]
    study_instance_uid: Mapped[str]
    orthanc_study_id: Mapped[str | None]
    number_of_files: Mapped[int] = mapped_column(default=0)
    total_size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    file_names: Mapped[list[str]] = mapped_column(JSONB, default=list)
    original_patient_id: Mapped[str | None]
    original_patient_name: Mapped[str | None]
    original_accession_number: Mapped[str | None]
    original_study_date: Mapped[str | None]
    original_modality: Mapped[str | None]
    modified_patient_id: Mapped[str | None]
    modified_patient_name: Mapped[str | None]
    modified_accession_number: Mapped[str | None]
    tags_modified: Mapped[bool] = mapped_column(default=False)
    upload_status: Mapped[str]
    error_message: Mapped[str | None]
    uploaded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    upload_source: Mapped[str]
    upload_duration_seconds: Mapped[float | None]
    is_deleted: Mapped[bool] = mapped_column(default=False)


class ViewerTokenRecord(Base):
    """Every viewer token the plugin issued: who asked, for which studies, and its revocation."""

    __tablename__ = "viewer_tokens"

    token_id: Mapped[str] = mapped_column(primary_key=True)
    subject: Mapped[str]
    study_uids: Mapped[list[str]] = mapped_column(ARRAY(String))
    order_id: Mapped[str | None]
    patient_id: Mapped[str | None]
    issued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_by: Mapped[str | None]
    revoke_reason: Mapped[str | None]


class ViewerAccess(Base):
    """Viewer reads aggregated per token and study (not a row per frame)."""

    __tablename__ = "viewer_access_log"

    token_id: Mapped[str] = mapped_column(primary_key=True)
    study_instance_uid: Mapped[str] = mapped_column(primary_key=True)
    subject: Mapped[str]
    first_access_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_access_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    request_count: Mapped[int] = mapped_column(BigInteger, default=0)
    denied_count: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)


class TagEditAudit(Base):
    """One row per modify-tags call: who changed which tags of which file, from what to what."""

    __tablename__ = "tag_edit_audit"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    edited_by: Mapped[str]
    edited_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    sop_instance_uid: Mapped[str | None]
    study_instance_uid: Mapped[str | None]
    file_name: Mapped[str | None]
    original_values: Mapped[dict[str, str | None]] = mapped_column(JSONB, default=dict)
    new_values: Mapped[dict[str, str]] = mapped_column(JSONB, default=dict)
    removed_private_tags: Mapped[bool] = mapped_column(default=False)
    private_tags_removed: Mapped[int] = mapped_column(default=0)


class DicomDeletionLog(Base):
    """One row per deleted study: who, when, why, and what it held."""

    __tablename__ = "dicom_deletion_logs"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    study_instance_uid: Mapped[str]
    orthanc_study_id: Mapped[str | None]
    order_id: Mapped[str | None]
    patient_id: Mapped[str | None]
    patient_name: Mapped[str | None]
    accession_number: Mapped[str | None]
    study_date: Mapped[str | None]
    modalities: Mapped[str | None]
    number_of_series: Mapped[int | None]
    number_of_instances: Mapped[int | None]
    deleted_by: Mapped[str]
    reason: Mapped[str]
    deleted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class UploadJob(Base):
    """A large ZIP upload processed on a worker thread; polled by the EHR."""

    __tablename__ = "upload_jobs"

    job_id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    status: Mapped[str] = mapped_column(default="queued")
    created_by: Mapped[str]
    node: Mapped[str]
    source: Mapped[str]
    file_name: Mapped[str | None]
    order_id: Mapped[str | None]
    patient_id: Mapped[str | None]
    total_files: Mapped[int] = mapped_column(default=0)
    processed_files: Mapped[int] = mapped_column(default=0)
    successful: Mapped[int] = mapped_column(default=0)
    failed: Mapped[int] = mapped_column(default=0)
    results: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONB)
    error: Mapped[str | None]
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class OfflineUpload(Base):
    """One file of the offline sync protocol: declared, received, stored, acknowledged."""

    __tablename__ = "offline_uploads"

    upload_id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    sop_instance_uid: Mapped[str]
    series_instance_uid: Mapped[str]
    study_instance_uid: Mapped[str]
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str]
    patient_id: Mapped[str | None]
    order_id: Mapped[str | None]
    file_name: Mapped[str | None]
    status: Mapped[str]
    declared_by: Mapped[str]
    orthanc_instance_id: Mapped[str | None]
    orthanc_study_id: Mapped[str | None]
    upload_log_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("dicom_upload_logs.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    stored_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    acked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class AdminSessionRevocation(Base):
    """Admin browser sessions ended by logout (the cookie's ``jti``), until the cookie would have expired."""

    __tablename__ = "admin_session_revocations"

    session_id: Mapped[str] = mapped_column(primary_key=True)
    subject: Mapped[str]
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class DimseAudit(Base):
    """One row per DICOM query or retrieval the plugin answered or refused: C-FIND, worklist, C-MOVE."""

    __tablename__ = "dimse_audit"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    service: Mapped[str]
    calling_aet: Mapped[str]
    called_aet: Mapped[str | None]
    level: Mapped[str | None]
    query: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    answers: Mapped[int] = mapped_column(default=0)
    truncated: Mapped[bool] = mapped_column(default=False)
    target_aet: Mapped[str | None]
    outcome: Mapped[str]
    node: Mapped[str | None]
