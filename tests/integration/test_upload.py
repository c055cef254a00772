"""POST /api/v1/dicom/upload: a file from the EHR (raw body), its order named explicitly, rejects audited."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ehr_imaging.core.study_identity import orthanc_study_id
from samples.build_samples import build_samples
from tests.conftest import SAMPLES_CACHE, Client
from tests.dicom_factory import make_study
from tests.integration.helpers import accession, mrn, order, put_order, query

pytestmark = pytest.mark.integration


def upload(client: Client, data: bytes, role: str | None = "technician", order_id: str | None = None,
           content_type: str = "application/dicom") -> Any:
    headers = {"Content-Type": content_type, **({"X-Order-Id": order_id} if order_id else {})}
    return client.request("POST", "/api/v1/dicom/upload", role, data=data, headers=headers)


def test_upload_with_an_explicit_order_links_at_once(client: Client, tmp_path: Path) -> None:
    patient = mrn()
    order_id = put_order(client, mrn=patient, accession_number=accession())
    uid, files = make_study(tmp_path, patient_id=patient, accession=None, study_date="20261120", instances=1)
    answer = upload(client, files[0].read_bytes(), order_id=order_id)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["status"], body["study_instance_uid"], body["order_id"]) == ("uploaded", uid, order_id)
    assert body["match"] == {"status": "linked", "reason": None}
    assert body["orthanc_study_id"] and body["sop_instance_uid"] and body["series_instance_uid"]
    # The upload holds the study from the ingest worker under the ID it computes before storing: Orthanc's.
    assert orthanc_study_id(patient, uid) == body["orthanc_study_id"]
    linked = order(client, order_id)
    assert (linked["match_rule"], linked["upload_source"], linked["uploaded_by"]) == ("explicit", "api", "tester")
    rows = query(client, "SELECT upload_status, upload_source, uploaded_by, number_of_files, order_id"
                 " FROM ehr_imaging.dicom_upload_logs WHERE study_instance_uid = :u", u=uid)
    assert rows == [("success", "api", "tester", 1, order_id)]


def test_an_explicit_order_of_another_patient_is_refused(client: Client, tmp_path: Path) -> None:
    order_id = put_order(client, mrn=mrn())
    _, files = make_study(tmp_path, patient_id=mrn(), accession=None, study_date="20261120", instances=1)
    body = upload(client, files[0].read_bytes(), order_id=order_id).json()
    assert body["match"] == {"status": "unmatched", "reason": "patient mismatch"}
    assert order(client, order_id)["study_instance_uid"] is None


# Issue 11: a file that cannot be read as a DICOM file is 400; a readable one lacking a UID stays 422.
@pytest.mark.parametrize(("kind", "status"), [("truncated", 400), ("no_preamble", 400), ("missing_study_uid", 422),
                                              ("not_dicom", 400)])
def test_malformed_files_are_rejected_stored_nowhere_and_audited(client: Client, kind: str, status: int) -> None:
    manifest = build_samples(SAMPLES_CACHE)
    entry = next(m for m in manifest["malformed"] if m["kind"] == kind)
    before = client.get("/api/v1/dicom/stats", "admin").json()["total_instances"]
    answer = upload(client, (SAMPLES_CACHE / entry["file"]).read_bytes())
    assert answer.status_code == status, answer.text  # README: 400 not DICOM / unreadable, 422 missing UIDs
    assert answer.json()["detail"]
    assert client.get("/api/v1/dicom/stats", "admin").json()["total_instances"] == before
    failed = query(client, "SELECT count(*) FROM ehr_imaging.dicom_upload_logs WHERE upload_status = 'failed'"
                   " AND error_message = :e", e=answer.json()["detail"])
    assert failed[0][0] >= 1


def test_upload_errors(client: Client, tmp_path: Path) -> None:
    _, files = make_study(tmp_path, patient_id=mrn(), accession=None, study_date="20261120", instances=1)
    data = files[0].read_bytes()
    assert upload(client, data, role=None).status_code == 401
    assert upload(client, data, role="nurse").status_code == 403
    wrong_type = upload(client, data, content_type="text/plain")
    assert wrong_type.status_code == 415
    assert "application/dicom" in wrong_type.json()["detail"]
    audited = query(client, "SELECT count(*) FROM ehr_imaging.dicom_upload_logs WHERE upload_status = 'failed'"
                    " AND error_message = :e", e=wrong_type.json()["detail"])
    assert audited[0][0] >= 1  # refused for its shape, still an audited upload attempt
