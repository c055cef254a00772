"""core/header_scan, the upload check's fast reading: every file gets from the upload check the answer pydicom's
reading gives it (accepted with the same PatientID and UIDs, or refused with the same kind and words), on all of
pydicom's test files, on files cut at 40 places and on seeded mutants of the fuzz run's mutator; and the scan
does answer for the common files (else it would be a check that cannot fail)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file, get_testdata_files

from ehr_imaging.app.uploading import batch
from ehr_imaging.core import dicom_file, header_scan
from tests.fuzz.dicom_mutator import default_sources, mutant

Answer = tuple[str, ...]
# Explicit VR little endian files of several kinds: CT, MR, secondary capture (native and RLE), structured
# reports (sequences of undefined length), JPEG lossless (encapsulated pixel data), a multi-frame enhanced MR.
COMMON = ["CT_small.dcm", "MR_small.dcm", "SC_rgb.dcm", "emri_small_RLE.dcm", "test-SR.dcm", "reportsi.dcm",
          "JPEG-LL.dcm", "liver_1frame.dcm"]
MUTANTS = 1500


def data(name: str) -> bytes:
    return Path(str(get_testdata_file(name))).read_bytes()


def answer(piece: bytes, converted: dicom_file.Converted) -> Answer:
    try:
        header = batch.check_dicom(memoryview(piece), converted)
    except batch.UploadRejected as exc:
        return ("refused", exc.kind.__name__, exc.detail)
    return ("accepted", *(f"{tag:08X}={header[tag].value}" for tag in header_scan.IDENTITY if tag in header))


def answers(pieces: Iterable[bytes], *, scan: bool) -> list[Answer]:
    """The upload check's answers, one memo of conversions shared by all (as the files of a batch share it);
    ``scan=False``: pydicom reads every file."""
    converted: dicom_file.Converted = {}
    with pytest.MonkeyPatch.context() as patch:
        if not scan:
            patch.setattr(header_scan, "identity", lambda data, converted=None: None)
        return [answer(piece, converted) for piece in pieces]


def scanned(pieces: Iterable[bytes]) -> int:
    return sum(header_scan.identity(piece, {}) is not None for piece in pieces)


def test_every_test_file_of_pydicom_gets_the_same_answer_and_the_common_ones_are_scanned() -> None:
    files = sorted(path for path in map(Path, set(get_testdata_files())) if path.is_file())
    pieces = [path.read_bytes() for path in files]
    assert len(pieces) > 200
    assert answers(pieces, scan=True) == answers(pieces, scan=False)
    assert scanned(pieces) > 100
    assert all(header_scan.identity(data(name)) is not None for name in COMMON)


@pytest.mark.parametrize("name", COMMON)
def test_a_file_cut_anywhere_gets_the_same_answer(name: str) -> None:
    whole = data(name)
    pieces = [whole[:at] for at in {*range(1, len(whole), max(1, len(whole) // 40)), len(whole) - 1}]
    assert answers(pieces, scan=True) == answers(pieces, scan=False)


def test_seeded_mutants_get_the_same_answer_and_some_are_scanned() -> None:
    sources = default_sources()
    pieces = [mutant(sources, 20261203, "header-scan", index).data for index in range(MUTANTS)]
    fast, slow = answers(pieces, scan=True), answers(pieces, scan=False)
    differing = [(index, a, b) for index, (a, b) in enumerate(zip(fast, slow, strict=True)) if a != b]
    assert differing == []  # a failure names the mutant's index: mutant(sources, 20261203, "header-scan", index)
    assert 50 < scanned(pieces) < MUTANTS
    assert sum(a[0] == "refused" for a in slow) > 100


@pytest.mark.parametrize("name", ["MR_small_implicit.dcm", "MR_small_bigendian.dcm", "image_dfl.dcm"])
def test_implicit_vr_big_endian_and_deflate_are_left_to_pydicom(name: str) -> None:
    assert header_scan.identity(data(name)) is None
    assert answers([data(name)], scan=True) == answers([data(name)], scan=False)


def test_native_pixel_data_shorter_than_its_image_is_left_to_pydicom_which_refuses_it() -> None:
    whole = data("CT_small.dcm")
    rows = b"\x28\x00\x10\x00US\x02\x00"  # (0028,0010) Rows, 128: one more row than the pixel data holds
    at = whole.index(rows) + len(rows)
    taller = whole[:at] + (129).to_bytes(2, "little") + whole[at + 2:]
    assert header_scan.identity(whole) is not None
    assert header_scan.identity(taller) is None
    refused = answers([taller], scan=True)[0]
    assert refused[:2] == ("refused", "Malformed") and "pixel data truncated" in refused[2]


def test_a_memo_filled_by_either_reading_serves_the_other() -> None:
    """A batch mixes both readings: the values one converted are not converted again by the other, and both still
    find what they find alone."""
    pieces = [data(name) for name in COMMON] * 2
    mixed: dicom_file.Converted = {}
    for index, piece in enumerate(pieces):
        with pytest.MonkeyPatch.context() as patch:
            if index % 2:
                patch.setattr(header_scan, "identity", lambda data, converted=None: None)
            assert answer(piece, mixed) == answers([piece], scan=False)[0]
    assert len(mixed) > 100


def test_an_identifying_value_over_16_kb_is_left_to_pydicom() -> None:
    whole = data("CT_small.dcm")
    head = b"\x10\x00\x20\x00LO"  # (0010,0020) PatientID, LO, then its 2-byte length
    at = whole.index(head)
    length = int.from_bytes(whole[at + 6:at + 8], "little")
    long_id = whole[:at] + head + (20_000).to_bytes(2, "little") + b"P" * 20_000 + whole[at + 8 + length:]
    assert header_scan.identity(long_id) is None
    assert answers([long_id], scan=True) == answers([long_id], scan=False)
