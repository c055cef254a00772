"""PostgreSQL down: Orthanc keeps storing, /health says what is down, and nothing is lost once it is back."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from ehr_stack.stack import Stack
from tests.conftest import Client, running_stack
from tests.dicom_factory import make_study, send
from tests.integration.helpers import order, put_order, query, stable_in_orthanc, wait_for_ingest
from tests.waiting import eventually

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
    down = client.get("/api/v1/dicom/orders", "ehr-service")  # a route that needs the database: retry later
    assert down.status_code == 503 and down.headers["Retry-After"] == "5" and down.json()["detail"]

    # A modality keeps storing while the audit database is down.
    uid, files = make_study(tmp_path, patient_id="MRN-OUTAGE", accession="ACC-OUTAGE", study_date="20261120")
    send(own_stack, files)
    stats = client.get("/system", auth=own_stack.admin_auth)
    assert stats.status_code == 200
    # The study becomes stable while the database is still down, and the ingest worker's attempt fails.
    orthanc_id = stable_in_orthanc(client, uid)
    eventually(lambda: f"stable study {orthanc_id} failed (attempt 1," in own_stack.log_file.read_text(),
               timeout=30, what="the ingest worker's first attempt to fail while the database is down")

    own_stack.postgres.start()
    wait_for_ingest(client, uid, 2)
    assert order(client, order_id)["study_instance_uid"] == uid
    assert requests.get(f"{own_stack.url}/api/v1/dicom/health", timeout=30).status_code == 200


def test_a_deletion_whose_change_was_lost_is_audited_at_the_next_start(own_stack: Stack, tmp_path: Path) -> None:
    """PostgreSQL down when an admin deletes a study, then Orthanc restarts: Orthanc's change log never holds a
    deletion and its DELETED event is gone with the process, so the worker's deletion spool (on this node's disk)
    keeps it, and the next start audits it."""
    client = Client(own_stack)
    uid, files = make_study(tmp_path, patient_id="MRN-GONE", accession=None, study_date="20261120", instances=1)
    answer = client.request("POST", "/api/v1/dicom/upload", "technician", data=files[0].read_bytes(),
                            headers={"Content-Type": "application/dicom"})
    assert answer.status_code == 200, answer.text
    own_stack.postgres.stop()
    assert client.request("DELETE", f"/studies/{answer.json()['orthanc_study_id']}",
                          auth=own_stack.admin_auth).status_code == 200
    own_stack.stop()
    own_stack.start()
    rows = eventually(lambda: query(client, "SELECT deleted_by, reason FROM ehr_imaging.dicom_deletion_logs"
                                    " WHERE study_instance_uid = :u", u=uid) or None,
                      timeout=30, what="the lost deletion to be audited", interval=0.5)
    assert rows[0][0] == "orthanc", rows
    assert "1 study deletions spooled before this start: auditing them" in own_stack.log_file.read_text()
    assert client.get(f"/api/v1/dicom/studies/{uid}", "doctor").status_code == 404
