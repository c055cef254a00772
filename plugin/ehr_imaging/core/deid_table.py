"""The action table of de-identification: DICOM PS3.15 Annex E, Table E.1-1 (Basic Profile column), as the
``dicom-anonymizer`` package generates it from the standard's own HTML, and what we do with what it leaves open.

Nothing here is hand-typed from the standard: the tags and their codes come from the package's
``dicomfields_<edition>`` module (its maintainers regenerate it with ``scripts/scrap_DICOM_fields.py``, which
reads Table E.1-1 of the published edition). Only the package's table is used, not its engine (which keeps one
UID map for the whole process, writes 00010101 where the table says X, and empties every attribute of a
referenced-image item).

What we decide (and document in the README):

- Where the table lets the de-identifier choose (X/Z, X/D, X/Z/D, Z/D) we take the first, most removing,
  choice; X/Z/U* (the referenced-image sequences) keeps the items, maps their UIDs and cleans the rest of them.
- An attribute the table does not list is kept only when it is known to be safe: numbers, code strings (CS),
  binary data of public attributes (pixel data, lookup tables), UIDs (replaced unless they name a class or a
  coding scheme, or sit under the DICOM root), a short list of technical texts (``SAFE_TEXT``) and sequences,
  whose items are cleaned the same way. Every other text, date, time, person name, unknown (UN) value, private
  attribute, retired curve (50xx), overlay (60xx), digital signature, MAC and encrypted-attributes (0400, 4FFE)
  group is removed.
"""

from __future__ import annotations

from enum import Enum
from importlib import metadata
from types import ModuleType

from dicomanonymizer.dicom_anonymization_databases import (  # type: ignore[import-untyped]
    dicomfields_2026c as _standard_table,
)

TABLE_PACKAGE = "dicom-anonymizer"
TABLE_PACKAGE_VERSION = metadata.version(TABLE_PACKAGE)
TABLE_MODULE = "dicomfields_2026c"
STANDARD_EDITION = "2026c"
TABLE_SOURCE = (f"{TABLE_PACKAGE} {TABLE_PACKAGE_VERSION} {TABLE_MODULE}: DICOM PS3.15 {STANDARD_EDITION}"
                f" Table E.1-1, Basic Profile")
PROFILE = "DICOM PS3.15 Annex E Basic Application Level Confidentiality Profile"
PROFILE_CODE = ("113100", "DCM", "Basic Application Confidentiality Profile")
# Written into DeidentificationMethod (LO: 64 characters at most).
METHOD = f"DICOM PS3.15 Basic Profile (Table E.1-1, DICOM {STANDARD_EDITION})"


class Action(Enum):
    REMOVE = "X"
    EMPTY = "Z"
    DUMMY = "D"
    NEW_UID = "U"
    REFERENCES = "U*"  # keep the sequence's items, replace their UIDs, clean the rest


# The package's list name -> the table's code -> what we do.
CODES: dict[str, str] = {
    "D_TAGS": "D", "Z_TAGS": "Z", "X_TAGS": "X", "U_TAGS": "U", "Z_D_TAGS": "Z/D", "X_Z_TAGS": "X/Z",
    "X_D_TAGS": "X/D", "X_Z_D_TAGS": "X/Z/D", "X_Z_U_STAR_TAGS": "X/Z/U*",
}
CHOSEN: dict[str, Action] = {
    "D": Action.DUMMY, "Z": Action.EMPTY, "X": Action.REMOVE, "U": Action.NEW_UID,
    "Z/D": Action.EMPTY, "X/Z": Action.REMOVE, "X/D": Action.REMOVE, "X/Z/D": Action.REMOVE,
    "X/Z/U*": Action.REFERENCES,
}


