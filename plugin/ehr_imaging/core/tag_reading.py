"""The tags of a DICOM file the EHR hands us, as JSON text: the main ones, or every element (pure).

What ``POST /dicom/read-tags`` answers. Absent tags are null, present but empty ones ""; pixel data and large
binary values are summarized, never dumped. A stored study's main tags come from Orthanc instead
(``core/study_tags.py``).
"""

from __future__ import annotations

from typing import Any

from pydicom import Dataset
from pydicom.dataelem import DataElement
from pydicom.tag import Tag

from .dicom_file import PIXEL_TAGS, tag_text, value_text

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
BINARY_VRS = frozenset({"OB", "OW", "OD", "OF", "OL", "OV", "UN", "OB or OW", "US or OW"})
SHOWN_BINARY_BYTES = 64  # smaller binary values are shown as hex, larger ones summarized
SHOWN_TEXT_CHARACTERS = 1024


def main_tags(ds: Dataset) -> dict[str, str | None]:
    """The main tags (``MAIN_TAGS``): keyword -> value as text; null when absent."""
    tags: dict[str, str | None] = {}
    for keyword in MAIN_TAGS:
        source = ds.file_meta if keyword == "TransferSyntaxUID" and hasattr(ds, "file_meta") else ds
        element = source.data_element(keyword) if keyword in source else None
        tags[keyword] = None if element is None else value_text(element)
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
            key = element.keyword if element.keyword and element.keyword not in out else tag_text(tag)
            out[key] = _summary(element)
        except Exception as exc:  # noqa: BLE001 - one bad value must not hide the others
            out[tag_text(tag)] = f"<unreadable: {type(exc).__name__}>"
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
    text = value_text(element)
    if len(text) > SHOWN_TEXT_CHARACTERS:
        return f"{text[:SHOWN_TEXT_CHARACTERS]}… ({len(text)} characters)"
    return text
