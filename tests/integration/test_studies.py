"""Studies, deletion, downloads, images, clinical summaries and upload history against the real stack."""

from __future__ import annotations

import io
import struct
import uuid
import zipfile
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.uid import generate_uid

from samples.build_samples import build_samples
from tests.conftest import SAMPLES_CACHE, Client
from tests.dicom_factory import make_study, send
from tests.integration.helpers import accession, mrn, order, put_order, query, wait_for_ingest
from tests.waiting import eventually

pytestmark = pytest.mark.integration

API = "/api/v1/dicom"
PNG_MAGIC, JPEG_MAGIC = b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff"


def sample_copy(tmp_path: Path, key: str, *, patient_id: str, accession_number: str = "",
                count: int | None = None) -> tuple[str, list[Path]]:
    """A sample study with fresh UIDs (samples are shared by other tests) and the given patient/accession."""
    manifest = build_samples(SAMPLES_CACHE)
    study = next(s for s in manifest["studies"] if s["key"] == key)
    study_uid = generate_uid()
    out = tmp_path / key
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for series in study["series"]:
        series_uid = generate_uid()
        for name in series["files"][:count]:
            ds = pydicom.dcmread(SAMPLES_CACHE / name)
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            ds.PatientID, ds.AccessionNumber = patient_id, accession_number
            path = out / f"{ds.SOPInstanceUID}.dcm"
            ds.save_as(path)
            files.append(path)
    return study_uid, files


def upload(api: Client, path: Path, order_id: str | None = None) -> dict[str, Any]:
    answer = api.request("POST", f"{API}/upload", "technician", data={"order_id": order_id} if order_id else {},
                         files={"file": (path.name, path.read_bytes(), "application/dicom")})
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_MAGIC
    width, height = struct.unpack(">II", data[16:24])  # IHDR comes first
    return width, height


