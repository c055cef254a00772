"""Offline sync (seed pacs-lite-test-results.md): declare -> binary -> ACK, verified and idempotent."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.conftest import Client
from tests.dicom_factory import make_study
from tests.integration.helpers import mrn, query
from tests.integration.offline_helpers import OFFLINE, ack, binary, declaration, declare, in_orthanc

pytestmark = pytest.mark.integration


def test_the_offline_flow_is_verified_and_idempotent(api: Client, client: Client, tmp_path: Path) -> None:
    study_uid, files = make_study(tmp_path, patient_id=mrn(), accession=None, study_date="20261120", instances=1)
    data = files[0].read_bytes()
    declared = declaration(files[0], study_uid)
    first = declare(api, declared)
    assert first.status_code == 200, first.text
    upload_id = first.json()["upload_id"]
    assert first.json() == {"upload_id": upload_id, "status": "METADATA_UPLOADED"}
    assert declare(api, declared).json() == first.json()  # same SOP UID and checksum: same upload

    early = ack(api, upload_id)
    assert early.status_code == 409 and "binary" in early.json()["detail"]

    stored = binary(api, upload_id, data)
    assert stored.status_code == 200, stored.text
    assert stored.json()["status"] == "STORED" and stored.json()["upload_id"] == upload_id
    assert in_orthanc(client, declared["sop_instance_uid"])
    assert binary(api, upload_id, data).json()["status"] == "STORED"  # re-sent: nothing stored twice
    rows = query(client, "SELECT upload_status, upload_source, number_of_files, file_names"
                 " FROM ehr_imaging.dicom_upload_logs WHERE study_instance_uid = :u", u=study_uid)
    assert rows == [("success", "offline", 1, [files[0].name])]

    acked = ack(api, upload_id)
    assert acked.status_code == 200 and acked.json() == {"upload_id": upload_id, "status": "ACK_RECEIVED"}
    assert ack(api, upload_id).json()["status"] == "ACK_RECEIVED"
    assert declare(api, declared).json() == {"upload_id": upload_id, "status": "ACK_RECEIVED"}
    assert binary(api, upload_id, data).json()["status"] == "ACK_RECEIVED"
    state = query(client, "SELECT status, upload_log_id IS NOT NULL, acked_at IS NOT NULL"
                  " FROM ehr_imaging.offline_uploads WHERE upload_id = :i", i=upload_id)
    assert state == [("ACK_RECEIVED", True, True)]


def test_a_raw_body_with_the_upload_id_header_on_orthancs_port(client: Client, tmp_path: Path) -> None:
    study_uid, files = make_study(tmp_path, patient_id=mrn(), accession=None, study_date="20261120", instances=1)
    upload_id = declare(client, declaration(files[0], study_uid)).json()["upload_id"]
    answer = client.request("POST", f"{OFFLINE}/binary", "technician", data=files[0].read_bytes(),
                            headers={"Content-Type": "application/dicom", "X-Upload-Id": upload_id})
    assert answer.status_code == 200, answer.text
    assert ack(client, upload_id).json()["status"] == "ACK_RECEIVED"


@pytest.mark.parametrize("wrong", ["sha256", "size"])
def test_a_checksum_or_size_mismatch_is_422_and_stores_nothing(api: Client, client: Client, tmp_path: Path,
                                                               wrong: str) -> None:
    study_uid, files = make_study(tmp_path, patient_id=mrn(), accession=None, study_date="20261120", instances=1)
    declared = declaration(files[0], study_uid)
    declared[wrong] = "0" * 64 if wrong == "sha256" else declared["size"] + 1
    upload_id = declare(api, declared).json()["upload_id"]
    answer = binary(api, upload_id, files[0].read_bytes())
    assert answer.status_code == 422 and f"{wrong} mismatch" in answer.json()["detail"]
    assert not in_orthanc(client, declared["sop_instance_uid"])
    assert ack(api, upload_id).status_code == 409
    rows = query(client, "SELECT upload_status, upload_source FROM ehr_imaging.dicom_upload_logs"
                 " WHERE study_instance_uid = :u", u=study_uid)
    assert rows == [("failed", "offline")]


def test_a_file_whose_uids_differ_from_the_declared_ones_is_422(api: Client, client: Client, tmp_path: Path) -> None:
    study_uid, files = make_study(tmp_path, patient_id=mrn(), accession=None, study_date="20261120", instances=1)
    declared = declaration(files[0], study_uid, series_instance_uid="1.2.3.4.5.6")
    upload_id = declare(api, declared).json()["upload_id"]
    answer = binary(api, upload_id, files[0].read_bytes())
    assert answer.status_code == 422
    assert answer.json()["detail"] == "the file's SeriesInstanceUID differ from the declared ones"
    assert not in_orthanc(client, declared["sop_instance_uid"])


def test_offline_errors(api: Client, tmp_path: Path) -> None:
    study_uid, files = make_study(tmp_path, patient_id=mrn(), accession=None, study_date="20261120", instances=1)
    declared = declaration(files[0], study_uid)
    assert declare(api, {**declared, "sha256": "nope"}).status_code == 422
    too_big = declare(api, {**declared, "size": 101 * 1024 * 1024})
    assert too_big.status_code == 413 and "larger than 100 MB" in too_big.json()["detail"]
    assert declare(api, declared, role="nurse").status_code == 403
    assert api.request("POST", f"{OFFLINE}/metadata", json=declared).status_code == 401
    unknown = str(uuid.uuid4())
    assert binary(api, unknown, files[0].read_bytes()).status_code == 404
    assert ack(api, unknown).status_code == 404
    assert ack(api, "not-an-id").status_code == 422


def test_an_offline_upload_is_its_declarers_only(api: Client, tmp_path: Path) -> None:
    study_uid, files = make_study(tmp_path, patient_id=mrn(), accession=None, study_date="20261120", instances=1)
    declared = declaration(files[0], study_uid)
    upload_id = declare(api, declared).json()["upload_id"]  # declared by "tester", the Client's subject
    stranger = {"Authorization": f"Bearer {api.token('technician', 'someone-else')}"}
    again = api.request("POST", f"{OFFLINE}/metadata", json=declared, headers=stranger)
    assert again.status_code == 409, again.text
    assert set(again.json()) == {"detail"} and upload_id not in again.text  # nothing of the other upload
    assert "tester" not in again.text and "another user" not in again.text  # nor who declared it
    send = api.request("POST", f"{OFFLINE}/binary", data={"upload_id": upload_id}, headers=stranger,
                       files={"file": ("x.dcm", files[0].read_bytes(), "application/dicom")})
    assert send.status_code == 404, send.text
    acked = api.request("POST", f"{OFFLINE}/ack", json={"upload_id": upload_id}, headers=stranger)
    assert acked.status_code == 404
    assert binary(api, upload_id, files[0].read_bytes()).json()["status"] == "STORED"  # the declarer still can
