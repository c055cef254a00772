"""Tags through the real stack: validate, read-tags, modify-tags (audited), deidentify, tags of a stored study."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest
import requests
from pydicom import Dataset, dcmread
from pydicom.data import get_testdata_file

from samples.build_samples import build_samples
from tests import phi_fixture
from tests.conftest import SAMPLES_CACHE, Client
from tests.integration.helpers import mrn, query

pytestmark = pytest.mark.integration

DICOM = "application/dicom"
UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")


@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    return build_samples(SAMPLES_CACHE)


def study(manifest: dict[str, Any], key: str) -> dict[str, Any]:
    return next(s for s in manifest["studies"] if s["key"] == key)


def sample(manifest: dict[str, Any], key: str, series: int = 0, index: int = 0) -> bytes:
    return (SAMPLES_CACHE / str(study(manifest, key)["series"][series]["files"][index])).read_bytes()


def malformed(manifest: dict[str, Any], kind: str) -> bytes:
    entry = next(m for m in manifest["malformed"] if m["kind"] == kind)
    return (SAMPLES_CACHE / str(entry["file"])).read_bytes()


def post_file(client: Client, path: str, data: bytes, role: str | None = "technician", *,
              fields: dict[str, str] | None = None, name: str = "file", **kwargs: Any) -> requests.Response:
    return client.request("POST", path, role, files={name: ("image.dcm", data, DICOM)}, data=fields or {}, **kwargs)


def read(raw: bytes) -> Dataset:
    return dcmread(io.BytesIO(raw))


# --- validate -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "syntax"), [
    ("ct_head_j2k", "1.2.840.10008.1.2.4.90"), ("us_echo", "1.2.840.10008.1.2.4.50"),
    ("mr_brain_rle", "1.2.840.10008.1.2.5"), ("cr_tibia", "1.2.840.10008.1.2.1"),
])
def test_validate_real_samples(api: Client, manifest: dict[str, Any], key: str, syntax: str) -> None:
    answer = post_file(api, "/api/v1/dicom/validate", sample(manifest, key))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["is_valid"], body["errors"], body["transfer_syntax"]) == (True, [], syntax)
    assert body["modality"] == study(manifest, key)["modality"]
    assert body["has_pixel_data"] is True and body["sop_class_uid"]


@pytest.mark.parametrize(("kind", "valid", "message"), [
    ("truncated", False, "truncated"),
    ("not_dicom", False, "not a DICOM file"),
    ("missing_study_uid", False, "StudyInstanceUID is missing"),
    ("no_preamble", True, "no 128-byte preamble"),
])
def test_validate_malformed_samples_answers_200_with_the_verdict(api: Client, manifest: dict[str, Any], kind: str,
                                                                  valid: bool, message: str) -> None:
    answer = post_file(api, "/api/v1/dicom/validate", malformed(manifest, kind))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["is_valid"] is valid
    assert any(message in line for line in body["errors"] + body["warnings"]), body


def test_validate_raw_body_on_orthancs_port(client: Client, manifest: dict[str, Any]) -> None:
    answer = client.request("POST", "/api/v1/dicom/validate", "radiologist", data=sample(manifest, "cr_tibia"),
                            headers={"Content-Type": DICOM})
    assert answer.status_code == 200, answer.text
    assert answer.json()["is_valid"] is True


def test_validate_errors(api: Client, manifest: dict[str, Any]) -> None:
    data = sample(manifest, "cr_tibia")
    assert post_file(api, "/api/v1/dicom/validate", data, role=None).status_code == 401
    assert post_file(api, "/api/v1/dicom/validate", data, role="nurse").status_code == 403
    no_file = api.request("POST", "/api/v1/dicom/validate", "doctor", files={"other": ("x", b"1")})
    assert no_file.status_code == 400
    assert "'file'" in no_file.json()["detail"]
    two = api.request("POST", "/api/v1/dicom/validate", "doctor",
                      files=[("file", ("a.dcm", data, DICOM)), ("file", ("b.dcm", data, DICOM))])
    assert two.status_code == 400


@pytest.mark.parametrize("path", ["/api/v1/dicom/validate", "/api/v1/dicom/modify-tags", "/api/v1/dicom/deidentify"])
def test_files_over_max_file_size_answer_413(api: Client, tmp_path: Path, path: str) -> None:
    big = tmp_path / "big.dcm"
    with big.open("wb") as out:  # sparse: 101 MB, over the default MaxFileSizeMb of 100
        out.truncate(101 * 1024 * 1024)
    with big.open("rb") as body:
        answer = api.request("POST", path, "admin", data=body, headers={"Content-Type": DICOM})
    assert answer.status_code == 413, answer.text
    assert "100 MB" in answer.json()["detail"]


# --- read-tags ------------------------------------------------------------------------------------------


def test_read_tags_answers_the_main_tags(api: Client, manifest: dict[str, Any]) -> None:
    entry = study(manifest, "mr_abdomen")
    answer = post_file(api, "/api/v1/dicom/read-tags", sample(manifest, "mr_abdomen"), role="nurse")
    assert answer.status_code == 200, answer.text
    found = answer.json()["tags"]
    assert found["StudyInstanceUID"] == entry["study_instance_uid"]
    assert found["PatientID"] == entry["patient_id_dicom"]
    assert found["PatientName"] == entry["patient_name"]
    assert found["AccessionNumber"] == entry["accession_number"]
    assert found["Modality"] == "MR"
    assert found["SeriesInstanceUID"] == entry["series"][0]["series_instance_uid"]
    assert "PixelData" not in found


@pytest.mark.parametrize("how", ["form", "query"])
def test_read_tags_all(api: Client, manifest: dict[str, Any], how: str) -> None:
    data = sample(manifest, "ct_head_j2k")
    if how == "form":
        answer = post_file(api, "/api/v1/dicom/read-tags", data, fields={"all": "true"})
    else:
        answer = post_file(api, "/api/v1/dicom/read-tags?all=true", data)
    assert answer.status_code == 200, answer.text
    found = answer.json()["tags"]
    assert found["TransferSyntaxUID"] == "1.2.840.10008.1.2.4.90"
    assert found["PixelData"].startswith("<pixel data: ")
    assert len(found) > 40
    assert len(answer.content) < 64 * 1024  # the pixels are summarized, not dumped


def test_read_tags_raw_body_on_orthancs_port(client: Client, manifest: dict[str, Any]) -> None:
    headers = {"Content-Type": DICOM, "X-All": "true"}
    answer = client.request("POST", "/api/v1/dicom/read-tags", "nurse", data=sample(manifest, "us_obstetric"),
                            headers=headers)
    assert answer.status_code == 200, answer.text
    found = answer.json()["tags"]
    assert found["NumberOfFrames"] == "2" and found["Modality"] == "US"


def test_read_tags_errors(api: Client, manifest: dict[str, Any]) -> None:
    data = sample(manifest, "cr_tibia")
    assert post_file(api, "/api/v1/dicom/read-tags", data, role=None).status_code == 401
    bad = post_file(api, "/api/v1/dicom/read-tags", malformed(manifest, "not_dicom"))
    assert bad.status_code == 400 and "not a DICOM file" in bad.json()["detail"]  # issue 11: invalid DICOM is 400
    cut = post_file(api, "/api/v1/dicom/read-tags", malformed(manifest, "truncated"))
    assert cut.status_code == 400 and "truncated" in cut.json()["detail"]
    assert api.request("POST", "/api/v1/dicom/read-tags", "doctor").status_code == 400
    assert post_file(api, "/api/v1/dicom/read-tags", data, fields={"all": "maybe"}).status_code == 422


# --- modify-tags ----------------------------------------------------------------------------------------


def audit_rows(client: Client, sop_uid: str) -> list[tuple[Any, ...]]:
    return query(client, "SELECT id, edited_by, study_instance_uid, file_name, original_values, new_values,"
                 " removed_private_tags, private_tags_removed FROM ehr_imaging.tag_edit_audit"
                 " WHERE sop_instance_uid = :u ORDER BY id", u=sop_uid)


def test_modify_tags_returns_the_changed_file_and_audits_it(api: Client, manifest: dict[str, Any]) -> None:
    original_bytes = sample(manifest, "ct_head_j2k")
    original = read(original_bytes)
    patient = mrn()
    changes = {"PatientID": patient, "PatientName": "DOE^JANE", "PatientBirthDate": "19800102", "PatientSex": "F",
               "AccessionNumber": "ACC-TAGS-1", "StudyDate": "20260115", "StudyDescription": "CT HEAD W/O"}
    answer = post_file(api, "/api/v1/dicom/modify-tags", original_bytes, role="doctor", fields=changes)
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"] == DICOM
    assert "modified_image.dcm" in answer.headers["Content-Disposition"]
    modified = read(answer.content)
    for keyword, value in changes.items():
        assert str(modified.data_element(keyword).value) == value  # type: ignore[union-attr]
    for keyword in UIDS:
        assert modified[keyword].value == original[keyword].value
    assert modified.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
    assert modified.PixelData == original.PixelData
    rows = audit_rows(api, str(original.SOPInstanceUID))
    assert len(rows) == 1
    row_id, by, study_uid, file_name, before, after, removed, count = rows[0]
    assert (by, study_uid, file_name, removed, count) == ("tester", original.StudyInstanceUID, "image.dcm", False, 0)
    assert after == changes
    assert before["PatientID"] == original.PatientID and before["StudyDate"] == original.StudyDate
    assert answer.headers["X-Tag-Edit-Audit-Id"] == str(row_id)


def test_modify_tags_json_changes_and_private_tags(api: Client) -> None:
    data = Path(str(get_testdata_file("CT_small.dcm"))).read_bytes()  # a GE CT with private tags
    original = read(data)
    assert any(e.tag.is_private for e in original)
    fields = {"changes": json.dumps({"PatientSex": "O"}), "remove_private_tags": "true"}
    answer = post_file(api, "/api/v1/dicom/modify-tags", data, role="radiologist", fields=fields)
    assert answer.status_code == 200, answer.text
    modified = read(answer.content)
    assert modified.PatientSex == "O"
    assert not any(e.tag.is_private for e in modified)
    assert modified.PixelData == original.PixelData
    rows = audit_rows(api, str(original.SOPInstanceUID))
    assert rows[-1][5] == {"PatientSex": "O"} and rows[-1][6] is True and rows[-1][7] > 0


def test_modify_tags_raw_body_on_orthancs_port(client: Client, manifest: dict[str, Any]) -> None:
    data = sample(manifest, "cr_tibia")
    headers = {"Content-Type": DICOM, "X-Changes": json.dumps({"AccessionNumber": "ACC-RAW"})}
    answer = client.request("POST", "/api/v1/dicom/modify-tags", "ehr-service", data=data, headers=headers)
    assert answer.status_code == 200, answer.text
    assert read(answer.content).AccessionNumber == "ACC-RAW"
    assert audit_rows(client, str(read(data).SOPInstanceUID))[-1][5] == {"AccessionNumber": "ACC-RAW"}


@pytest.mark.parametrize(("fields", "named"), [
    ({"InstitutionName": "X"}, "InstitutionName"),
    ({"StudyInstanceUID": "1.2.3"}, "StudyInstanceUID"),
    ({"changes": json.dumps({"SOPInstanceUID": "1.2.3"})}, "SOPInstanceUID"),
    ({"PatientBirthDate": "1980-01-02"}, "PatientBirthDate"),
    ({"PatientSex": "U"}, "PatientSex"),
    ({"AccessionNumber": "A" * 17}, "AccessionNumber"),
    ({"changes": "[1, 2]"}, "changes"),
    ({}, "changes"),
])
def test_modify_tags_refusals_are_422_and_not_audited(api: Client, manifest: dict[str, Any],
                                                      fields: dict[str, str], named: str) -> None:
    data = sample(manifest, "dx_chest")
    sop_uid = str(read(data).SOPInstanceUID)
    before = len(audit_rows(api, sop_uid))
    answer = post_file(api, "/api/v1/dicom/modify-tags", data, fields=fields)
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"].startswith(f"{named}:")
    assert len(audit_rows(api, sop_uid)) == before


def test_modify_tags_errors(api: Client, manifest: dict[str, Any]) -> None:
    data = sample(manifest, "dx_chest")
    fields = {"PatientID": "X"}
    assert post_file(api, "/api/v1/dicom/modify-tags", data, role=None, fields=fields).status_code == 401
    assert post_file(api, "/api/v1/dicom/modify-tags", data, role="nurse", fields=fields).status_code == 403
    assert api.request("POST", "/api/v1/dicom/modify-tags", "admin", data=fields).status_code == 400
    bad = post_file(api, "/api/v1/dicom/modify-tags", malformed(manifest, "not_dicom"), fields=fields)
    assert bad.status_code == 400 and "not a DICOM file" in bad.json()["detail"]  # unreadable: 400, values: 422


# --- deidentify -----------------------------------------------------------------------------------------


def test_deidentify_a_study_as_a_zip_with_consistent_uids(api: Client, manifest: dict[str, Any]) -> None:
    entry = study(manifest, "mr_abdomen")
    paths = [SAMPLES_CACHE / f for series in entry["series"] for f in series["files"]]
    originals = [read(p.read_bytes()) for p in paths]
    files = [("files", (p.name, p.read_bytes(), DICOM)) for p in paths]
    answer = api.request("POST", "/api/v1/dicom/deidentify", "radiologist", files=files,
                         data={"patient_id": "RESEARCH-1"})
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(answer.content))
    out = [read(archive.read(name)) for name in archive.namelist()]
    assert len(out) == len(paths) == 10
    assert {ds.StudyInstanceUID for ds in out} != {entry["study_instance_uid"]}
    assert len({ds.StudyInstanceUID for ds in out}) == 1
    assert len({ds.SeriesInstanceUID for ds in out}) == 2
    assert len({ds.SOPInstanceUID for ds in out}) == 10
    assert not {ds.SOPInstanceUID for ds in out} & {ds.SOPInstanceUID for ds in originals}
    assert sorted(archive.namelist()) == sorted(f"{ds.SOPInstanceUID}.dcm" for ds in out)
    for ds in out:
        assert (ds.PatientID, ds.PatientName, ds.PatientIdentityRemoved) == ("RESEARCH-1", "ANONYMIZED", "YES")
        assert ds.get("PatientBirthDate", "") == "" and "InstitutionName" not in ds
        assert not any(e.tag.is_private for e in ds)
    assert sorted(ds.PixelData for ds in out) == sorted(ds.PixelData for ds in originals)
    assert answer.headers["X-Burned-In-Annotation"] == "UNKNOWN"  # MR without the attribute: not refused


def test_deidentify_one_file_answers_the_file(api: Client, manifest: dict[str, Any]) -> None:
    original = read(sample(manifest, "us_echo"))
    answer = post_file(api, "/api/v1/dicom/deidentify", sample(manifest, "us_echo"), role="ehr-service",
                       fields={"patient_name": "SUBJECT^1", "accept_burned_in_annotation": "true"})
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"] == DICOM
    assert answer.headers["X-Burned-In-Annotation"] == "UNKNOWN"  # US without the attribute, accepted
    ds = read(answer.content)
    assert str(ds.PatientName) == "SUBJECT^1" and ds.PatientID.startswith("ANON-")
    assert ds.PatientID != original.PatientID and ds.StudyInstanceUID != original.StudyInstanceUID
    assert ds.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
    assert ds.PixelData == original.PixelData


def test_deidentify_leaves_no_personal_data_at_any_depth(api: Client) -> None:
    raw = phi_fixture.phi_file()
    assert len(phi_fixture.leaks(raw)) > 1000  # the table's attributes, nested items, private tags, file meta
    answer = post_file(api, "/api/v1/dicom/deidentify", raw, role="radiologist")
    assert answer.status_code == 200, answer.text
    assert phi_fixture.leaks(answer.content) == []
    assert answer.headers["X-Burned-In-Annotation"] == "UNKNOWN"  # a CT without the attribute: not refused
    assert "Basic Application Level Confidentiality Profile" in answer.headers["X-Deidentification-Profile"]
    assert answer.headers["X-Deidentification-Table"].startswith("dicom-anonymizer 2.1.0 dicomfields_2026c")
    ds = read(answer.content)
    assert (ds.PatientIdentityRemoved, ds.LongitudinalTemporalInformationModified) == ("YES", "REMOVED")
    assert ds.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
    for keyword in ("RequestedProcedureDescription", "AdmittingDate", "DateOfSecondaryCapture", "ReviewerName",
                    "PatientTelecomInformation", "PatientBirthDateInAlternativeCalendar"):
        assert keyword not in ds, keyword
    assert ds.ReferencedImageSequence[0].get("PatientName", "") == ""
    assert ds.SourceImageSequence[0].get("PatientID", "") == ""


def test_deidentify_refuses_burned_in_annotation_unless_accepted(api: Client, client: Client,
                                                                 manifest: dict[str, Any]) -> None:
    burned = read(sample(manifest, "cr_tibia"))
    burned.BurnedInAnnotation = "YES"
    buffer = io.BytesIO()
    burned.save_as(buffer)
    refused = post_file(api, "/api/v1/dicom/deidentify", buffer.getvalue())
    assert refused.status_code == 422, refused.text
    assert "BurnedInAnnotation is YES" in refused.json()["detail"]
    assert "accept_burned_in_annotation=true" in refused.json()["detail"]
    assert refused.headers["X-Burned-In-Annotation"] == "YES"
    us = post_file(api, "/api/v1/dicom/deidentify", sample(manifest, "us_echo"))
    assert us.status_code == 422 and "US images" in us.json()["detail"], us.text
    assert us.headers["X-Burned-In-Annotation"] == "UNKNOWN"
    bad_flag = post_file(api, "/api/v1/dicom/deidentify", buffer.getvalue(),
                         fields={"accept_burned_in_annotation": "maybe"})
    assert bad_flag.status_code == 422 and "accept_burned_in_annotation" in bad_flag.json()["detail"]
    # A ZIP: one file says YES and is accepted (as an X- header on Orthanc's port too): the answer says YES.
    files = [("files", ("a.dcm", buffer.getvalue(), DICOM)), ("files", ("b.dcm", sample(manifest, "cr_tibia"), DICOM))]
    accepted = api.request("POST", "/api/v1/dicom/deidentify", "doctor", files=files,
                           data={"accept_burned_in_annotation": "true"})
    assert accepted.status_code == 200, accepted.text
    assert accepted.headers["X-Burned-In-Annotation"] == "YES"
    assert len(zipfile.ZipFile(io.BytesIO(accepted.content)).namelist()) == 2
    raw = client.request("POST", "/api/v1/dicom/deidentify", "doctor", data=buffer.getvalue(),
                         headers={"Content-Type": DICOM, "X-Accept-Burned-In-Annotation": "true"})
    assert raw.status_code == 200, raw.text
    assert read(raw.content).BurnedInAnnotation == "YES"


def test_deidentify_errors(api: Client, manifest: dict[str, Any]) -> None:
    data = sample(manifest, "cr_tibia")
    assert post_file(api, "/api/v1/dicom/deidentify", data, role=None).status_code == 401
    assert post_file(api, "/api/v1/dicom/deidentify", data, role="nurse").status_code == 403
    assert api.request("POST", "/api/v1/dicom/deidentify", "admin").status_code == 400
    files = [("files", ("a.dcm", data, DICOM)), ("files", ("b.dcm", malformed(manifest, "not_dicom"), DICOM))]
    bad = api.request("POST", "/api/v1/dicom/deidentify", "admin", files=files)
    assert bad.status_code == 400 and "file 2 (b.dcm)" in bad.json()["detail"]  # not DICOM: 400
    long_id = post_file(api, "/api/v1/dicom/deidentify", data, fields={"patient_id": "X" * 65})
    assert long_id.status_code == 422 and long_id.json()["detail"].startswith("PatientID:")


# --- tags of a stored study ------------------------------------------------------------------------------


def test_tags_of_a_stored_study(client: Client, manifest: dict[str, Any]) -> None:
    entry = study(manifest, "mr_abdomen")
    for series in entry["series"]:
        for name in series["files"]:
            stored = client.request("POST", "/instances", "admin", data=(SAMPLES_CACHE / name).read_bytes())
            assert stored.status_code == 200, stored.text
    answer = client.get(f"/api/v1/dicom/tags/{entry['study_instance_uid']}", "nurse")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["study_instance_uid"] == entry["study_instance_uid"] and body["orthanc_study_id"]
    assert body["patient"]["PatientID"] == entry["patient_id_dicom"]
    assert body["study"]["AccessionNumber"] == entry["accession_number"]
    assert body["study"]["StudyDate"] == entry["study_date"].replace("-", "")
    assert (body["modalities"], body["number_of_series"], body["number_of_instances"]) == (["MR"], 2, 10)
    assert [s["SeriesInstanceUID"] for s in body["series"]] == [s["series_instance_uid"] for s in entry["series"]]
    assert [s["number_of_instances"] for s in body["series"]] == [5, 5]
    assert body["series"][0]["Modality"] == "MR"


def test_study_tags_errors(api: Client) -> None:
    assert api.get("/api/v1/dicom/tags/1.2.3.4.5.999", "doctor").status_code == 404
    assert api.get("/api/v1/dicom/tags/1.2.3.4.5.999", "doctor").json()["detail"]
    assert api.get("/api/v1/dicom/tags/not-a-uid", "doctor").status_code == 400
    assert api.get("/api/v1/dicom/tags/1..2", "doctor").status_code == 400  # an empty component: not a UID
    assert api.get("/api/v1/dicom/tags/1.2.0999", "doctor").status_code == 404  # a leading zero: looked up
    assert api.get("/api/v1/dicom/tags/1.2.3", None).status_code == 401


def test_routes_are_in_the_openapi_document(client: Client) -> None:
    paths = client.get("/api/v1/dicom/openapi.json", "doctor").json()["paths"]
    assert paths["/api/v1/dicom/modify-tags"]["post"]["x-roles"] == sorted(
        ["doctor", "technician", "radiologist", "admin", "ehr-service"])
    assert "nurse" in paths["/api/v1/dicom/read-tags"]["post"]["x-roles"]
    for path in ("/api/v1/dicom/validate", "/api/v1/dicom/deidentify", "/api/v1/dicom/tags/{study_uid}"):
        assert path in paths
