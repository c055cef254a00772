"""POST /api/v1/dicom/upload-image (issue 11, item 3): a photo or a PDF made DICOM by Orthanc for an order or a
patient, stored, linked and audited like any upload; bad input is a 400 that stores nothing and is audited.
Offline sync takes the same content types."""

from __future__ import annotations

import hashlib
import io
import uuid
from pathlib import Path
from typing import Any

import pydicom
import pytest

from tests.conftest import Client
from tests.dicom_factory import make_study
from tests.integration.helpers import mrn, order, order_fields, put_order, query
from tests.media_factory import jpeg, pdf, png, png_declaring

pytestmark = pytest.mark.integration

IMAGE = "/api/v1/dicom/upload-image"
SECONDARY_CAPTURE, ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.5.1.4.1.1.104.1"


def send_raw(client: Client, data: bytes, content_type: str, role: str | None = "technician",
             **headers: str) -> Any:
    """On Orthanc's port: the raw body, options as X- headers."""
    return client.request("POST", IMAGE, role, data=data, headers={"Content-Type": content_type, **headers})


def send_form(api: Client, name: str, data: bytes, content_type: str, role: str = "technician",
              **fields: str) -> Any:
    """On the API port: the multipart field ``file`` and form fields."""
    return api.request("POST", IMAGE, role, files={"file": (name, data, content_type)}, data=fields)


def stored_file(client: Client, orthanc_instance_id: str) -> pydicom.Dataset:
    answer = client.request("GET", f"/instances/{orthanc_instance_id}/file", auth=client.stack.admin_auth)
    assert answer.status_code == 200
    return pydicom.dcmread(io.BytesIO(answer.content))


def instance_count(client: Client) -> int:
    return int(client.get("/api/v1/dicom/stats", "admin").json()["total_instances"])


def test_a_png_for_an_order_becomes_a_secondary_capture_linked_to_it(client: Client) -> None:
    fields = order_fields(mrn=mrn())
    order_id = put_order(client, **fields)
    answer = send_raw(client, png(), "image/png", **{"X-Order-Id": order_id, "X-File-Name": "wound.png"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["status"], body["content_type"], body["sop_class_uid"]) == ("uploaded", "image/png",
                                                                            SECONDARY_CAPTURE)
    assert (body["order_id"], body["match"]) == (order_id, {"status": "linked", "reason": None})
    ds = stored_file(client, body["orthanc_instance_id"])
    assert (ds.PatientID, ds.AccessionNumber, str(ds.PatientName)) == (fields["mrn"], fields["accession_number"],
                                                                       "Testperson^Ada")
    assert (ds.PatientBirthDate, ds.PatientSex, ds.Modality, ds.ConversionType) == ("19700517", "F", "XC", "DI")
    assert (ds.SOPClassUID, ds.SOPInstanceUID, ds.StudyInstanceUID) == (SECONDARY_CAPTURE, body["sop_instance_uid"],
                                                                         body["study_instance_uid"])
    assert (ds.Rows, ds.Columns, ds.SamplesPerPixel) == (6, 8, 3)
    linked = order(client, order_id)
    assert (linked["study_instance_uid"], linked["match_rule"]) == (body["study_instance_uid"], "explicit")
    rows = query(client, "SELECT upload_status, upload_source, file_names, number_of_files, order_id"
                 " FROM ehr_imaging.dicom_upload_logs WHERE study_instance_uid = :u", u=body["study_instance_uid"])
    assert rows == [("success", "api", ["wound.png"], 1, order_id)]
    rendered = client.get(f"/api/v1/dicom/render/{body['sop_instance_uid']}", "doctor")
    assert rendered.status_code == 200 and rendered.content.startswith(b"\x89PNG")


def test_a_jpeg_joins_the_study_the_order_is_linked_to(api: Client, client: Client, tmp_path: Path) -> None:
    patient = mrn()
    order_id = put_order(client, mrn=patient)
    study_uid, files = make_study(tmp_path, patient_id=patient, accession=None, study_date="20261120", instances=1)
    stored = client.request("POST", "/api/v1/dicom/upload", "technician", data=files[0].read_bytes(),
                            headers={"Content-Type": "application/dicom", "X-Order-Id": order_id})
    assert stored.status_code == 200 and stored.json()["match"]["status"] == "linked", stored.text
    answer = send_form(api, "photo.jpg", jpeg(), "image/jpeg", order_id=order_id)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["study_instance_uid"], body["orthanc_study_id"]) == (study_uid, stored.json()["orthanc_study_id"])
    assert body["match"] == {"status": "linked", "reason": None} and body["order_id"] == order_id
    ds = stored_file(client, body["orthanc_instance_id"])
    assert (ds.PatientID, ds.StudyDate, ds.SOPClassUID) == (patient, "20261120", SECONDARY_CAPTURE)
    assert (ds.Rows, ds.Columns) == (100, 100)
    study = client.get(f"/api/v1/dicom/studies/{study_uid}", "doctor").json()
    assert (study["NumberOfSeries"], study["NumberOfInstances"]) == (2, 2)
    assert order(client, order_id)["study_instance_uid"] == study_uid


