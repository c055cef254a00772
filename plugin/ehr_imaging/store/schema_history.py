"""The schema's history: every migration the plugin has released, in order (applied by ``store.migrations``).

A migration is never edited once released: add a new one at the end.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "orders, upload log, deletion log",
        """
        CREATE TABLE imaging_orders (
            order_id            TEXT PRIMARY KEY,
            accession_number    TEXT,
            patient_id          TEXT,
            mrn                 TEXT,
            patient_family_name TEXT,
            patient_given_name  TEXT,
            birth_date          DATE,
            sex                 TEXT CHECK (sex IN ('M', 'F', 'O')),
            modality            TEXT,
            scheduled_start     TIMESTAMPTZ,
            description         TEXT,
            referring_physician TEXT,
            status              TEXT NOT NULL DEFAULT 'scheduled'
                CHECK (status IN ('scheduled', 'in-progress', 'completed', 'cancelled')),
            study_instance_uid  TEXT UNIQUE,
            orthanc_study_id    TEXT,
            number_of_series    INTEGER,
            number_of_images    INTEGER,
            study_date          DATE,
            study_time          TIME,
            uploaded_by         TEXT,
            uploaded_at         TIMESTAMPTZ,
            upload_source       TEXT,
            match_rule          TEXT,
            created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
            updated_at          TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        CREATE INDEX ix_imaging_orders_accession ON imaging_orders (accession_number);
        CREATE INDEX ix_imaging_orders_mrn ON imaging_orders (mrn);
        CREATE INDEX ix_imaging_orders_patient ON imaging_orders (patient_id);
        CREATE INDEX ix_imaging_orders_status ON imaging_orders (status);

        CREATE TABLE dicom_upload_logs (
            id                        UUID PRIMARY KEY,
            patient_id                TEXT,
            order_id                  TEXT REFERENCES imaging_orders (order_id),
            uploaded_by               TEXT,
            study_instance_uid        TEXT NOT NULL,
            orthanc_study_id          TEXT,
            number_of_files           INTEGER NOT NULL DEFAULT 0,
            total_size_bytes          BIGINT NOT NULL DEFAULT 0,
            file_names                JSONB NOT NULL DEFAULT '[]',
            original_patient_id       TEXT,
            original_patient_name     TEXT,
            original_accession_number TEXT,
            original_study_date       TEXT,
            original_modality         TEXT,
            modified_patient_id       TEXT,
            modified_patient_name     TEXT,
            modified_accession_number TEXT,
            tags_modified             BOOLEAN NOT NULL DEFAULT false,
            upload_status             TEXT NOT NULL CHECK (upload_status IN ('success', 'failed', 'partial')),
            error_message             TEXT,
            uploaded_at               TIMESTAMPTZ NOT NULL DEFAULT now(),
            upload_source             TEXT NOT NULL,
            upload_duration_seconds   DOUBLE PRECISION,
            is_deleted                BOOLEAN NOT NULL DEFAULT false
        );
        CREATE INDEX ix_dicom_upload_logs_study_uid ON dicom_upload_logs (study_instance_uid);
        CREATE INDEX ix_dicom_upload_logs_orthanc_id ON dicom_upload_logs (orthanc_study_id);
        CREATE INDEX ix_dicom_upload_logs_patient_id ON dicom_upload_logs (patient_id);
        CREATE INDEX ix_dicom_upload_logs_order_id ON dicom_upload_logs (order_id);

        CREATE TABLE dicom_deletion_logs (
            id                  UUID PRIMARY KEY,
            study_instance_uid  TEXT NOT NULL,
            orthanc_study_id    TEXT,
            order_id            TEXT,
            patient_id          TEXT,
            patient_name        TEXT,
            accession_number    TEXT,
            study_date          TEXT,
            modalities          TEXT,
            number_of_series    INTEGER,
            number_of_instances INTEGER,
            deleted_by          TEXT NOT NULL,
            reason              TEXT NOT NULL CHECK (length(trim(reason)) > 0),
            deleted_at          TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        CREATE INDEX ix_dicom_deletion_logs_study_uid ON dicom_deletion_logs (study_instance_uid);
        """,
    ),
)

MIGRATIONS += (
    Migration(
        2,
        "study links, link audit: the matching state of every study",
        """
        CREATE TABLE study_links (
            study_instance_uid  TEXT PRIMARY KEY,
            orthanc_study_id    TEXT NOT NULL,
            patient_id          TEXT,
            patient_name        TEXT,
            accession_number    TEXT,
            study_date          DATE,
            study_time          TIME,
            study_description   TEXT,
            modalities          TEXT[] NOT NULL DEFAULT '{}',
            number_of_series    INTEGER NOT NULL DEFAULT 0,
            number_of_instances INTEGER NOT NULL DEFAULT 0,
            total_size_bytes    BIGINT NOT NULL DEFAULT 0,
            explicit_order_id   TEXT,
            order_id            TEXT REFERENCES imaging_orders (order_id),
            match_rule          TEXT,
            match_reason        TEXT,
            candidates          JSONB NOT NULL DEFAULT '[]',
            upload_source       TEXT,
            uploaded_by         TEXT,
            auto_match          BOOLEAN NOT NULL DEFAULT true,  -- false once a person unlinked it
            first_seen_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
            updated_at          TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        CREATE INDEX ix_study_links_unmatched ON study_links (first_seen_at) WHERE order_id IS NULL;
        CREATE INDEX ix_study_links_accession ON study_links (accession_number);
        CREATE INDEX ix_study_links_patient ON study_links (patient_id);
        CREATE INDEX ix_study_links_order ON study_links (order_id);
        CREATE TABLE link_audit (
            id                  BIGSERIAL PRIMARY KEY,
            study_instance_uid  TEXT NOT NULL,
            order_id            TEXT,
            action              TEXT NOT NULL CHECK (action IN ('auto-link', 'link', 'unlink', 'coerce')),
            rule                TEXT,
            actor               TEXT NOT NULL,
            reason              TEXT,
            at                  TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        CREATE INDEX ix_link_audit_study ON link_audit (study_instance_uid);
        -- matching compares normalized identifiers
        CREATE INDEX ix_imaging_orders_accession_norm ON imaging_orders (upper(accession_number));
        CREATE INDEX ix_imaging_orders_mrn_norm ON imaging_orders (upper(mrn));
        """,
    ),
)

MIGRATIONS += (
    Migration(
        3,
        "viewer tokens (issued, revoked) and the aggregated viewer access log",
        """
        CREATE TABLE viewer_tokens (
            token_id        TEXT PRIMARY KEY,           -- the JWT's jti
            subject         TEXT NOT NULL,              -- who asked for it
            study_uids      TEXT[] NOT NULL,
            order_id        TEXT,
            patient_id      TEXT,
            issued_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
            expires_at      TIMESTAMPTZ NOT NULL,
            revoked_at      TIMESTAMPTZ,
            revoked_by      TEXT,
            revoke_reason   TEXT
        );
        CREATE INDEX ix_viewer_tokens_revoked ON viewer_tokens (expires_at) WHERE revoked_at IS NOT NULL;
        CREATE TABLE viewer_access_log (
            token_id            TEXT NOT NULL,
            study_instance_uid  TEXT NOT NULL,
            subject             TEXT NOT NULL,
            first_access_at     TIMESTAMPTZ NOT NULL,
            last_access_at      TIMESTAMPTZ NOT NULL,
            request_count       BIGINT NOT NULL DEFAULT 0,
            denied_count        BIGINT NOT NULL DEFAULT 0,
            bytes               BIGINT NOT NULL DEFAULT 0,
            PRIMARY KEY (token_id, study_instance_uid)
        );
        CREATE INDEX ix_viewer_access_log_study ON viewer_access_log (study_instance_uid);
        CREATE INDEX ix_viewer_access_log_subject ON viewer_access_log (subject);
        """,
    ),
)

MIGRATIONS += (
    Migration(
        4,
        "upload jobs (large ZIPs on a worker thread), offline sync uploads",
        """
        CREATE TABLE upload_jobs (
            job_id          UUID PRIMARY KEY,
            status          TEXT NOT NULL CHECK (status IN ('queued', 'running', 'completed', 'failed')),
            created_by      TEXT NOT NULL,
            node            TEXT NOT NULL,  -- the Orthanc node that holds the archive and runs the job
            source          TEXT NOT NULL,
            file_name       TEXT,
            order_id        TEXT,
            patient_id      TEXT,
            total_files     INTEGER NOT NULL DEFAULT 0,
            processed_files INTEGER NOT NULL DEFAULT 0,
            successful      INTEGER NOT NULL DEFAULT 0,
            failed          INTEGER NOT NULL DEFAULT 0,
            results         JSONB,
            error           TEXT,
            created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
            started_at      TIMESTAMPTZ,
            finished_at     TIMESTAMPTZ,
            updated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        CREATE INDEX ix_upload_jobs_open ON upload_jobs (node) WHERE status IN ('queued', 'running');

        CREATE TABLE offline_uploads (
            upload_id           UUID PRIMARY KEY,
            sop_instance_uid    TEXT NOT NULL,
            series_instance_uid TEXT NOT NULL,
            study_instance_uid  TEXT NOT NULL,
            size                BIGINT NOT NULL CHECK (size > 0),
            sha256              TEXT NOT NULL,
            patient_id          TEXT,
            order_id            TEXT,
            file_name           TEXT,
            status              TEXT NOT NULL
                CHECK (status IN ('METADATA_UPLOADED', 'BINARY_RECEIVED', 'STORED', 'ACK_RECEIVED')),
            declared_by         TEXT NOT NULL,
            orthanc_instance_id TEXT,
            orthanc_study_id    TEXT,
            upload_log_id       UUID REFERENCES dicom_upload_logs (id),
            created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
            stored_at           TIMESTAMPTZ,
            acked_at            TIMESTAMPTZ,
            UNIQUE (sop_instance_uid, sha256)  -- the same declaration twice is the same upload
        );
        CREATE INDEX ix_offline_uploads_study ON offline_uploads (study_instance_uid);
        """,
    ),
)

MIGRATIONS += (
    Migration(
        5,
        "tag edit audit: every modify-tags call",
        """
        CREATE TABLE tag_edit_audit (
            id                   BIGSERIAL PRIMARY KEY,
            edited_by            TEXT NOT NULL,
            edited_at            TIMESTAMPTZ NOT NULL DEFAULT now(),
            sop_instance_uid     TEXT,
            study_instance_uid   TEXT,
            file_name            TEXT,
            original_values      JSONB NOT NULL DEFAULT '{}',
            new_values           JSONB NOT NULL DEFAULT '{}',
            removed_private_tags BOOLEAN NOT NULL DEFAULT false,
            private_tags_removed INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX ix_tag_edit_audit_study ON tag_edit_audit (study_instance_uid);
        CREATE INDEX ix_tag_edit_audit_sop ON tag_edit_audit (sop_instance_uid);
        """,
    ),
)

MIGRATIONS += (
    Migration(
        6,
        "study uid collisions: an Orthanc study whose StudyInstanceUID is recorded under another patient",
        """
        CREATE TABLE study_uid_collisions (
            orthanc_study_id           TEXT PRIMARY KEY,  -- as it arrived, under the recorded StudyInstanceUID
            study_instance_uid         TEXT NOT NULL,     -- as it arrived (the recorded study's)
            quarantine_study_instance_uid TEXT,           -- the StudyInstanceUID it was moved to (NULL: not moved)
            quarantine_orthanc_study_id   TEXT,           -- the Orthanc study it is in once moved
            patient_id                 TEXT,
            patient_name               TEXT,
            accession_number           TEXT,
            study_date                 DATE,
            modalities                 TEXT[] NOT NULL DEFAULT '{}',
            number_of_series           INTEGER NOT NULL DEFAULT 0,
            number_of_instances        INTEGER NOT NULL DEFAULT 0,
            total_size_bytes           BIGINT NOT NULL DEFAULT 0,
            upload_source              TEXT,
            uploaded_by                TEXT,
            recorded_orthanc_study_id  TEXT NOT NULL,
            recorded_patient_id        TEXT,
            first_seen_at              TIMESTAMPTZ NOT NULL DEFAULT now(),
            updated_at                 TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        CREATE INDEX ix_study_uid_collisions_uid ON study_uid_collisions (study_instance_uid);
        CREATE UNIQUE INDEX ix_study_uid_collisions_moved ON study_uid_collisions (quarantine_orthanc_study_id);
        CREATE INDEX ix_study_uid_collisions_moved_uid ON study_uid_collisions (quarantine_study_instance_uid);
        -- the study's original PatientID when a person linked it across a patient mismatch (force)
        ALTER TABLE study_links ADD COLUMN accepted_patient_id TEXT;
        ALTER TABLE link_audit DROP CONSTRAINT link_audit_action_check;
        ALTER TABLE link_audit ADD CONSTRAINT link_audit_action_check
            CHECK (action IN ('auto-link', 'link', 'unlink', 'coerce', 'quarantine'));
        """,
    ),
)


MIGRATIONS += (
    Migration(
        7,
        "orders name their station AET; audit of DICOM queries and retrievals (C-FIND, MWL, C-MOVE)",
        """
        ALTER TABLE imaging_orders ADD COLUMN station_aet TEXT;
        CREATE INDEX ix_imaging_orders_station_aet ON imaging_orders (station_aet);
        CREATE TABLE dimse_audit (
            id          BIGSERIAL PRIMARY KEY,
            at          TIMESTAMPTZ NOT NULL DEFAULT now(),
            service     TEXT NOT NULL CHECK (service IN ('C-FIND', 'MWL', 'C-MOVE')),
            calling_aet TEXT NOT NULL,
            called_aet  TEXT,
            level       TEXT,
            query       JSONB NOT NULL DEFAULT '{}',
            answers     INTEGER NOT NULL DEFAULT 0,
            truncated   BOOLEAN NOT NULL DEFAULT false,
            target_aet  TEXT,
            outcome     TEXT NOT NULL,
            node        TEXT
        );
        CREATE INDEX ix_dimse_audit_at ON dimse_audit (at);
        CREATE INDEX ix_dimse_audit_calling ON dimse_audit (calling_aet, at);
        """,
    ),
)

MIGRATIONS += (
    Migration(
        8,
        "admin session revocations: logout ends the session on every node",
        """
        CREATE TABLE admin_session_revocations (
            session_id TEXT PRIMARY KEY,
            subject    TEXT NOT NULL,
            expires_at TIMESTAMPTZ NOT NULL,
            revoked_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        CREATE INDEX ix_admin_session_revocations_expires ON admin_session_revocations (expires_at);
        """,
    ),
)
