"""Versioned schema migrations, applied at start-up.

Each migration runs once, in order, inside one transaction that holds a PostgreSQL advisory lock,
so several Orthanc nodes starting at the same moment apply each migration exactly once and none
of them sees a half-built schema. A migration is never edited once released: add a new one.
"""

from __future__ import annotations

import re

from sqlalchemy import Connection, Engine, text

from .schema_history import Migration as Migration
from .schema_history_9_on import MIGRATIONS as MIGRATIONS

# pg_advisory_xact_lock key: an arbitrary constant that belongs to this plugin.
MIGRATION_LOCK_KEY = 0x45485249  # "EHRI"

LATEST_VERSION = max(migration.version for migration in MIGRATIONS)


def migrate(engine: Engine, schema: str) -> list[int]:
    """Bring the schema to ``LATEST_VERSION`` (and its optional trigram index, when it can be made); return the
    versions this call applied."""
    check_schema_name(schema)
    applied: list[int] = []
    with engine.begin() as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        # Created only when missing: the plugin's role owns its schema but may not create schemas, and
        # CREATE SCHEMA IF NOT EXISTS needs that right even when the schema is there (README "database roles").
        if conn.execute(text("SELECT 1 FROM pg_namespace WHERE nspname = :s"), {"s": schema}).first() is None:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        conn.execute(text(f'SET LOCAL search_path TO "{schema}"'))
        conn.execute(
            text(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
        )
        done = {row[0] for row in conn.execute(text("SELECT version FROM schema_migrations"))}
        for migration in sorted(MIGRATIONS, key=lambda m: m.version):
            if migration.version in done:
                continue
            conn.exec_driver_sql(migration.sql)
            conn.execute(
                text("INSERT INTO schema_migrations (version, name) VALUES (:v, :n)"),
                {"v": migration.version, "n": migration.name},
            )
            applied.append(migration.version)
        ensure_trigram_index(conn)
    return applied


TRIGRAM_INDEX = "ix_study_links_patient_name_trgm"


def ensure_trigram_index(conn: Connection) -> bool:
    """The patient-name search's trigram index, made at every start once ``pg_trgm`` is installed (by the roles
    script, as a superuser: the plugin's role may not create extensions), whenever that happened: an index, not a
    migration, because it depends on what an administrator installed. Returns whether the index exists."""
    if conn.execute(text("SELECT 1 FROM pg_indexes WHERE schemaname = current_schema() AND indexname = :i"),
                    {"i": TRIGRAM_INDEX}).first() is not None:
        return True
    ext_schema = conn.execute(text("SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = "
                                   "e.extnamespace WHERE e.extname = 'pg_trgm'")).scalar()
    if ext_schema is None or not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", ext_schema):
        return False
    opclass = f'"{ext_schema}".gin_trgm_ops'
    conn.execute(text(f"CREATE INDEX {TRIGRAM_INDEX} ON study_links USING gin (patient_name {opclass})"))
    return True


def check_schema_name(schema: str) -> None:
    """The schema name is interpolated into DDL, so it must be a plain identifier."""
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", schema):
        raise ValueError(f"invalid schema name {schema!r}")


def current_version(engine: Engine, schema: str) -> int | None:
    check_schema_name(schema)
    with engine.connect() as conn:
        exists = conn.execute(
            text("SELECT to_regclass(:t)"), {"t": f'"{schema}".schema_migrations'}
        ).scalar()
        if exists is None:
            return None
        return conn.execute(text(f'SELECT max(version) FROM "{schema}".schema_migrations')).scalar()


def has_trigram_index(engine: Engine, schema: str) -> bool:
    """Whether the patient-name search is answered from its trigram index (else: a scan of every study)."""
    with engine.connect() as conn:
        return conn.execute(text("SELECT 1 FROM pg_indexes WHERE schemaname = :s AND indexname = :i"),
                            {"s": schema, "i": TRIGRAM_INDEX}).first() is not None
