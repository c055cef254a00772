"""The SQLAlchemy models are the one schema source: the migrated schema and ``store.models`` describe the same
tables, columns, types, nullability, server defaults, keys, constraints and indexes (a migration without its
model change, or the reverse, fails here rather than at the first query that needs it).

Two comparisons against the running test PostgreSQL's ``ehr_imaging`` schema (migrated by the plugin at
start-up):
- Alembic's autogenerate diff (``compare_metadata``) of the schema against ``Base.metadata``: tables, columns,
  types, nullability, server defaults, primary, unique and foreign keys, indexes (expressions included);
- PostgreSQL's own rendering of what Alembic does not compare (CHECK constraints, partial-index predicates,
  the exact DEFAULT expressions): the models are created in a scratch schema, inside a transaction that is
  rolled back, and the catalog definitions of both schemas must be equal.
"""

from __future__ import annotations

import pprint
from collections.abc import Iterator
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, Index, MetaData, create_engine, text

from ehr_imaging.store import db
from ehr_imaging.store.models import Base
from ehr_imaging.store.tables import import_every_model
from ehr_stack.stack import Stack

pytestmark = pytest.mark.integration

import_every_model()  # every model module's tables on Base.metadata

SCHEMA = "ehr_imaging"
SCRATCH = "ehr_imaging_models_check"
RUNNER_TABLES = {"schema_migrations"}  # the migration runner's own bookkeeping (store.migrations), not a model


@pytest.fixture(scope="module")
def connection(stack: Stack) -> Iterator[Connection]:
    engine = create_engine(db.normalize_url(stack.postgres.url))
    try:
        with engine.connect() as conn:
            # The models carry no schema (the plugin's connections set search_path): compare in the same way.
            conn.execute(text(f'SET search_path TO "{SCHEMA}"'))
            conn.commit()
            yield conn
    finally:
        engine.dispose()


