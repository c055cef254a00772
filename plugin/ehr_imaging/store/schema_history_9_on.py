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
        13,
        "events to the EHR: a durable outbox, each event's delivery to each endpoint",
        """
        CREATE TABLE event_outbox (
            seq                BIGSERIAL PRIMARY KEY,
            event_id           UUID NOT NULL,
            type               TEXT NOT NULL,
            study_instance_uid TEXT,
            order_id           TEXT,
            patient_id         TEXT,
            ordering_key       TEXT NOT NULL,
            payload            JSONB NOT NULL,
            occurred_at        TIMESTAMPTZ NOT NULL,
            CONSTRAINT event_outbox_event_id_key UNIQUE (event_id)
        );
        CREATE INDEX ix_event_outbox_study ON event_outbox (study_instance_uid);
        CREATE TABLE event_deliveries (
            event_seq       BIGINT NOT NULL REFERENCES event_outbox (seq) ON DELETE CASCADE,
            endpoint        TEXT NOT NULL,
            ordering_key    TEXT NOT NULL,
            status          TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'failed', 'delivered')),
            attempts        INTEGER NOT NULL DEFAULT 0,
            next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            retry_since     TIMESTAMPTZ NOT NULL DEFAULT now(),
            last_attempt_at TIMESTAMPTZ,
            delivered_at    TIMESTAMPTZ,
            last_error      TEXT,
            PRIMARY KEY (event_seq, endpoint)
        );
        CREATE INDEX ix_event_deliveries_due ON event_deliveries (next_attempt_at) WHERE status = 'pending';
        CREATE INDEX ix_event_deliveries_in_order ON event_deliveries (endpoint, ordering_key, event_seq)
            WHERE status = 'pending';
        CREATE INDEX ix_event_deliveries_status ON event_deliveries (status, event_seq);
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
    Migration(
        15,
        "the local audit spool's high-water marks: what PostgreSQL already holds of each node's spool",
        """
        CREATE TABLE audit_spool_marks (
            spool_id    TEXT NOT NULL,
            stream      TEXT NOT NULL,
            applied_seq BIGINT NOT NULL,
            updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
            PRIMARY KEY (spool_id, stream)
        );
        """,
    ),
    Migration(
        16,
        "GET /studies at a hospital's scale: indexes for newest first, normalized identifiers and modalities",
        """
        CREATE INDEX ix_study_links_newest
            ON study_links (study_date DESC NULLS LAST, study_time DESC NULLS LAST, study_instance_uid);
        CREATE INDEX ix_study_links_patient_norm ON study_links (upper(patient_id));
        CREATE INDEX ix_study_links_accession_norm ON study_links (upper(accession_number));
        CREATE INDEX ix_study_links_modalities ON study_links USING gin (modalities);
        CREATE INDEX ix_dicom_upload_logs_patient_norm ON dicom_upload_logs (upper(patient_id));
        """,
    ),
    Migration(
        17,
        "the patient-name search of one or two letters from an index: every name's letters and letter pairs",
        """
        -- What a contains-match of one or two characters needs (pg_trgm's trigrams need three): lower() as ILIKE
        -- folds case. IMMUTABLE, so a generated column may call it.
        CREATE FUNCTION name_grams(name TEXT) RETURNS TEXT[] LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
            SELECT coalesce(array_agg(DISTINCT substr(lower(name), i, n)), '{}')
            FROM generate_series(1, 2) AS n, generate_series(1, length(name) - n + 1) AS i
        $$;
        ALTER TABLE study_links
            ADD COLUMN patient_name_grams TEXT[] GENERATED ALWAYS AS (name_grams(patient_name)) STORED;
        CREATE INDEX ix_study_links_patient_name_grams ON study_links USING gin (patient_name_grams);
        """,
    ),
    Migration(
        18,
        "uploads' study holds shared by the nodes of one Orthanc index: the follower of the change log sees them",
        """
        CREATE TABLE upload_holds (
            orthanc_study_id TEXT NOT NULL,
            node             TEXT NOT NULL,
            expires_at       TIMESTAMPTZ NOT NULL,
            PRIMARY KEY (orthanc_study_id, node)
        );
        """,
    ),
    Migration(
        19,
        "a patient-name search that matches most studies counted from the lowered names alone (an index-only scan)",
        """
        -- lower(name) LIKE lower(pattern) is exactly ILIKE (PostgreSQL lowers both sides the same way), and
        -- testing a lowered name is ~5x cheaper than ILIKE lowering it per row. INCLUDE (patient_name): the
        -- planner uses an index-only scan for lower(patient_name) only when the column itself is there too.
        CREATE INDEX ix_study_links_patient_name_lower ON study_links (lower(patient_name)) INCLUDE (patient_name);
        -- The statistics of lower(patient_name), which the search's estimate of its matches reads: now, not at
        -- autovacuum's next analysis of the table (until then every search would be estimated narrow).
        ANALYZE study_links;
        """,
    ),
)
