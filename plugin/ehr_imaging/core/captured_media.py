"""Photos and documents that become DICOM (``upload-image``, offline sync): what the bytes are, whether they
are what they claim, and the tags Orthanc's ``/tools/create-dicom`` is given (pure).

A JPEG or PNG becomes a **Secondary Capture** image (SOP class 1.2.840.10008.5.1.4.1.1.7, Modality XC,
ConversionType DI), not a VL Photographic Image: VL Photographic requires acquisition and equipment modules
(acquisition context, the camera's attributes, lighting) that a photo sent through the EHR does not come with;
Orthanc would write an object that claims a conformance it lacks. Secondary Capture asks only for what we
know, and every viewer (OHIF, Orthanc Explorer) shows it. A PDF becomes an **Encapsulated PDF** (Orthanc
sets its SOP class; Modality DOC, ConversionType SD: scanned paper is what clinics send).

The checks are structural and cheap, before Orthanc decodes anything: the magic bytes of the type claimed,
the image's dimensions from its header (a decompression bomb is refused before it is decoded), a PDF's
``%PDF-`` header and ``%%EOF`` trailer. Orthanc's own refusal (it decodes the image, checks the PDF) is the
last word.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from .dicom_values import SEXES, to_da, to_tm
from .orders import _choice, _date, _text

JPEG, PNG, PDF = "image/jpeg", "image/png", "application/pdf"
MEDIA_TYPES = (JPEG, PNG, PDF)
_EXTENSIONS = {".jpg": JPEG, ".jpeg": JPEG, ".jpe": JPEG, ".png": PNG, ".pdf": PDF}
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
SOP_CLASSES = {JPEG: SECONDARY_CAPTURE, PNG: SECONDARY_CAPTURE, PDF: ENCAPSULATED_PDF}
MAX_DICOM_DIMENSION = 65535  # Rows and Columns are US: no DICOM image is wider or taller
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PDF_SEARCH = 1024  # PDF readers look for the header in the first 1024 bytes and the trailer in the last


class MediaError(ValueError):
    """The bytes are not an acceptable photo or document (the request is answered 400 with this detail)."""


@dataclass(frozen=True)
class Media:
    media_type: str
    width: int | None = None  # images only
    height: int | None = None

    @property
    def is_image(self) -> bool:
        return self.media_type != PDF

    @property
    def sop_class_uid(self) -> str:
        return SOP_CLASSES[self.media_type]


def sniff(data: bytes) -> str | None:
    """The media type the bytes are, by their magic bytes (JPEG SOI, PNG signature, ``%PDF-``), or None."""
    if data.startswith(b"\xff\xd8\xff"):
        return JPEG
    if data.startswith(_PNG_SIGNATURE):
        return PNG
    if b"%PDF-" in data[:_PDF_SEARCH]:
        return PDF
    return None


def claimed_type(content_type: str, file_name: str) -> str | None:
    """What the sender says the file is: its Content-Type when it names one of ours, else its name's extension."""
    kind = content_type.split(";")[0].strip().lower()
    if kind == "image/jpg":
        kind = JPEG
    if kind in MEDIA_TYPES:
        return kind
    dot = file_name.rfind(".")
    return _EXTENSIONS.get(file_name[dot:].lower()) if dot >= 0 else None


def check(data: bytes, claimed: str, *, max_image_bytes: int, max_pixels: int) -> Media:
    """The bytes checked against what they claim to be; ``MediaError`` says why they are refused."""
    found = sniff(data)
    if found != claimed:
        what = f"a {_NAMES[found]}" if found else "none of JPEG, PNG or PDF"
        raise MediaError(f"not a {_NAMES[claimed]}: the content is {what} (by its first bytes)")
    if claimed == PDF:
        _check_pdf(data)
        return Media(PDF)
    if len(data) > max_image_bytes:
        raise MediaError(f"image larger than {max_image_bytes // (1024 * 1024)} MB (MaxImageSizeMb)")
    width, height = _png_size(data) if claimed == PNG else _jpeg_size(data)
    if width < 1 or height < 1:
        raise MediaError(f"{_NAMES[claimed]} declares an empty image ({width} x {height})")
    if width > MAX_DICOM_DIMENSION or height > MAX_DICOM_DIMENSION or width * height > max_pixels:
        raise MediaError(f"image of {width} x {height} pixels is over the size limit ({max_pixels} pixels,"
                         f" MaxImagePixels; at most {MAX_DICOM_DIMENSION} a side)")
    return Media(claimed, width, height)


_NAMES = {JPEG: "JPEG image", PNG: "PNG image", PDF: "PDF document", None: "file"}


def _png_size(data: bytes) -> tuple[int, int]:
    """Width and height from the IHDR chunk, which must come first."""
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise MediaError("PNG image without its IHDR header (truncated or damaged)")
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # start of frame; not DHT, JPG, DAC


