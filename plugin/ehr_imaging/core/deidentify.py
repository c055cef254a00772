"""De-identify DICOM files (pure): PS3.15 Annex E, Basic Application Level Confidentiality Profile.

The table's actions (``deid_table``) apply at every depth, inside every sequence item; whatever the table does not
list is kept only when it is known to be safe (``deid_table.SAFE_TEXT`` and the VR rules there). UIDs are
replaced consistently within one ``UidMapper`` (one request), so that the files of a study still reference each
other. Pixel data is never decoded: the transfer syntax is kept byte for byte, and identifying text burned into
the pixels stays there, which is why such files are refused unless the caller accepts them explicitly.
"""

from __future__ import annotations

import hashlib
import io
import secrets
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pydicom import Dataset
from pydicom.dataelem import DataElement
from pydicom.dataset import FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, generate_uid

from . import deid_table as table
from .deid_table import Action
from .dicom_file import Source, read_complete, safe_text, to_bytes
from .tag_changes import check_changes

DEFAULT_PATIENT_NAME = "ANONYMIZED"
IMPLEMENTATION_VERSION_NAME = "EHR_IMAGING_DEID"  # SH: 16 characters at most
# BurnedInAnnotation as reported to the caller.
YES, NO, UNKNOWN = "YES", "NO", "UNKNOWN"
# Modalities whose images usually carry the patient's name or ID in the pixels when BurnedInAnnotation is absent:
# ultrasound, screen and document captures, photographs, endoscopy, "other".
BURNED_IN_MODALITIES = frozenset({"US", "IVUS", "SC", "OT", "XC", "ES", "GM", "SM", "DOC"})
SECONDARY_CAPTURE_CLASSES = "1.2.840.10008.5.1.4.1.1.7"  # and its .1 ... .4 multi-frame variants


class BurnedInAnnotationError(ValueError):
    """The pixels may show identifying text that no header edit removes; refused unless accepted (422)."""

    def __init__(self, verdict: str, reason: str) -> None:
        super().__init__(f"{reason}; pass accept_burned_in_annotation=true to de-identify the header anyway"
                         f" (the pixels stay as they are)")
        self.burned_in_annotation = verdict


class DeidentificationError(RuntimeError):
    """A check of the result failed: a defect of this module, never an answer to hand out."""


class UidMapper:
    """Original UID -> new UID, the same for the same original within one mapper (one request), derived
    from a random salt so that the new UIDs cannot be recomputed from the originals."""

    def __init__(self, salt: bytes | None = None) -> None:
        self._salt = (salt or secrets.token_bytes(32)).hex()
        self._map: dict[str, str] = {}

    def uid(self, original: str) -> str:
        if original not in self._map:
            self._map[original] = str(generate_uid(prefix=None, entropy_srcs=[self._salt, original]))
        return self._map[original]

    def pseudonym(self, original: str, prefix: str = "ANON-") -> str:
        """A stable stand-in for an identifier (PatientID) within this mapper."""
        return prefix + hashlib.sha256(f"{self._salt}:{original}".encode()).hexdigest()[:12].upper()


@dataclass(frozen=True)
class DeidentifiedFile:
    data: bytes
    sop_instance_uid: str
    study_instance_uid: str
    burned_in_annotation: str  # YES, NO or UNKNOWN (the attribute is absent)
    warnings: list[str] = field(default_factory=list)


def burned_in_annotation(ds: Dataset) -> str:
    value = safe_text(ds, "BurnedInAnnotation").upper()
    return value if value in (YES, NO) else UNKNOWN


def burned_in_risk(ds: Dataset) -> str | None:
    """Why the pixels may show identifying text (None: no reason to think so)."""
    verdict = burned_in_annotation(ds)
    if verdict == YES:
        return "BurnedInAnnotation is YES: the pixels show identifying text"
    if verdict == NO:
        return None
    modality = safe_text(ds, "Modality").upper()
    if modality in BURNED_IN_MODALITIES:
        return f"BurnedInAnnotation is absent and {modality} images often show identifying text in their pixels"
    if safe_text(ds, "SOPClassUID").startswith(SECONDARY_CAPTURE_CLASSES):
        return "BurnedInAnnotation is absent and secondary captures often show identifying text in their pixels"
    return None


def deidentify(source: Source, mapper: UidMapper, *, patient_id: str | None = None,
               patient_name: str | None = None, accept_burned_in_annotation: bool = False) -> DeidentifiedFile:
    """Apply the basic profile to one file. Pass the same ``mapper`` for every file of a set so that their
    study, series and frame-of-reference UIDs stay consistent. Optional replacement PatientID/PatientName
    (checked like modify-tags); by default a pseudonym of the original PatientID and ``ANONYMIZED``.
    Raises ``BurnedInAnnotationError`` when the pixels may show identifying text, unless accepted."""
    replacements = check_changes({k: v for k, v in (("PatientID", patient_id), ("PatientName", patient_name))
                                  if v is not None})
    ds = read_complete(source).dataset
    verdict = burned_in_annotation(ds)
    risk = burned_in_risk(ds)
    if risk and not accept_burned_in_annotation:
        raise BurnedInAnnotationError(verdict, risk)
    notes = [f"{risk}: it remains there"] if risk else []
    if safe_text(ds, "RecognizableVisualFeatures").upper() == YES:
        notes.append("RecognizableVisualFeatures is YES: the image may show the patient's face")
    original_patient_id = safe_text(ds, "PatientID")
    scrub(ds, mapper)
    _clean_file_meta(ds, mapper)
    ds.PatientID = replacements.get("PatientID") or mapper.pseudonym(original_patient_id)
    ds.PatientName = replacements.get("PatientName") or DEFAULT_PATIENT_NAME
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = table.METHOD
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = table.PROFILE_CODE
    ds.DeidentificationMethodCodeSequence = [code]
    left = sorted({element.keyword or str(element.tag) for element in temporal_values(ds)})
    if left:  # the flag below must be true: no date or time survives, only the constant dummies
        raise DeidentificationError(f"dates or times remain after de-identification: {', '.join(left)}")
    ds.LongitudinalTemporalInformationModified = "REMOVED"
    return DeidentifiedFile(data=to_bytes(ds), sop_instance_uid=safe_text(ds, "SOPInstanceUID"),
                            study_instance_uid=safe_text(ds, "StudyInstanceUID"), burned_in_annotation=verdict,
                            warnings=notes)


