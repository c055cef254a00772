"""Typed SQLAlchemy models of who was given access and who used it: viewer tokens (and image-URL grants), the
aggregated viewer access, ended admin sessions, the DICOM query and retrieve audit. Part of the one schema
description with ``models.py`` (same ``Base`` from ``model_base.py``, same rules: every constraint and index
the migrations create).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, Text, func, text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.schema import CheckConstraint, Index

from .model_base import EMPTY_JSON_OBJECT, FALSE, ZERO, Base


class ViewerTokenRecord(Base):
    """Every viewer token the plugin issued: who asked, for which studies, and its revocation."""

    __tablename__ = "viewer_tokens"
    __table_args__ = (Index("ix_viewer_tokens_revoked", "expires_at", postgresql_where=text("revoked_at IS NOT NULL")),
                      Index("ix_viewer_tokens_issued_at", "issued_at"),
                      Index("ix_viewer_tokens_revoked_at", "revoked_at"),
                      CheckConstraint("kind IN ('viewer', 'image-url')", name="viewer_tokens_kind_check"))

    token_id: Mapped[str] = mapped_column(primary_key=True)
    subject: Mapped[str]
    study_uids: Mapped[list[str]] = mapped_column(ARRAY(Text))
    order_id: Mapped[str | None]
    patient_id: Mapped[str | None]
    issued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_by: Mapped[str | None]
    revoke_reason: Mapped[str | None]
    # "viewer": an OHIF viewer token; "image-url": the grant of signed image URLs (one per call that minted them)
    kind: Mapped[str] = mapped_column(default="viewer", server_default=text("'viewer'"))


class ViewerAccess(Base):
    """Viewer reads aggregated per token and study (not a row per frame)."""

    __tablename__ = "viewer_access_log"
    __table_args__ = (Index("ix_viewer_access_log_study", "study_instance_uid"),
                      Index("ix_viewer_access_log_subject", "subject"),
                      Index("ix_viewer_access_log_last_access", "last_access_at"))

    token_id: Mapped[str] = mapped_column(primary_key=True)
    study_instance_uid: Mapped[str] = mapped_column(primary_key=True)
    subject: Mapped[str]
    first_access_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_access_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    request_count: Mapped[int] = mapped_column(BigInteger, default=0, server_default=ZERO)
    denied_count: Mapped[int] = mapped_column(BigInteger, default=0, server_default=ZERO)
    bytes: Mapped[int] = mapped_column(BigInteger, default=0, server_default=ZERO)


class AdminSessionRevocation(Base):
    """Admin browser sessions ended by logout (the cookie's ``jti``), until the cookie would have expired."""

    __tablename__ = "admin_session_revocations"
    __table_args__ = (Index("ix_admin_session_revocations_expires", "expires_at"),)

    session_id: Mapped[str] = mapped_column(primary_key=True)
    subject: Mapped[str]
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class DimseAudit(Base):
    """One row per DICOM query or retrieval the plugin answered or refused: C-FIND, worklist, C-MOVE."""

    __tablename__ = "dimse_audit"
    __table_args__ = (
        CheckConstraint("service IN ('C-FIND', 'MWL', 'C-MOVE')", name="dimse_audit_service_check"),
        Index("ix_dimse_audit_at", "at"),
        Index("ix_dimse_audit_calling", "calling_aet", "at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    service: Mapped[str]
    calling_aet: Mapped[str]
    called_aet: Mapped[str | None]
    level: Mapped[str | None]
    query: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict, server_default=EMPTY_JSON_OBJECT)
    answers: Mapped[int] = mapped_column(default=0, server_default=ZERO)
    truncated: Mapped[bool] = mapped_column(default=False, server_default=FALSE)
    target_aet: Mapped[str | None]
    outcome: Mapped[str]
    node: Mapped[str | None]


class AuditSpoolMark(Base):
    """How far PostgreSQL holds each node's local audit spool (store/audit_spool.py): every record of the
    stream up to ``applied_seq`` is in the audit tables; written in the same transaction as those rows."""

    __tablename__ = "audit_spool_marks"

    spool_id: Mapped[str] = mapped_column(primary_key=True)
    stream: Mapped[str] = mapped_column(primary_key=True)
    applied_seq: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