def test_a_pdf_with_patient_fields_becomes_an_encapsulated_pdf_in_a_new_study(api: Client, client: Client) -> None:
    patient, document = mrn(), pdf("Signed consent")
    answer = send_form(api, "consent.pdf", document, "application/pdf", mrn=patient, patient_family_name="Łoś",
                       patient_given_name="Rick", birth_date="1961-02-03", sex="M", description="Consent form",
                       patient_id=str(uuid.uuid4()))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["content_type"], body["sop_class_uid"], body["order_id"]) == ("application/pdf", ENCAPSULATED_PDF,
                                                                              None)
    assert body["match"]["status"] == "unmatched"
    ds = stored_file(client, body["orthanc_instance_id"])
    assert (ds.SOPClassUID, ds.Modality, ds.MIMETypeOfEncapsulatedDocument) == (ENCAPSULATED_PDF, "DOC",
                                                                                "application/pdf")
    assert (ds.PatientID, str(ds.PatientName), ds.PatientBirthDate, ds.PatientSex) == (patient, "Łoś^Rick",
                                                                                       "19610203", "M")
    assert (ds.DocumentTitle, ds.SeriesDescription) == ("Consent form", "Consent form")
    assert bytes(ds.EncapsulatedDocument).rstrip(b"\x00") == document  # the PDF byte for byte (even-length pad)


def test_two_photos_of_one_patient_without_order_are_two_studies(client: Client) -> None:
    patient = mrn()
    first = send_raw(client, png(), "image/png", **{"X-Mrn": patient})
    second = send_raw(client, png(3, 3), "image/png", **{"X-Mrn": patient})
    assert (first.status_code, second.status_code) == (200, 200), (first.text, second.text)
    assert first.json()["study_instance_uid"] != second.json()["study_instance_uid"]


# Each: 400 with a detail, nothing stored, a failed audit row carrying the detail.
BAD_INPUT = [
    ("png_said_jpeg", png(), "image/jpeg", "not a JPEG image: the content is a PNG image"),
    ("text_said_png", b"just some text, no image", "image/png", "not a PNG image: the content is none of"),
    ("cut_png_header", png()[:20], "image/png", "without its IHDR header"),
    ("huge_png", png_declaring(20000, 20000), "image/png", "over the size limit"),
    ("jpeg_without_frame", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00\xff\xd9",
     "image/jpeg", "without a frame header"),
    ("pdf_cut", pdf()[:-40], "application/pdf", "without '%%EOF'"),
    ("pdf_no_objects", b"%PDF-1.4\nnothing here\nstartxref\n0\n%%EOF\n", "application/pdf", "does not parse"),
    ("png_orthanc_cannot_decode", png()[:33] + b"\x00\x00\x00\x05IDATxxxxx\x00\x00\x00\x00" + png()[-12:],
     "image/png", "Orthanc refused the file"),
]