# --- the rules, at every depth ------------------------------------------------------------------------------


def scrub(ds: Dataset, mapper: UidMapper, *, strict: bool = False) -> None:
    """Apply the table to every element of ``ds`` and of its sequences' items; remove what the table does not
    list unless it is known to be safe. ``strict`` (inside a sequence the table replaces by a dummy, such as
    PersonIdentificationCodeSequence) keeps no text at all, not even code meanings."""
    for raw in list(ds.elements()):
        tag = BaseTag(raw.tag)
        try:
            element = ds[tag]
            keep = _clean(element, mapper, strict)
        except Exception:  # noqa: BLE001 - a value that cannot be read cannot be judged safe
            keep = False
        if not keep:
            del ds[tag]


def _clean(element: DataElement, mapper: UidMapper, strict: bool) -> bool:
    """Change ``element`` in place as the rules say; False: remove it."""
    tag = element.tag
    if tag.is_private or tag.element == 0 or table.in_removed_group(tag.group):
        return False  # private attributes and their creators, group lengths, curves and overlays
    action = table.action_for(int(tag))
    if action is None:
        return _keep_unlisted(element, mapper, strict)
    if action is Action.REMOVE:
        return False
    if action is Action.EMPTY:
        element.value = [] if element.VR == "SQ" else None
        return True
    if action is Action.DUMMY:
        return _dummy(element, mapper)
    if action is Action.NEW_UID:
        if element.VR != "UI":
            return False
        element.value = _new_uids(element.value, mapper)
        return True
    # Action.REFERENCES: the referenced-image sequences keep their items, cleaned like everything else.
    if element.VR != "SQ":
        return False
    _scrub_items(element, mapper, strict)
    return True


def _keep_unlisted(element: DataElement, mapper: UidMapper, strict: bool) -> bool:
    if not element.keyword:
        return False  # not in the dictionary: nothing says it is safe
    if element.VR == "SQ":
        _scrub_items(element, mapper, strict)
        return True
    if element.VR == "UI":
        if not element.keyword.endswith(table.KEPT_UID_SUFFIXES):
            element.value = _new_uids(element.value, mapper)
        return True
    choices = set(table.vrs(element.VR))
    if choices <= table.NUMBER_VRS | table.BINARY_VRS | {table.CODE_VR}:
        return True
    return not strict and element.keyword in table.SAFE_TEXT


def _dummy(element: DataElement, mapper: UidMapper) -> bool:
    if element.VR == "SQ":
        _scrub_items(element, mapper, strict=True)
        return True
    if element.VR == "UI":
        values = list(element.value) if isinstance(element.value, MultiValue | list) else [element.value or ""]
        element.value = [mapper.uid(str(v)) for v in values] if len(values) > 1 else mapper.uid(str(values[0]))
        return True
    vr = table.vrs(element.VR)[0]
    if vr not in table.DUMMY:
        return False
    element.value = table.DUMMY[vr]
    return True


def _scrub_items(element: DataElement, mapper: UidMapper, strict: bool) -> None:
    for item in element.value or ():
        scrub(item, mapper, strict=strict)


def _new_uids(value: Any, mapper: UidMapper) -> Any:
    if isinstance(value, MultiValue | list):
        return [_new_uid(str(v), mapper) for v in value]
    return _new_uid(str(value or ""), mapper)


def _new_uid(uid: str, mapper: UidMapper) -> str:
    # UIDs under the DICOM root (SOP classes, coding schemes, well-known instances) identify nobody.
    return uid if not uid or uid.startswith(table.DICOM_ROOT) else mapper.uid(uid)


def _clean_file_meta(ds: Dataset, mapper: UidMapper) -> None:
    """The file meta keeps only what reading the file needs: no source, sending or receiving AE title."""
    old = getattr(ds, "file_meta", None)
    if not old:
        return
    meta = FileMetaDataset()
    for keyword in ("FileMetaInformationVersion", "MediaStorageSOPClassUID", "TransferSyntaxUID"):
        if keyword in old:
            setattr(meta, keyword, old[keyword].value)
    if old.get("MediaStorageSOPInstanceUID"):  # the new SOPInstanceUID, even where the original differed
        meta.MediaStorageSOPInstanceUID = UID(safe_text(ds, "SOPInstanceUID")
                                              or _new_uid(str(old.MediaStorageSOPInstanceUID), mapper))
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    ds.file_meta = meta


def temporal_values(ds: Dataset) -> Iterator[DataElement]:
    """Every date, time and date-time at any depth that holds more than the constant dummies."""
    for element in ds.iterall():
        if element.VR in table.TEMPORAL_VRS and element.value not in (None, ""):
            values = element.value if isinstance(element.value, MultiValue | list) else [element.value]
            if any(str(v).strip() not in table.DUMMY_TEMPORAL for v in values):
                yield element


def zip_files(files: Iterable[tuple[str, bytes]]) -> bytes:
    """A ZIP of named files (stored: DICOM pixel data barely compresses)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, data in files:
            archive.writestr(name, data)
    return buffer.getvalue()
