"""Orders and audit rows of the use-case tests, through the plugin's own store (no HTTP, no Orthanc)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import text

from ehr_imaging.core.orders import parse_order
from ehr_imaging.services import Services
from ehr_imaging.store import orders


def mrn() -> str:
    return "MRN-APP-" + uuid.uuid4().hex[:8].upper()


def accession() -> str:
    return "A" + uuid.uuid4().hex[:12].upper()


def put_order(services: Services, **fields: Any) -> str:
    """An order as the EHR pushes it (validated as PUT /orders/{id} validates it); its id."""
    order_id = str(uuid.uuid4())
    payload = {"patient_id": str(uuid.uuid4()), "patient_family_name": "Testperson", "patient_given_name": "Ada",
               "birth_date": "1970-05-17", "sex": "F", "modality": "CT",
               "scheduled_start": "2026-11-20T09:30:00+01:00", "status": "scheduled", **fields}
    _, created = orders.upsert(services.engine, parse_order(order_id, payload))
    assert created
    return order_id


def upload_rows(services: Services, study_uid: str) -> list[tuple[Any, ...]]:
    """(status, source, uploaded by, files, bytes, order) of each upload row of a study, oldest first."""
    with services.engine.connect() as conn:
        return [tuple(row) for row in conn.execute(text(
            "SELECT upload_status, upload_source, uploaded_by, number_of_files, total_size_bytes, order_id"
            " FROM ehr_imaging.dicom_upload_logs WHERE study_instance_uid = :u ORDER BY uploaded_at, id"),
            {"u": study_uid})]
