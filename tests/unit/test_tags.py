"""core/dicom_file, file_validation, tag_reading and tag_changes on pydicom's real test files: reading,
validation, tag reading, tag changes (de-identification: elsewhere)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from pydicom import Dataset, dcmread
from pydicom.data import get_testdata_file

from ehr_imaging.core import dicom_file, file_validation, study_tags, tag_changes, tag_reading

CT = "CT_small.dcm"
MR = "MR_small.dcm"
COMPRESSED = ["JPEG-lossy.dcm", "JPEG2000.dcm", "MR_small_RLE.dcm", "SC_rgb_rle.dcm"]
UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "FrameOfReferenceUID")


def data(name: str) -> bytes:
    path = get_testdata_file(name)
    assert path is not None, name
    return Path(path).read_bytes()


def no_preamble(name: str) -> bytes:
    """A bare dataset (no preamble, no 'DICM', no file meta), as some old archives export."""
    buffer = io.BytesIO()
    Dataset(dcmread(io.BytesIO(data(name)))).save_as(buffer, implicit_vr=True, little_endian=True)
    return buffer.getvalue()


def truncated(name: str) -> bytes:
    whole = data(name)
    return whole[: len(whole) * 3 // 4]


def read(raw: bytes) -> Dataset:
    return dcmread(io.BytesIO(raw))


# --- validate -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [CT, MR, *COMPRESSED])
def test_real_files_are_valid_with_their_transfer_syntax(name: str) -> None:
    source = read(data(name))
    report = file_validation.validate(data(name))
    assert report["is_valid"] is True, report
    assert report["errors"] == []
    assert report["transfer_syntax"] == str(source.file_meta.TransferSyntaxUID)
    assert report["sop_class_uid"] == str(source.SOPClassUID)
    assert report["modality"] == str(source.Modality)
    assert report["has_pixel_data"] is True


def test_validate_warns_about_missing_recommended_attributes() -> None:
    report = file_validation.validate(data(CT))  # CT_small has an empty AccessionNumber
    assert "AccessionNumber is missing or empty" in report["warnings"]
    assert not any("PatientID" in w for w in report["warnings"])


def test_a_file_without_preamble_is_valid_with_warnings() -> None:
    report = file_validation.validate(no_preamble(CT))
    assert report["is_valid"] is True
    assert "no 128-byte preamble and 'DICM' prefix" in report["warnings"]
    assert any("no file meta" in w for w in report["warnings"])
    assert report["transfer_syntax"] == "1.2.840.10008.1.2"  # implicit VR little endian, as written


@pytest.mark.parametrize("name", [CT, "JPEG2000.dcm", "MR_small_RLE.dcm"])
def test_truncated_files_are_invalid(name: str) -> None:
    report = file_validation.validate(truncated(name))
    assert report["is_valid"] is False
    assert any("truncated" in e for e in report["errors"]), report["errors"]


@pytest.mark.parametrize("raw", [b"", b"This is not a DICOM file, whatever its name says.\n", bytes(range(256)) * 8])
def test_not_dicom_is_invalid(raw: bytes) -> None:
    report = file_validation.validate(raw)
    assert report["is_valid"] is False
    assert report["errors"] and "DICOM" in report["errors"][0]
    assert report["transfer_syntax"] is None and report["has_pixel_data"] is False


def test_missing_and_invalid_uids_are_errors() -> None:
    ds = read(data(MR))
    del ds.StudyInstanceUID
    ds.SeriesInstanceUID = "1.2.abc"
    del ds.SOPClassUID
    buffer = io.BytesIO()
    ds.save_as(buffer)
    report = file_validation.validate(buffer.getvalue())
    assert report["is_valid"] is False
    assert "StudyInstanceUID is missing" in report["errors"]
    assert "SOPClassUID is missing" in report["errors"]
    assert any(e.startswith("SeriesInstanceUID is not a valid UID") for e in report["errors"])


def test_a_leading_zero_makes_a_uid_an_error_of_validation() -> None:
    """Validation judges new content by PS3.5 in full (dicom_values.is_conformant_uid)."""
    ds = read(data(MR))
    ds.SeriesInstanceUID = "1.2.840.0113654.2.70.1"
    buffer = io.BytesIO()
    ds.save_as(buffer)
    report = file_validation.validate(buffer.getvalue())
    assert report["is_valid"] is False
    assert report["errors"] == ["SeriesInstanceUID is not a valid UID: '1.2.840.0113654.2.70.1'"]


def test_a_bare_dataset_with_non_conformant_uids_is_still_read_as_dicom() -> None:
    """Whether bytes are DICOM is told by any UID (is_uid); that they conform is validation's question."""
    ds = read(data(CT))
    for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID"):
        setattr(ds, keyword, "1.02.3")
    buffer = io.BytesIO()
    Dataset(ds).save_as(buffer, implicit_vr=True, little_endian=True)
    parsed = dicom_file.parse(buffer.getvalue())
    assert not parsed.has_preamble and str(parsed.dataset.SOPInstanceUID) == "1.02.3"
    report = file_validation.validate(buffer.getvalue())
    assert "StudyInstanceUID is not a valid UID: '1.02.3'" in report["errors"]
    assert "SOPClassUID is not a valid UID: '1.02.3'" in report["errors"]


