"""DICOM DA / TM parsing at ingest (ingest.parse_da, ingest.parse_tm): well-formed values only, None otherwise."""

from __future__ import annotations

import subprocess
import sys
from datetime import date, time
from pathlib import Path
from typing import Any

import pytest

from ehr_imaging.app.ingest import parse_da, parse_tm

PLUGIN_DIR = Path(__file__).resolve().parents[2] / "plugin"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("20261120", date(2026, 11, 20)),
        ("19000101", date(1900, 1, 1)),
        ("20240229", date(2024, 2, 29)),
        ("18151210", date(1815, 12, 10)),
        ("20261120 ", date(2026, 11, 20)),  # padded to even length
        (" 20261120", date(2026, 11, 20)),
    ],
)
def test_parse_da_valid(value: str, expected: date) -> None:
    assert parse_da(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        None, "", " ",
        "20261340", "20261301", "20261100", "20230229", "00000000", "99999999",  # eight digits, no such day
        "2026-11-20", "2026.11.20", "2026/11/20", "20-11-2026",  # not DA
        "202611", "202612", "2026111", "2026112", "2026", "202611200",  # wrong length (strptime would guess)
        "2026112O", "abcdefgh", "+2026112", "２０２６１１２０",  # not ASCII digits
        "20261120-20261121",  # a range is a query, not a value
    ],
)
def test_parse_da_malformed_is_none(value: Any) -> None:
    assert parse_da(value) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("09", time(9)),
        ("0930", time(9, 30)),
        ("093015", time(9, 30, 15)),
        ("093015.123456", time(9, 30, 15)),  # the fraction is dropped
        ("093015.1", time(9, 30, 15)),
        ("000000", time(0, 0, 0)),
        ("235959", time(23, 59, 59)),
        ("0930 ", time(9, 30)),  # padded to even length
    ],
)
def test_parse_tm_valid(value: str, expected: time) -> None:
    assert parse_tm(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        None, "", " ", ".5",
        "24", "2460", "2400", "1260", "126000", "120060", "240000",  # out of range
        "9", "930", "09301", "0930151", "09301512",  # odd or too many digits
        "09:30", "09:30:15", "9h30", "ab", "0930-0", "-0930",
        "１２", "²²",  # digits, but not ASCII ones
    ],
)
def test_parse_tm_malformed_is_none(value: Any) -> None:
    assert parse_tm(value) is None


def test_ingest_imports_without_orthanc() -> None:
    """The helpers are importable outside Orthanc: ingest must not pull in the ``orthanc`` module."""
    code = (
        "import sys\n"
        "sys.modules['orthanc'] = None  # any 'import orthanc' now raises ImportError\n"
        "import ehr_imaging.app.ingest as ingest\n"
        "assert ingest.parse_da('20261120') is not None\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=PLUGIN_DIR, capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
