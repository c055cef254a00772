"""Regressions the fuzz run found (tests/integration/test_fuzz.py REGRESSIONS, channel "rest"): a file pydicom
reads, but one of whose values it cannot convert, is an unreadable DICOM file (400), never an exception."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from ehr_imaging.core import dicom_file


def _source(name: str) -> bytes:
    return Path(str(get_testdata_file(name))).read_bytes()


def test_an_unknown_vr_is_an_unreadable_file() -> None:
    """Seed 20261201, index 31: a bit flip made AcquisitionDate's VR 'DI' (pydicom: NotImplementedError)."""
    data = _source("MR_small.dcm")
    header = b"\x08\x00\x22\x00DA"
    assert data.count(header) == 1
    broken = data.replace(header, b"\x08\x00\x22\x00DI")
    with pytest.raises(dicom_file.DicomFileError, match=r"not a readable DICOM file \(NotImplementedError: Unknown"):
        dicom_file.parse(broken)


def test_a_transfer_syntax_that_is_not_one_is_read_without_measuring_pixels() -> None:
    """Seed 20261201, index 133: the file meta names a UID that is no transfer syntax (pydicom: ValueError)."""
    data = _source("MR_small.dcm")
    syntax = b"1.2.840.10008.1.2.1\x00"
    assert data.count(syntax) == 1
    parsed = dicom_file.parse(data.replace(syntax, b"1.2.840.10008.1.2.9\x00"))
    assert parsed.problems == [] and parsed.transfer_syntax == "1.2.840.10008.1.2.9"


def test_an_unknown_vr_on_a_uid_is_an_unreadable_file_before_anyone_reads_it() -> None:
    """Seed 20261201, index 309: StudyInstanceUID's VR flipped to 'UH'. pydicom had read the file and converted
    nothing yet; the upload's check asked for the UID and raised, failing a whole upload-multiple with a 500
    after it had stored the files before it."""
    data = _source("MR_small.dcm")
    header = b"\x20\x00\x0d\x00UI"
    assert data.count(header) == 1
    with pytest.raises(dicom_file.DicomFileError, match=r"not a readable DICOM file \(NotImplementedError: Unknown"):
        dicom_file.parse(data.replace(header, b"\x20\x00\x0d\x00UH"))


def test_checking_the_values_leaves_the_file_as_it_was_read() -> None:
    data = _source("MR_small.dcm")
    assert dicom_file.to_bytes(dicom_file.parse(data).dataset) == data