def load(module: ModuleType) -> tuple[dict[int, str], tuple[tuple[int, int, str], ...]]:
    """The table of a ``dicomfields_*`` module: tag -> code, and the masked rows (curves, overlays) as
    ``(value, mask, code)`` with 32-bit tag values."""
    tags: dict[int, str] = {}
    masks: list[tuple[int, int, str]] = []
    for name, code in CODES.items():
        for row in getattr(module, name):
            if len(row) == 4:
                group, element, group_mask, element_mask = row
                masks.append(((group << 16) | element, (group_mask << 16) | element_mask, code))
            else:
                group, element = row
                tags[(group << 16) | element] = code
    return tags, tuple(masks)


TABLE, MASKED = load(_standard_table)


def code_for(tag: int) -> str | None:
    """The table's code for a tag (``"X"``, ``"X/Z/D"``, ...), or None when the table does not list it."""
    code = TABLE.get(tag)
    if code is not None:
        return code
    return next((c for value, mask, c in MASKED if tag & mask == value), None)


def action_for(tag: int) -> Action | None:
    code = code_for(tag)
    return None if code is None else CHOSEN[code]


# --- what is kept when the table does not list it ---------------------------------------------------------

NUMBER_VRS = frozenset({"US", "SS", "UL", "SL", "FL", "FD", "UV", "SV", "AT", "IS", "DS"})
BINARY_VRS = frozenset({"OB", "OW", "OF", "OD", "OL", "OV"})
CODE_VR = "CS"  # at most 16 characters of A-Z, 0-9, space and underscore: defined terms
TEXT_VRS = frozenset({"AE", "AS", "DA", "DT", "TM", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
TEMPORAL_VRS = frozenset({"DA", "DT", "TM"})
# Texts that describe the equipment or the image, or name a code of a coding scheme: kept.
SAFE_TEXT = frozenset((
    "Manufacturer", "ManufacturerModelName", "SoftwareVersions", "ConvolutionKernel", "SequenceName",
    "WindowCenterWidthExplanation", "RescaleType", "LUTExplanation", "ModalityLUTType",
    "CodeValue", "CodingSchemeDesignator", "CodingSchemeVersion", "CodeMeaning", "LongCodeValue",
))
# UIDs that name classes, syntaxes and coding schemes, not people or events: never replaced.
KEPT_UID_SUFFIXES = ("ClassUID", "TransferSyntaxUID", "CodingSchemeUID", "ContextGroupExtensionCreatorUID",
                     "ClassUIDInFile", "TransferSyntaxUIDInFile")
DICOM_ROOT = "1.2.840.10008."
# Groups removed whole: curves (50xx, retired), overlays (60xx), and digital signatures, MACs and encrypted
# attributes (0400, 4FFE), which carry the original values (encrypted) or certify values no longer there.
REMOVED_GROUPS = ((0x5000, 0x50FF), (0x6000, 0x60FF), (0x0400, 0x0400), (0x4FFE, 0x4FFE))

# Dummy values for D, one per VR: constant, so they carry no date, person or place.
DUMMY_TEXT = "ANONYMIZED"
DUMMY: dict[str, object] = {
    **dict.fromkeys(("AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UT"), DUMMY_TEXT),
    "AS": "000Y", "UR": "http://anonymized.invalid", "DA": "19000101", "TM": "000000", "DT": "19000101000000",
    "DS": "0", "IS": "0", **dict.fromkeys(("US", "SS", "UL", "SL", "FL", "FD", "UV", "SV"), 0),
    **dict.fromkeys(("OB", "UN"), DUMMY_TEXT.encode()), **dict.fromkeys(("OW", "OF", "OD", "OL", "OV"), bytes(8)),
}
DUMMY_TEMPORAL = frozenset({"19000101", "000000", "19000101000000"})


def vrs(vr: str) -> tuple[str, ...]:
    """An ambiguous dictionary VR (``"US or SS"``, ``"OB or OW"``) as its choices."""
    return tuple(vr.split(" or "))


def in_removed_group(group: int) -> bool:
    return any(low <= group <= high for low, high in REMOVED_GROUPS)
