"""A file whose identifying values hold a NUL character, in the middle of an upload-multiple (issue 12, item 6):
found by the upload-speed work, it passed the DICOM check (pydicom keeps the NUL; the UID is not empty) and
reached PostgreSQL, which refuses NUL in text: the whole request answered 500 after storing the files before it.
Now the check refuses that file (400's reason, per file) and the others are stored and recorded as usual.

By C-STORE there is no check of ours before the store: Orthanc (DCMTK) reads a UID up to its NUL, and the
plugin records the study under the UID as Orthanc holds it, like any other (nothing refused by PostgreSQL, the
ingest worker never stuck retrying it).

(What an unexpected error in the middle of a batch does, that the files stored before it are recorded as
``partial`` before the 500, is tested with the fake Orthanc in tests/app/test_upload_faults.py: no real input is
known to cause one any more.)"""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pytest
import requests

from ehr_stack.dicom import storescu
from tests.conftest import Client
from tests.dicom_factory import make_study
from tests.integration.helpers import mrn, query, wait_for_ingest

pytestmark = pytest.mark.integration


def multiple(api: Client, files: list[tuple[str, bytes]]) -> requests.Response:
    parts = [("files", (name, data, "application/dicom")) for name, data in files]
    return api.request("POST", "/api/v1/dicom/upload-multiple", "technician", files=parts)


def with_nul_in_study_uid(path: Path) -> bytes:
    ds = pydicom.dcmread(path)
    ds.StudyInstanceUID = pydicom.uid.generate_uid()[:30] + "\x00" + "1"
    buffer = io.BytesIO()
    ds.save_as(buffer)
    return buffer.getvalue()


def in_orthanc(client: Client, uid: str) -> bool:
    found = client.request("POST", "/tools/lookup", auth=client.stack.admin_auth, data=uid)
    assert found.status_code == 200, found.text
    return bool(found.json())


def test_a_nul_in_a_uid_refuses_that_file_and_the_others_are_stored_and_recorded(
        api: Client, client: Client, tmp_path: Path) -> None:
    patient = mrn()
    study_uid, files = make_study(tmp_path / "a", patient_id=patient, accession=None, study_date="20261201",
                                  instances=3)
    _, [broken_source] = make_study(tmp_path / "b", patient_id=patient, accession=None, study_date="20261201",
                                    instances=1)
    sent = [(p.name, p.read_bytes()) for p in files[:2]] + [("broken.dcm", with_nul_in_study_uid(broken_source)),
                                                            (files[2].name, files[2].read_bytes())]
    answer = multiple(api, sent)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["total_files"], body["successful"], body["failed"]) == (4, 3, 1)
    broken = next(r for r in body["results"] if r["file_name"] == "broken.dcm")
    assert (broken["status"], broken["error"]) == ("failed", "StudyInstanceUID holds a NUL character")
    assert all(in_orthanc(client, str(pydicom.dcmread(p).SOPInstanceUID)) for p in files)
    rows = query(client, "SELECT upload_status, uploaded_by, number_of_files FROM ehr_imaging.dicom_upload_logs"
                 " WHERE study_instance_uid = :u", u=study_uid)
    assert rows == [("success", "tester", 3)], rows
    [(patient_id, instances)] = query(client, "SELECT patient_id, number_of_instances FROM ehr_imaging.study_links"
                                      " WHERE study_instance_uid = :u", u=study_uid)
    assert (patient_id, instances) == (patient, 3)


def test_a_nul_in_a_uid_sent_by_c_store_is_recorded_as_orthanc_reads_it(client: Client, tmp_path: Path) -> None:
    patient = mrn()
    _, [source] = make_study(tmp_path / "a", patient_id=patient, accession=None, study_date="20261201", instances=1)
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(with_nul_in_study_uid(source))
    sent_uid = str(pydicom.dcmread(broken).StudyInstanceUID)
    after_it_uid, after_it = make_study(tmp_path / "b", patient_id=patient, accession=None, study_date="20261201",
                                        instances=1)
    stack = client.stack
    result = storescu([broken, *after_it], host="127.0.0.1", port=stack.config.dicom_port,
                      calling_aet=stack.config.modality_aet, called_aet=stack.config.orthanc_aet)
    assert result.returncode == 0, result.stderr
    as_read = sent_uid.split("\x00")[0]
    assert as_read and as_read != sent_uid
    wait_for_ingest(client, as_read, 1)
    wait_for_ingest(client, after_it_uid, 1)  # the worker went on past it
    assert query(client, "SELECT patient_id FROM ehr_imaging.study_links WHERE study_instance_uid = :u",
                 u=as_read) == [(patient,)]
