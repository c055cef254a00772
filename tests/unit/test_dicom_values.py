"""DICOM value primitives (core.dicom_values): DA/TM/DT parsing, dates in query strings, DA/TM writing, the two
UID rules, UID lists, person-name shape, sexes, the study-UID query keys; and that every caller uses them."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from ehr_imaging.core import access, query_values, upload_rules, viewer_tokens
from ehr_imaging.core.dicom_values import (
    MAX_UID_LENGTH,
    SEXES,
    STUDY_UID_KEYWORD,
    STUDY_UID_QUERY_KEYS,
    STUDY_UID_TAG,
    is_conformant_uid,
    is_pn_shape,
    is_uid,
    is_uid_list,
    parse_da,
    parse_date,
    parse_dt,
    parse_tm,
    split_uid_list,
    to_da,
    to_tm,
)

PLUGIN_DIR = Path(__file__).resolve().parents[2] / "plugin"

# --- DA ------------------------------------------------------------------------------------------------------


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


# --- TM ------------------------------------------------------------------------------------------------------


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


# --- DT ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026", datetime(2026, 1, 1)),
        ("202611", datetime(2026, 11, 1)),
        ("20261120", datetime(2026, 11, 20)),
        ("2026112009", datetime(2026, 11, 20, 9)),
        ("202611200930", datetime(2026, 11, 20, 9, 30)),
        ("20261120093015", datetime(2026, 11, 20, 9, 30, 15)),
        ("20261120093015.5", datetime(2026, 11, 20, 9, 30, 15, 500000)),
        ("20261120093015.123456", datetime(2026, 11, 20, 9, 30, 15, 123456)),
        ("20261120093015-0600", datetime(2026, 11, 20, 9, 30, 15, tzinfo=timezone(timedelta(hours=-6)))),
        ("202611200930+0530", datetime(2026, 11, 20, 9, 30, tzinfo=timezone(timedelta(hours=5, minutes=30)))),
        ("2026+0000", datetime(2026, 1, 1, tzinfo=UTC)),
        (" 20261120093015 ", datetime(2026, 11, 20, 9, 30, 15)),
    ],
)
def test_parse_dt_valid(value: str, expected: datetime) -> None:
    parsed = parse_dt(value)
    assert parsed is not None and parsed == expected
    assert parsed.tzinfo == expected.tzinfo


@pytest.mark.parametrize(
    "value",
    [
        None, "", "202", "20261", "2026112", "20261120093015.", "20261120093015.1234567",  # lengths
        "2026112009.5", "20261320", "20261120250000", "20261120096000",  # fraction without seconds; ranges
        "20261120093015+1500", "20261120093015-1300", "20261120093015+0560", "20261120093015+05",  # offsets
        "2026-11-20T09:30:15", "20261120 093015", "２０２６", "2026112009301５",  # not DT
    ],
)
def test_parse_dt_malformed_is_none(value: Any) -> None:
    assert parse_dt(value) is None


# --- dates in query strings; writing DA and TM ---------------------------------------------------------------


@pytest.mark.parametrize("value", ["2026-03-01", "20260301", " 2026-03-01 "])
def test_a_query_date_is_iso_or_da(value: str) -> None:
    assert parse_date(value) == date(2026, 3, 1)


@pytest.mark.parametrize("value", [None, "", "2026301", "2026-3-01", "2026-03-1", "2026/03/01", "2026-02-30",
                                   "2026-03-01T00:00", "2026--3-01", "２０２６-０３-０１", "01-03-2026"])
def test_a_query_date_that_is_neither_is_none(value: Any) -> None:
    assert parse_date(value) is None


def test_da_and_tm_are_written_from_dates_times_and_iso_text() -> None:
    start = datetime(2026, 11, 20, 9, 30, 15, 999999, tzinfo=timezone(timedelta(hours=-6)))
    assert (to_da(start), to_tm(start)) == ("20261120", "093015")  # its own wall clock, not UTC's
    assert (to_da("2026-11-20T09:30:15-06:00"), to_tm("2026-11-20T09:30:15-06:00")) == ("20261120", "093015")
    assert to_da(date(1815, 12, 10)) == to_da("1815-12-10") == "18151210"
    assert to_da(date(999, 1, 2)) == "09990102"  # four digits, always
    assert to_tm(time(7, 5)) == "070500"
    assert to_da(None) == to_da("") == to_tm(None) == to_tm("") == ""


# --- UIDs ----------------------------------------------------------------------------------------------------

LONGEST = "1." + "2" * (MAX_UID_LENGTH - 2)


@pytest.mark.parametrize(("value", "uid", "conformant"), [
    ("1.2.840.10008.1.2.1", True, True),
    ("0", True, True),
    ("0.1", True, True),
    ("1.2.0.3", True, True),  # "0" alone is a component without a leading zero
    ("1.2.840.0113654.2.70.1", True, False),  # a leading zero: stored by real archives, not conformant
    ("01.2", True, False),
    ("1.02.3", True, False),
    ("1.2.00", True, False),
    (LONGEST, True, True),  # 64 characters
    (LONGEST + "2", False, False),  # 65
    ("", False, False),
    ("1..2", False, False),  # empty component
    (".1.2", False, False),
    ("1.2.", False, False),  # trailing dot
    (".", False, False),
    ("1.2a", False, False),  # not digits
    ("1.2 ", False, False),
    (" 1.2", False, False),
    ("1.2\n", False, False),
    ("1,2", False, False),
    ("1.-2", False, False),
    ("１.２", False, False),  # digits, but not ASCII ones
    ("1.²", False, False),
    (12, False, False),
    (None, False, False),
])
def test_the_two_uid_rules(value: Any, uid: bool, conformant: bool) -> None:
    assert is_uid(value) is uid
    assert is_conformant_uid(value) is conformant


def test_the_upload_rules_uid_cases_are_conformance() -> None:
    """The cases tests/unit/test_uploads.py pinned for offline declarations (now ``is_conformant_uid``)."""
    for value, valid in [("1.2.840.10008", True), ("0.1", True), ("1..2", False), ("1.2.", False),
                         ("01.2", False), ("1.2a", False), (12, False)]:
        assert is_conformant_uid(value) is valid


@pytest.mark.parametrize(("value", "expected"), [
    ("1.2.3", ["1.2.3"]), ("1.2,1.3", ["1.2", "1.3"]), ("1.2\\1.3", ["1.2", "1.3"]), (" 1.2 , 1.3 ,", ["1.2", "1.3"]),
    ("", []), (",", []),
])
def test_uid_lists_are_split_on_commas_and_backslashes(value: str, expected: list[str]) -> None:
    assert split_uid_list(value) == expected


@pytest.mark.parametrize(("value", "valid"), [
    ("1.2.3", True), ("1.2,1.3", True), ("1.2\\1.3", True), ("1.02,1.3", True),  # leading zeros are found too
    (",".join([LONGEST] * 3), True),
    ("", False), ("1.2,", False), (",1.2", False), ("1.2,,1.3", False), ("1.2;1.3", False), ("1.2, 1.3", False),
    ("1..2,1.3", False), ("1.2.,1.3", False), ("*", False), (LONGEST + "2", False),
])
def test_uid_lists(value: str, valid: bool) -> None:
    assert is_uid_list(value) is valid


# --- callers: each one decides by the rule meant for it (module docstring) -----------------------------------

NONCONFORMANT = "1.2.840.0113654.2.70.1"
SERIES, INSTANCE = NONCONFORMANT + ".7", NONCONFORMANT + ".7.1"


def member(study: str, series: str | None, instance: str | None) -> bool:
    return True  # the filter's cached membership facts: every series and instance is the study's


def test_a_viewer_reaches_a_stored_study_whose_uids_have_leading_zeros() -> None:
    studies = frozenset({NONCONFORMANT})
    for path in (f"/dicom-web/studies/{NONCONFORMANT}/metadata",
                 f"/dicom-web/studies/{NONCONFORMANT}/series/{SERIES}/instances/{INSTANCE}/frames/1"):
        assert access.decide_viewer("GET", path, {}, studies, member).allowed, path
    wado = {"requestType": "WADO", "studyUID": NONCONFORMANT, "seriesUID": SERIES, "objectUID": INSTANCE}
    assert access.decide_viewer("GET", "/wado", wado, studies, member).allowed
    assert query_values.refusal(query_values.QIDO, {"StudyInstanceUID": f"{NONCONFORMANT},1.2.3"}) is None
    assert access.narrow_study_uids(f"{NONCONFORMANT}\\1.2.3", studies) == [NONCONFORMANT]
    token = viewer_tokens.mint_viewer_token(secret="s" * 32, issuer="ehr", subject="dr", ttl_seconds=60,
                                            studies={NONCONFORMANT: "0" * 8 + "-00000000" * 4})
    assert token.study_uids == (NONCONFORMANT,)


@pytest.mark.parametrize("bad", ["1..2", "1.2.", LONGEST + "2", "1.2a"])
def test_what_is_not_a_uid_is_refused_by_every_lookup(bad: str) -> None:
    assert not access.decide_viewer("GET", f"/dicom-web/studies/{bad}/metadata", {}, frozenset({bad}), member).allowed
    wado = {"requestType": "WADO", "studyUID": "1.2", "seriesUID": "1.2.3", "objectUID": bad}
    assert not access.decide_viewer("GET", "/wado", wado, frozenset({"1.2"}), member).allowed
    assert query_values.refusal(query_values.QIDO, {"0020000D": f"1.2,{bad}"}) is not None
    with pytest.raises(ValueError, match="not a DICOM UID"):
        viewer_tokens.mint_viewer_token(secret="s" * 32, issuer="ehr", subject="dr", ttl_seconds=60,
                                        studies={bad: "0" * 8 + "-00000000" * 4})


def test_an_offline_declaration_must_be_conformant() -> None:
    declaration = {"sop_instance_uid": "1.2.3.4", "series_instance_uid": "1.2.3", "study_instance_uid": "1.2",
                   "size": 10, "sha256": "a" * 64}
    assert upload_rules.parse_declaration(declaration, max_size=100).study_instance_uid == "1.2"
    with pytest.raises(upload_rules.DeclarationError, match=r"^study_instance_uid: .*no leading zeros"):
        upload_rules.parse_declaration({**declaration, "study_instance_uid": NONCONFORMANT}, max_size=100)


# --- person names, sexes, study-UID keys ---------------------------------------------------------------------


@pytest.mark.parametrize(("value", "ok"), [
    ("DOE^JOHN", True), ("DOE^JOHN^Q^DR^JR", True), ("DOE^JOHN=ドウ^ジョン=doe^john", True), ("", True),
    ("A^B^C^D^E^F", False), ("A=B=C=D", False), ("DOE=ドウ^ジョン^a^b^c^d", False),
])
def test_person_name_shape(value: str, ok: bool) -> None:
    assert is_pn_shape(value) is ok


def test_sexes_and_study_uid_keys() -> None:
    assert SEXES == ("M", "F", "O")
    assert (STUDY_UID_KEYWORD, STUDY_UID_TAG) == ("StudyInstanceUID", "0020000D")
    assert {"studyinstanceuid", "0020000d"} == STUDY_UID_QUERY_KEYS
    assert STUDY_UID_QUERY_KEYS <= access.QIDO_PARAMETERS


# --- purity --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("module", ["ehr_imaging.core.dicom_values", "ehr_imaging.app.ingest"])
def test_imports_without_orthanc(module: str) -> None:
    """The primitives, and ingest which uses them, are importable outside Orthanc: no ``import orthanc``."""
    code = (
        "import sys, importlib\n"
        "sys.modules['orthanc'] = None  # any 'import orthanc' now raises ImportError\n"
        f"importlib.import_module({module!r})\n"
        "from ehr_imaging.core.dicom_values import parse_da\n"
        "assert parse_da('20261120') is not None\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=PLUGIN_DIR, capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
