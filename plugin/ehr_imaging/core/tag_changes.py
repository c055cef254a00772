"""Changing a few tags of a DICOM file the EHR hands us: which tags, which values, the new bytes (pure).

What ``POST /dicom/modify-tags`` does (and de-identification's given patient values are checked by the same
rules). UIDs, transfer syntax and pixel data are never changed here. ``TagChangeError`` names the offending
field (the route answers 422).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydicom import Dataset, config
from pydicom.valuerep import validate_value

from .dicom_file import Source, read_complete, safe_text, to_bytes, value_text
from .dicom_values import SEXES, is_pn_shape, parse_da
from .errors import FieldError

# What modify-tags may change, with the VR each value must fit. UIDs are never among them.
EDITABLE_TAGS: dict[str, str] = {
    "PatientID": "LO", "PatientName": "PN", "PatientBirthDate": "DA", "PatientSex": "CS",
    "AccessionNumber": "SH", "StudyDate": "DA", "StudyDescription": "LO",
}
_FORBIDDEN_TEXT = re.compile(r"[\\\x00-\x1f\x7f]")  # a backslash separates values; control characters


class TagChangeError(FieldError):
    """A requested tag change is not allowed or its value is invalid; ``field`` names it (422)."""


@dataclass(frozen=True)
class ModifiedFile:
    data: bytes
    sop_instance_uid: str
    study_instance_uid: str
    original: dict[str, str | None]  # the changed tags' values before (null: absent)
    new: dict[str, str]
    private_tags_removed: int


def check_changes(changes: Mapping[str, Any]) -> dict[str, str]:
    """Validate requested changes (tag keyword -> new value; "" empties the tag); raise ``TagChangeError``."""
    checked: dict[str, str] = {}
    for name, value in changes.items():
        if name not in EDITABLE_TAGS:
            if name.endswith("UID"):
                raise TagChangeError(name, "UIDs are never changed here")
            raise TagChangeError(name, f"cannot be changed here (allowed: {', '.join(EDITABLE_TAGS)})")
        if not isinstance(value, str):
            raise TagChangeError(name, "must be a string")
        checked[name] = _check_value(name, EDITABLE_TAGS[name], value.strip())
    return checked


def _check_value(name: str, vr: str, value: str) -> str:
    if not value:
        return value
    if _FORBIDDEN_TEXT.search(value):
        raise TagChangeError(name, "contains a backslash or a control character")
    if vr == "DA" and parse_da(value) is None:
        raise TagChangeError(name, "must be a date YYYYMMDD")
    if name == "PatientSex" and value not in SEXES:
        raise TagChangeError(name, f"must be one of {', '.join(SEXES)}")
    if vr == "PN" and not is_pn_shape(value):
        raise TagChangeError(name, "a person name has at most 5 components (^) in at most 3 groups (=)")
    try:
        validate_value(vr, value, config.RAISE)
    except ValueError as exc:
        raise TagChangeError(name, str(exc).split(" Please see")[0]) from None
    return value


def modify_tags(source: Source, changes: Mapping[str, Any], *, remove_private_tags: bool = False) -> ModifiedFile:
    """Apply checked changes to a file; UIDs, transfer syntax and pixel data stay as they are."""
    checked = check_changes(changes)
    if not checked and not remove_private_tags:
        raise TagChangeError("changes", "nothing to change: give tags to change or remove_private_tags")
    ds = read_complete(source).dataset
    original = {name: (value_text(ds.data_element(name)) if name in ds else None)  # type: ignore[arg-type]
                for name in checked}
    for name, value in checked.items():
        setattr(ds, name, value)
    removed = 0
    if remove_private_tags:
        before = _count_elements(ds)
        ds.remove_private_tags()
        removed = before - _count_elements(ds)
    return ModifiedFile(data=to_bytes(ds), sop_instance_uid=safe_text(ds, "SOPInstanceUID"),
                        study_instance_uid=safe_text(ds, "StudyInstanceUID"), original=original,
                        new=checked, private_tags_removed=removed)


def _count_elements(ds: Dataset) -> int:
    return sum(1 + sum(_count_elements(item) for item in (e.value if e.VR == "SQ" else ())) for e in ds)