def sop_uid(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def test_the_ehr_flow_push_upload_query_delete(api: Client, tmp_path: Path) -> None:
    """The seed's E2E flow: push order -> upload -> query by patient and by order -> delete -> 404."""
    patient_uuid, patient, acc = str(uuid.uuid4()), mrn(), accession()
    order_id = put_order(api, mrn=patient, accession_number=acc, patient_id=patient_uuid, modality="CT",
                         scheduled_start="2026-11-20T09:00:00Z")
    uid, files = make_study(tmp_path, patient_id=patient, accession=acc, study_date="20261120", instances=3)
    for path in files:
        assert upload(api, path, order_id)["order_id"] == order_id

    by_patient = api.get(f"{API}/studies/patient/{patient_uuid}", "doctor")
    assert by_patient.status_code == 200
    assert [s["StudyInstanceUID"] for s in by_patient.json()] == [uid]
    assert by_patient.headers["X-Total-Count"] == "1"
    study = by_patient.json()[0]
    assert study["PatientID"] == patient
    assert (study["AccessionNumber"], study["StudyDate"], study["ModalitiesInStudy"]) == (acc, "20261120", ["CT"])
    assert (study["NumberOfSeries"], study["NumberOfInstances"], study["order_id"]) == (1, 3, order_id)
    assert study["match"] == {"status": "linked", "rule": "explicit", "reason": None}
    assert study["OrthancStudyID"]
    by_order = api.get(f"{API}/studies/order/{order_id}", "nurse").json()
    assert [s["StudyInstanceUID"] for s in by_order] == [uid]
    assert api.get(f"{API}/studies/accession/{acc.lower()}", "radiologist").json() == by_order
    one = api.get(f"{API}/studies/{uid}", "ehr-service")
    assert one.status_code == 200
    assert one.json() == study

    assert api.request("DELETE", f"{API}/studies/{uid}", "admin").status_code == 422  # no reason
    assert api.request("DELETE", f"{API}/studies/{uid}", "doctor", params={"reason": "x"}).status_code == 403
    deleted = api.request("DELETE", f"{API}/studies/{uid}", "radiologist", params={"reason": "Test deletion"})
    assert deleted.status_code == 200, deleted.text
    body = deleted.json()
    assert (body["status"], body["study_instance_uid"], body["order_id"]) == ("deleted", uid, order_id)
    assert (body["deleted_instances"], body["deleted_series"], body["reason"]) == (3, 1, "Test deletion")

    assert api.get(f"{API}/studies/{uid}", "doctor").status_code == 404
    assert api.get(f"{API}/studies/patient/{patient_uuid}", "doctor").json() == []
    assert api.get(f"{API}/studies/order/{order_id}", "doctor").json() == []
    assert api.request("DELETE", f"{API}/studies/{uid}", "admin", params={"reason": "again"}).status_code == 404
    freed = order(api, order_id)
    assert (freed["study_instance_uid"], freed["match_rule"], freed["status"]) == (None, None, "scheduled")
    assert query(api, "SELECT deleted_by, reason, order_id, patient_id, accession_number, study_date, modalities,"
                 " number_of_series, number_of_instances FROM ehr_imaging.dicom_deletion_logs"
                 " WHERE study_instance_uid = :u", u=uid) == [
        ("tester", "Test deletion", order_id, patient, acc, "20261120", "CT", 1, 3)]
    uploads = query(api, "SELECT is_deleted FROM ehr_imaging.dicom_upload_logs WHERE study_instance_uid = :u", u=uid)
    assert uploads and all(row == (True,) for row in uploads)
    assert query(api, "SELECT action, reason FROM ehr_imaging.link_audit WHERE study_instance_uid = :u"
                 " AND action = 'unlink'", u=uid) == [("unlink", "study deleted: Test deletion")]
    assert query(api, "SELECT count(*) FROM ehr_imaging.study_links WHERE study_instance_uid = :u", u=uid) == [(0,)]


def test_delete_through_orthancs_port_with_the_reason_header(client: Client, tmp_path: Path) -> None:
    uid, files = make_study(tmp_path, patient_id=mrn(), accession=None, study_date="20261121", instances=1)
    upload(Client(client.stack, client.stack.api_url), files[0])
    path = f"{API}/studies/{uid}"
    assert client.request("DELETE", path, "admin").status_code == 422
    deleted = client.request("DELETE", path, "admin", headers={"X-Reason": "duplicate"})
    assert deleted.status_code == 200, deleted.text
    assert client.get(path, "admin").status_code == 404
    assert query(client, "SELECT reason FROM ehr_imaging.dicom_deletion_logs WHERE study_instance_uid = :u",
                 u=uid) == [("duplicate",)]


def test_a_study_deleted_in_orthanc_explorer_is_audited_and_its_order_freed(client: Client, tmp_path: Path) -> None:
    patient, acc = mrn(), accession()
    order_id = put_order(client, mrn=patient, accession_number=acc)
    uid, files = make_study(tmp_path, patient_id=patient, accession=acc, study_date="20261120")
    send(client.stack, files)
    wait_for_ingest(client, uid, 2)
    orthanc_id = order(client, order_id)["orthanc_study_id"]
    assert client.request("DELETE", f"/studies/{orthanc_id}", auth=client.stack.admin_auth).status_code == 200
    eventually(lambda: order(client, order_id)["study_instance_uid"] is None, timeout=20,
               what="the deleted study's order to be freed")
    assert query(client, "SELECT deleted_by, order_id, number_of_instances FROM ehr_imaging.dicom_deletion_logs"
                 " WHERE study_instance_uid = :u", u=uid) == [("orthanc", order_id, 2)]
    assert client.get(f"{API}/studies/{uid}", "admin").status_code == 404


def test_study_list_filters_and_order(api: Client, tmp_path: Path) -> None:
    patient_uuid, patient = str(uuid.uuid4()), mrn()
    order_id = put_order(api, mrn=patient, patient_id=patient_uuid, accession_number=accession(), modality="MR",
                         status="in-progress")
    older, older_files = make_study(tmp_path / "a", patient_id=patient, accession=None, study_date="20250102",
                                    modality="MR", instances=1)
    newer, newer_files = make_study(tmp_path / "b", patient_id=patient, accession=None, study_date="20250301",
                                    modality="CT", instances=1)
    upload(api, older_files[0], order_id)
    upload(api, newer_files[0])  # unlinked, but its PatientID is the patient's MRN
    listed = api.get(f"{API}/studies", "doctor", params={"mrn": patient.lower()}).json()
    assert [s["StudyInstanceUID"] for s in listed["items"]] == [newer, older]  # newest first
    assert (listed["total"], listed["limit"], listed["offset"]) == (2, 50, 0)

    def uids(**params: str) -> list[str]:
        answer = api.get(f"{API}/studies", "nurse", params=params)
        assert answer.status_code == 200, answer.text
        return [s["StudyInstanceUID"] for s in answer.json()["items"]]

    assert uids(patient_id=patient_uuid) == [newer, older]
    assert uids(mrn=patient, modality="mr") == [older]
    assert uids(mrn=patient, study_date_from="2025-02-01") == [newer]
    assert uids(mrn=patient, study_date_to="20250201") == [older]
    # The EHR sent it in progress; the linked study completed it (OrderStatusUpdates, on by default).
    assert uids(mrn=patient, order_status="completed") == [older]
    assert uids(mrn=patient, order_status="in-progress") == []
    assert uids(mrn=patient, limit="1", offset="1") == [older]
    assert newer in uids(patient_name="test^pat", study_date_from="2025-03-01", study_date_to="2025-03-01")
    assert uids(mrn=patient, patient_name="nobody") == []
    # A name search counts in the same scan as its page; past its last page the count still holds.
    for offset, items in (("0", [newer]), ("1", [older]), ("2", [])):
        named = api.get(f"{API}/studies", "nurse", params={"mrn": patient, "patient_name": "test pat", "limit": "1",
                                                            "offset": offset}).json()
        assert ([s["StudyInstanceUID"] for s in named["items"]], named["total"]) == (items, 2)


def test_query_errors(api: Client, client: Client) -> None:
    assert api.get(f"{API}/studies").status_code == 401
    assert api.get(f"{API}/studies", headers={"Authorization": "Bearer not.a.token"}).status_code == 401
    for params in ({"study_date_from": "2025-02-30"}, {"limit": "0"}, {"order_status": "x"},
                   {"study_date_from": "2025-02-02", "study_date_to": "2025-02-01"}):
        answer = client.get(f"{API}/studies", "doctor", params=params)
        assert answer.status_code == 422, params
        assert answer.json()["detail"]
    assert client.get(f"{API}/studies/1.2.3.4.5.6.7", "doctor").status_code == 404
    assert client.get(f"{API}/studies/order/{uuid.uuid4()}", "doctor").status_code == 404
    assert client.get(f"{API}/studies/order/{'x' * 300}", "doctor").status_code == 422
    assert client.get(f"{API}/studies/patient/{uuid.uuid4()}", "doctor").json() == []


def test_a_study_still_arriving_is_found_before_it_is_recorded(client: Client, tmp_path: Path) -> None:
    uid, files = make_study(tmp_path, patient_id=mrn(), accession=None, study_date="20261122", instances=1)
    stored = client.request("POST", "/instances", auth=client.stack.admin_auth, data=files[0].read_bytes())
    assert stored.status_code == 200
    answer = client.get(f"{API}/studies/{uid}", "nurse")  # before StableAge (2 s): not yet in study_links
    assert answer.status_code == 200
    assert (answer.json()["match"]["status"], answer.json()["NumberOfInstances"]) == ("pending", 1)
    wait_for_ingest(client, uid, 1)
    assert client.get(f"{API}/studies/{uid}", "nurse").json()["match"]["status"] == "unmatched"


def test_download_is_a_zip_of_every_instance(api: Client, client: Client, tmp_path: Path) -> None:
    uid, files = sample_copy(tmp_path, "mr_abdomen", patient_id=mrn())
    for path in files:
        upload(api, path)
    answer = api.get(f"{API}/download/{uid}", "doctor")
    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == "application/zip"
    assert answer.headers["Content-Disposition"] == f'attachment; filename="{uid}.zip"'
    assert answer.headers["Transfer-Encoding"] == "chunked"  # streamed on the API port, never held whole
    with zipfile.ZipFile(io.BytesIO(answer.content)) as archive:
        assert archive.testzip() is None
        names = [n for n in archive.namelist() if not n.endswith("/")]
        assert len(names) == len(files) == 10
        sops = {str(pydicom.dcmread(io.BytesIO(archive.read(n))).SOPInstanceUID) for n in names}
    assert sops == {sop_uid(p) for p in files}
    assert all(name.endswith(".dcm") and name.count("/") == 1 for name in names), names  # a folder per series
    on_orthancs_port = client.get(f"{API}/download/{uid}", "doctor")  # the same archive, joined there
    assert on_orthancs_port.status_code == 200
    with zipfile.ZipFile(io.BytesIO(on_orthancs_port.content)) as archive:
        assert sorted(archive.namelist()) == sorted(names)
    assert api.get(f"{API}/download/1.2.3.999", "doctor").status_code == 404
    assert api.get(f"{API}/download/{uid}").status_code == 401


def test_thumbnail_is_a_png_of_the_middle_image(api: Client, tmp_path: Path) -> None:
    uid, files = sample_copy(tmp_path, "ct_head", patient_id=mrn(), count=5)
    for path in files:
        upload(api, path)
    answer = api.get(f"{API}/thumbnail/{uid}", "nurse")
    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == "image/png"
    assert png_size(answer.content) == (512, 512)
    assert len(answer.content) > 10_000  # a real picture, not an empty frame
    assert api.get(f"{API}/thumbnail/1.2.3.999", "nurse").status_code == 404


def test_render_png_and_jpeg_with_and_without_window(api: Client, tmp_path: Path) -> None:
    _, files = sample_copy(tmp_path, "ct_head", patient_id=mrn(), count=1)
    upload(api, files[0])
    path = f"{API}/render/{sop_uid(files[0])}"

    def render(**params: str) -> bytes:
        answer = api.get(path, "radiologist", params=params)
        assert answer.status_code == 200, answer.text
        return answer.content

    default = render()
    assert png_size(default) == (512, 512)
    windowed = render(window="80", level="40")
    assert png_size(windowed) == (512, 512)
    assert windowed != default
    jpeg = render(format="jpeg")
    assert jpeg[:3] == JPEG_MAGIC
    assert render(format="jpeg", window="80", level="40")[:3] == JPEG_MAGIC
    assert render(format="jpeg", window="80", level="40") != jpeg
    assert len(render(format="jpeg", quality="10")) < len(render(format="jpeg", quality="95"))
    for params in ({"frame": "0"}, {"frame": "x"}, {"format": "gif"}, {"window": "80"}, {"window": "-1", "level": "0"},
                   {"quality": "101"}):
        assert api.get(path, "radiologist", params=params).status_code == 422, params
    assert api.get(path, "radiologist", params={"frame": "2"}).status_code == 404
    assert api.get(f"{API}/render/1.2.3.999", "radiologist").status_code == 404


def test_render_a_frame_of_a_multiframe_ultrasound(api: Client, tmp_path: Path) -> None:
    _, files = sample_copy(tmp_path, "us_echo", patient_id=mrn())
    upload(api, files[0])
    frames = int(pydicom.dcmread(files[0], stop_before_pixels=True).NumberOfFrames)
    path = f"{API}/render/{sop_uid(files[0])}"
    first, last = api.get(path, "doctor"), api.get(path, "doctor", params={"frame": str(frames)})
    assert first.status_code == last.status_code == 200
    assert first.content[:8] == last.content[:8] == PNG_MAGIC
    assert first.content != last.content
    assert api.get(path, "doctor", params={"frame": str(frames + 1)}).status_code == 404


def test_clinical_summary(client: Client, api: Client, tmp_path: Path) -> None:
    patient = mrn()
    uid, files = sample_copy(tmp_path, "ct_head", patient_id=patient, accession_number="ACC-SUM", count=3)
    for path in files:
        upload(api, path)
    answer = client.request("POST", f"{API}/clinical-summary/{uid}", "radiologist",
                            json={"include_patient_info": True, "include_study_info": True,
                                  "include_technical_params": True})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    summary, data = body["summary"], body["structured_data"]
    assert summary.startswith("PATIENT INFORMATION:\nName: ")
    assert f"\nID: {patient}\n" in summary
    assert "\n\nSTUDY INFORMATION:\n" in summary and "\nAccession: ACC-SUM\n" in summary and "Modality: CT" in summary
    assert "\n\nTECHNICAL PARAMETERS:\n" in summary and "\nMatrix: 512 x 512" in summary
    ds = pydicom.dcmread(files[0], stop_before_pixels=True)
    if "SliceThickness" in ds:
        assert f"Slice Thickness: {float(ds.SliceThickness):.1f}" in summary
        assert data["technical"]["slice_thickness_mm"] == float(ds.SliceThickness)
    assert data["study"]["number_of_instances"] == 3
    assert data["patient"]["id"] == patient
    only_study = client.request("POST", f"{API}/clinical-summary/{uid}", "doctor", json={"include_patient_info": False,
                                "include_technical_params": False}).json()
    assert only_study["summary"].startswith("STUDY INFORMATION:") and set(only_study["structured_data"]) == {"study"}
    assert client.request("POST", f"{API}/clinical-summary/{uid}", "doctor", json={"x": 1}).status_code == 422
    assert client.request("POST", f"{API}/clinical-summary/1.2.3.999", "doctor").status_code == 404
    assert client.request("POST", f"{API}/clinical-summary/{uid}").status_code == 401


def test_upload_history(api: Client, tmp_path: Path) -> None:
    patient_uuid, patient = str(uuid.uuid4()), mrn()
    order_id = put_order(api, mrn=patient, patient_id=patient_uuid, accession_number=accession())
    uid, files = make_study(tmp_path, patient_id=patient, accession=None, study_date="20261120", instances=1)
    upload(api, files[0], order_id)
    rejected = api.request("POST", f"{API}/upload", "technician", data={"patient_id": patient_uuid},
                           files={"file": ("junk.dcm", b"not dicom", "application/dicom")})
    assert rejected.status_code == 400  # not a DICOM file (issue 11: 400, as the EHR's client checks)

    mine = api.get(f"{API}/uploads/patient/{patient_uuid}", "doctor").json()
    assert mine["total"] == 2
    assert {(r["upload_status"], r["study_instance_uid"]) for r in mine["items"]} == {("success", uid), ("failed", "")}
    success = next(r for r in mine["items"] if r["upload_status"] == "success")
    assert (success["order_id"], success["upload_source"], success["uploaded_by"]) == (order_id, "api", "tester")
    assert (success["number_of_files"], success["original_patient_id"], success["is_deleted"]) == (1, patient, False)
    assert set(success) >= {"id", "total_size_bytes", "file_names", "original_study_date", "tags_modified",
                            "uploaded_at", "upload_duration_seconds", "error_message"}
    assert api.get(f"{API}/uploads/{success['id']}", "admin").json() == success

    failed = api.get(f"{API}/uploads", "admin", params={"status": "failed", "limit": "500"}).json()
    assert failed["items"] and all(r["upload_status"] == "failed" for r in failed["items"])
    by_source = api.get(f"{API}/uploads", "ehr-service", params={"source": "api", "limit": "5"}).json()
    assert len(by_source["items"]) <= 5 and all(r["upload_source"] == "api" for r in by_source["items"])

    assert api.get(f"{API}/uploads/not-a-uuid", "admin").status_code == 422
    assert api.get(f"{API}/uploads/{uuid.uuid4()}", "admin").status_code == 404
    assert api.get(f"{API}/uploads", "admin", params={"status": "done"}).status_code == 422
    assert api.get(f"{API}/uploads", "nurse").status_code == 403
    assert api.get(f"{API}/uploads").status_code == 401


def test_roles(api: Client) -> None:
    assert api.request("DELETE", f"{API}/studies/1.2.3", "technician", params={"reason": "x"}).status_code == 403
    assert api.get(f"{API}/studies", "technician").status_code == 403  # the issue's query roles only
    assert api.request("DELETE", f"{API}/studies/1.2.3", "nurse", params={"reason": "x"}).status_code == 403
    assert api.request("DELETE", f"{API}/studies/1.2.3", params={"reason": "x"}).status_code == 401
    assert api.request("DELETE", f"{API}/studies/1.2.3.4.5.6.7.8", "admin", params={"reason": "x"}).status_code == 404
    for path in ("/studies", "/studies/1.2.3", "/thumbnail/1.2.3", "/render/1.2.3", "/download/1.2.3"):
        assert api.get(API + path).status_code == 401


def test_jpeg2000_renders_and_an_image_without_pixels_is_a_clear_error(api: Client, tmp_path: Path) -> None:
    """JPEG 2000 renders (GDCM's decoder, orthanc-gdcm); an instance without pixel data is a 422 with a detail;
    never a bare 500. Every other syntax, colour and multi-frame: tests/integration/test_rendering.py."""
    uid, files = sample_copy(tmp_path, "ct_head_j2k", patient_id=mrn(), count=1)
    upload(api, files[0])
    for answer in (api.get(f"{API}/render/{sop_uid(files[0])}", "doctor"), api.get(f"{API}/thumbnail/{uid}", "doctor")):
        assert answer.status_code == 200, answer.text
        assert answer.headers["Content-Type"] == "image/png"
        assert png_size(answer.content) == (512, 512)
        assert len(answer.content) > 10_000  # a real picture, not an empty frame
    no_pixels = pydicom.dcmread(files[0])
    del no_pixels.PixelData
    no_pixels.SOPInstanceUID = no_pixels.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    no_pixels.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    path = tmp_path / "no-pixels.dcm"
    no_pixels.save_as(path, enforce_file_format=True)
    upload(api, path)
    answer = api.get(f"{API}/render/{no_pixels.SOPInstanceUID}", "doctor")
    # Orthanc cannot render it: 422 with the syntax (not a 404: the instance is there).
    assert answer.status_code == 422 and "cannot render" in answer.json()["detail"], answer.text
