"""core/deidentify.py and core/deid_table.py: the standard's table at every depth, nothing unsafe kept, dates,
UIDs, the file meta and burned-in annotation, on pydicom's real test files and a file full of personal data."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from pydicom import Dataset, dcmread
from pydicom._dicom_dict import DicomDictionary
from pydicom.data import get_testdata_file
from pydicom.datadict import keyword_dict, tag_for_keyword

from ehr_imaging.core import deid_table, tag_changes
from ehr_imaging.core import deidentify as deid
from tests import phi_fixture

CT = "CT_small.dcm"
MR = "MR_small.dcm"
COMPRESSED = ["JPEG-lossy.dcm", "JPEG2000.dcm", "MR_small_RLE.dcm", "SC_rgb_rle.dcm"]
# What the security review found kept (issue 9, item 3).
REVIEW_FINDINGS = ("RequestedProcedureDescription", "AdmittingDate", "AdmittingTime", "DateOfSecondaryCapture",
                   "TimeOfSecondaryCapture", "DateOfLastCalibration", "FrameAcquisitionDateTime",
                   "AcquisitionProtocolDescription", "PatientTelecomInformation",
                   "PatientBirthDateInAlternativeCalendar", "ReviewerName")


def data(name: str) -> bytes:
    path = get_testdata_file(name)
    assert path is not None, name
    return Path(path).read_bytes()


def read(raw: bytes) -> Dataset:
    return dcmread(io.BytesIO(raw))


def saved(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer)
    return buffer.getvalue()


def run(raw: bytes, mapper: deid.UidMapper | None = None, **options: object) -> deid.DeidentifiedFile:
    return deid.deidentify(raw, mapper or deid.UidMapper(), **options)  # type: ignore[arg-type]


# --- the table --------------------------------------------------------------------------------------------


def test_the_table_is_the_standards_from_the_package() -> None:
    assert deid_table.TABLE_PACKAGE_VERSION == "2.1.0"  # the pin in requirements.txt
    assert "2026c" in deid_table.TABLE_SOURCE and "Table E.1-1" in deid_table.TABLE_SOURCE
    assert len(deid_table.TABLE) > 600
    assert set(deid_table.TABLE.values()) <= set(deid_table.CHOSEN)
    for keyword, code in (("PatientName", "Z"), ("PatientID", "Z/D"), ("StudyInstanceUID", "U"),
                          ("InstitutionName", "X/Z/D"), ("ReferencedImageSequence", "X/Z/U*"),
                          ("FrameAcquisitionDateTime", "D"), ("AdmittingDate", "X"), ("ReviewerName", "X/Z")):
        assert deid_table.code_for(tag_for_keyword(keyword) or 0) == code, keyword
    assert deid_table.code_for(0x60023000) == "X" and deid_table.code_for(0x50100010) == "X"  # masked rows
    assert len(deid_table.METHOD) <= 64


def test_safe_texts_are_dicom_keywords_and_not_in_the_table() -> None:
    assert set(keyword_dict) >= deid_table.SAFE_TEXT
    assert not {keyword_dict[k] for k in deid_table.SAFE_TEXT} & set(deid_table.TABLE)


# --- no personal data left, at any depth -------------------------------------------------------------------


def test_the_fixture_carries_personal_data_everywhere() -> None:
    assert phi_fixture.leaks(data(CT)) == []  # the markers do not occur by chance in the real file
    raw = phi_fixture.phi_file()
    found = phi_fixture.leaks(raw)
    assert len(found) > 1000
    ds = read(raw)
    for keyword in (*REVIEW_FINDINGS, "PatientName", "ReferencedImageSequence", "SourceImageSequence",
                    "RequestAttributesSequence", "SharedFunctionalGroupsSequence"):
        assert keyword in ds, keyword
    assert ds.ReferencedImageSequence[0].PatientName and ds.SourceImageSequence[0].PatientID


def test_no_marker_survives_anywhere() -> None:
    result = run(phi_fixture.phi_file())
    assert phi_fixture.leaks(result.data) == []
    ds = read(result.data)
    for keyword in REVIEW_FINDINGS:  # removed, or the table's dummy (FrameAcquisitionDateTime is D)
        assert ds.get(keyword) is None or ds[keyword].value in deid_table.DUMMY_TEMPORAL, keyword
    assert not any(e.tag.is_private for e in ds.iterall())
    assert not [e for e in ds.iterall() if e.tag.group >> 8 in (0x50, 0x60)]  # curves, overlays
    assert phi_fixture.UNKNOWN_PUBLIC_TAG not in ds and "EncryptedAttributesSequence" not in ds
    for name in ("ReferencedImageSequence", "SourceImageSequence"):  # U*: items kept, names emptied
        item = ds[name][0]
        assert item.get("PatientName", "") == "" and item.get("PatientID", "") == ""
        assert "InstitutionName" not in item and item.get("StudyDate", "") == ""  # X; Z
        assert item.ReferencedSOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
        assert str(item.ReferencedSOPInstanceUID).startswith("2.25.")
        assert str(item.ReferencedImageSequence[0].ReferencedSOPInstanceUID).startswith("2.25.")
    assert "RequestAttributesSequence" not in ds  # X
    frame = ds.SharedFunctionalGroupsSequence[0].FrameContentSequence[0]  # not listed: kept, cleaned
    assert frame.get("PatientName", "") == "" and "TextValue" not in frame


def test_dummy_sequences_keep_no_text() -> None:
    ds = read(phi_fixture.phi_file())
    item = Dataset()
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "J0HN", "99LOCAL", "Doe^John, cardiologist"
    item.PersonIdentificationCodeSequence = [code]
    item.PersonName = "Doe^John"
    ds.ContentSequence = [item]  # D: the structure stays, no text in it
    out = read(run(saved(ds)).data)
    kept = out.ContentSequence[0]
    assert kept.PersonName == "ANONYMIZED"
    assert [dict(i) for i in kept.PersonIdentificationCodeSequence] == [{}]


def test_the_original_file_keeps_what_a_viewer_needs() -> None:
    original = read(data(CT))
    ds = read(run(phi_fixture.phi_file()).data)
    assert ds.PixelData == original.PixelData
    for keyword in ("Modality", "Rows", "Columns", "BitsAllocated", "PhotometricInterpretation", "PixelSpacing",
                    "ImagePositionPatient", "ImageOrientationPatient", "RescaleIntercept", "SOPClassUID",
                    "Manufacturer"):
        assert ds[keyword].value == original[keyword].value, keyword


@pytest.mark.parametrize("name", [CT, MR, "MR_small_RLE.dcm", "rtplan.dcm"])
def test_deidentify_applies_the_basic_profile(name: str) -> None:
    original = read(data(name))
    result = run(data(name))
    ds = read(result.data)
    assert ds.PatientIdentityRemoved == "YES"
    assert ds.DeidentificationMethod == deid_table.METHOD and "PS3.15" in ds.DeidentificationMethod
    assert ds.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
    assert ds.LongitudinalTemporalInformationModified == "REMOVED"
    assert ds.PatientName == "ANONYMIZED"
    assert ds.PatientID.startswith("ANON-") and ds.PatientID != original.PatientID
    for keyword in ("PatientBirthDate", "StudyDate", "StudyTime", "AccessionNumber", "ReferringPhysicianName"):
        assert ds.get(keyword, "") == "", keyword
    for keyword in ("InstitutionName", "InstitutionAddress", "StationName", "OperatorsName", "StudyDescription",
                    "SeriesDate", "AcquisitionDate", "ContentDate", "PatientAge", "PatientWeight", "OtherPatientIDs"):
        assert ds.get(keyword, "") == "", keyword
    assert list(deid.temporal_values(ds)) == []
    assert not any(e.tag.is_private for e in ds.iterall())
    assert set(ds.file_meta.dir()) <= {"FileMetaInformationGroupLength", "FileMetaInformationVersion",
                                       "MediaStorageSOPClassUID", "MediaStorageSOPInstanceUID",
                                       "TransferSyntaxUID", "ImplementationClassUID", "ImplementationVersionName"}
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        assert ds[keyword].value != original[keyword].value
        assert str(ds[keyword].value).startswith("2.25.")
    assert ds.SOPClassUID == original.SOPClassUID
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert ds.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
    assert result.sop_instance_uid == ds.SOPInstanceUID and result.burned_in_annotation == deid.UNKNOWN


@pytest.mark.parametrize("name", COMPRESSED)
def test_compressed_pixels_are_kept_byte_for_byte(name: str) -> None:
    original = read(data(name))
    ds = read(run(data(name), accept_burned_in_annotation=True).data)
    assert ds.PixelData == original.PixelData
    assert ds.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID


def test_a_date_left_behind_is_never_called_removed(monkeypatch: pytest.MonkeyPatch) -> None:
    # A date that the table does not list (e.g. a retired one), were it ever thought safe:
    keyword = next(entry[4] for tag, entry in DicomDictionary.items()
                   if entry[0] == "DA" and tag not in deid_table.TABLE and entry[4])
    monkeypatch.setattr(deid_table, "SAFE_TEXT", deid_table.SAFE_TEXT | {keyword})
    ds = read(data(CT))
    setattr(ds, keyword, "20260101")
    with pytest.raises(deid.DeidentificationError, match=keyword):
        run(saved(ds))


# --- UIDs ---------------------------------------------------------------------------------------------------


def test_uids_are_consistent_within_a_request_only() -> None:
    mapper = deid.UidMapper()
    first = read(data(MR))
    second = read(data(MR))
    second.SOPInstanceUID = first.SOPInstanceUID + ".2"
    second.file_meta.MediaStorageSOPInstanceUID = second.SOPInstanceUID
    second.ReferencedImageSequence = [Dataset()]
    second.ReferencedImageSequence[0].ReferencedSOPClassUID = first.SOPClassUID
    second.ReferencedImageSequence[0].ReferencedSOPInstanceUID = first.SOPInstanceUID
    a = read(run(data(MR), mapper).data)
    b = read(run(saved(second), mapper).data)
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID", "PatientID"):
        assert a[keyword].value == b[keyword].value, keyword
    assert a.SOPInstanceUID != b.SOPInstanceUID
    assert b.ReferencedImageSequence[0].ReferencedSOPInstanceUID == a.SOPInstanceUID  # nested: same mapping
    other = read(run(data(MR)).data)
    assert other.StudyInstanceUID != a.StudyInstanceUID  # another request: other UIDs
    assert read(run(data(MR), mapper).data).SOPInstanceUID == a.SOPInstanceUID


def test_uids_inside_sequences_are_mapped_and_class_uids_kept() -> None:
    mapper = deid.UidMapper(b"fixed salt")
    original = read(data("rtplan.dcm"))
    ds = read(run(data("rtplan.dcm"), mapper).data)
    ref = original.ReferencedStructureSetSequence[0]
    new_ref = ds.ReferencedStructureSetSequence[0]
    assert new_ref.ReferencedSOPClassUID == ref.ReferencedSOPClassUID
    assert new_ref.ReferencedSOPInstanceUID == mapper.uid(ref.ReferencedSOPInstanceUID)


def test_given_patient_values_are_checked_like_modify() -> None:
    ds = read(run(data(CT), patient_id="RESEARCH-7", patient_name="SUBJECT^7").data)
    assert (ds.PatientID, str(ds.PatientName)) == ("RESEARCH-7", "SUBJECT^7")
    with pytest.raises(tag_changes.TagChangeError):
        run(data(CT), patient_id="X" * 65)


# --- burned-in annotation ------------------------------------------------------------------------------------


def with_attributes(name: str, **values: str) -> bytes:
    ds = read(data(name))
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return saved(ds)


@pytest.mark.parametrize(("raw", "verdict"), [
    (lambda: with_attributes(CT, BurnedInAnnotation="YES"), "YES"),
    (lambda: data("color3d_jpeg_baseline.dcm"), "UNKNOWN"),  # US without the attribute
    (lambda: data("SC_rgb_rle.dcm"), "UNKNOWN"),  # a secondary capture without it
])
def test_burned_in_annotation_is_refused_unless_accepted(raw: object, verdict: str) -> None:
    source = raw()  # type: ignore[operator]
    with pytest.raises(deid.BurnedInAnnotationError, match="accept_burned_in_annotation") as refused:
        run(source)
    assert refused.value.burned_in_annotation == verdict
    accepted = run(source, accept_burned_in_annotation=True)
    assert accepted.burned_in_annotation == verdict
    assert any("remains there" in note for note in accepted.warnings)
    assert read(accepted.data).get("BurnedInAnnotation") == (None if verdict == "UNKNOWN" else verdict)


def test_files_that_say_no_or_usually_have_none_pass() -> None:
    assert run(with_attributes("color3d_jpeg_baseline.dcm", BurnedInAnnotation="NO")).burned_in_annotation == "NO"
    assert run(data(CT)).burned_in_annotation == "UNKNOWN"  # CT: no reason to refuse
    assert run(data(CT)).warnings == []


def test_zip_files_holds_every_file() -> None:
    archive = zipfile.ZipFile(io.BytesIO(deid.zip_files([("a.dcm", b"1"), ("b.dcm", b"22")])))
    assert archive.namelist() == ["a.dcm", "b.dcm"]
    assert archive.read("b.dcm") == b"22"
