"""Reading a DICOM file the EHR hands us (not stored) and writing it back (pure).

``parse`` reads a Part 10 file or a bare dataset and reports truncation instead of raising; ``read_complete``
refuses a truncated one; ``to_bytes`` writes a dataset as it was read. The value helpers (``value_text``,
``safe_text``) give a value as DICOM writes it; validation, tag reading, tag changes and de-identification
share them. pydicom does the DICOM work; pixel data is never decoded (transfer syntax kept). Nothing here
touches Orthanc, the database or the file system: functions take bytes or a binary stream.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field
from typing import IO

from pydicom import Dataset, dcmread
from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import DataElement, RawDataElement, convert_raw_data_element
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag, Tag
from pydicom.uid import UID

from .dicom_values import is_uid

Source = bytes | memoryview | IO[bytes]

PIXEL_TAGS = frozenset({Tag(0x7FE0, 0x0010), Tag(0x7FE0, 0x0008), Tag(0x7FE0, 0x0009)})
PIXEL_DATA = Tag(0x7FE0, 0x0010)
BULK_VALUE_BYTES = 16 * 1024  # a value longer than this is bulk data (pixels): ``parse(defer_size=)`` leaves it
UNDEFINED_LENGTH = 0xFFFFFFFF


class DicomFileError(ValueError):
    """The bytes are not a readable, complete DICOM file."""


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


# What ``parse(converted=)`` remembers: values of these VRs, explicit in the file, converted by nothing but their
# bytes and the character set (no private creator, no ambiguous VR resolved from other elements, no sequence).
MEMO_VRS = frozenset({"AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT", "OB", "OD", "OF",
                      "OL", "OV", "OW", "PN", "SH", "SL", "SS", "ST", "SV", "TM", "UC", "UI", "UL", "UR", "US",
                      "UT", "UV"})
MEMO_VALUE_BYTES = 1024  # longer values are converted each time (not kept)
MemoKey = tuple[object, ...]
Converted = dict[MemoKey, DataElement]  # a memo key -> the element its value was converted to


def parse(source: Source, *, defer_size: int | None = None, converted: Converted | None = None) -> ParsedFile:
    """Read a DICOM file (Part 10, or a bare dataset without preamble and file meta); raise
    ``DicomFileError`` when it is not DICOM. Truncation is reported in ``problems``, not raised.

    ``defer_size``: values longer than this (pixel data) are not read, only their length and place, which
    the truncation check compares with the bytes there are (the same findings, without copying them); such
    a value is read on first use. For a caller that needs the header only (the upload check).

    ``converted``: a dict the caller keeps across the files of one batch, of the values already converted without
    error (filled here: the element each became); an identical value (same tag, VR, bytes, byte order and
    character set) is not converted again. The files of a series share most of their header, so this skips most
    conversions; the findings are the same, conversion being a function of exactly those."""
    data = source if isinstance(source, bytes | memoryview) else source.read()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            try:
                ds = dcmread(io.BytesIO(data), defer_size=defer_size)
            except InvalidDicomError:
                # No preamble/'DICM': old archives export bare datasets. Accept one only if it looks like DICOM.
                ds = dcmread(io.BytesIO(data), force=True, defer_size=defer_size)
                if not _looks_like_dicom(ds):
                    raise DicomFileError("not a DICOM file") from None
        except DicomFileError:
            raise
        except Exception as exc:  # noqa: BLE001 - pydicom raises many types on garbage
            raise DicomFileError(f"not a readable DICOM file ({type(exc).__name__}: {exc})") from None
    messages = list(dict.fromkeys(str(w.message) for w in caught))
    try:  # pydicom converts each value when first asked: try each now, so an unknown VR is caught here
        truncation = _truncation(ds, len(data))
        _check_values(ds, defer_size, converted)
    except Exception as exc:  # noqa: BLE001 - e.g. NotImplementedError for an unknown VR
        raise DicomFileError(f"not a readable DICOM file ({type(exc).__name__}: {exc})") from None
    parsed = ParsedFile(
        dataset=ds,
        has_preamble=getattr(ds, "preamble", None) is not None,
        has_file_meta=len(getattr(ds, "file_meta", None) or ()) > 0,
        problems=[f"file truncated: {m}" for m in messages if "End of file" in m] + truncation,
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


def _check_values(ds: Dataset, defer_size: int | None, converted: Converted | None = None) -> None:
    """Convert each top-level value once, on the side (the dataset keeps its raw elements, so it is written
    back byte for byte): a value pydicom cannot convert (an unknown VR) raises here, not in whoever reads it.
    A deferred value (longer than ``defer_size``: pixel data) stays unread: nothing in the check reads it.
    ``converted``: see ``parse``; a value is remembered only once its conversion succeeded."""
    encoding = ds._character_set
    charset = tuple(encoding) if isinstance(encoding, list | tuple) else (str(encoding),)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # what a value's form lacks is validation's to say, not the reader's
        for tag, raw in _as_read(ds):
            if not isinstance(raw, RawDataElement):
                continue
            if raw.value is not None or raw.length == 0:  # (empty: None for some VRs; an unknown VR still raises)
                key = _memo_key(raw, charset) if converted is not None else None
                if key is not None and key in converted:  # type: ignore[operator]
                    continue
                element = convert_raw_data_element(raw, encoding=encoding, ds=ds)
                if key is not None:
                    converted[key] = element  # type: ignore[index]
            elif defer_size is None or raw.length <= defer_size:
                ds.get_item(tag)  # a value pydicom left to read on first use (e.g. an unknown VR): read it now


def _as_read(ds: Dataset) -> list[tuple[BaseTag, object]]:
    """The top-level elements in tag order as they are now: a RawDataElement until converted, a deferred value
    unread (what ``get_item(tag, keep_deferred=True)`` gives, without its cost per tag; iterating the dataset
    itself, or ``elements()``, would convert or read every value)."""
    return sorted(ds._dict.items())


def _memo_key(raw: RawDataElement, charset: tuple[str, ...]) -> MemoKey | None:
    return memo_key(int(raw.tag), raw.VR, raw.value, raw.length, raw.is_implicit_VR, raw.is_little_endian, charset)


def memo_key(tag: int, vr: str | None, value: object, length: int, implicit: bool, little: bool,
             charset: tuple[str, ...]) -> MemoKey | None:
    """What a value's conversion depends on, when nothing else does (see ``MEMO_VRS``); None: convert it."""
    if vr not in MEMO_VRS or tag >> 16 & 1 or not isinstance(value, bytes) or len(value) > MEMO_VALUE_BYTES:
        return None
    return (tag, vr, value, length, implicit, little, charset)


