"""The SQLAlchemy models and the migrated schema describe the same columns (a migration without its model
column, or the reverse, fails here rather than at the first query that needs it)."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text

from ehr_imaging.store import db
from ehr_imaging.store.models import Base
from ehr_stack.stack import Stack

pytestmark = pytest.mark.integration


def test_every_model_column_is_in_the_migrated_schema_and_back(stack: Stack) -> None:
    engine = create_engine(db.normalize_url(stack.postgres.url))
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT table_name, column_name FROM information_schema.columns"
                                     " WHERE table_schema = 'ehr_imaging'")).all()
    finally:
        engine.dispose()
    migrated: dict[str, set[str]] = {}
    for table, column in rows:
        migrated.setdefault(table, set()).add(column)
    for name, table in Base.metadata.tables.items():
        assert {column.name for column in table.columns} == migrated.get(name), name