def test_odd_values_are_warnings() -> None:
    ds = read(data(MR))
    ds.PatientSex = "X"
    ds.StudyDate = "20261399"
    buffer = io.BytesIO()
    ds.save_as(buffer)
    report = file_validation.validate(buffer.getvalue())
    assert report["is_valid"] is True
    assert any("PatientSex" in w for w in report["warnings"])
    assert any("StudyDate is not a DICOM date" in w for w in report["warnings"])


# --- read tags ------------------------------------------------------------------------------------------


def test_main_tags_are_the_seed_keys_as_text() -> None:
    found = tag_reading.main_tags(dicom_file.parse(data(CT)).dataset)
    assert list(found) == list(tag_reading.MAIN_TAGS)
    source = read(data(CT))
    assert found["PatientID"] == source.PatientID
    assert found["PatientName"] == str(source.PatientName)
    assert found["StudyInstanceUID"] == source.StudyInstanceUID
    assert found["Modality"] == "CT"
    assert found["Rows"] == "128"
    assert found["TransferSyntaxUID"] == "1.2.840.10008.1.2.1"
    assert found["PerformingPhysicianName"] is None  # absent
    assert found["AccessionNumber"] == ""  # present, empty


def test_all_tags_summarize_pixel_data_and_show_private_tags_by_number() -> None:
    found = tag_reading.all_tags(dicom_file.parse(data(CT)).dataset)
    assert found["TransferSyntaxUID"] == "1.2.840.10008.1.2.1"  # file meta included
    assert found["PixelData"] == "<pixel data: 32768 bytes>"
    assert found["ImageType"] == "ORIGINAL\\PRIMARY\\AXIAL"
    assert found["(0009,0010)"] == "GEMS_IDEN_01"  # a private creator
    assert all(isinstance(v, str | list) for v in found.values())


def test_all_tags_render_sequences_as_lists() -> None:
    found = tag_reading.all_tags(dicom_file.parse(data("rtplan.dcm")).dataset)
    beams = found["BeamSequence"]
    assert isinstance(beams, list) and beams and isinstance(beams[0], dict)
    assert "BeamName" in beams[0]


def test_reading_refuses_truncated_and_garbage() -> None:
    with pytest.raises(dicom_file.DicomFileError, match="incomplete"):
        dicom_file.read_complete(truncated(CT))
    with pytest.raises(dicom_file.DicomFileError, match="not a DICOM file"):
        dicom_file.read_complete(b"hello")


# --- modify ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [CT, MR, *COMPRESSED])
def test_modify_changes_only_the_asked_tags_and_keeps_uids_syntax_and_pixels(name: str) -> None:
    original = read(data(name))
    changes = {"PatientID": "MRN-42", "PatientName": "DOE^JANE", "PatientBirthDate": "19800102",
               "PatientSex": "F", "AccessionNumber": "ACC42", "StudyDate": "20260115", "StudyDescription": "CT HEAD"}
    result = tag_changes.modify_tags(io.BytesIO(data(name)), changes)
    modified = read(result.data)
    for keyword, value in changes.items():
        assert str(modified.data_element(keyword).value) == value  # type: ignore[union-attr]
    for keyword in UIDS:
        assert modified.get(keyword) == original.get(keyword)
    assert modified.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
    assert modified.PixelData == original.PixelData
    assert modified.file_meta.MediaStorageSOPInstanceUID == original.file_meta.MediaStorageSOPInstanceUID
    assert result.new == changes
    assert result.original["PatientID"] == original.PatientID
    assert result.sop_instance_uid == original.SOPInstanceUID
    untouched = {e.keyword for e in original if e.keyword and e.keyword not in changes and e.VR != "SQ"}
    for keyword in untouched:
        assert modified.get(keyword) == original.get(keyword), keyword


