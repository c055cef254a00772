"""core/dicom_file.parse with ``defer_size`` (the upload check reads headers only): the same findings as reading
every value, on pydicom's real files whole and cut anywhere, without reading the pixel data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydicom.data import get_testdata_file
from pydicom.dataelem import RawDataElement

from ehr_imaging.app.uploading.batch import check_dicom
from ehr_imaging.core import dicom_file

HEADER_VALUES_UP_TO = dicom_file.BULK_VALUE_BYTES

FILES = ["CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm", "MR_small_RLE.dcm", "SC_rgb_rle.dcm", "JPEG-lossy.dcm",
         "emri_small.dcm", "rtplan.dcm"]


def data(name: str) -> bytes:
    path = get_testdata_file(name)
    assert path is not None, name
    return Path(path).read_bytes()


def cuts(whole: bytes) -> list[bytes]:
    """The file whole, and cut at 40 places from the first bytes to one byte short of the end."""
    return [whole] + [whole[:at] for at in {*range(1, len(whole), max(1, len(whole) // 40)), len(whole) - 1}]


def findings(source: bytes, defer_size: int | None) -> tuple[str, ...]:
    try:
        parsed = dicom_file.parse(source, defer_size=defer_size)
    except dicom_file.DicomFileError as exc:
        return ("error", str(exc))
    return ("read", str(parsed.has_preamble), str(parsed.has_file_meta), *parsed.problems,
            *map(str, sorted(parsed.dataset.keys())))


@pytest.mark.parametrize("name", FILES)
def test_deferred_reading_finds_what_full_reading_finds(name: str) -> None:
    pieces = cuts(data(name))
    truncated = 0
    for piece in pieces:
        full = findings(piece, None)
        assert findings(piece, HEADER_VALUES_UP_TO) == full, len(piece)
        truncated += any(str(item).startswith(("file truncated", "pixel data truncated")) for item in full)
    assert truncated > 0  # the cuts did reach the values the check measures


def test_the_upload_check_leaves_pixel_data_unread_and_still_measures_it() -> None:
    whole = data("CT_small.dcm")
    parsed = dicom_file.parse(whole, defer_size=HEADER_VALUES_UP_TO)
    pixels: Any = parsed.dataset.get_item(dicom_file.PIXEL_DATA, keep_deferred=True)
    assert isinstance(pixels, RawDataElement) and pixels.value is None  # not read
    assert pixels.length > HEADER_VALUES_UP_TO
    assert parsed.problems == []
    assert str(check_dicom(whole).SOPInstanceUID) == str(parsed.dataset.SOPInstanceUID)
    cut = whole[:pixels.value_tell + pixels.length - 100]  # 100 bytes short of the pixel data's end
    expected = f"file truncated: (7FE0,0010) PixelData has {pixels.length - 100} of {pixels.length} bytes"
    assert dicom_file.parse(cut, defer_size=HEADER_VALUES_UP_TO).problems == [expected]
    assert dicom_file.parse(cut).problems == [expected]
    with pytest.raises(Exception) as refused:
        check_dicom(cut)
    assert str(refused.value) == f"incomplete DICOM file: {expected}"
    # A deferred value is still there when asked for (read on first use).
    assert len(parsed.dataset.PixelData) == pixels.length


def test_a_batch_s_remembered_conversions_change_no_finding() -> None:
    """``parse(converted=)``: one set shared by every file and cut of every file read here, as a batch shares it;
    each reading finds what a reading without it finds, and the set did spare conversions."""
    converted: dicom_file.Converted = {}
    for name in FILES:
        for piece in cuts(data(name)):
            shared = findings_with(piece, converted)
            assert shared == findings(piece, HEADER_VALUES_UP_TO), (name, len(piece))
    assert len(converted) > 100


def findings_with(source: bytes, converted: dicom_file.Converted) -> tuple[str, ...]:
    try:
        parsed = dicom_file.parse(source, defer_size=HEADER_VALUES_UP_TO, converted=converted)
    except dicom_file.DicomFileError as exc:
        return ("error", str(exc))
    return ("read", str(parsed.has_preamble), str(parsed.has_file_meta), *parsed.problems,
            *map(str, sorted(parsed.dataset.keys())))


def test_a_value_that_failed_to_convert_is_never_remembered() -> None:
    """A US value of 3 bytes (pydicom: BytesLengthException) is refused in a batch whose earlier file had a good
    BitsStored, and again after; the good file still reads."""
    whole = data("MR_small.dcm")
    rows = b"\x28\x00\x01\x01US\x02\x00"
    assert whole.count(rows) == 1
    at = whole.index(rows)
    broken = whole[:at] + rows[:6] + b"\x03\x00" + whole[at + 8:at + 10] + b"\x00" + whole[at + 10:]
    converted: dicom_file.Converted = {}
    assert dicom_file.parse(whole, defer_size=HEADER_VALUES_UP_TO, converted=converted).problems == []
    for _ in range(2):
        with pytest.raises(dicom_file.DicomFileError, match="BytesLengthException"):
            dicom_file.parse(broken, defer_size=HEADER_VALUES_UP_TO, converted=converted)
    assert [key[2] for key in converted if key[0] == 0x00280101] == [b"\x10\x00"]  # the good BitsStored only
    assert dicom_file.parse(whole, defer_size=HEADER_VALUES_UP_TO, converted=converted).problems == []
