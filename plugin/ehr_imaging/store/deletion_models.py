"""Models of deletion: the deletion log (one row per deleted study, with whether its files can still be
restored) and deletion requests (a deletion waiting for a second person's approval).

Declared on the shared ``Base`` (store/model_base.py); store/models.py re-exports them, so ``Base.metadata``
describes the whole schema (``tests/integration/test_schema_models.py``).
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, func, text
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.schema import CheckConstraint, Index

from .model_base import FALSE, ZERO, Base


class DicomDeletionLog(Base):
    """One row per deleted study: who, when, why, what it held, and where its files are kept (restorable)."""

    __tablename__ = "dicom_deletion_logs"
    __table_args__ = (
        CheckConstraint("length(trim(reason)) > 0", name="dicom_deletion_logs_reason_check"),
        Index("ix_dicom_deletion_logs_study_uid", "study_instance_uid"),
        Index("ix_dicom_deletion_logs_restorable", "files_kept_until", postgresql_where=text("restorable")),
    )

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
    # Recovery (migration 9): the files kept in DeletedStudyDir/<id>/ until files_kept_until, then purged.
    deletion_request_id: Mapped[uuid.UUID | None]  # the approved request, when approval was required
    approved_by: Mapped[str | None]
    restorable: Mapped[bool] = mapped_column(default=False, server_default=FALSE)
    kept_files: Mapped[int] = mapped_column(default=0, server_default=ZERO)
    files_kept_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    purged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    restored_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    restored_by: Mapped[str | None]


class DeletionRequest(Base):
    """A deletion asked for while DeletionApproval is 'required': pending until another admin approves it
    (the study is deleted then), rejects it, or it expires. Every step keeps who, when and why."""

    __tablename__ = "deletion_requests"
    __table_args__ = (
        CheckConstraint("status IN ('pending', 'approved', 'rejected', 'expired')",
                        name="deletion_requests_status_check"),
        CheckConstraint("length(trim(reason)) > 0", name="deletion_requests_reason_check"),
        # one pending request per study
        Index("ix_deletion_requests_pending_study", "study_instance_uid", unique=True,
              postgresql_where=text("status = 'pending'")),
        Index("ix_deletion_requests_status", "status", "requested_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    study_instance_uid: Mapped[str]
    orthanc_study_id: Mapped[str | None]
    patient_id: Mapped[str | None]
    patient_name: Mapped[str | None]
    accession_number: Mapped[str | None]
    order_id: Mapped[str | None]
    number_of_instances: Mapped[int] = mapped_column(default=0, server_default=ZERO)
    reason: Mapped[str]
    requested_by: Mapped[str]
    requested_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(default="pending", server_default=text("'pending'"))
    decided_by: Mapped[str | None]  # who approved or rejected ("ehr-imaging" for an expiry)
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    decision_reason: Mapped[str | None]  # why it was rejected
    deletion_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("dicom_deletion_logs.id",
                                                                     name="deletion_requests_deletion_id_fkey"))