def _truncation(ds: Dataset, size: int) -> list[str]:
    """pydicom stops quietly at the end of the bytes: a value shorter than its declared length, or native
    pixel data shorter than its rows x columns x frames, means the file was cut. ``size``: the file's bytes,
    what a deferred value (not read) is measured against."""
    problems: list[str] = []
    pixels_held: int | None = None
    for tag, raw in _as_read(ds):
        measured = _held_bytes(raw, size)
        if measured is None:
            continue
        held, length = measured
        if held < length:
            name = f"{tag_text(tag)} {keyword_for_tag(tag)}".strip()
            problems.append(f"file truncated: {name} has {held} of {length} bytes")
        if tag == PIXEL_DATA:
            pixels_held = held
    if not problems and "PixelData" in ds and not _is_encapsulated(ds):
        try:
            expected = native_pixel_bytes(ds)
            actual = pixels_held if pixels_held is not None else len(ds.PixelData)
        except Exception:  # noqa: BLE001 - missing or odd image attributes: nothing to compare with
            return problems
        if actual < expected:
            problems.append(f"pixel data truncated: {actual} of {expected} bytes")
    return problems


def _held_bytes(raw: object, size: int) -> tuple[int, int] | None:
    """(bytes the file holds, bytes declared) of a not yet converted, defined-length value: what was read, or
    for a deferred value (None: longer than ``defer_size``) what lies between its place and the file's end."""
    if not isinstance(raw, RawDataElement) or raw.length == UNDEFINED_LENGTH:
        return None
    if raw.value is not None:
        return len(raw.value), raw.length
    return (max(0, min(raw.length, size - raw.value_tell)), raw.length) if raw.length else None


def native_pixel_bytes(ds: Dataset) -> int:
    """The bytes native (not encapsulated) pixel data of this image holds: rows x columns x samples x bits x frames."""
    bits = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1)) * int(ds.BitsAllocated)
    bits *= int(ds.get("NumberOfFrames", 1) or 1)
    return (bits + 7) // 8


def _is_encapsulated(ds: Dataset) -> bool:
    """Encapsulated (compressed) pixel data, or a transfer syntax pydicom does not know: nothing to measure."""
    uid = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if not uid:
        return False
    syntax = UID(str(uid))
    return not syntax.is_transfer_syntax or syntax.is_encapsulated


def tag_text(tag: BaseTag | int) -> str:
    """``(gggg,eeee)``."""
    tag = Tag(tag)
    return f"({tag.group:04X},{tag.element:04X})"


def value_text(element: DataElement) -> str:
    """A value as DICOM writes it: multiple values joined by a backslash, padding trimmed."""
    value = element.value
    if value is None:
        return ""
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(str(v).strip() for v in value)
    if isinstance(value, bytes):
        return value.decode("ascii", "replace").strip(" \x00")
    return str(value).strip()


def safe_text(ds: Dataset, keyword: str) -> str:
    """``value_text`` of an element; "" when it is absent or its value cannot be read."""
    try:
        element = ds.data_element(keyword)
        return "" if element is None else value_text(element)
    except Exception:  # noqa: BLE001 - an unreadable value counts as absent
        return ""


def to_bytes(ds: Dataset) -> bytes:
    """Written like the original: same preamble (or none), file meta and transfer syntax."""
    buffer = io.BytesIO()
    ds.save_as(buffer)
    return buffer.getvalue()
