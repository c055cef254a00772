"""Typed SQLAlchemy models of the plugin's tables: the one description of the schema (the schema's name comes
from the connection's search_path). Orders, studies, their links and uploads here; who was given access and
who used it (viewer tokens, viewer access, admin sessions, DICOM queries) in ``access_models.py``.

Every column, key, constraint, index and server default a migration (``store.schema_history*``) creates is
declared here too, under the name PostgreSQL gave it; ``tests/integration/test_schema_models.py`` fails when
the migrated schema and these models drift. Columns are TEXT (``str``), as the migrations create them.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime, time
from typing import Any

from sqlalchemy import BigInteger, Computed, DateTime, Double, ForeignKey, Text, func, text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, Unmapped, mapped_column, unmapped_column
from sqlalchemy.schema import CheckConstraint, Index, UniqueConstraint

# The deletion log and deletion requests live in store/deletion_models.py, who was given access and who used it in
# store/access_models.py (same Base, re-exported here: importing this module registers every table).
from .access_models import AdminSessionRevocation as AdminSessionRevocation
from .access_models import DimseAudit as DimseAudit
from .access_models import ViewerAccess as ViewerAccess
from .access_models import ViewerTokenRecord as ViewerTokenRecord
from .deletion_models import DeletionRequest as DeletionRequest
from .deletion_models import DicomDeletionLog as DicomDeletionLog
from .event_models import EventDelivery as EventDelivery
from .event_models import OutboxEvent as OutboxEvent
from .ingest_cursor import IngestCursor as IngestCursor
from .model_base import EMPTY_JSON_LIST, EMPTY_JSON_OBJECT, EMPTY_TEXT_ARRAY, FALSE, TRUE, ZERO
from .model_base import Base as Base
from .upload_holds import UploadHold as UploadHold


class ImagingOrder(Base):
    __tablename__ = "imaging_orders"
    __table_args__ = (
        CheckConstraint("sex IN ('M', 'F', 'O')", name="imaging_orders_sex_check"),
        CheckConstraint("status IN ('scheduled', 'in-progress', 'completed', 'cancelled')",
                        name="imaging_orders_status_check"),
        UniqueConstraint("study_instance_uid", name="imaging_orders_study_instance_uid_key"),
        Index("ix_imaging_orders_accession", "accession_number"),
        Index("ix_imaging_orders_mrn", "mrn"),
        Index("ix_imaging_orders_patient", "patient_id"),
        Index("ix_imaging_orders_status", "status"),
        # matching compares normalized identifiers
        Index("ix_imaging_orders_accession_norm", func.upper(text("accession_number"))),
        Index("ix_imaging_orders_mrn_norm", func.upper(text("mrn"))),
        Index("ix_imaging_orders_station_aet", "station_aet"),
    )

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
    status: Mapped[str] = mapped_column(default="scheduled", server_default=text("'scheduled'"))
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
    __table_args__ = (
        Index("ix_study_links_unmatched", "first_seen_at", postgresql_where=text("order_id IS NULL")),
        Index("ix_study_links_accession", "accession_number"),
        Index("ix_study_links_patient", "patient_id"),
        Index("ix_study_links_order", "order_id"),
        # GET /studies at a hospital's scale: newest first from an index (no sort of the table), PatientID and
        # accession compared as matching compares them, modality by containment.
        Index("ix_study_links_newest", text("study_date DESC NULLS LAST"), text("study_time DESC NULLS LAST"),
              "study_instance_uid"),
        Index("ix_study_links_patient_norm", func.upper(text("patient_id"))),
        Index("ix_study_links_accession_norm", func.upper(text("accession_number"))),
        Index("ix_study_links_modalities", "modalities", postgresql_using="gin"),
        # The name's contains-match, when pg_trgm is installed (store/migrations.py ensure_trigram_index).
        Index("ix_study_links_patient_name_trgm", "patient_name", postgresql_using="gin",
              postgresql_ops={"patient_name": "ehr_imaging_ext.gin_trgm_ops"}),
        # ... and of one or two letters, which trigrams cannot answer (migration 17).
        Index("ix_study_links_patient_name_grams", "patient_name_grams", postgresql_using="gin"),
        # ... and of many matches: their count read from the lowered names alone (migration 19).
        Index("ix_study_links_patient_name_lower", func.lower(text("patient_name")),
              postgresql_include=["patient_name"]),
    )

    study_instance_uid: Mapped[str] = mapped_column(primary_key=True)
    orthanc_study_id: Mapped[str]
    patient_id: Mapped[str | None]
    patient_name: Mapped[str | None]
    # Every letter and letter pair of the name, lower-cased (PostgreSQL computes it: name_grams, migration 17). In
    # the table, not mapped: only searches read it (NAME_GRAMS), and a mapped generated column is fetched back
    # by every INSERT and expired by every UPDATE.
    patient_name_grams: Unmapped[list[str] | None] = unmapped_column(
        ARRAY(Text), Computed("name_grams(patient_name)", persisted=True))
    accession_number: Mapped[str | None]
    study_date: Mapped[date | None]
    study_time: Mapped[time | None]
    study_description: Mapped[str | None]
    modalities: Mapped[list[str]] = mapped_column(ARRAY(Text), default=list, server_default=EMPTY_TEXT_ARRAY)
    number_of_series: Mapped[int] = mapped_column(default=0, server_default=ZERO)
    number_of_instances: Mapped[int] = mapped_column(default=0, server_default=ZERO)
    total_size_bytes: Mapped[int] = mapped_column(BigInteger, default=0, server_default=ZERO)
    explicit_order_id: Mapped[str | None]
    order_id: Mapped[str | None] = mapped_column(ForeignKey("imaging_orders.order_id",
                                                            name="study_links_order_id_fkey"))
    match_rule: Mapped[str | None]
    match_reason: Mapped[str | None]
    candidates: Mapped[list[str]] = mapped_column(JSONB, default=list, server_default=EMPTY_JSON_LIST)
    upload_source: Mapped[str | None]
    uploaded_by: Mapped[str | None]
    auto_match: Mapped[bool] = mapped_column(default=True, server_default=TRUE)  # false once a person unlinked it
    # The study's own PatientID when a person linked it to another patient's order (force): that person
    # accepted it as this patient, so its later batches are this study's, not a collision.
    accepted_patient_id: Mapped[str | None]
    first_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


# The name's letters and letter pairs as a column of the table (unmapped: see StudyLink.patient_name_grams).
NAME_GRAMS = StudyLink.__table__.c.patient_name_grams


class StudyUidCollision(Base):
    """An Orthanc study whose StudyInstanceUID is recorded under another patient: moved to a StudyInstanceUID of
    its own, never linked or shown under that patient's record; it waits for a person in the reconciliation
    queue (core.study_identity)."""

    __tablename__ = "study_uid_collisions"
    __table_args__ = (
        Index("ix_study_uid_collisions_uid", "study_instance_uid"),
        Index("ix_study_uid_collisions_moved", "quarantine_orthanc_study_id", unique=True),
        Index("ix_study_uid_collisions_moved_uid", "quarantine_study_instance_uid"),
    )

    orthanc_study_id: Mapped[str] = mapped_column(primary_key=True)  # as it arrived
    study_instance_uid: Mapped[str]  # as it arrived: the recorded study's
    # Where it was moved, out of the recorded study's StudyInstanceUID (None: not moved, e.g. Orthanc refused).
    quarantine_study_instance_uid: Mapped[str | None]
    quarantine_orthanc_study_id: Mapped[str | None]
    patient_id: Mapped[str | None]
    patient_name: Mapped[str | None]
    accession_number: Mapped[str | None]
    study_date: Mapped[date | None]
    modalities: Mapped[list[str]] = mapped_column(ARRAY(Text), default=list, server_default=EMPTY_TEXT_ARRAY)
    number_of_series: Mapped[int] = mapped_column(default=0, server_default=ZERO)
    number_of_instances: Mapped[int] = mapped_column(default=0, server_default=ZERO)
    total_size_bytes: Mapped[int] = mapped_column(BigInteger, default=0, server_default=ZERO)
    upload_source: Mapped[str | None]
    uploaded_by: Mapped[str | None]
    recorded_orthanc_study_id: Mapped[str]
    recorded_patient_id: Mapped[str | None]
    first_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class LinkAudit(Base):
    """Every link and unlink, automatic or by a person."""

    __tablename__ = "link_audit"
    __table_args__ = (
        CheckConstraint("action IN ('auto-link', 'link', 'unlink', 'coerce', 'quarantine')",
                        name="link_audit_action_check"),
        Index("ix_link_audit_study", "study_instance_uid"),
        Index("ix_link_audit_at", "at"),
    )

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
    __table_args__ = (
        CheckConstraint("upload_status IN ('success', 'failed', 'partial')",
                        name="dicom_upload_logs_upload_status_check"),
        Index("ix_dicom_upload_logs_study_uid", "study_instance_uid"),
        Index("ix_dicom_upload_logs_orthanc_id", "orthanc_study_id"),
        Index("ix_dicom_upload_logs_patient_id", "patient_id"),
        Index("ix_dicom_upload_logs_order_id", "order_id"),
        Index("ix_dicom_upload_logs_uploaded_at", "uploaded_at"),  # the audit timeline's time window
        Index("ix_dicom_upload_logs_patient_norm", func.upper(text("patient_id"))),  # a patient's uploads by MRN
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    patient_id: Mapped[str | None]
    order_id: Mapped[str | None] = mapped_column(ForeignKey("imaging_orders.order_id",
                                                            name="dicom_upload_logs_order_id_fkey"))
    uploaded_by: Mapped[str | None]
    study_instance_uid: Mapped[str]
    orthanc_study_id: Mapped[str | None]
    number_of_files: Mapped[int] = mapped_column(default=0, server_default=ZERO)
    total_size_bytes: Mapped[int] = mapped_column(BigInteger, default=0, server_default=ZERO)
    file_names: Mapped[list[str]] = mapped_column(JSONB, default=list, server_default=EMPTY_JSON_LIST)
    original_patient_id: Mapped[str | None]
    original_patient_name: Mapped[str | None]
    original_accession_number: Mapped[str | None]
    original_study_date: Mapped[str | None]
    original_modality: Mapped[str | None]
    modified_patient_id: Mapped[str | None]
    modified_patient_name: Mapped[str | None]
    modified_accession_number: Mapped[str | None]
    tags_modified: Mapped[bool] = mapped_column(default=False, server_default=FALSE)
    upload_status: Mapped[str]
    error_message: Mapped[str | None]
    uploaded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    upload_source: Mapped[str]
    upload_duration_seconds: Mapped[float | None] = mapped_column(Double)
    is_deleted: Mapped[bool] = mapped_column(default=False, server_default=FALSE)


class TagEditAudit(Base):
    """One row per modify-tags call: who changed which tags of which file, from what to what."""

    __tablename__ = "tag_edit_audit"
    __table_args__ = (Index("ix_tag_edit_audit_study", "study_instance_uid"),
                      Index("ix_tag_edit_audit_sop", "sop_instance_uid"),
                      Index("ix_tag_edit_audit_edited_at", "edited_at"))

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    edited_by: Mapped[str]
    edited_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    sop_instance_uid: Mapped[str | None]
    study_instance_uid: Mapped[str | None]
    file_name: Mapped[str | None]
    original_values: Mapped[dict[str, str | None]] = mapped_column(JSONB, default=dict,
                                                                   server_default=EMPTY_JSON_OBJECT)
    new_values: Mapped[dict[str, str]] = mapped_column(JSONB, default=dict, server_default=EMPTY_JSON_OBJECT)
    removed_private_tags: Mapped[bool] = mapped_column(default=False, server_default=FALSE)
    private_tags_removed: Mapped[int] = mapped_column(default=0, server_default=ZERO)


class UploadJob(Base):
    """A large ZIP upload processed on a worker thread; polled by the EHR."""

    __tablename__ = "upload_jobs"
    __table_args__ = (
        CheckConstraint("status IN ('queued', 'running', 'completed', 'failed')", name="upload_jobs_status_check"),
        Index("ix_upload_jobs_open", "node", postgresql_where=text("status IN ('queued', 'running')")),
    )

    job_id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    status: Mapped[str] = mapped_column(default="queued")
    created_by: Mapped[str]
    node: Mapped[str]  # the Orthanc node that holds the archive and runs the job
    source: Mapped[str]
    file_name: Mapped[str | None]
    order_id: Mapped[str | None]
    patient_id: Mapped[str | None]
    total_files: Mapped[int] = mapped_column(default=0, server_default=ZERO)
    processed_files: Mapped[int] = mapped_column(default=0, server_default=ZERO)
    successful: Mapped[int] = mapped_column(default=0, server_default=ZERO)
    failed: Mapped[int] = mapped_column(default=0, server_default=ZERO)
    results: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONB)
    error: Mapped[str | None]
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class OfflineUpload(Base):
    """One file of the offline sync protocol: declared, received, stored, acknowledged."""

    __tablename__ = "offline_uploads"
    __table_args__ = (
        CheckConstraint("size > 0", name="offline_uploads_size_check"),
        CheckConstraint("status IN ('METADATA_UPLOADED', 'BINARY_RECEIVED', 'STORED', 'ACK_RECEIVED')",
                        name="offline_uploads_status_check"),
        # the same declaration twice is the same upload
        UniqueConstraint("sop_instance_uid", "sha256", name="offline_uploads_sop_instance_uid_sha256_key"),
        Index("ix_offline_uploads_study", "study_instance_uid"),
    )

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
    upload_log_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("dicom_upload_logs.id",
                                                                       name="offline_uploads_upload_log_id_fkey"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    stored_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    acked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class OrderStatusAudit(Base):
    """Every change of an order's status the images made (OrderStatusUpdates): from, to, which study, why."""

    __tablename__ = "order_status_audit"
    __table_args__ = (Index("ix_order_status_audit_order", "order_id", "id"), Index("ix_order_status_audit_at", "at"))

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    order_id: Mapped[str]
    from_status: Mapped[str]
    to_status: Mapped[str]
    study_instance_uid: Mapped[str | None]
    actor: Mapped[str]
    reason: Mapped[str]
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
