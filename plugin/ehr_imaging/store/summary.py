"""Counts for the stats route."""

from __future__ import annotations

from sqlalchemy import Engine, text

from .migrations import check_schema_name


def counts(engine: Engine, schema: str) -> dict[str, int]:
    check_schema_name(schema)
    with engine.connect() as conn:
        row = conn.execute(
            text(
                f'SELECT (SELECT count(*) FROM "{schema}".imaging_orders),'
                f' (SELECT count(*) FROM "{schema}".imaging_orders WHERE study_instance_uid IS NOT NULL),'
                f' (SELECT count(*) FROM "{schema}".dicom_upload_logs WHERE NOT is_deleted)'
            )
        ).one()
    return {"total_orders": row[0], "matched_orders": row[1], "total_uploads": row[2]}
