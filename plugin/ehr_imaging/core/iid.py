"""IHE Invoke Image Display (IID, RAD TF-2 4.106): the request's parameters, read and checked, and which of a
patient's studies a PATIENT request selects. Pure: the use case (app/iid.py) reads the studies, this decides.

STUDY requests name studies by ``studyUID`` or ``accessionNumber`` (comma-separated lists, never both); PATIENT
requests name a patient by ``patientID`` (an HL7 CX ``ID^^^&issuer&ISO``, or a plain id) and narrow with
``lowerDateTime`` / ``upperDateTime`` (XML Schema dateTime as the profile says, or DICOM DT), ``mostRecentResults``
and ``modalitiesInStudy``. ``viewerType``, ``diagnosticQuality`` and ``keyImagesOnly`` are read and checked; the
viewer (OHIF, interactive, diagnostic quality, the whole study) is the same whatever they say (README
"IHE Invoke Image Display"). A request that breaks these rules is ``errors.Malformed`` (400).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time

from . import errors
from .dicom_values import is_uid

QUERY_TOKEN = "token"  # the short-lived user JWT an EHR may put in the URL (core/query_token.py)
STUDY, PATIENT = "STUDY", "PATIENT"
MAX_LIST = 200  # UIDs or accession numbers in one request (core/viewer_tokens.MAX_STUDIES)
MAX_VALUE = 64
_MODALITY = re.compile(r"[A-Z0-9_]{1,16}")
_DICOM_DT = re.compile(r"(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\.\d{1,6})?([+-]\d{4})?")


@dataclass(frozen=True)
class IidRequest:
    request_type: str
    study_uids: tuple[str, ...] = ()
    accession_numbers: tuple[str, ...] = ()
    patient_id: str | None = None  # the CX's ID component
    issuer: str | None = None  # the CX's assigning authority (HD), as given: not used for matching
    lower: datetime | None = None
    upper: datetime | None = None
    most_recent: int | None = None
    modalities: frozenset[str] = frozenset()
    viewer_type: str | None = None
    diagnostic_quality: bool | None = None
    key_images_only: bool | None = None


@dataclass(frozen=True)
class Candidate:
    """What the selection of a PATIENT request reads of a recorded study."""

    study_uid: str
    study_date: date | None
    study_time: time | None
    modalities: tuple[str, ...]


def parse(query: Mapping[str, str]) -> IidRequest:
    """The request, or ``errors.Malformed`` naming what is wrong (unknown parameters are ignored, as HTTP does)."""
    request_type = _value(query, "requestType")
    viewer_type, quality, key_only = _value(query, "viewerType"), _flag(query, "diagnosticQuality"), _flag(
        query, "keyImagesOnly")
    if request_type is None:
        raise errors.Malformed("requestType is required: STUDY or PATIENT")
    if request_type == STUDY:
        for name in ("patientID", "lowerDateTime", "upperDateTime", "mostRecentResults", "modalitiesInStudy"):
            if _value(query, name) is not None:
                raise errors.Malformed(f"{name} is a parameter of requestType=PATIENT, not STUDY")
        uids, accessions = _list(query, "studyUID"), _list(query, "accessionNumber")
        if uids and accessions:
            raise errors.Malformed("give studyUID or accessionNumber, never both")
        if not uids and not accessions:
            raise errors.Malformed("requestType=STUDY needs studyUID or accessionNumber")
        bad = [uid for uid in uids if not is_uid(uid)]
        if bad:
            raise errors.Malformed(f"studyUID: not a DICOM UID: {bad[0][:80]!r}")
        return IidRequest(STUDY, study_uids=uids, accession_numbers=accessions, viewer_type=viewer_type,
                          diagnostic_quality=quality, key_images_only=key_only)
    if request_type == PATIENT:
        for name in ("studyUID", "accessionNumber"):
            if _value(query, name) is not None:
                raise errors.Malformed(f"{name} is a parameter of requestType=STUDY, not PATIENT")
        raw_id = _value(query, "patientID")
        if raw_id is None:
            raise errors.Malformed("requestType=PATIENT needs patientID")
        patient_id, issuer = patient_identifier(raw_id)
        lower, upper = _datetime(query, "lowerDateTime"), _datetime(query, "upperDateTime")
        if lower is not None and upper is not None and lower > upper:
            raise errors.Malformed("lowerDateTime is after upperDateTime")
        return IidRequest(PATIENT, patient_id=patient_id, issuer=issuer, lower=lower, upper=upper,
                          most_recent=_count(query, "mostRecentResults"), modalities=_modalities(query),
                          viewer_type=viewer_type, diagnostic_quality=quality, key_images_only=key_only)
    raise errors.Malformed(f"requestType {request_type[:20]!r} is not supported: STUDY or PATIENT")


def patient_identifier(value: str) -> tuple[str, str | None]:
    """An HL7 CX (``ID^^^&1.2.3&ISO``, ``ID^^^HOSP``) -> (ID, assigning authority or None); a plain id as is."""
    parts = value.split("^")
    patient_id = parts[0].strip()
    if not patient_id or len(patient_id) > MAX_VALUE or any(ord(c) < 0x20 for c in patient_id):
        raise errors.Malformed("patientID: the patient identifier (CX ID component) is empty or not valid")
    authority = parts[3].strip() if len(parts) > 3 else ""
    return patient_id, authority or None


def parse_datetime(value: str) -> datetime | None:
    """XML Schema dateTime / ISO 8601 (``2026-11-20T09:30:00Z``, ``2026-11-20``) or DICOM DT
    (``20261120093000``, ``20261120``); the offset is dropped (study dates and times are the modality's wall
    clock). None when it is neither."""
    text = value.strip()
    if "-" in text[:5] or "T" in text:
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed.replace(tzinfo=None)
    match = _DICOM_DT.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, _ = match.groups()
    try:
        return datetime(int(year), int(month or 1), int(day or 1), int(hour or 0), int(minute or 0),
                        int(second or 0), int(((fraction or ".0")[1:] + "000000")[:6]))
    except ValueError:
        return None


def select(request: IidRequest, studies: Iterable[Candidate], cap: int) -> list[str]:
    """The StudyInstanceUIDs a PATIENT request opens: within the date bounds (a study without a date is outside
    any bound), with one of the modalities asked, newest first, at most ``mostRecentResults`` (and ``cap``: the
    server decides how many when it is not given)."""
    chosen = [s for s in studies if _in_bounds(request, s) and _has_modality(request, s)]
    chosen.sort(key=lambda s: (_when(s) or datetime.min, s.study_uid), reverse=True)
    limit = min(request.most_recent or cap, cap)
    return list(dict.fromkeys(s.study_uid for s in chosen))[:limit]


def _when(study: Candidate) -> datetime | None:
    return None if study.study_date is None else datetime.combine(study.study_date, study.study_time or time())


def _in_bounds(request: IidRequest, study: Candidate) -> bool:
    if request.lower is None and request.upper is None:
        return True
    when = _when(study)
    if when is None:
        return False
    return (request.lower is None or when >= request.lower) and (request.upper is None or when <= request.upper)


def _has_modality(request: IidRequest, study: Candidate) -> bool:
    return not request.modalities or any(m.upper() in request.modalities for m in study.modalities)


def _value(query: Mapping[str, str], name: str) -> str | None:
    value = query.get(name)
    return value.strip() or None if value is not None else None


def _list(query: Mapping[str, str], name: str) -> tuple[str, ...]:
    value = _value(query, name)
    if value is None:
        return ()
    items = tuple(dict.fromkeys(item.strip() for item in value.split(",") if item.strip()))
    if len(items) > MAX_LIST:
        raise errors.Malformed(f"{name}: at most {MAX_LIST} values ({len(items)} given)")
    if any(len(item) > MAX_VALUE or any(ord(c) < 0x20 for c in item) for item in items):
        raise errors.Malformed(f"{name}: a value is too long or has control characters")
    return items


def _datetime(query: Mapping[str, str], name: str) -> datetime | None:
    value = _value(query, name)
    if value is None:
        return None
    parsed = parse_datetime(value[:40])
    if parsed is None:
        raise errors.Malformed(f"{name}: a dateTime such as 2026-11-20T09:30:00 (or DICOM DT 20261120093000)")
    return parsed


def _count(query: Mapping[str, str], name: str) -> int | None:
    value = _value(query, name)
    if value is None:
        return None
    if not value.isdigit() or not value.isascii() or len(value) > 6 or int(value) < 1:
        raise errors.Malformed(f"{name}: a positive whole number of studies")
    return int(value)


def _modalities(query: Mapping[str, str]) -> frozenset[str]:
    values = [item.strip().upper() for item in (_value(query, "modalitiesInStudy") or "").split(",") if item.strip()]
    bad = [m for m in values if not _MODALITY.fullmatch(m)]
    if bad:
        raise errors.Malformed(f"modalitiesInStudy: not a DICOM modality code: {bad[0][:20]!r}")
    return frozenset(values)


def _flag(query: Mapping[str, str], name: str) -> bool | None:
    value = _value(query, name)
    if value is None:
        return None
    if value.lower() not in ("true", "false"):
        raise errors.Malformed(f"{name}: true or false")
    return value.lower() == "true"
