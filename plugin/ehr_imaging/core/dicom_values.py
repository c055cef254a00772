"""DICOM value primitives, each defined once (pure): DA/TM/DT text <-> date and time, UIDs, the shape of a
person name, patient sexes, and the keys that name a study's UID in a query.

Every module that reads, checks or writes one of these values calls this one, so that the ingest worker, the
HTTP filter, the tag routes and the worklist cannot disagree about what a date or a UID is.

**Dates and times** (PS3.5 §6.2): ``parse_da``/``parse_tm``/``parse_dt`` return None for an absent or malformed
value, never a guess (``strptime`` alone reads ``202611`` as 2026-01-01). ``parse_date`` also takes the ISO form
``YYYY-MM-DD`` the API's query strings accept; ``to_da``/``to_tm`` write DA and TM.

**UIDs.** PS3.5 §9.1: digits and dots, at most 64 characters, no empty component, and no leading zero in a
component ("0" alone is one). Real archives hold UIDs that break the last rule (``1.2.840.0113654...``), Orthanc
stores and serves them, and a viewer must still reach such a study. Hence two checks:

- ``is_uid``: ``[0-9]+(\\.[0-9]+)*``, at most 64 characters. For *finding and deciding*: the HTTP filter's
  paths, WADO-URI and QIDO values, viewer tokens, the study routes. The plugin never refuses to find what
  Orthanc holds because of a leading zero.
- ``is_conformant_uid``: all of PS3.5 §9.1 (leading zeros refused too). For *judging new content*: the errors
  of tag validation, offline-sync declarations, and UIDs the plugin generates.

Both refuse the empty string, empty components (``1..2``, ``.1``, ``1.``), anything but ASCII digits and dots,
and more than 64 characters: the UI value representation's own maximum (not a rule archives bend like leading
zeros), which also bounds what the filter passes on and what a viewer token carries.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

# --- dates and times -----------------------------------------------------------------------------------------


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit()  # str.isdigit alone accepts "２" and "²"


def parse_da(value: Any) -> date | None:
    """DICOM DA (``YYYYMMDD``, padding ignored) -> a date; None when absent or malformed."""
    text = str(value or "").strip()
    if len(text) != 8 or not _digits(text):
        return None
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None


def parse_tm(value: Any) -> time | None:
    """DICOM TM (``HH[MM[SS[.FFFFFF]]]``) -> a time to the second (the fraction is dropped); None when absent
    or malformed. The ACR-NEMA form ``HH:MM:SS`` is not read."""
    text = str(value or "").strip().split(".")[0]
    if not _digits(text) or len(text) not in (2, 4, 6):
        return None
    parts = [int(text[i:i + 2]) for i in range(0, len(text), 2)] + [0, 0]
    try:
        return time(parts[0], parts[1], parts[2])
    except ValueError:
        return None


def parse_dt(value: Any) -> datetime | None:
    """DICOM DT (``YYYY[MM[DD[HH[MM[SS[.FFFFFF]]]]]][&ZZXX]``) -> a datetime, aware when the value carries its
    UTC offset; absent components are the first month, day, hour...; None when absent or malformed."""
    text = str(value or "").strip()
    offset: timezone | None = None
    if len(text) > 5 and text[-5] in "+-":
        zone = text[-4:]
        if not _digits(zone) or int(zone[2:]) > 59:
            return None
        minutes = int(zone[:2]) * 60 + int(zone[2:])
        if text[-5] == "-":
            minutes = -minutes
        if not -12 * 60 <= minutes <= 14 * 60:
            return None
        offset, text = timezone(timedelta(minutes=minutes)), text[:-5]
    main, dot, fraction = text.partition(".")
    if not _digits(main) or len(main) not in (4, 6, 8, 10, 12, 14):
        return None
    if dot and (len(main) != 14 or not 1 <= len(fraction) <= 6 or not _digits(fraction)):
        return None
    year, rest = int(main[:4]), [int(main[i:i + 2]) for i in range(4, len(main), 2)]
    month, day, hour, minute, second = (rest + [1, 1, 0, 0, 0][len(rest):])[:5]
    try:
        return datetime(year, month, day, hour, minute, second, int(fraction.ljust(6, "0")) if dot else 0,
                        tzinfo=offset)
    except ValueError:
        return None


def parse_date(value: Any) -> date | None:
    """A date as DICOM DA (``YYYYMMDD``) or in the ISO form ``YYYY-MM-DD``; None when absent or malformed."""
    text = str(value or "").strip()
    if len(text) == 10 and text[4] == text[7] == "-":
        text = text[:4] + text[5:7] + text[8:]
    return parse_da(text)


def to_da(value: date | str | None) -> str:
    """A date (a datetime's own calendar date; ISO 8601 text as the store's dicts carry it) as DICOM DA;
    "" when absent."""
    if value is None or value == "":
        return ""
    day = datetime.fromisoformat(value) if isinstance(value, str) else value
    return f"{day.year:04d}{day.month:02d}{day.day:02d}"  # strftime writes year 999 as "999"


def to_tm(value: time | datetime | str | None) -> str:
    """A time (a datetime's own clock time; ISO 8601 text) as DICOM TM ``HHMMSS``; "" when absent."""
    if value is None or value == "":
        return ""
    return (datetime.fromisoformat(value) if isinstance(value, str) else value).strftime("%H%M%S")


# --- UIDs ----------------------------------------------------------------------------------------------------

MAX_UID_LENGTH = 64
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
_CONFORMANT_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
_UID_LIST_SEPARATORS = re.compile(r"[,\\]")


def is_uid(value: Any) -> bool:
    """Digits and dots, no empty component, at most 64 characters; leading zeros allowed (module docstring)."""
    return isinstance(value, str) and len(value) <= MAX_UID_LENGTH and _UID.fullmatch(value) is not None


def is_conformant_uid(value: Any) -> bool:
    """``is_uid`` and no leading zero in any component (PS3.5 §9.1)."""
    return isinstance(value, str) and len(value) <= MAX_UID_LENGTH and _CONFORMANT_UID.fullmatch(value) is not None


def split_uid_list(value: str) -> list[str]:
    """A QIDO UID list: comma- or backslash-separated (both are seen in the wild); blanks dropped."""
    return [part.strip() for part in _UID_LIST_SEPARATORS.split(value) if part.strip()]


def is_uid_list(value: str) -> bool:
    """One or more UIDs (``is_uid``) separated by single commas or backslashes, nothing else."""
    return all(is_uid(part) for part in _UID_LIST_SEPARATORS.split(value))


# --- person names, sexes -------------------------------------------------------------------------------------

PN_MAX_GROUPS = 3  # alphabetic, ideographic, phonetic, separated by "="
PN_MAX_COMPONENTS = 5  # family, given, middle, prefix, suffix, separated by "^"


def is_pn_shape(value: str) -> bool:
    """At most 3 component groups (``=``) of at most 5 components (``^``) each (PS3.5 §6.2.1)."""
    groups = value.split("=")
    return len(groups) <= PN_MAX_GROUPS and all(group.count("^") < PN_MAX_COMPONENTS for group in groups)


SEXES = ("M", "F", "O")  # (0010,0040) PatientSex: male, female, other

# --- the study's UID in queries ------------------------------------------------------------------------------

STUDY_UID_KEYWORD = "StudyInstanceUID"
STUDY_UID_TAG = "0020000D"  # as DICOM JSON spells its keys
STUDY_UID_QUERY_KEYS = frozenset({STUDY_UID_KEYWORD.lower(), STUDY_UID_TAG.lower()})  # QIDO keys, in lower case
