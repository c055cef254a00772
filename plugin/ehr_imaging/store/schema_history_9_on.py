"""Migrations 9 and later (the schema history continues from ``schema_history.py``, which holds 1-8): each
version once, in order, never edited once released. ``store/models.py`` and its siblings declare the result.
"""

from __future__ import annotations

from .schema_history import MIGRATIONS as EARLIER
from .schema_history import Migration

MIGRATIONS: tuple[Migration, ...] = EARLIER
MIGRATIONS += (
    Migration(
        9,
        "deletion requests (approval by a second admin); a deleted study's files kept until purged (restorable)",
        """
        ALTER TABLE dicom_deletion_logs
            ADD COLUMN deletion_request_id UUID, ADD COLUMN approved_by TEXT,
            ADD COLUMN restorable BOOLEAN NOT NULL DEFAULT false, ADD COLUMN kept_files INTEGER NOT NULL DEFAULT 0,
            ADD COLUMN files_kept_until TIMESTAMPTZ, ADD COLUMN purged_at TIMESTAMPTZ,
            ADD COLUMN restored_at TIMESTAMPTZ, ADD COLUMN restored_by TEXT;
        CREATE INDEX ix_dicom_deletion_logs_restorable ON dicom_deletion_logs (files_kept_until) WHERE restorable;
        CREATE TABLE deletion_requests (
            id                  UUID PRIMARY KEY,
            study_instance_uid  TEXT NOT NULL,
            orthanc_study_id    TEXT,
            patient_id          TEXT,
            patient_name        TEXT,
            accession_number    TEXT,
            order_id            TEXT,
            number_of_instances INTEGER NOT NULL DEFAULT 0,
            reason              TEXT NOT NULL CHECK (length(trim(reason)) > 0),
            requested_by        TEXT NOT NULL,
            requested_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
            expires_at          TIMESTAMPTZ NOT NULL,
            status              TEXT NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'approved', 'rejected', 'expired')),
            decided_by          TEXT,
            decided_at          TIMESTAMPTZ,
            decision_reason     TEXT,
            deletion_id         UUID REFERENCES dicom_deletion_logs (id)
        );
        CREATE UNIQUE INDEX ix_deletion_requests_pending_study ON deletion_requests (study_instance_uid)
            WHERE status = 'pending';
        CREATE INDEX ix_deletion_requests_status ON deletion_requests (status, requested_at);
        """,
    ),
    Migration(
        10,
        "viewer tokens say what they are: an OHIF viewer token, or the grant of signed image URLs",
        """
        ALTER TABLE viewer_tokens ADD COLUMN kind TEXT NOT NULL DEFAULT 'viewer';
        ALTER TABLE viewer_tokens ADD CONSTRAINT viewer_tokens_kind_check CHECK (kind IN ('viewer', 'image-url'));
        """,
    ),
    Migration(
        11,
        "the audit timeline's time windows: an index on each audit table's time",
        """
        CREATE INDEX ix_dicom_upload_logs_uploaded_at ON dicom_upload_logs (uploaded_at);
        CREATE INDEX ix_link_audit_at ON link_audit (at);
        CREATE INDEX ix_tag_edit_audit_edited_at ON tag_edit_audit (edited_at);
        CREATE INDEX ix_viewer_tokens_issued_at ON viewer_tokens (issued_at);
        CREATE INDEX ix_viewer_tokens_revoked_at ON viewer_tokens (revoked_at);
        CREATE INDEX ix_viewer_access_log_last_access ON viewer_access_log (last_access_at);
        """,
    ),
    Migration(
        12,
        "order status follows the images: each change the images made, audited",
        """
        CREATE TABLE order_status_audit (
            id                 BIGSERIAL PRIMARY KEY,
            order_id           TEXT NOT NULL,
            from_status        TEXT NOT NULL,
            to_status          TEXT NOT NULL,
            study_instance_uid TEXT,
            actor              TEXT NOT NULL,
            reason             TEXT NOT NULL,
            at                 TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        CREATE INDEX ix_order_status_audit_order ON order_status_audit (order_id, id);
        CREATE INDEX ix_order_status_audit_at ON order_status_audit (at);
        """,
    ),
    Migration(
        14,
        "the ingest worker follows Orthanc's change log: its cursor per change log, with the follower's lease",
        """
        CREATE TABLE ingest_cursors (
            log_id      TEXT PRIMARY KEY,
            seq         BIGINT NOT NULL,
            holder      TEXT,
            lease_until TIMESTAMPTZ,
            updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        """,
    ),
)
