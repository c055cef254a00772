"""DICOM network services other than C-STORE (pure): which ones a configuration may allow, how the
plugin's own C-FIND SCP turns a query into an Orthanc lookup and an answer, and the audit event.

Orthanc 1.10 lets a plugin take over C-FIND (``RegisterFindCallback``) and C-MOVE (``RegisterMoveCallback``),
so every C-FIND and C-MOVE that Orthanc allows reaches the plugin and is audited. C-GET has no plugin
callback: an allowed C-GET would be answered by Orthanc unseen, so no configuration may allow it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.tag import Tag

STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
# Global switches that let any AET, known or not, use a service; Orthanc's defaults are all false.
ALWAYS_ALLOW = ("DicomAlwaysAllowFind", "DicomAlwaysAllowFindWorklist", "DicomAlwaysAllowMove", "DicomAlwaysAllowGet")
# Orthanc allows every service a modality entry does not mention: these must be written out.
EXPLICIT_PERMISSIONS = ("AllowFind", "AllowMove", "AllowGet")
LEVELS = {"PATIENT": "Patient", "STUDY": "Study", "SERIES": "Series", "IMAGE": "Instance"}
# The unique key of each level, always in an answer (PS3.4 C.2.2.1).
UNIQUE_KEYS = {"Patient": (0x0010, 0x0020), "Study": (0x0020, 0x000D), "Series": (0x0020, 0x000E),
               "Instance": (0x0008, 0x0018)}
_NOT_QUERY_KEYS = {(0x0008, 0x0052), (0x0008, 0x0005)}  # QueryRetrieveLevel, SpecificCharacterSet
_WILDCARDS = "*?\\"


class DicomPolicyError(ValueError):
    """The DICOM configuration allows a service the plugin cannot audit or scope."""


def policy_problems(config: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """(errors, warnings) of Orthanc's DICOM configuration; start-up refuses a configuration with errors."""
    errors: list[str] = []
    warnings: list[str] = []
    for key in ALWAYS_ALLOW:
        if config.get(key, False) is not False:
            errors.append(f"{key} must be false: it lets any calling AET use the service")
    if config.get("DicomModalitiesInDatabase", False) is not False:
        errors.append("DicomModalitiesInDatabase must be false: modalities are checked at start-up, from this file")
    modalities = config.get("DicomModalities", {}) or {}
    if not isinstance(modalities, Mapping):
        errors.append("DicomModalities must be an object")
        modalities = {}
    for name, entry in modalities.items():
        if not isinstance(entry, Mapping):
            errors.append(f"DicomModalities.{name}: use the object form with AllowFind/AllowMove/AllowGet "
                          "(the array form allows every DICOM service, C-GET and C-MOVE included)")
            continue
        for key in EXPLICIT_PERMISSIONS:
            if not isinstance(entry.get(key), bool):
                errors.append(f"DicomModalities.{name}.{key} must be set to true or false (Orthanc's default is true)")
        if entry.get("AllowGet") is True:
            errors.append(f"DicomModalities.{name}.AllowGet must be false: Orthanc answers C-GET without the plugin, "
                          "so it could not be audited")
    if config.get("DicomCheckModalityHost", False) is not True:
        warnings.append("DicomCheckModalityHost is not true: any host can call with a known modality's AET")
    return errors, warnings


def check_policy(config: Mapping[str, Any]) -> list[str]:
    """Raise ``DicomPolicyError`` listing every error; return the warnings."""
    errors, warnings = policy_problems(config)
    if errors:
        raise DicomPolicyError("; ".join(errors))
    return warnings


@dataclass(frozen=True)
class QueryKey:
    group: int
    element: int
    name: str  # Orthanc's name of the tag (the keys of its MainDicomTags)
    value: str


@dataclass(frozen=True)
class FindRequest:
    level: str  # Orthanc's level: Patient, Study, Series, Instance
    keys: tuple[QueryKey, ...]

    def orthanc_query(self, limit: int) -> dict[str, Any]:
        """The body of Orthanc's ``/tools/find`` for this query (keys with a value are constraints)."""
        constraints = {f"{k.group:04X},{k.element:04X}": k.value for k in self.keys
                       if k.value and (k.group, k.element) not in _NOT_QUERY_KEYS}
        return {"Level": self.level, "Query": constraints, "Expand": True, "Limit": limit}

    def asks(self, name: str) -> bool:
        return any(k.name == name for k in self.keys)

    def audit_query(self) -> dict[str, str]:
        return {k.name or f"{k.group:04X},{k.element:04X}": k.value for k in self.keys if k.value}


