"""The order's status follows the images on the real stack: a modality's first instance (NEW_STUDY) puts the
order in progress before the study is stable; the stable, linked study completes it (OrderStatusUpdates)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import Client
from tests.dicom_factory import make_study, send
from tests.integration.helpers import accession, mrn, order, put_order, query, wait_for_ingest
from tests.waiting import eventually

pytestmark = pytest.mark.integration


def test_c_store_moves_the_order_to_in_progress_then_completed(client: Client, tmp_path: Path) -> None:
    patient, acc = mrn(), accession()
    order_id = put_order(client, mrn=patient, accession_number=acc)
    assert order(client, order_id)["status"] == "scheduled"
    uid, files = make_study(tmp_path, patient_id=patient, accession=acc, study_date="20261120", instances=2)
    send(client.stack, files)
    wait_for_ingest(client, uid, 2)
    eventually(lambda: order(client, order_id)["status"] == "completed", timeout=30, what="the order completed")
    assert query(client, "SELECT from_status, to_status, study_instance_uid, actor FROM"
                 " ehr_imaging.order_status_audit WHERE order_id = :o ORDER BY id", o=order_id) == [
        ("scheduled", "in-progress", uid, "ehr-imaging"), ("in-progress", "completed", uid, "ehr-imaging")]
    audit = client.get("/api/v1/dicom/audit", "admin", params={"action": "order-status", "study_uid": uid}).json()
    assert [(e["details"]["from"], e["details"]["to"]) for e in audit["items"]] == [
        ("in-progress", "completed"), ("scheduled", "in-progress")]


def test_a_cancelled_order_keeps_its_status(client: Client, tmp_path: Path) -> None:
    patient, acc = mrn(), accession()
    order_id = put_order(client, mrn=patient, accession_number=acc)
    assert client.request("DELETE", f"/api/v1/dicom/orders/{order_id}", "ehr-service").status_code == 200
    uid, files = make_study(tmp_path, patient_id=patient, accession=acc, study_date="20261120", instances=1)
    send(client.stack, files)
    wait_for_ingest(client, uid, 1)
    assert order(client, order_id)["status"] == "cancelled"
    assert query(client, "SELECT count(*) FROM ehr_imaging.order_status_audit WHERE order_id = :o",
                 o=order_id) == [(0,)]
