"""DICOM files the EHR hands us without storing them: validate, read tags, modify tags (pure).

pydicom does the DICOM work. Nothing here touches Orthanc, the database or the file system: functions take the
file's bytes (or a binary stream) and return data or new bytes. Pixel data is never decoded (transfer syntax kept).
"""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import IO, Any

from pydicom import Dataset, config, dcmread
from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag, Tag
from pydicom.uid import UID
from pydicom.valuerep import validate_value

from .dicom_values import SEXES, is_conformant_uid, is_pn_shape, is_uid, parse_da
from .study_tags import study_tags as study_tags  # the main tags of a stored study, from Orthanc's JSON

Source = bytes | IO[bytes]

# The seed's "main tags" (phase5a DicomTagService.read_tags), plus what a viewer or an upload screen needs
# to know about the image itself. Absent tags are null; present but empty ones "".
MAIN_TAGS: tuple[str, ...] = (
    "PatientID", "PatientName", "PatientBirthDate", "PatientSex", "PatientAge",
    "StudyInstanceUID", "StudyDate", "StudyTime", "StudyDescription", "AccessionNumber",
    "SeriesInstanceUID", "SeriesNumber", "SeriesDescription", "Modality",
    "SOPInstanceUID", "InstanceNumber",
    "InstitutionName", "InstitutionAddress", "ReferringPhysicianName", "PerformingPhysicianName",
    "SOPClassUID", "TransferSyntaxUID", "Rows", "Columns", "NumberOfFrames",
)
REQUIRED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")
RECOMMENDED = ("PatientID", "PatientName", "StudyDate", "Modality", "AccessionNumber")
PIXEL_TAGS = frozenset({Tag(0x7FE0, 0x0010), Tag(0x7FE0, 0x0008), Tag(0x7FE0, 0x0009)})
BINARY_VRS = frozenset({"OB", "OW", "OD", "OF", "OL", "OV", "UN", "OB or OW", "US or OW"})
SHOWN_BINARY_BYTES = 64  # smaller binary values are shown as hex, larger ones summarized
SHOWN_TEXT_CHARACTERS = 1024
UNDEFINED_LENGTH = 0xFFFFFFFF
_FORBIDDEN_TEXT = re.compile(r"[\\\x00-\x1f\x7f]")  # a backslash separates values; control characters


class DicomFileError(ValueError):
    """The bytes are not a readable, complete DICOM file."""