def find_request(keys: list[QueryKey]) -> FindRequest:
    """A C-FIND query checked: its QueryRetrieveLevel known. Raises ValueError otherwise."""
    level = next((k.value.strip().upper() for k in keys if (k.group, k.element) == (0x0008, 0x0052)), "")
    if level not in LEVELS:
        raise ValueError(f"C-FIND: unknown QueryRetrieveLevel {level!r}")
    return FindRequest(LEVELS[level], tuple(keys))


# Computed study keys (PS3.4 C.3.4) the SCP fills when asked, from the study's series.
STUDY_COMPUTED = ("ModalitiesInStudy", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances")


def find_answer(request: FindRequest, resource: Mapping[str, Any],
                computed: Mapping[str, Any] | None = None) -> Dataset:
    """The answer for one resource of ``/tools/find``: every key asked for, filled from Orthanc's main tags
    and ``computed``; a key Orthanc does not index is echoed when the query gave an exact value, else empty."""
    tags: dict[str, Any] = {**(resource.get("PatientMainDicomTags") or {}), **(resource.get("MainDicomTags") or {}),
                            **(computed or {})}
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    level_key = next(name for name, value in LEVELS.items() if value == request.level)
    ds.QueryRetrieveLevel = level_key
    wanted = [k for k in request.keys if (k.group, k.element) not in _NOT_QUERY_KEYS]
    unique = UNIQUE_KEYS[request.level]
    if all((k.group, k.element) != unique for k in wanted):
        wanted.append(QueryKey(*unique, "", ""))
    for key in wanted:
        tag = Tag(key.group, key.element)
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            continue  # private or unknown tag: not answered
        if vr == "SQ":
            continue
        name = key.name or keyword_for_tag(tag)
        value = tags.get(name) if name else None
        if value is None and key.value and not any(ch in key.value for ch in _WILDCARDS):
            value = key.value
        ds.add_new(tag, vr, _typed(vr, value))
    return ds


def _typed(vr: str, value: Any) -> Any:
    if value in (None, "", []):
        return None
    if isinstance(value, list):
        return [str(item) for item in value]
    if vr in {"US", "UL", "SS", "SL"}:
        try:
            return int(value)
        except (TypeError, ValueError):
            return None
    if vr in {"FL", "FD"}:
        try:
            return float(value)
        except (TypeError, ValueError):
            return None
    return str(value)


@dataclass(frozen=True)
class MoveRequest:
    level: str  # Orthanc's level
    identifiers: tuple[str, ...]  # UIDs (or patient IDs) to look up at that level
    by_accession: bool = False


def move_request(request: Mapping[str, Any]) -> MoveRequest:
    """What a C-MOVE names, from orthanc-python's move callback keywords. Raises ValueError if nothing."""
    level = str(request.get("Level") or "").strip().upper()
    fields = {"PATIENT": "PatientID", "STUDY": "StudyInstanceUID", "SERIES": "SeriesInstanceUID",
              "IMAGE": "SOPInstanceUID", "INSTANCE": "SOPInstanceUID"}
    if level not in fields:
        raise ValueError(f"C-MOVE: unknown QueryRetrieveLevel {level!r}")
    values = _list(request.get(fields[level]))
    orthanc_level = LEVELS.get(level, "Instance")
    if not values and level == "STUDY":
        accessions = _list(request.get("AccessionNumber"))
        if accessions:
            return MoveRequest("Study", accessions, by_accession=True)
    if not values:
        raise ValueError(f"C-MOVE at level {level} names no {fields[level]}")
    if any(ch in value for value in values for ch in "*?"):
        raise ValueError("C-MOVE: wildcards are not allowed in a retrieve")
    return MoveRequest(orthanc_level, values)


def _list(value: Any) -> tuple[str, ...]:
    return tuple(part.strip() for part in str(value or "").split("\\") if part.strip())


@dataclass(frozen=True)
class DimseEvent:
    """One audit row of ``dimse_audit``."""

    service: str  # C-FIND, MWL, C-MOVE
    calling_aet: str
    called_aet: str | None
    outcome: str  # answered (C-FIND, MWL), allowed (C-MOVE, before sending), failed, refused
    level: str | None = None
    query: dict[str, Any] = field(default_factory=dict)
    answers: int = 0
    truncated: bool = False
    target_aet: str | None = None
