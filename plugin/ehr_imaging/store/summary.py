"""Counts for the stats route."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, text

from .migrations import check_schema_name


@dataclass(frozen=True)
class Counts:
    orders: int
    matched_orders: int  # linked to a study
    uploads: int  # upload audit rows not soft-deleted


def counts(engine: Engine, schema: str) -> Counts:
    check_schema_name(schema)
    with engine.connect() as conn:
        row = conn.execute(
            text(
                f'SELECT (SELECT count(*) FROM "{schema}".imaging_orders),'
                f' (SELECT count(*) FROM "{schema}".imaging_orders WHERE study_instance_uid IS NOT NULL),'
                f' (SELECT count(*) FROM "{schema}".dicom_upload_logs WHERE NOT is_deleted)'
            )
        ).one()
    return Counts(row[0], row[1], row[2])