@pytest.mark.parametrize(("case", "data", "content_type", "detail"), BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_bad_input_is_a_400_stores_nothing_and_is_audited(client: Client, case: str, data: bytes,
                                                          content_type: str, detail: str) -> None:
    before = instance_count(client)
    name = f"{case}-{uuid.uuid4().hex[:8]}"
    answer = send_raw(client, data, content_type, **{"X-Mrn": mrn(), "X-File-Name": name})
    assert answer.status_code == 400, answer.text
    assert detail in answer.json()["detail"]
    assert instance_count(client) == before
    rows = query(client, "SELECT upload_status, error_message FROM ehr_imaging.dicom_upload_logs"
                 " WHERE file_names ? :n", n=name)
    assert len(rows) == 1 and rows[0][0] == "failed" and detail in rows[0][1], rows


def test_refusals_of_the_request(api: Client, client: Client) -> None:
    assert send_raw(client, png(), "image/png", role=None).status_code == 401
    assert send_raw(client, png(), "image/png", role="nurse").status_code == 403
    assert send_raw(client, png(), "text/plain", **{"X-Mrn": mrn()}).status_code == 415
    octet = send_form(api, "notes.txt", png(), "application/octet-stream", mrn=mrn())
    assert octet.status_code == 415 and "JPEG, PNG or PDF" in octet.json()["detail"]
    by_name = send_form(api, "photo.png", png(), "application/octet-stream", mrn=mrn())
    assert by_name.status_code == 200, by_name.text  # the name's extension says what it is
    no_patient = send_raw(client, png(), "image/png")
    assert no_patient.status_code == 422 and no_patient.json()["detail"].startswith("mrn:")
    bad_date = send_form(api, "p.png", png(), "image/png", mrn=mrn(), birth_date="17.05.1970")
    assert bad_date.status_code == 422 and bad_date.json()["detail"].startswith("birth_date:")
    unknown = send_raw(client, png(), "image/png", **{"X-Order-Id": "no-such-order"})
    assert unknown.status_code == 404
    cancelled = put_order(client, mrn=mrn(), status="cancelled")
    assert send_raw(client, png(), "image/png", **{"X-Order-Id": cancelled}).status_code == 409
    no_file = api.request("POST", IMAGE, "technician", data={"mrn": mrn()},
                          files={"photo": ("p.png", png(), "image/png")})  # a form without the field 'file'
    assert no_file.status_code == 400 and "'file'" in no_file.json()["detail"]
    assert api.request("POST", IMAGE, "technician", data={"mrn": "x"}).status_code == 415  # a form, no file part


def test_offline_sync_takes_a_photo_declared_with_its_uids(api: Client, client: Client) -> None:
    patient = mrn()
    order_id = put_order(client, mrn=patient)
    photo = png(5, 4)
    uids = {name: f"2.25.{uuid.uuid4().int}" for name in ("study_instance_uid", "series_instance_uid",
                                                          "sop_instance_uid")}
    declared = api.request("POST", "/api/v1/dicom/offline/metadata", "technician", json={
        **uids, "size": len(photo), "sha256": hashlib.sha256(photo).hexdigest(), "order_id": order_id,
        "file_name": "bedside.png"})
    assert declared.status_code == 200, declared.text
    upload_id = declared.json()["upload_id"]
    sent = api.request("POST", "/api/v1/dicom/offline/binary", "technician", data={"upload_id": upload_id},
                       files={"file": ("bedside.png", photo, "image/png")})
    assert sent.status_code == 200, sent.text
    assert (sent.json()["status"], sent.json()["study_instance_uid"]) == ("STORED", uids["study_instance_uid"])
    ds = stored_file(client, sent.json()["orthanc_instance_id"])
    assert (ds.SOPInstanceUID, ds.SeriesInstanceUID, ds.PatientID) == (uids["sop_instance_uid"],
                                                                       uids["series_instance_uid"], patient)
    assert order(client, order_id)["study_instance_uid"] == uids["study_instance_uid"]
    again = api.request("POST", "/api/v1/dicom/offline/binary", "technician", data={"upload_id": upload_id},
                        files={"file": ("bedside.png", photo, "image/png")})
    assert again.status_code == 200 and again.json()["status"] == "STORED"  # stored once
    acked = api.request("POST", "/api/v1/dicom/offline/ack", "technician", json={"upload_id": upload_id})
    assert acked.status_code == 200 and acked.json()["status"] == "ACK_RECEIVED", acked.text


def test_offline_sync_refuses_a_photo_without_order_or_not_what_it_claims(api: Client) -> None:
    def declare(data: bytes, **extra: str) -> str:
        answer = api.request("POST", "/api/v1/dicom/offline/metadata", "technician", json={
            **{n: f"2.25.{uuid.uuid4().int}" for n in ("study_instance_uid", "series_instance_uid",
                                                       "sop_instance_uid")},
            "size": len(data), "sha256": hashlib.sha256(data).hexdigest(), **extra})
        assert answer.status_code == 200, answer.text
        return str(answer.json()["upload_id"])

    photo = png(2, 2)
    orphan = api.request("POST", "/api/v1/dicom/offline/binary", "technician", data={"upload_id": declare(photo)},
                         files={"file": ("p.png", photo, "image/png")})
    assert orphan.status_code == 422 and "order_id" in orphan.json()["detail"]
    order_id = put_order(api, mrn=mrn())
    lying = api.request("POST", "/api/v1/dicom/offline/binary", "technician",
                        data={"upload_id": declare(photo, order_id=order_id)},
                        files={"file": ("p.jpg", photo, "image/jpeg")})
    assert lying.status_code == 400 and "not a JPEG image" in lying.json()["detail"]
