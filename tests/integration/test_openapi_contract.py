"""The OpenAPI document against the real answers: a representative set of routes is called on the real stack and
each JSON answer is checked against the schema the served document gives for it (tests/unit/test_openapi_schemas.py
has the validator: types, required, nullable, enums, formats, and no undocumented field). This is what keeps the
document from drifting from the answers."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Client
from tests.dicom_factory import make_study
from tests.integration.helpers import accession, mrn, order_fields, put_order
from tests.integration.offline_helpers import declaration
from tests.integration.viewer_helpers import viewer_token
from tests.openapi_validation import fits, problems

pytestmark = pytest.mark.integration

P = "/api/v1/dicom"


@pytest.fixture(scope="module")
def doc(client: Client) -> dict[str, Any]:
    answer = client.get(f"{P}/openapi.json", "ehr-service")
    assert answer.status_code == 200
    result: dict[str, Any] = answer.json()
    return result


def test_health_stats_and_the_document_itself(client: Client, doc: dict[str, Any]) -> None:
    health = fits(doc, "GET", f"{P}/health", client.get(f"{P}/health"))
    assert health["status"] == "healthy" and isinstance(health["schema_version"], int)
    fits(doc, "GET", f"{P}/stats", client.get(f"{P}/stats", "nurse"))
    fits(doc, "GET", f"{P}/openapi.json", client.get(f"{P}/openapi.json", "nurse"))
    assert client.get(f"{P}/openapi.json").status_code == 401  # not public: it names the version and the roles


def test_orders(client: Client, doc: dict[str, Any]) -> None:
    fields = order_fields(mrn=mrn())
    path = f"{P}/orders/contract-{fields['accession_number']}"
    created = fits(doc, "PUT", f"{P}/orders/{{order_id}}", client.request("PUT", path, "ehr-service", json=fields), 201)
    assert created["status"] == "scheduled" and created["study_instance_uid"] is None
    sparse = {"accession_number": fields["accession_number"], "mrn": fields["mrn"], "modality": "MR"}
    replaced = fits(doc, "PUT", f"{P}/orders/{{order_id}}", client.request("PUT", path, "ehr-service", json=sparse))
    assert replaced["birth_date"] is None  # omitted fields become null: nullable in the schema
    fits(doc, "GET", f"{P}/orders/{{order_id}}", client.get(path, "doctor"))
    listed = fits(doc, "GET", f"{P}/orders", client.get(f"{P}/orders?mrn={fields['mrn']}", "doctor"))
    assert listed["total"] == 1
    cancelled = fits(doc, "DELETE", f"{P}/orders/{{order_id}}", client.request("DELETE", path, "ehr-service"))
    assert cancelled["status"] == "cancelled"


def test_uploads_studies_matching_and_viewer(client: Client, api: Client, doc: dict[str, Any],
                                             tmp_path: Path) -> None:
    patient = mrn()
    order_id = put_order(client, mrn=patient, accession_number=accession())
    order = client.get(f"{P}/orders/{order_id}", "doctor").json()
    uid, files = make_study(tmp_path, patient_id=patient, accession=order["accession_number"], study_date="20261120",
                            instances=3)

    # one file as the raw body (Orthanc's port), the others as multipart fields (the API port)
    uploaded = fits(doc, "POST", f"{P}/upload", client.request(
        "POST", f"{P}/upload", "technician", data=files[0].read_bytes(),
        headers={"Content-Type": "application/dicom", "X-Order-Id": order_id, "X-File-Name": files[0].name}))
    assert uploaded["match"]["status"] == "linked" and uploaded["upload_id"]
    parts = [("files", (f.name, f.read_bytes(), "application/dicom")) for f in files[1:]]
    several = fits(doc, "POST", f"{P}/upload-multiple", api.request(
        "POST", f"{P}/upload-multiple", "technician", files=parts, data={"order_id": order_id}))
    assert several["successful"] == 2 and several["studies"][0]["study_instance_uid"] == uid

    # studies
    found = fits(doc, "GET", f"{P}/studies", client.get(f"{P}/studies?mrn={patient}", "doctor"))
    assert [s["StudyInstanceUID"] for s in found["items"]] == [uid]
    study = fits(doc, "GET", f"{P}/studies/{{study_uid}}", client.get(f"{P}/studies/{uid}", "doctor"))
    assert study["match"]["status"] == "linked" and study["NumberOfInstances"] == 3
    for template, value in (("patient/{patient_id}", order["patient_id"]), ("order/{order_id}", order_id),
                            ("accession/{accession}", order["accession_number"])):
        listed = fits(doc, "GET", f"{P}/studies/{template}",
                      client.get(f"{P}/studies/{template.split('/')[0]}/{value}", "doctor"))
        assert [s["StudyInstanceUID"] for s in listed] == [uid]
    fits(doc, "GET", f"{P}/tags/{{study_uid}}", client.get(f"{P}/tags/{uid}", "nurse"))
    summary = fits(doc, "POST", f"{P}/clinical-summary/{{study_uid}}",
                   client.request("POST", f"{P}/clinical-summary/{uid}", "doctor", json={}))
    assert set(summary["structured_data"]) == {"patient", "study", "technical"}

    # matching and reconciliation
    match = fits(doc, "GET", f"{P}/studies/{{study_uid}}/match", client.get(f"{P}/studies/{uid}/match", "doctor"))
    assert match["status"] == "linked" and match["order"]["order_id"] == order_id
    unknown = fits(doc, "GET", f"{P}/studies/{{study_uid}}/match", client.get(f"{P}/studies/1.2.3.999/match", "doctor"))
    assert unknown["status"] == "unknown" and unknown["order"] is None
    unlinked = fits(doc, "POST", f"{P}/studies/{{study_uid}}/unlink", client.request(
        "POST", f"{P}/studies/{uid}/unlink", "admin", json={"reason": "contract test"}))
    assert unlinked["order_id"] == order_id
    relinked = fits(doc, "POST", f"{P}/studies/{{study_uid}}/link", client.request(
        "POST", f"{P}/studies/{uid}/link", "admin", json={"order_id": order_id}))
    assert relinked["order"]["study_instance_uid"] == uid

    # upload history
    rows = fits(doc, "GET", f"{P}/uploads", client.get(f"{P}/uploads?limit=5", "admin"))
    assert rows["items"]
    fits(doc, "GET", f"{P}/uploads/patient/{{patient_id}}",
         client.get(f"{P}/uploads/patient/{order['patient_id']}", "admin"))
    row = fits(doc, "GET", f"{P}/uploads/{{upload_id}}", client.get(f"{P}/uploads/{uploaded['upload_id']}", "admin"))
    assert row["study_instance_uid"] == uid

    # viewer
    token = viewer_token(client, study_uids=[uid])
    fits(doc, "POST", f"{P}/viewer-token", client.request("POST", f"{P}/viewer-token", "doctor",
                                                          json={"order_id": order_id, "ttl_seconds": 60}))
    for template, path in (("{study_uid}", uid), ("order/{order_id}", f"order/{order_id}"),
                           ("patient/{patient_id}", f"patient/{order['patient_id']}")):
        url = fits(doc, "GET", f"{P}/viewer-url/{template}", client.get(f"{P}/viewer-url/{path}", "doctor"))
        assert url["study_uids"] == [uid] and url["study_count"] == 1
    revoked = fits(doc, "POST", f"{P}/viewer-token/revoke", client.request(
        "POST", f"{P}/viewer-token/revoke", "doctor", json={"token_id": token["token_id"]}))
    assert revoked["token_id"] == token["token_id"]
    # the helper's answer, checked too
    assert problems({"$ref": "#/components/schemas/ViewerToken"}, token, doc["components"]["schemas"]) == []


def test_zip_upload_unmatched_queue_and_deletion(client: Client, api: Client, doc: dict[str, Any],
                                                 tmp_path: Path) -> None:
    uid, files = make_study(tmp_path, patient_id=mrn(), accession=None, study_date="20261121", instances=2)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in files:
            archive.write(path, f"DICOM/{path.name}")
    summary = fits(doc, "POST", f"{P}/upload-zip", api.request(
        "POST", f"{P}/upload-zip", "technician", files={"file": ("cd.zip", buffer.getvalue(), "application/zip")}))
    assert summary["successful"] == 2 and summary["studies"][0]["match"]["status"] == "unmatched"
    queue = fits(doc, "GET", f"{P}/unmatched", client.get(f"{P}/unmatched?limit=500", "admin"))
    assert uid in {item["study_instance_uid"] for item in queue["items"]}
    deleted = fits(doc, "DELETE", f"{P}/studies/{{study_uid}}", client.request(
        "DELETE", f"{P}/studies/{uid}", "admin", headers={"X-Reason": "contract test"}))
    assert deleted["deleted_instances"] == 2 and deleted["order_id"] is None


def test_files_checked_but_not_stored(client: Client, doc: dict[str, Any], tmp_path: Path) -> None:
    _, files = make_study(tmp_path, patient_id=mrn(), accession=None, study_date="20261122", instances=1)
    raw = {"Content-Type": "application/dicom"}
    report = fits(doc, "POST", f"{P}/validate", client.request(
        "POST", f"{P}/validate", "technician", data=files[0].read_bytes(), headers=raw))
    assert report["is_valid"] is True
    bad = fits(doc, "POST", f"{P}/validate", client.request(
        "POST", f"{P}/validate", "technician", data=b"not DICOM at all", headers=raw))
    assert bad["is_valid"] is False and bad["transfer_syntax"] is None
    fits(doc, "POST", f"{P}/read-tags", client.request("POST", f"{P}/read-tags", "nurse",
                                                       data=files[0].read_bytes(), headers=raw))


def test_offline_sync(api: Client, doc: dict[str, Any], tmp_path: Path) -> None:
    study_uid, files = make_study(tmp_path, patient_id=mrn(), accession=None, study_date="20261123", instances=1)
    declared = fits(doc, "POST", f"{P}/offline/metadata", api.request(
        "POST", f"{P}/offline/metadata", "technician", json=declaration(files[0], study_uid)))
    upload_id = declared["upload_id"]
    stored = fits(doc, "POST", f"{P}/offline/binary", api.request(
        "POST", f"{P}/offline/binary", "technician", data={"upload_id": upload_id},
        files={"file": ("x.dcm", files[0].read_bytes(), "application/dicom")}))
    assert stored["status"] == "STORED"
    acked = fits(doc, "POST", f"{P}/offline/ack", api.request(
        "POST", f"{P}/offline/ack", "technician", json={"upload_id": upload_id}))
    assert acked["status"] == "ACK_RECEIVED"


def test_binary_answers_have_their_documented_media_type(client: Client, doc: dict[str, Any],
                                                         tmp_path: Path) -> None:
    patient = mrn()
    uid, files = make_study(tmp_path, patient_id=patient, accession=None, study_date="20261124", instances=1)
    upload = client.request("POST", f"{P}/upload", "technician", data=files[0].read_bytes(),
                            headers={"Content-Type": "application/dicom"})
    assert upload.status_code == 200, upload.text
    for template, path in (("download/{study_uid}", f"download/{uid}"), ("thumbnail/{study_uid}", f"thumbnail/{uid}"),
                           ("render/{sop_instance_uid}", f"render/{upload.json()['sop_instance_uid']}")):
        answer = client.get(f"{P}/{path}", "doctor")
        assert answer.status_code == 200, answer.text[:300]
        documented = doc["paths"][f"{P}/{template}"]["get"]["responses"]["200"]["content"]
        assert answer.headers["Content-Type"].split(";")[0] in documented, template