class TagChangeError(ValueError):
    """A requested tag change is not allowed or its value is invalid; ``field`` names it (422)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


# --- reading ------------------------------------------------------------------------------------------


@dataclass
class ParsedFile:
    dataset: Dataset
    has_preamble: bool
    has_file_meta: bool
    problems: list[str] = field(default_factory=list)  # why the file is incomplete (truncation)
    read_warnings: list[str] = field(default_factory=list)  # what pydicom noticed while reading

    @property
    def transfer_syntax(self) -> str | None:
        uid = self.dataset.file_meta.get("TransferSyntaxUID") if self.has_file_meta else None
        if uid:
            return str(uid)
        # A bare dataset: pydicom tells the encoding it found.
        implicit, little = self.dataset.original_encoding
        if implicit is None:
            return None
        if implicit:
            return "1.2.840.10008.1.2"
        return "1.2.840.10008.1.2.1" if little else "1.2.840.10008.1.2.2"


def parse(source: Source) -> ParsedFile:
    """Read a DICOM file (Part 10, or a bare dataset without preamble and file meta); raise
    ``DicomFileError`` when it is not DICOM. Truncation is reported in ``problems``, not raised."""
    data = source if isinstance(source, bytes) else source.read()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            try:
                ds = dcmread(io.BytesIO(data))
            except InvalidDicomError:
                # No preamble/'DICM': old archives export bare datasets. Accept one only if it looks like DICOM.
                ds = dcmread(io.BytesIO(data), force=True)
                if not _looks_like_dicom(ds):
                    raise DicomFileError("not a DICOM file") from None
        except DicomFileError:
            raise
        except Exception as exc:  # noqa: BLE001 - pydicom raises many types on garbage
            raise DicomFileError(f"not a readable DICOM file ({type(exc).__name__}: {exc})") from None
    messages = list(dict.fromkeys(str(w.message) for w in caught))
    parsed = ParsedFile(
        dataset=ds,
        has_preamble=getattr(ds, "preamble", None) is not None,
        has_file_meta=len(getattr(ds, "file_meta", None) or ()) > 0,
        problems=[f"file truncated: {m}" for m in messages if "End of file" in m] + _truncation(ds),
        read_warnings=[m for m in messages if "End of file" not in m],
    )
    if len(ds) == 0 and not parsed.problems:
        raise DicomFileError("not a DICOM file: no data elements")
    return parsed


def read_complete(source: Source) -> ParsedFile:
    """``parse``, refusing truncated files (what read-tags, modify-tags and deidentify accept)."""
    parsed = parse(source)
    if parsed.problems:
        raise DicomFileError(f"incomplete DICOM file: {parsed.problems[0]}")
    return parsed


def _looks_like_dicom(ds: Dataset) -> bool:
    """A forced read of random bytes yields a few junk elements: demand a SOP or study UID. Any UID will do
    (``is_uid``, leading zeros too): the question is whether this is DICOM, not whether it conforms."""
    try:
        return any(is_uid(str(ds.get(keyword) or "").strip())
                   for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID"))
    except Exception:  # noqa: BLE001 - converting junk raises anything
        return False


def _truncation(ds: Dataset) -> list[str]:
    """pydicom stops quietly at the end of the bytes: a value shorter than its declared length, or native
    pixel data shorter than its rows x columns x frames, means the file was cut."""
    problems: list[str] = []
    for raw in ds.elements():
        if isinstance(raw, RawDataElement) and raw.length != UNDEFINED_LENGTH and raw.value is not None \
                and len(raw.value) < raw.length:
            name = f"{_tag_text(raw.tag)} {keyword_for_tag(raw.tag)}".strip()
            problems.append(f"file truncated: {name} has {len(raw.value)} of {raw.length} bytes")
    if not problems and "PixelData" in ds and not _is_encapsulated(ds):
        try:
            expected = _native_pixel_bytes(ds)
            actual = len(ds.PixelData)
        except Exception:  # noqa: BLE001 - missing or odd image attributes: nothing to compare with
            return problems
        if actual < expected:
            problems.append(f"pixel data truncated: {actual} of {expected} bytes")
    return problems


def _native_pixel_bytes(ds: Dataset) -> int:
    bits = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1)) * int(ds.BitsAllocated)
    bits *= int(ds.get("NumberOfFrames", 1) or 1)
    return (bits + 7) // 8


def _is_encapsulated(ds: Dataset) -> bool:
    uid = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    return bool(uid) and UID(str(uid)).is_encapsulated


def _tag_text(tag: BaseTag | int) -> str:
    tag = Tag(tag)
    return f"({tag.group:04X},{tag.element:04X})"


# --- validation -----------------------------------------------------------------------------------------


def validate(source: Source) -> dict[str, Any]:
    """``{"is_valid","errors","warnings","transfer_syntax","sop_class_uid","modality","has_pixel_data"}``:
    errors make a file unfit for the archive (unreadable, truncated, missing or invalid UIDs); warnings are
    what the EHR should know (missing patient or study attributes, no preamble, odd values)."""
    report: dict[str, Any] = {"is_valid": False, "errors": [], "warnings": [], "transfer_syntax": None,
                              "sop_class_uid": None, "modality": None, "has_pixel_data": False}
    try:
        parsed = parse(source)
    except DicomFileError as exc:
        report["errors"].append(str(exc))
        return report
    ds = parsed.dataset
    errors: list[str] = list(parsed.problems)
    notes: list[str] = []
    for keyword in REQUIRED_UIDS:
        value = safe_text(ds, keyword)
        if not value:
            errors.append(f"{keyword} is missing")
        elif not is_conformant_uid(value):
            errors.append(f"{keyword} is not a valid UID: {value!r}")
    meta = ds.file_meta if parsed.has_file_meta else Dataset()
    syntax = parsed.transfer_syntax
    if parsed.has_file_meta and not syntax:
        errors.append("TransferSyntaxUID is missing from the file meta information")
    elif syntax and not is_conformant_uid(syntax):
        errors.append(f"TransferSyntaxUID is not a valid UID: {syntax!r}")
    elif syntax and UID(syntax).name == syntax:
        notes.append(f"unknown transfer syntax {syntax}")
    for meta_keyword, keyword in (("MediaStorageSOPInstanceUID", "SOPInstanceUID"),
                                  ("MediaStorageSOPClassUID", "SOPClassUID")):
        value = safe_text(ds, keyword)
        if meta.get(meta_keyword) and value and str(meta.get(meta_keyword)) != value:
            notes.append(f"{meta_keyword} differs from {keyword}")
    if not parsed.has_preamble:
        notes.append("no 128-byte preamble and 'DICM' prefix")
    if not parsed.has_file_meta:
        notes.append("no file meta information (group 0002): a bare dataset, transfer syntax guessed")
    for keyword in RECOMMENDED:
        if not safe_text(ds, keyword):
            notes.append(f"{keyword} is missing or empty")
    for keyword in ("StudyDate", "PatientBirthDate"):
        value = safe_text(ds, keyword)
        if value and parse_da(value) is None:
            notes.append(f"{keyword} is not a DICOM date (YYYYMMDD): {value!r}")
    sex = safe_text(ds, "PatientSex")
    if sex and sex not in SEXES:
        notes.append(f"PatientSex is not M, F or O: {sex!r}")
    has_pixels = any(tag in ds for tag in PIXEL_TAGS)
    if not has_pixels and "Rows" in ds:
        notes.append("Rows/Columns present but no pixel data")
    notes.extend(parsed.read_warnings[:20])
    report.update(is_valid=not errors, errors=errors, warnings=notes, transfer_syntax=syntax,
                  sop_class_uid=safe_text(ds, "SOPClassUID") or None, modality=safe_text(ds, "Modality") or None,
                  has_pixel_data=has_pixels)
    return report


def safe_text(ds: Dataset, keyword: str) -> str:
    try:
        element = ds.data_element(keyword)
        return "" if element is None else _text(element)
    except Exception:  # noqa: BLE001 - an unreadable value counts as absent
        return ""


# --- reading tags ---------------------------------------------------------------------------------------


def main_tags(ds: Dataset) -> dict[str, str | None]:
    """The main tags (``MAIN_TAGS``): keyword -> value as text; null when absent."""
    tags: dict[str, str | None] = {}
    for keyword in MAIN_TAGS:
        source = ds.file_meta if keyword == "TransferSyntaxUID" and hasattr(ds, "file_meta") else ds
        element = source.data_element(keyword) if keyword in source else None
        tags[keyword] = None if element is None else _text(element)
    return tags


def all_tags(ds: Dataset) -> dict[str, Any]:
    """Every element, file meta first: keyword (or ``(gggg,eeee)`` for private and repeated ones) -> text;
    sequences as lists of such objects; pixel data and large binary values summarized, never dumped."""
    out: dict[str, Any] = {}
    if hasattr(ds, "file_meta"):
        out.update(_elements(ds.file_meta))
    out.update(_elements(ds))
    return out


def _elements(ds: Dataset) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for raw in ds.elements():
        tag = Tag(raw.tag)
        try:
            element = ds[tag]
            key = element.keyword if element.keyword and element.keyword not in out else _tag_text(tag)
            out[key] = _summary(element)
        except Exception as exc:  # noqa: BLE001 - one bad value must not hide the others
            out[_tag_text(tag)] = f"<unreadable: {type(exc).__name__}>"
    return out


def _summary(element: DataElement) -> Any:
    if element.VR == "SQ":
        return [_elements(item) for item in element.value]
    value = element.value
    if element.tag in PIXEL_TAGS:
        return f"<pixel data: {len(value or b'')} bytes>"
    if isinstance(value, bytes | bytearray) or element.VR in BINARY_VRS:
        data = bytes(value or b"") if isinstance(value, bytes | bytearray) else b""
        if isinstance(value, bytes | bytearray) and len(data) <= SHOWN_BINARY_BYTES:
            return data.hex()
        return f"<binary: {len(data)} bytes>" if data else f"<binary {element.VR}>"
    text = _text(element)
    if len(text) > SHOWN_TEXT_CHARACTERS:
        return f"{text[:SHOWN_TEXT_CHARACTERS]}… ({len(text)} characters)"
    return text


def _text(element: DataElement) -> str:
    """A value as DICOM writes it: multiple values joined by a backslash, padding trimmed."""
    value = element.value
    if value is None:
        return ""
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(str(v).strip() for v in value)
    if isinstance(value, bytes):
        return value.decode("ascii", "replace").strip(" \x00")
    return str(value).strip()


# --- modifying tags --------------------------------------------------------------------------------------

# What modify-tags may change, with the VR each value must fit. UIDs are never among them.
EDITABLE_TAGS: dict[str, str] = {
    "PatientID": "LO", "PatientName": "PN", "PatientBirthDate": "DA", "PatientSex": "CS",
    "AccessionNumber": "SH", "StudyDate": "DA", "StudyDescription": "LO",
}


@dataclass(frozen=True)
class ModifiedFile:
    data: bytes
    sop_instance_uid: str
    study_instance_uid: str
    original: dict[str, str | None]  # the changed tags' values before (null: absent)
    new: dict[str, str]
    private_tags_removed: int


def check_changes(changes: Mapping[str, Any]) -> dict[str, str]:
    """Validate requested changes (tag keyword -> new value; "" empties the tag); raise ``TagChangeError``."""
    checked: dict[str, str] = {}
    for name, value in changes.items():
        if name not in EDITABLE_TAGS:
            if name.endswith("UID"):
                raise TagChangeError(name, "UIDs are never changed here")
            raise TagChangeError(name, f"cannot be changed here (allowed: {', '.join(EDITABLE_TAGS)})")
        if not isinstance(value, str):
            raise TagChangeError(name, "must be a string")
        checked[name] = _check_value(name, EDITABLE_TAGS[name], value.strip())
    return checked


def _check_value(name: str, vr: str, value: str) -> str:
    if not value:
        return value
    if _FORBIDDEN_TEXT.search(value):
        raise TagChangeError(name, "contains a backslash or a control character")
    if vr == "DA" and parse_da(value) is None:
        raise TagChangeError(name, "must be a date YYYYMMDD")
    if name == "PatientSex" and value not in SEXES:
        raise TagChangeError(name, f"must be one of {', '.join(SEXES)}")
    if vr == "PN" and not is_pn_shape(value):
        raise TagChangeError(name, "a person name has at most 5 components (^) in at most 3 groups (=)")
    try:
        validate_value(vr, value, config.RAISE)
    except ValueError as exc:
        raise TagChangeError(name, str(exc).split(" Please see")[0]) from None
    return value


def modify_tags(source: Source, changes: Mapping[str, Any], *, remove_private_tags: bool = False) -> ModifiedFile:
    """Apply checked changes to a file; UIDs, transfer syntax and pixel data stay as they are."""
    checked = check_changes(changes)
    if not checked and not remove_private_tags:
        raise TagChangeError("changes", "nothing to change: give tags to change or remove_private_tags")
    ds = read_complete(source).dataset
    original = {name: (_text(ds.data_element(name)) if name in ds else None)  # type: ignore[arg-type]
                for name in checked}
    for name, value in checked.items():
        setattr(ds, name, value)
    removed = 0
    if remove_private_tags:
        before = _count_elements(ds)
        ds.remove_private_tags()
        removed = before - _count_elements(ds)
    return ModifiedFile(data=to_bytes(ds), sop_instance_uid=safe_text(ds, "SOPInstanceUID"),
                        study_instance_uid=safe_text(ds, "StudyInstanceUID"), original=original,
                        new=checked, private_tags_removed=removed)


def _count_elements(ds: Dataset) -> int:
    return sum(1 + sum(_count_elements(item) for item in (e.value if e.VR == "SQ" else ())) for e in ds)


def to_bytes(ds: Dataset) -> bytes:
    """Written like the original: same preamble (or none), file meta and transfer syntax."""
    buffer = io.BytesIO()
    ds.save_as(buffer)
    return buffer.getvalue()
