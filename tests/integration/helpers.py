"""What many integration tests do: push an order and read it back, read the plugin's tables as an auditor
would, wait until a study is ingested, read an error answer's detail (JSON, or a FHIR OperationOutcome)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fhir.resources.operationoutcome import OperationOutcome
from sqlalchemy import Connection, create_engine, text

from ehr_imaging.store.db import normalize_url
from ehr_stack.stack import Stack
from tests.conftest import Client
from tests.waiting import eventually

STABLE_WAIT = 30.0  # StableAge is 2 s in tests; Orthanc checks stability about once a second


def order_fields(**overrides: Any) -> dict[str, Any]:
    """A valid order of a patient of its own (PUT /orders/{id}), with ``overrides``."""
    fields: dict[str, Any] = {
        "accession_number": "ACC-T-" + uuid.uuid4().hex[:8].upper(),
        "patient_id": str(uuid.uuid4()),
        "mrn": "MRN-T-" + uuid.uuid4().hex[:6].upper(),
        "patient_family_name": "Testperson",
        "patient_given_name": "Ada",
        "birth_date": "1970-05-17",
        "sex": "F",
        "modality": "CT",
        "scheduled_start": "2026-11-20T09:30:00+01:00",
        "description": "CT head without contrast",
        "referring_physician": "HOUSE^Gregory",
        "status": "scheduled",
    }
    fields.update(overrides)
    return fields


def put_order(client: Client, **fields: Any) -> str:
    order_id = str(uuid.uuid4())
    answer = client.request("PUT", f"/api/v1/dicom/orders/{order_id}", "ehr-service", json=order_fields(**fields))
    assert answer.status_code == 201, answer.text
    return order_id


def order(client: Client, order_id: str) -> dict[str, Any]:
    answer = client.get(f"/api/v1/dicom/orders/{order_id}", "ehr-service")
    assert answer.status_code == 200
    result: dict[str, Any] = answer.json()
    return result


def query(client: Client, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    """Read the plugin's tables directly, as an auditor would."""
    engine = create_engine(normalize_url(client.stack.postgres.url))
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(text(sql), params)]
    finally:
        engine.dispose()


@contextmanager
def schema_connection(stack: Stack, *settings: str) -> Iterator[Connection]:
    """A connection to the plugin's schema as its superuser, with these session settings (``SET ...``) made."""
    engine = create_engine(normalize_url(stack.postgres.url))
    try:
        with engine.connect() as conn:
            for setting in ('SET search_path TO "ehr_imaging"', *settings):
                conn.execute(text(setting))
            conn.commit()  # session settings; each test's transaction then ends with it (no lock held between tests)
            yield conn
    finally:
        engine.dispose()


def execute(stack: Stack, sql: str, **params: Any) -> None:
    """Change the plugin's tables directly, as a fault or an operator would (tests that stage a state)."""
    engine = create_engine(normalize_url(stack.postgres.url))
    try:
        with engine.begin() as conn:
            conn.execute(text(sql), params)
    finally:
        engine.dispose()


def instances_of(client: Client, study_uid: str) -> int:
    """How many instances Orthanc holds of a study (0: none)."""
    found = client.request("POST", "/tools/lookup", auth=client.stack.admin_auth, data=study_uid).json()
    if not found:
        return 0
    stats = client.get(f"/studies/{found[0]['ID']}/statistics", auth=client.stack.admin_auth).json()
    return int(stats["CountInstances"])


def wait_for_ingest(client: Client, study_uid: str, instances: int) -> None:
    """Until the plugin has recorded the study with this many instances (after STABLE_STUDY)."""
    def recorded() -> bool:
        rows = query(client, "SELECT number_of_instances FROM ehr_imaging.study_links WHERE study_instance_uid = :u",
                     u=study_uid)
        return bool(rows) and rows[0][0] == instances

    eventually(recorded, timeout=STABLE_WAIT, what=f"study {study_uid} ingested with {instances} instances")


def stable_in_orthanc(client: Client, study_uid: str) -> str:
    """Until Orthanc says the study is stable (StableAge passed since its last instance); its Orthanc ID."""
    [found] = client.request("POST", "/tools/lookup", auth=client.stack.admin_auth, data=study_uid).json()
    orthanc_id = str(found["ID"])
    eventually(lambda: client.get(f"/studies/{orthanc_id}", auth=client.stack.admin_auth).json()["IsStable"],
               timeout=STABLE_WAIT, what=f"study {study_uid} to be stable in Orthanc")
    return orthanc_id


def mrn() -> str:
    return "MRN-M-" + uuid.uuid4().hex[:8].upper()


def accession() -> str:
    return "A" + uuid.uuid4().hex[:12].upper()


def finished_job(api: Client, status_url: str, seen: set[str] | None = None) -> dict[str, Any]:
    """Poll an upload job until it is completed or failed; its last status (``seen`` collects every status)."""
    def finished() -> dict[str, Any] | None:
        status: dict[str, Any] = api.get(status_url, "technician").json()
        if seen is not None:
            seen.add(status["status"])
        return status if status["status"] in ("completed", "failed") else None

    return eventually(finished, timeout=60, what=f"upload job {status_url} to finish", interval=0.2)


FHIR_JSON = "application/fhir+json"


def outcome(answer: Any) -> tuple[str, str]:
    """An error answer of a FHIR route: an R4 OperationOutcome (checked with the fhir.resources model) with one
    issue; its (code, diagnostics)."""
    assert answer.headers["Content-Type"].startswith(FHIR_JSON), answer.headers.get("Content-Type")
    parsed = OperationOutcome.parse_obj(answer.json())
    assert len(parsed.issue) == 1 and parsed.issue[0].severity == "error", answer.text
    return str(parsed.issue[0].code), str(parsed.issue[0].diagnostics)


def error_detail(answer: Any) -> str:
    """The detail of an error answer: ``{"detail"}`` JSON, or the diagnostics of a FHIR route's OperationOutcome."""
    if answer.headers.get("Content-Type", "").startswith(FHIR_JSON):
        return outcome(answer)[1]
    assert answer.headers["Content-Type"].startswith("application/json"), answer.headers.get("Content-Type")
    detail: str = answer.json()["detail"]
    return detail