def _jpeg_size(data: bytes) -> tuple[int, int]:
    """Width and height from the first start-of-frame segment (markers walked from SOI)."""
    at = 2
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            raise MediaError("JPEG image with a damaged marker structure")
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            at += 2
            continue
        (length,) = struct.unpack(">H", data[at + 2:at + 4])
        if length < 2:
            raise MediaError("JPEG image with a damaged marker structure")
        if marker in _SOF_MARKERS:
            if at + 9 > len(data):
                break
            height, width = struct.unpack(">HH", data[at + 5:at + 9])
            return int(width), int(height)
        if marker == 0xDA:  # start of scan before any frame header
            break
        at += 2 + length
    raise MediaError("JPEG image without a frame header (truncated or damaged)")


def _check_pdf(data: bytes) -> None:
    if not data[:_PDF_SEARCH].lstrip(b"\x00\t\n\f\r ").startswith(b"%PDF-"):
        raise MediaError("PDF document that does not start with '%PDF-'")
    if b"%%EOF" not in data[-_PDF_SEARCH:]:
        raise MediaError("PDF document without '%%EOF' at its end (truncated?)")
    if b"startxref" not in data[-_PDF_SEARCH:] or b"obj" not in data:
        raise MediaError("PDF document without objects or a cross-reference ('startxref'): it does not parse")


# --- the tags the new instance gets -------------------------------------------------------------------------

@dataclass(frozen=True)
class Patient:
    """The patient module of the new instance (from the order, the study it joins, or the request's fields)."""

    patient_id: str  # DICOM PatientID: the MRN
    name: str = ""  # DICOM PN, Family^Given
    birth_date: date | None = None
    sex: str | None = None


@dataclass(frozen=True)
class StudyModule:
    """The study the instance belongs to: a new one (our UIDs, today) or the one the order is linked to."""

    study_instance_uid: str
    accession_number: str = ""
    description: str = ""
    referring_physician: str = ""
    study_date: str = ""  # DA, as the existing study has it; "" for a new study: today
    study_time: str = ""
    study_id: str = ""


def parse_patient(fields: dict[str, Any]) -> Patient:
    """The request's patient fields (no order given): ``mrn`` required; ``OrderValidationError`` names a bad one."""
    mrn = _text(fields, "mrn", 64, required=True, identifier=True) or ""
    family = _text(fields, "patient_family_name", 64, name=True)
    given = _text(fields, "patient_given_name", 64, name=True)
    return Patient(mrn, f"{family or ''}^{given}" if given else family or "", _date(fields, "birth_date"),
                   _choice(fields, "sex", SEXES))


def parse_text(fields: dict[str, Any], name: str, max_length: int, *, identifier: bool = False) -> str:
    """An optional text field as DICOM can hold it ("" when absent); ``OrderValidationError`` when not."""
    return _text(fields, name, max_length, identifier=identifier) or ""


def creation_tags(media: Media, patient: Patient, study: StudyModule, *, series_uid: str, sop_uid: str,
                  now: datetime, title: str) -> dict[str, str]:
    """The ``Tags`` of ``/tools/create-dicom`` (with ``Force``: our UIDs): patient, study, a series of its own."""
    today, at = to_da(now.date()), to_tm(now)
    tags = {
        "SpecificCharacterSet": "ISO_IR 192",  # UTF-8: names in any script, as the EHR sends them
        "PatientID": patient.patient_id, "PatientName": patient.name,
        "PatientBirthDate": to_da(patient.birth_date) if patient.birth_date else "",
        "PatientSex": patient.sex or "",
        "StudyInstanceUID": study.study_instance_uid, "AccessionNumber": study.accession_number,
        "StudyDescription": study.description, "ReferringPhysicianName": study.referring_physician,
        "StudyDate": study.study_date or today, "StudyTime": study.study_time or (at if not study.study_date else ""),
        "StudyID": study.study_id,
        "SeriesInstanceUID": series_uid, "SOPInstanceUID": sop_uid, "SeriesNumber": "1", "InstanceNumber": "1",
        "SeriesDate": today, "SeriesTime": at, "ContentDate": today, "ContentTime": at,
        "SeriesDescription": title,
    }
    if media.is_image:
        tags |= {"SOPClassUID": SECONDARY_CAPTURE, "Modality": "XC", "ConversionType": "DI"}
    else:
        tags |= {"Modality": "DOC", "ConversionType": "SD", "DocumentTitle": title}
    return {keyword: value for keyword, value in tags.items() if value}


def data_uri(media_type: str, encoded: str) -> str:
    """``Content`` of ``/tools/create-dicom``: the bytes (already base64) as a data URI."""
    return f"data:{media_type};base64,{encoded}"


def request_body(tags: dict[str, str], content: str) -> dict[str, Any]:
    return {"Tags": tags, "Content": content, "Force": True}  # Force: Orthanc takes our UIDs

