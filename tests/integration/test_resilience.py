"""PostgreSQL down: Orthanc keeps storing, /health says what is down, and nothing is lost once it is back."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from ehr_stack.stack import Stack
from tests.conftest import Client, running_stack
from tests.dicom_factory import make_study, send
from tests.integration.test_matching import order, put_order, wait_for_ingest

pytestmark = pytest.mark.integration


@pytest.fixture()
def own_stack() -> Iterator[Stack]:
    """A stack of its own: this test stops its database."""
    with running_stack("resilience") as stack:
        yield stack


def test_database_outage_loses_no_ingest(own_stack: Stack, tmp_path: Path) -> None:
    client = Client(own_stack)
    order_id = put_order(client, mrn="MRN-OUTAGE", accession_number="ACC-OUTAGE")
    own_stack.postgres.stop()

    health = requests.get(f"{own_stack.url}/api/v1/dicom/health", timeout=30)
    assert health.status_code == 503
    assert health.json()["status"] == "unhealthy"
    assert health.json()["database"].startswith("unavailable")

    # A modality keeps storing while the audit database is down.
    uid, files = make_study(tmp_path, patient_id="MRN-OUTAGE", accession="ACC-OUTAGE", study_date="20261120")
    send(own_stack, files)
    stats = client.get("/system", auth=own_stack.admin_auth)
    assert stats.status_code == 200
    time.sleep(4)  # the study becomes stable while the database is still down

    own_stack.postgres.start()
    wait_for_ingest(client, uid, 2)
    assert order(client, order_id)["study_instance_uid"] == uid
    assert requests.get(f"{own_stack.url}/api/v1/dicom/health", timeout=30).status_code == 200