def _include(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    return not (type_ == "table" and name in RUNNER_TABLES)


def schema_diff(conn: Connection, metadata: MetaData) -> list[Any]:
    """What Alembic would change in the migrated schema to make it the models' one (empty: nothing)."""
    context = MigrationContext.configure(conn, opts={
        "compare_type": True,
        "compare_server_default": True,
        "include_object": _include,
        "target_metadata": metadata,
    })
    return list(compare_metadata(context, metadata))


def described(diff: list[Any]) -> str:
    """One line per difference: Alembic's operation, then what it concerns (column changes are nested lists)."""
    def shown(part: Any) -> str:
        if isinstance(part, Index):
            return f"{part.name}({', '.join(str(e) for e in part.expressions)})"
        arg = getattr(part, "arg", None)  # a server default
        return str(getattr(arg, "text", arg) if arg is not None else part)
    lines = []
    for entry in diff:
        for change in entry if isinstance(entry, list) else [entry]:
            lines.append(" ".join(shown(p) for p in change if p is not None and not isinstance(p, dict)))
    return "\n".join(lines)


CATALOG = {
    "constraint": """
        SELECT c.relname || '.' || con.conname, pg_get_constraintdef(con.oid)
        FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = current_schema() AND c.relname <> ALL(:skip)""",
    "index": """
        SELECT tablename || '.' || indexname, replace(indexdef, current_schema() || '.', '')
        FROM pg_indexes WHERE schemaname = current_schema() AND tablename <> ALL(:skip)""",
    "column": """
        SELECT table_name || '.' || column_name,
               concat_ws(' ', udt_name, is_nullable, 'DEFAULT ' || replace(column_default, current_schema() || '.', ''))
        FROM information_schema.columns WHERE table_schema = current_schema() AND table_name <> ALL(:skip)""",
}


def catalog(conn: Connection, schema: str) -> dict[str, dict[str, str]]:
    """PostgreSQL's definitions of the schema's constraints, indexes and columns, as the schema's own
    search_path renders them (names of its tables unqualified)."""
    conn.execute(text(f'SET LOCAL search_path TO "{schema}"'))
    return {kind: {name: definition for name, definition in conn.execute(text(sql), {"skip": list(RUNNER_TABLES)})}
            for kind, sql in CATALOG.items()}


def differences(migrated: dict[str, dict[str, str]], modelled: dict[str, dict[str, str]]) -> list[str]:
    out = []
    for kind in CATALOG:
        for name in sorted(set(migrated[kind]) | set(modelled[kind])):
            was, model = migrated[kind].get(name), modelled[kind].get(name)
            if was != model:
                out.append(f"{kind} {name}: migrations {was!r}, models {model!r}")
    return out


def catalog_drift(conn: Connection, metadata: MetaData) -> list[str]:
    """The migrated schema's catalog against the one ``metadata`` creates (in a scratch schema, rolled back)."""
    if conn.in_transaction():
        conn.rollback()
    transaction = conn.begin()
    try:
        migrated = catalog(conn, SCHEMA)
        conn.execute(text(f'CREATE SCHEMA "{SCRATCH}"'))
        # The migrated schema second: its functions (name_grams, which a generated column calls) are found there;
        # the tables are made in the first (checkfirst off: the migrated ones are visible too).
        conn.execute(text(f'SET LOCAL search_path TO "{SCRATCH}", "{SCHEMA}"'))
        metadata.create_all(conn, checkfirst=False)
        return differences(migrated, catalog(conn, SCRATCH))
    finally:
        transaction.rollback()


def test_the_migrated_schema_is_the_models_schema(connection: Connection) -> None:
    diff = schema_diff(connection, Base.metadata)
    assert diff == [], "migrations and store/models.py drift:\n" + described(diff) + "\n" + pprint.pformat(diff)


def test_constraints_indexes_and_defaults_are_those_of_the_migrations(connection: Connection) -> None:
    drift = catalog_drift(connection, Base.metadata)
    assert drift == [], "migrations and store/models.py drift:\n" + "\n".join(drift)


def test_every_model_column_is_in_the_migrated_schema_and_back(connection: Connection) -> None:
    rows = connection.execute(text("SELECT table_name, column_name FROM information_schema.columns"
                                   " WHERE table_schema = :schema"), {"schema": SCHEMA}).all()
    migrated: dict[str, set[str]] = {}
    for table, column in rows:
        migrated.setdefault(table, set()).add(column)
    for name, table in Base.metadata.tables.items():
        assert {column.name for column in table.columns} == migrated.get(name), name
    assert set(migrated) - RUNNER_TABLES == set(Base.metadata.tables)


def _without(keep: Any) -> MetaData:
    """A copy of the models' metadata in which ``keep(table, copy)`` removes something."""
    metadata = MetaData()
    for table in Base.metadata.tables.values():
        keep(table.to_metadata(metadata))
    return metadata


def test_both_comparisons_see_a_model_drift(connection: Connection) -> None:
    """The checks are not blind: a model without one of the migrated indexes, or with another CHECK, is reported."""
    def drop_index(table: Any) -> None:
        if table.name == "study_links":
            table.indexes = {index for index in table.indexes if index.name != "ix_study_links_unmatched"}

    def loosen_check(table: Any) -> None:
        if table.name == "imaging_orders":
            check = next(c for c in table.constraints if c.name == "imaging_orders_sex_check")
            check.sqltext = text("sex IN ('M', 'F', 'O', 'U')")

    diff = schema_diff(connection, _without(drop_index))
    assert [(entry[0], entry[1].name) for entry in diff] == [("remove_index", "ix_study_links_unmatched")], diff
    assert catalog_drift(connection, _without(drop_index)) == [
        "index study_links.ix_study_links_unmatched: migrations 'CREATE INDEX ix_study_links_unmatched ON"
        " study_links USING btree (first_seen_at) WHERE (order_id IS NULL)', models None"]
    assert schema_diff(connection, _without(loosen_check)) == []  # Alembic does not compare CHECKs ...
    drift = catalog_drift(connection, _without(loosen_check))  # ... the catalog comparison does
    assert len(drift) == 1 and drift[0].startswith("constraint imaging_orders.imaging_orders_sex_check:"), drift
