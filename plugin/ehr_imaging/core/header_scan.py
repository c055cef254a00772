"""The upload check's fast reading of the common file (pure): a Part 10 file in explicit VR little endian (or an
encapsulated syntax), well formed to its last byte. Anything else is declined (None) and read by pydicom
(``dicom_file.parse``), which also words every refusal.

What pydicom's reading of such a file finds is found here without building its dataset: the top-level elements
are walked by their lengths (sequences and encapsulated pixel data of undefined length item by item), each value
is converted by pydicom exactly as ``dicom_file.parse`` converts it (the same memo of values converted before),
native pixel data is measured against rows x columns x frames. The answer is only the identity (PatientID and
the three UIDs, converted by pydicom): what an upload needs. Declined: implicit VR, big endian, deflate, a VR that
is unknown or UN, a length past the end, tags out of order or repeated, group 0000 or 0002 in the dataset, bytes
after the last element, a conversion that fails, pixel data shorter than its image. Declining is always safe: it
only costs pydicom's reading. ``tests/unit/test_header_scan.py`` holds both readings to the same answers.
"""

from __future__ import annotations

import struct
import warnings
from collections.abc import MutableSequence
from typing import cast

from pydicom import Dataset
from pydicom.dataelem import RawDataElement, convert_raw_data_element, empty_value_for_VR
from pydicom.filereader import ENCODED_VR
from pydicom.tag import BaseTag
from pydicom.uid import UID
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32

from .dicom_file import BULK_VALUE_BYTES, UNDEFINED_LENGTH, Converted, memo_key, native_pixel_bytes

EXPLICIT_LITTLE = "1.2.840.10008.1.2.1"
DEFLATED = "1.2.840.10008.1.2.1.99"
IDENTITY = (0x00100020, 0x0020000D, 0x0020000E, 0x00080018)  # PatientID, Study/Series/SOP Instance UID
CHARSET, PIXEL_DATA, ITEM, ITEM_END, SEQUENCE_END = 0x00080005, 0x7FE00010, 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
IMAGE_SIZE = (0x00280002, 0x00280008, 0x00280010, 0x00280011, 0x00280100)  # what native_pixel_bytes reads
WANTED = frozenset(IDENTITY + IMAGE_SIZE)
_KNOWN_VRS = frozenset(vr for vr in ENCODED_VR if len(vr) == 2 and vr != b"UN")
_LONG_VRS = frozenset(str(vr).encode() for vr in EXPLICIT_VR_LENGTH_32)
_HEAD = struct.Struct("<HH2sH").unpack_from
_TAG_LENGTH = struct.Struct("<HHL").unpack_from
_LENGTH = struct.Struct("<L").unpack_from

Element = tuple[int, str, int, int]  # tag, VR, value length, value offset


class _Declined(Exception):
    """Not the fast path's case: pydicom reads the file."""


def identity(data: bytes | memoryview, converted: Converted | None = None) -> Dataset | None:
    """The file's PatientID and UIDs (the elements present, converted by pydicom) when it is the common case and
    pydicom's reading would find it readable and complete; None otherwise (read it with ``dicom_file.parse``).
    ``converted``: as for ``dicom_file.parse`` (filled here the same way)."""
    try:
        return _identity(memoryview(data).cast("B"), converted)
    except Exception:  # noqa: BLE001 - _Declined, or any surprise of odd bytes: pydicom's reading decides
        return None


def _identity(data: memoryview, converted: Converted | None) -> Dataset:
    if len(data) < 144 or data[128:132].tobytes() != b"DICM":
        raise _Declined
    meta, start = _walk(data, 132, len(data), file_meta=True)
    syntax = _syntax(data, meta)
    elements, end = _walk(data, start, len(data))
    if end != len(data) or not elements:
        raise _Declined
    encoding, charset = _encoding(data, elements)
    small = Dataset()  # the converted values pixel data is measured with, and the identity
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # as dicom_file._check_values: a value's form is validation's to judge
        for tag, vr, length, at in elements:
            if length == UNDEFINED_LENGTH or length > BULK_VALUE_BYTES:
                if tag in WANTED:
                    raise _Declined  # a value the upload reads, yet left unread by the check: pydicom's case
                continue  # an undefined-length sequence or pixel data (read by its items), or bulk data: unread
            value = _raw_value(data, vr, length, at)
            if value is None:
                continue  # empty, of a VR whose empty value is None: a known VR, nothing to convert
            key = memo_key(tag, vr, value, length, False, True, charset) if converted is not None else None
            element = converted.get(key) if key is not None else None  # type: ignore[union-attr]
            if element is None:
                raw = RawDataElement(BaseTag(tag), vr, length, value, at, False, True)
                try:
                    element = convert_raw_data_element(raw, encoding=encoding, ds=None)
                except Exception:  # noqa: BLE001 - pydicom's reading words the refusal
                    raise _Declined from None
                if key is not None:
                    converted[key] = element  # type: ignore[index]
            if tag in WANTED:
                small[tag] = element  # (an element of the memo is shared by the files it came from: read only)
    _check_pixels(small, syntax, elements)
    kept = Dataset()
    for tag in IDENTITY:
        if tag in small:
            kept[tag] = small[tag]
    return kept


