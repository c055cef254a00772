"""The pure rules of photos and documents made DICOM (core/captured_media.py): what the bytes are, whether they
are what they claim, the size limits, a PDF's structure, and the tags Orthanc is given."""

from __future__ import annotations

import re
from datetime import date, datetime

import pytest

from ehr_imaging.core import captured_media as media
from ehr_imaging.core.orders import OrderValidationError
from tests.media_factory import jpeg, pdf, png, png_declaring

LIMITS = {"max_image_bytes": 1024 * 1024, "max_pixels": 1_000_000}


def test_sniff_reads_the_magic_bytes() -> None:
    assert (media.sniff(png()), media.sniff(jpeg()), media.sniff(pdf())) == (media.PNG, media.JPEG, media.PDF)
    assert media.sniff(b"\x00" * 128 + b"DICM") is None and media.sniff(b"") is None


@pytest.mark.parametrize(("content_type", "name", "claimed"), [
    ("image/png", "x.bin", media.PNG), ("image/jpg", "", media.JPEG), ("application/pdf; x=1", "", media.PDF),
    ("application/octet-stream", "scan.PDF", media.PDF), ("application/octet-stream", "p.jpeg", media.JPEG),
    ("application/octet-stream", "notes.txt", None), ("text/plain", "noext", None),
])
def test_the_claim_is_the_content_type_else_the_extension(content_type: str, name: str, claimed: str | None) -> None:
    assert media.claimed_type(content_type, name) == claimed


def test_good_files_pass_with_their_dimensions() -> None:
    assert media.check(png(8, 6), media.PNG, **LIMITS) == media.Media(media.PNG, 8, 6)
    assert media.check(jpeg(), media.JPEG, **LIMITS) == media.Media(media.JPEG, 100, 100)
    assert media.check(pdf(), media.PDF, **LIMITS) == media.Media(media.PDF)
    assert media.Media(media.PNG).sop_class_uid == media.SECONDARY_CAPTURE
    assert media.Media(media.PDF).sop_class_uid == media.ENCAPSULATED_PDF


@pytest.mark.parametrize(("data", "claimed", "message"), [
    (png(), media.JPEG, "not a JPEG image: the content is a PNG image"),
    (pdf(), media.PNG, "not a PNG image: the content is a PDF document"),
    (b"GIF89a....", media.PNG, "the content is none of JPEG, PNG or PDF"),
    (png()[:20], media.PNG, "without its IHDR header"),
    (png_declaring(0, 5), media.PNG, "empty image"),
    (png_declaring(1001, 1000), media.PNG, "1001 x 1000 pixels is over the size limit"),
    (png_declaring(70000, 1), media.PNG, "at most 65535 a side"),
    (png() + b"\x00" * (1024 * 1024), media.PNG, "image larger than 1 MB (MaxImageSizeMb)"),
    (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00\xff\xd9", media.JPEG,
     "without a frame header"),
    (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00\x12\x34\x56\x78", media.JPEG,
     "damaged marker structure"),
    (pdf()[:-30], media.PDF, "without '%%EOF'"),
    (b"%PDF-1.7\n%%EOF\n", media.PDF, "does not parse"),
])
def test_bad_files_are_refused_with_a_reason(data: bytes, claimed: str, message: str) -> None:
    with pytest.raises(media.MediaError, match=re.escape(message)):
        media.check(data, claimed, **LIMITS)


def test_a_pdf_larger_than_the_image_limit_is_not_an_image() -> None:
    big = pdf().replace(b"%PDF-1.4\n", b"%PDF-1.4\n%" + b"x" * (1024 * 1024) + b"\n", 1)
    assert media.check(big, media.PDF, **LIMITS).media_type == media.PDF


def test_patient_fields_are_validated_like_an_orders() -> None:
    patient = media.parse_patient({"mrn": " MRN-1 ", "patient_family_name": "Roe", "patient_given_name": "Rick",
                                   "birth_date": "1961-02-03", "sex": "M"})
    assert patient == media.Patient("MRN-1", "Roe^Rick", date(1961, 2, 3), "M")
    assert media.parse_patient({"mrn": "M2", "patient_family_name": "Roe"}).name == "Roe"
    for fields, named in (({}, "mrn"), ({"mrn": "has space"}, "mrn"), ({"mrn": "M", "sex": "X"}, "sex"),
                          ({"mrn": "M", "birth_date": "1961"}, "birth_date"),
                          ({"mrn": "M", "patient_family_name": "A^B"}, "patient_family_name")):
        with pytest.raises(OrderValidationError) as refused:
            media.parse_patient(fields)
        assert refused.value.field == named


def test_creation_tags_for_a_photo_and_a_document() -> None:
    patient = media.Patient("MRN-1", "Roe^Rick", date(1961, 2, 3), "M")
    new = media.StudyModule("2.25.1", "ACC-1", "Wound care")
    now = datetime(2026, 12, 1, 9, 30, 5)
    photo = media.creation_tags(media.Media(media.PNG, 8, 6), patient, new, series_uid="2.25.2", sop_uid="2.25.3",
                                now=now, title="Clinical photograph")
    assert photo == {
        "SpecificCharacterSet": "ISO_IR 192",
        "PatientID": "MRN-1", "PatientName": "Roe^Rick", "PatientBirthDate": "19610203", "PatientSex": "M",
        "StudyInstanceUID": "2.25.1", "AccessionNumber": "ACC-1", "StudyDescription": "Wound care",
        "StudyDate": "20261201", "StudyTime": "093005", "SeriesInstanceUID": "2.25.2", "SOPInstanceUID": "2.25.3",
        "SeriesNumber": "1", "InstanceNumber": "1", "SeriesDate": "20261201", "SeriesTime": "093005",
        "ContentDate": "20261201", "ContentTime": "093005", "SeriesDescription": "Clinical photograph",
        "SOPClassUID": media.SECONDARY_CAPTURE, "Modality": "XC", "ConversionType": "DI"}
    existing = media.StudyModule("2.25.9", study_date="20261120")  # joins a stored study: its date, no new time
    document = media.creation_tags(media.Media(media.PDF), media.Patient("MRN-2"), existing, series_uid="2.25.4",
                                   sop_uid="2.25.5", now=now, title="Consent")
    assert (document["StudyDate"], "StudyTime" in document, "PatientSex" in document) == ("20261120", False, False)
    assert (document["Modality"], document["ConversionType"], document["DocumentTitle"]) == ("DOC", "SD", "Consent")
    assert "SOPClassUID" not in document  # Orthanc sets Encapsulated PDF Storage itself
    body = media.request_body(document, media.data_uri(media.PDF, "JVBERi0="))
    assert body == {"Tags": document, "Content": "data:application/pdf;base64,JVBERi0=", "Force": True}
