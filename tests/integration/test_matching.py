"""Studies sent by a modality (dcmtk storescu) are linked to the right order, and never to a wrong one."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Client
from tests.dicom_factory import make_study, send
from tests.integration.helpers import accession, mrn, order, order_fields, put_order, query, wait_for_ingest

pytestmark = pytest.mark.integration


def test_accession_match_links_and_fills_the_order(client: Client, tmp_path: Path) -> None:
    patient, acc = mrn(), accession()
    order_id = put_order(client, mrn=patient, accession_number=acc, modality="CT",
                         scheduled_start="2026-03-10T09:00:00Z")
    uid, files = make_study(tmp_path, patient_id=patient, accession=acc, study_date="20260310", instances=3)
    send(client.stack, files)
    wait_for_ingest(client, uid, 3)
    linked = order(client, order_id)
    assert linked["study_instance_uid"] == uid
    assert linked["match_rule"] == "accession"
    assert (linked["number_of_series"], linked["number_of_images"]) == (1, 3)
    assert linked["study_date"] == "2026-03-10"
    assert linked["upload_source"] == "modality"
    assert linked["uploaded_by"] == client.stack.config.modality_aet
    assert linked["orthanc_study_id"]


def test_mrn_modality_and_date_link_a_study_without_accession(client: Client, tmp_path: Path) -> None:
    patient = mrn()
    order_id = put_order(client, mrn=patient, modality="MR", scheduled_start="2026-04-01T15:00:00Z")
    uid, files = make_study(tmp_path, patient_id=patient, accession=None, study_date="20260403", modality="MR")
    send(client.stack, files)
    wait_for_ingest(client, uid, 2)
    linked = order(client, order_id)
    assert linked["study_instance_uid"] == uid
    assert linked["match_rule"] == "mrn_modality_date"


def test_two_candidate_orders_leave_the_study_unmatched(client: Client, tmp_path: Path) -> None:
    patient = mrn()
    first = put_order(client, mrn=patient, modality="CT", scheduled_start="2026-05-05T08:00:00Z")
    second = put_order(client, mrn=patient, modality="CT", scheduled_start="2026-05-05T13:00:00Z")
    uid, files = make_study(tmp_path, patient_id=patient, accession=None, study_date="20260505")
    send(client.stack, files)
    wait_for_ingest(client, uid, 2)
    assert order(client, first)["study_instance_uid"] is None
    assert order(client, second)["study_instance_uid"] is None


def test_patient_mismatch_is_never_linked(client: Client, tmp_path: Path) -> None:
    acc = accession()
    order_id = put_order(client, mrn=mrn(), accession_number=acc, modality="CT")
    uid, files = make_study(tmp_path, patient_id=mrn(), accession=acc, study_date="20261120")
    send(client.stack, files)
    wait_for_ingest(client, uid, 2)
    assert order(client, order_id)["study_instance_uid"] is None


def test_study_before_its_order_links_when_the_order_is_pushed(client: Client, tmp_path: Path) -> None:
    patient, acc = mrn(), accession()
    uid, files = make_study(tmp_path, patient_id=patient, accession=acc, study_date="20261120")
    send(client.stack, files)
    wait_for_ingest(client, uid, 2)
    order_id = str(uuid.uuid4())
    answer = client.request("PUT", f"/api/v1/dicom/orders/{order_id}", "ehr-service",
                            json=order_fields(mrn=patient, accession_number=acc))
    assert answer.status_code == 201
    assert answer.json()["study_instance_uid"] == uid
    assert order(client, order_id)["match_rule"] == "accession"


def test_a_second_batch_updates_counts_without_a_second_link(client: Client, tmp_path: Path) -> None:
    patient, acc = mrn(), accession()
    order_id = put_order(client, mrn=patient, accession_number=acc)
    uid, first = make_study(tmp_path / "a", patient_id=patient, accession=acc, study_date="20261120", instances=2)
    send(client.stack, first)
    wait_for_ingest(client, uid, 2)
    _, second = make_study(tmp_path / "b", patient_id=patient, accession=acc, study_date="20261120", instances=3,
                           study_uid=uid)
    send(client.stack, second)
    wait_for_ingest(client, uid, 5)
    linked = order(client, order_id)
    assert linked["study_instance_uid"] == uid
    assert (linked["number_of_series"], linked["number_of_images"]) == (2, 5)
    listed = client.get("/api/v1/dicom/orders", "ehr-service", params={"accession": acc}).json()
    assert listed["total"] == 1
    uploads = query(client, "SELECT number_of_files, order_id, upload_source, uploaded_by, upload_status,"
                    " original_patient_id, original_accession_number FROM ehr_imaging.dicom_upload_logs"
                    " WHERE study_instance_uid = :u ORDER BY uploaded_at", u=uid)
    aet = client.stack.config.modality_aet
    assert uploads == [(2, order_id, "modality", aet, "success", patient, acc),
                       (3, order_id, "modality", aet, "success", patient, acc)]


def test_cancelled_orders_receive_no_link(client: Client, tmp_path: Path) -> None:
    patient, acc = mrn(), accession()
    order_id = put_order(client, mrn=patient, accession_number=acc)
    assert client.request("DELETE", f"/api/v1/dicom/orders/{order_id}", "ehr-service").status_code == 200
    uid, files = make_study(tmp_path, patient_id=patient, accession=acc, study_date="20261120")
    send(client.stack, files)
    wait_for_ingest(client, uid, 2)
    assert order(client, order_id)["study_instance_uid"] is None


def unmatched_item(client: Client, study_uid: str) -> dict[str, Any] | None:
    page = client.get("/api/v1/dicom/unmatched", "radiologist", params={"limit": 500}).json()
    return next((item for item in page["items"] if item["study_instance_uid"] == study_uid), None)


def test_reconciliation_queue_link_and_unlink(client: Client, tmp_path: Path) -> None:
    patient = mrn()
    first = put_order(client, mrn=patient, modality="CT", scheduled_start="2026-06-06T08:00:00Z")
    second = put_order(client, mrn=patient, modality="CT", scheduled_start="2026-06-06T14:00:00Z")
    uid, files = make_study(tmp_path / "a", patient_id=patient, accession=None, study_date="20260606")
    send(client.stack, files)
    wait_for_ingest(client, uid, 2)

    item = unmatched_item(client, uid)
    assert item is not None
    assert item["reason"] == "ambiguous"
    assert item["candidate_order_ids"] == sorted([first, second])
    assert client.get("/api/v1/dicom/unmatched", "nurse").status_code == 403
    assert client.get("/api/v1/dicom/unmatched", "technician").status_code == 403

    path = f"/api/v1/dicom/studies/{uid}"
    linked = client.request("POST", f"{path}/link", "ehr-service", json={"order_id": second})
    assert linked.status_code == 200, linked.text
    assert linked.json()["order"]["study_instance_uid"] == uid
    assert order(client, second)["match_rule"] == "manual"
    assert unmatched_item(client, uid) is None
    taken = client.request("POST", f"{path}/link", "radiologist", json={"order_id": first})
    assert taken.status_code == 409

    unlinked = client.request("POST", f"{path}/unlink", "radiologist", json={"reason": "wrong order"})
    assert unlinked.status_code == 200
    assert order(client, second)["study_instance_uid"] is None
    assert unmatched_item(client, uid)["reason"] == "unlinked manually"  # type: ignore[index]

    # More images for the unlinked study: counted, but no automatic re-link behind the person's back.
    _, more = make_study(tmp_path / "b", patient_id=patient, accession=None, study_date="20260606", study_uid=uid)
    send(client.stack, more)
    wait_for_ingest(client, uid, 4)
    assert order(client, first)["study_instance_uid"] is None
    assert order(client, second)["study_instance_uid"] is None
    audit = query(client, "SELECT action, order_id, actor, reason FROM ehr_imaging.link_audit"
                  " WHERE study_instance_uid = :u ORDER BY id", u=uid)
    assert audit == [("link", second, "tester", None), ("unlink", second, "tester", "wrong order")]


def test_manual_link_across_patients_needs_force_by_admin_or_radiologist(client: Client, tmp_path: Path) -> None:
    order_id = put_order(client, mrn=mrn())
    uid, files = make_study(tmp_path, patient_id=mrn(), accession=None, study_date="20261120")
    send(client.stack, files)
    wait_for_ingest(client, uid, 2)
    path = f"/api/v1/dicom/studies/{uid}/link"
    refused = client.request("POST", path, "ehr-service", json={"order_id": order_id})
    assert refused.status_code == 409
    assert "patient mismatch" in refused.json()["detail"]
    assert client.request("POST", path, "ehr-service", json={"order_id": order_id, "force": True}).status_code == 403
    assert client.request("POST", path, "admin", json={"order_id": order_id, "force": True}).status_code == 200
    assert order(client, order_id)["study_instance_uid"] == uid


def test_link_errors(client: Client) -> None:
    unknown = client.request("POST", "/api/v1/dicom/studies/1.2.3.4.5/link", "admin", json={"order_id": "x"})
    assert unknown.status_code == 404
    assert client.request("POST", "/api/v1/dicom/studies/1.2.3/link", "admin", json={}).status_code == 422
    assert client.request("POST", "/api/v1/dicom/studies/1.2.3/unlink", "admin").status_code == 404


def test_match_status_and_the_explorer_extension(client: Client, tmp_path: Path) -> None:
    patient, acc = mrn(), accession()
    order_id = put_order(client, mrn=patient, accession_number=acc)
    uid, files = make_study(tmp_path, patient_id=patient, accession=acc, study_date="20261120")
    send(client.stack, files)
    wait_for_ingest(client, uid, 2)
    status = client.get(f"/api/v1/dicom/studies/{uid}/match", "doctor").json()
    assert (status["status"], status["order_id"], status["match_rule"]) == ("linked", order_id, "accession")
    assert status["order"]["accession_number"] == acc
    unknown = client.get("/api/v1/dicom/studies/1.2.3.999/match", "doctor").json()
    assert unknown["status"] == "unknown"
    # Orthanc Explorer carries the extension that shows this on a study's page (admins only).
    script = client.get("/plugins/explorer.js", auth=client.stack.admin_auth)
    assert script.status_code == 200
    assert "ehr-imaging: on a study's page in Orthanc Explorer" in script.text
    assert client.get("/plugins/explorer.js").status_code == 403


def test_an_admin_upload_through_orthancs_rest_api_is_matched_too(client: Client, tmp_path: Path) -> None:
    """Explorer's upload and scripts use Orthanc's POST /instances: the same matching applies."""
    patient, acc = mrn(), accession()
    order_id = put_order(client, mrn=patient, accession_number=acc)
    uid, files = make_study(tmp_path, patient_id=patient, accession=acc, study_date="20261120")
    for path in files:
        stored = client.request("POST", "/instances", auth=client.stack.admin_auth, data=path.read_bytes())
        assert stored.status_code == 200
    wait_for_ingest(client, uid, 2)
    linked = order(client, order_id)
    assert (linked["study_instance_uid"], linked["match_rule"], linked["upload_source"]) == (uid, "accession", "manual")