def _walk(data: memoryview, pos: int, end: int, *, file_meta: bool = False,
          in_item: bool = False) -> tuple[list[Element], int]:
    """The elements from ``pos`` (the file meta group: until the first other group; an item's: up to ``end`` or
    its delimiter), and where they end."""
    elements: list[Element] = []
    last = -1
    while pos < end:
        if end - pos < 8:
            raise _Declined
        group, number, vr_bytes, length = _HEAD(data, pos)
        tag = group << 16 | number
        if file_meta and group != 2:
            break
        if in_item and tag == ITEM_END:
            if length != 0 or vr_bytes != b"\0\0":
                raise _Declined
            return elements, pos + 8
        if vr_bytes not in _KNOWN_VRS or tag <= last or group in (0, 0xFFFE) or (group == 2) != file_meta:
            raise _Declined
        last, head = tag, 8
        if vr_bytes in _LONG_VRS:
            if end - pos < 12 or length != 0:  # (the 2 bytes after a long VR are reserved: zero)
                raise _Declined
            length, head = _LENGTH(data, pos + 8)[0], 12
        at = pos + head
        vr = vr_bytes.decode()
        if length == UNDEFINED_LENGTH:
            if vr == "SQ":
                pos = _sequence(data, at, end)
            elif tag == PIXEL_DATA and not in_item and vr in ("OB", "OW"):
                pos = _fragments(data, at, end)
            else:
                raise _Declined
        else:
            pos = at + length
            if pos > end:
                raise _Declined
        elements.append((tag, vr, length, at))
    if in_item:
        raise _Declined  # an undefined-length item without its delimiter
    return elements, pos


def _sequence(data: memoryview, pos: int, end: int) -> int:
    """An undefined-length sequence's items, up to just after its delimiter."""
    while (length := _item(data, pos, end)) is not None:
        if length == UNDEFINED_LENGTH:
            _, pos = _walk(data, pos + 8, end, in_item=True)
        else:
            item_end = pos + 8 + length
            if item_end > end:
                raise _Declined
            _, stop = _walk(data, pos + 8, item_end)
            if stop != item_end:
                raise _Declined
            pos = item_end
    return pos + 8


def _fragments(data: memoryview, pos: int, end: int) -> int:
    """Encapsulated pixel data's items (the offset table, then fragments), up to just after its delimiter, read as
    pydicom reads them (by their lengths); declined when its value would be small enough to be read whole."""
    start = pos
    while (length := _item(data, pos, end)) is not None:
        if length == UNDEFINED_LENGTH or pos + 8 + length > end:
            raise _Declined
        pos += 8 + length
    if pos + 4 - start <= BULK_VALUE_BYTES:
        raise _Declined
    return pos + 8


def _item(data: memoryview, pos: int, end: int) -> int | None:
    """The length of the item at ``pos``, or None at the delimiter that ends the items (its length zero)."""
    if end - pos < 8:
        raise _Declined
    group, number, length = _TAG_LENGTH(data, pos)
    tag = group << 16 | number
    if tag == SEQUENCE_END and length == 0:
        return None
    if tag != ITEM:
        raise _Declined
    return int(length)


def _syntax(data: memoryview, meta: list[Element]) -> UID:
    """The transfer syntax, when the dataset is explicit VR little endian (pydicom reads every syntax it does not
    know that way too; deflate, implicit VR, big endian and private syntaxes are declined)."""
    found = next(((length, at) for tag, _, length, at in meta if tag == 0x00020010), None)
    if found is None or found[0] > 64:
        raise _Declined
    syntax = UID(bytes(data[found[1]:found[1] + found[0]]).decode("ascii", "strict").rstrip("\0 "))
    if syntax == DEFLATED or (syntax.is_transfer_syntax and (syntax.is_implicit_VR or not syntax.is_little_endian)):
        raise _Declined
    if not syntax.is_transfer_syntax and syntax != EXPLICIT_LITTLE:
        raise _Declined  # an unknown (or private) syntax: pydicom's own choice
    return syntax


def _encoding(data: memoryview, elements: list[Element]) -> tuple[str | MutableSequence[str], tuple[str, ...]]:
    """The character set pydicom would convert text with (its ``Dataset._character_set``), and as the memo keys it."""
    probe = Dataset()
    for tag, vr, length, at in elements:
        if tag == CHARSET:
            if length == UNDEFINED_LENGTH:
                raise _Declined
            raw = RawDataElement(BaseTag(tag), vr, length, _raw_value(data, vr, length, at), at, False, True)
            probe[tag] = raw
            break
    try:
        encoding = probe._character_set
    except Exception:  # noqa: BLE001 - a character set pydicom cannot read: its reading says so
        raise _Declined from None
    charset = tuple(encoding) if isinstance(encoding, list | tuple) else (str(encoding),)
    return encoding, charset


def _raw_value(data: memoryview, vr: str, length: int, at: int) -> bytes | None:
    """A value's bytes as pydicom's reader keeps them (an empty one: b"" or None, by VR)."""
    return data[at:at + length].tobytes() if length else cast("bytes | None", empty_value_for_VR(vr, raw=True))


def _check_pixels(small: Dataset, syntax: UID, elements: list[Element]) -> None:
    """Native pixel data at least as long as its image (pydicom's reading refuses it shorter, or cannot tell)."""
    pixels = next(((length, vr) for tag, vr, length, _ in elements if tag == PIXEL_DATA), None)
    if pixels is None or (syntax.is_transfer_syntax and syntax.is_encapsulated):
        if pixels is not None and pixels[0] != UNDEFINED_LENGTH:
            raise _Declined  # encapsulated syntax, defined-length pixel data: pydicom's case
        return
    if pixels[0] == UNDEFINED_LENGTH:
        raise _Declined
    try:
        expected = native_pixel_bytes(small)
    except Exception:  # noqa: BLE001 - odd image attributes
        raise _Declined from None
    if pixels[0] < expected:
        raise _Declined

