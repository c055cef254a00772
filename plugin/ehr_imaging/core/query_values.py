"""Bounds on the values of the query parameters a viewer token may send (sizes, qualities, windows, pages).

The parameter *names* are allow-listed in core.access; this module bounds what they may say, so a viewer
token cannot make Orthanc render a 60000×60000 image (``viewport``, WADO-URI ``rows``/``columns``) or do
other unbounded work. Every value is checked against its grammar (PS3.18) with numeric limits; a value
that does not parse is refused, never passed on. Pure: returns a reason, or None when the query is fine.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping

from .dicom_values import MAX_UID_LENGTH, STUDY_UID_QUERY_KEYS, is_uid, is_uid_list

MAX_RENDER_PIXELS = 4096  # per side of a rendered image a viewer may ask for (OHIF renders client-side)
MAX_FRAME_NUMBER = 100000
MAX_QIDO_LIMIT = 1000
MAX_QIDO_OFFSET = 1_000_000
MAX_VALUE_LENGTH = 1024  # any single value; UID lists get their own bound
MAX_UID_LIST_LENGTH = 200 * (MAX_UID_LENGTH + 1)  # a viewer token holds at most 200 studies
_MAX_REGION_OFFSET = 65536

_INT = re.compile(r"-?[0-9]{1,9}")
_DECIMAL = re.compile(r"[-+]?([0-9]{1,12}(\.[0-9]{0,12})?|\.[0-9]{1,12})([eE][-+]?[0-9]{1,3})?")
_TOKEN_LIST = re.compile(r"[A-Za-z0-9_.+-]{1,64}(,[A-Za-z0-9_.+-]{1,64}){0,15}")
_MEDIA_TYPES = re.compile(r"[A-Za-z0-9!#$&^_.+*/=;,\" %-]{1,512}")  # raw in the filter: may be percent-encoded
_MATCH_VALUE = re.compile(r"[^\x00-\x1f\x7f]*")


def _int_in(low: int, high: int) -> Callable[[str], bool]:
    def check(value: str) -> bool:
        return _INT.fullmatch(value) is not None and low <= int(value) <= high

    return check


def _decimal(value: str, bound: float = 1e7) -> bool:
    return _DECIMAL.fullmatch(value) is not None and math.isfinite(float(value)) and abs(float(value)) <= bound


def _viewport(value: str) -> bool:
    """``vw,vh`` or ``vw,vh,sx,sy,sw,sh`` (PS3.18 8.3.5.1.3): the output size is bounded, the source region sane."""
    parts = value.split(",")
    if len(parts) not in (2, 6) or not all(_int_in(1, MAX_RENDER_PIXELS)(p) for p in parts[:2]):
        return False
    return all(p == "" or _int_in(-_MAX_REGION_OFFSET, _MAX_REGION_OFFSET)(p) for p in parts[2:])


def _window(value: str) -> bool:
    """``center,width[,function]`` with function linear, linear-exact or sigmoid."""
    parts = value.split(",")
    if len(parts) not in (2, 3) or not all(_decimal(p) for p in parts[:2]):
        return False
    return len(parts) == 2 or parts[2].lower() in ("linear", "linear-exact", "sigmoid")


def _region(value: str) -> bool:
    """WADO-URI ``region``: four fractions of the image in [0, 1], left < right and top < bottom."""
    parts = value.split(",")
    if len(parts) != 4 or not all(_decimal(p, 1.0) for p in parts):
        return False
    x1, y1, x2, y2 = (float(p) for p in parts)
    return 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1


def _one_of(*allowed: str) -> Callable[[str], bool]:
    return lambda value: all(part.strip().lower() in allowed for part in value.split(","))


def _matches(pattern: re.Pattern[str]) -> Callable[[str], bool]:
    return lambda value: pattern.fullmatch(value) is not None


_QUALITY = _int_in(1, 100)
_ANNOTATION = _one_of("patient", "technique")

WADO_RS: dict[str, Callable[[str], bool]] = {
    "viewport": _viewport, "quality": _QUALITY, "window": _window, "annotation": _ANNOTATION,
    "charset": _matches(_TOKEN_LIST), "iccprofile": _one_of("no", "yes", "srgb", "adobergb", "rommrgb"),
    "accept": _matches(_MEDIA_TYPES),
}
WADO_URI: dict[str, Callable[[str], bool]] = {
    "requestType": _one_of("wado"), "studyUID": is_uid, "seriesUID": is_uid,
    "objectUID": is_uid, "contentType": _matches(_MEDIA_TYPES), "charset": _matches(_TOKEN_LIST),
    "anonymize": _one_of("yes"), "annotation": _ANNOTATION, "rows": _int_in(1, MAX_RENDER_PIXELS),
    "columns": _int_in(1, MAX_RENDER_PIXELS), "region": _region, "windowCenter": _decimal,
    "windowWidth": _decimal, "frameNumber": _int_in(1, MAX_FRAME_NUMBER), "imageQuality": _QUALITY,
    "transferSyntax": is_uid,
}
QIDO: dict[str, Callable[[str], bool]] = {
    "limit": _int_in(1, MAX_QIDO_LIMIT), "offset": _int_in(0, MAX_QIDO_OFFSET),
    "fuzzymatching": _one_of("true", "false"), **dict.fromkeys(STUDY_UID_QUERY_KEYS, is_uid_list),
}


def refusal(rules: Mapping[str, Callable[[str], bool]], query: Mapping[str, str]) -> str | None:
    """Why this query's values are refused, or None. Keys are looked up as given (WADO-URI names are
    case-sensitive) and, for WADO-RS and QIDO, in lower case. Keys without a rule (QIDO matching keys,
    includefield) need only a bounded length and no control characters."""
    for key, value in query.items():
        name = key if key in rules else key.lower()
        bound = MAX_UID_LIST_LENGTH if name in STUDY_UID_QUERY_KEYS else MAX_VALUE_LENGTH
        if len(value) > bound or not _MATCH_VALUE.fullmatch(value):
            return f"query parameter {key[:40]}: value too long or with control characters"
        rule = rules.get(name)
        if rule is not None and not rule(value):
            return f"query parameter {key[:40]}: value not allowed ({_HINTS.get(name, 'see PS3.18')})"
    return None


_HINTS = {
    "viewport": f"vw,vh[,sx,sy,sw,sh] with vw and vh at most {MAX_RENDER_PIXELS}",
    "rows": f"1..{MAX_RENDER_PIXELS}", "columns": f"1..{MAX_RENDER_PIXELS}", "quality": "1..100",
    "imageQuality": "1..100", "limit": f"1..{MAX_QIDO_LIMIT}", "offset": f"0..{MAX_QIDO_OFFSET}",
    "region": "four fractions x1,y1,x2,y2 in [0, 1]", "window": "center,width[,linear|linear-exact|sigmoid]",
}