def test_modify_can_remove_private_tags() -> None:
    result = tag_changes.modify_tags(data(CT), {}, remove_private_tags=True)
    modified = read(result.data)
    assert result.private_tags_removed > 0
    assert not any(e.tag.is_private for e in modified)
    assert modified.PixelData == read(data(CT)).PixelData


def test_modify_keeps_a_bare_dataset_bare() -> None:
    result = tag_changes.modify_tags(no_preamble(MR), {"PatientID": "X"})
    assert result.data[128:132] != b"DICM"
    assert dicom_file.parse(result.data).dataset.PatientID == "X"


def test_an_empty_value_empties_the_tag() -> None:
    result = tag_changes.modify_tags(data(CT), {"PatientBirthDate": ""})
    assert read(result.data).PatientBirthDate == ""


@pytest.mark.parametrize(("changes", "field"), [
    ({"StudyInstanceUID": "1.2.3"}, "StudyInstanceUID"),
    ({"SOPInstanceUID": "1.2.3"}, "SOPInstanceUID"),
    ({"InstitutionName": "X"}, "InstitutionName"),
    ({"PatientBirthDate": "1980-01-02"}, "PatientBirthDate"),
    ({"StudyDate": "20260230"}, "StudyDate"),
    ({"PatientSex": "m"}, "PatientSex"),
    ({"PatientSex": "X"}, "PatientSex"),
    ({"AccessionNumber": "A" * 17}, "AccessionNumber"),
    ({"PatientID": "A" * 65}, "PatientID"),
    ({"PatientID": "A\\B"}, "PatientID"),
    ({"StudyDescription": "line\nbreak"}, "StudyDescription"),
    ({"PatientName": "A^B^C^D^E^F"}, "PatientName"),
    ({"PatientName": "A=B=C=D"}, "PatientName"),
    ({"StudyDate": "２０２６０１０２"}, "StudyDate"),  # digits, but not ASCII ones
    ({"PatientName": "X" * 65}, "PatientName"),
    ({"PatientID": 42}, "PatientID"),
    ({}, "changes"),
])
def test_bad_changes_are_refused_naming_the_field(changes: dict[str, object], field: str) -> None:
    with pytest.raises(tag_changes.TagChangeError) as error:
        tag_changes.modify_tags(data(CT), changes)
    assert error.value.field == field
    assert str(error.value).startswith(f"{field}:")


def test_uid_changes_say_uids_are_never_changed() -> None:
    with pytest.raises(tag_changes.TagChangeError, match="UIDs are never changed"):
        tag_changes.check_changes({"StudyInstanceUID": "1.2.3"})


# --- a stored study -------------------------------------------------------------------------------------


def test_study_tags_from_orthanc_answers() -> None:
    study = {"ID": "abc", "MainDicomTags": {"StudyInstanceUID": "1.2.3", "StudyDate": "20260101",
                                            "AccessionNumber": "A1"},
             "PatientMainDicomTags": {"PatientID": "P1", "PatientName": "DOE^J"}}
    series = [
        {"ID": "s2", "MainDicomTags": {"SeriesInstanceUID": "1.2.3.2", "SeriesNumber": "2", "Modality": "mr"},
         "Instances": ["i1", "i2"]},
        {"ID": "s1", "MainDicomTags": {"SeriesInstanceUID": "1.2.3.1", "SeriesNumber": "1", "Modality": "CT"},
         "Instances": ["i3"]},
    ]
    found = study_tags.study_tags(study, series)
    assert found["study_instance_uid"] == "1.2.3" and found["orthanc_study_id"] == "abc"
    assert found["patient"]["PatientID"] == "P1" and found["patient"]["PatientSex"] is None
    assert found["study"]["AccessionNumber"] == "A1"
    assert [s["SeriesNumber"] for s in found["series"]] == ["1", "2"]
    assert found["series"][1]["number_of_instances"] == 2
    assert (found["number_of_series"], found["number_of_instances"], found["modalities"]) == (2, 3, ["CT", "MR"])
