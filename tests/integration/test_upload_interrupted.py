"""An upload-multiple that an unexpected error stops halfway (issue 12, item 6): the files stored before it are
recorded before the error is answered (one upload row, ``partial``, with the caller and why it stopped, and
their study's link); nothing after it is stored. Before, the batch left them to the ingest worker, which
recorded them after the 500 as a plain ``success``, without the caller.

The error is a real input, not a test hook: a file whose StudyInstanceUID holds a NUL character passes the
DICOM check (pydicom keeps it; the UID is not empty), and the check for a UID collision hands it to PostgreSQL,
which refuses NUL in text (a DataError from the driver): a 500, not a validation failure. If that input
becomes a validation refusal one day, this test says so (its 500 fails) and needs another unexpected error."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pytest
import requests

from tests.conftest import Client
from tests.dicom_factory import make_study
from tests.integration.helpers import mrn, query

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


def test_the_files_stored_before_an_unexpected_error_are_recorded_before_the_answer(
        api: Client, client: Client, tmp_path: Path) -> None:
    patient = mrn()
    study_uid, files = make_study(tmp_path / "a", patient_id=patient, accession=None, study_date="20261201",
                                  instances=3)
    _, [broken_source] = make_study(tmp_path / "b", patient_id=patient, accession=None, study_date="20261201",
                                    instances=1)
    before, after = files[:2], files[2]
    sent = [(p.name, p.read_bytes()) for p in before] + [("broken.dcm", with_nul_in_study_uid(broken_source)),
                                                         (after.name, after.read_bytes())]
    answer = multiple(api, sent)
    assert answer.status_code == 500, answer.text
    assert answer.json()["detail"] == "internal error"
    # Read at once, no waiting: recorded before the 500 was sent.
    rows = query(client, "SELECT upload_status, upload_source, uploaded_by, number_of_files, file_names,"
                 " error_message FROM ehr_imaging.dicom_upload_logs WHERE study_instance_uid = :u", u=study_uid)
    assert len(rows) == 1, rows
    status, source, uploaded_by, count, names, error = rows[0]
    assert (status, source, count) == ("partial", "api", 2)
    assert uploaded_by == "tester"  # the caller, as an upload row says (the worker would not know it)
    assert sorted(names) == sorted(p.name for p in before)
    assert "the upload stopped after 2 file(s) on an internal error (DataError)" in error
    [(patient_id, instances)] = query(client, "SELECT patient_id, number_of_instances FROM ehr_imaging.study_links"
                                      " WHERE study_instance_uid = :u", u=study_uid)
    assert (patient_id, instances) == (patient, 2)
    after_uid = str(pydicom.dcmread(after).SOPInstanceUID)
    assert not in_orthanc(client, after_uid)  # the batch stopped: the file after the error was not stored
    assert all(in_orthanc(client, str(pydicom.dcmread(p).SOPInstanceUID)) for p in before)
