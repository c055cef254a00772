"""Is a DICOM file fit for the archive? The report of ``POST /dicom/validate`` (pure).

Errors make a file unfit (unreadable, truncated, missing or non-conformant UIDs); warnings are what the EHR
should know (missing patient or study attributes, no preamble, odd values). UIDs are judged by PS3.5 in full
(``dicom_values.is_conformant_uid``): this judges new content, it does not look anything up.
"""

from __future__ import annotations

from typing import Any

from pydicom import Dataset
from pydicom.uid import UID

from .dicom_file import PIXEL_TAGS, DicomFileError, Source, parse, safe_text
from .dicom_values import SEXES, is_conformant_uid, parse_da

REQUIRED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")
RECOMMENDED = ("PatientID", "PatientName", "StudyDate", "Modality", "AccessionNumber")


def validate(source: Source) -> dict[str, Any]:
    """``{"is_valid","errors","warnings","transfer_syntax","sop_class_uid","modality","has_pixel_data"}``:
    errors make a file unfit for the archive (unreadable, truncated, missing or invalid UIDs); warnings are
    what the EHR should know (missing patient or study attributes, no preamble, odd values)."""
    report: dict[str, Any] = {"is_valid": False, "errors": [], "warnings": [], "transfer_syntax": None,
                              "sop_class_uid": None, "modality": None, "has_pixel_data": False}
    try:
        parsed = parse(source)
    except DicomFileError as exc:
        report["errors"].append(str(exc))
        return report
    ds = parsed.dataset
    errors: list[str] = list(parsed.problems)
    notes: list[str] = []
    for keyword in REQUIRED_UIDS:
        value = safe_text(ds, keyword)
        if not value:
            errors.append(f"{keyword} is missing")
        elif not is_conformant_uid(value):
            errors.append(f"{keyword} is not a valid UID: {value!r}")
    meta = ds.file_meta if parsed.has_file_meta else Dataset()
    syntax = parsed.transfer_syntax
    if parsed.has_file_meta and not syntax:
        errors.append("TransferSyntaxUID is missing from the file meta information")
    elif syntax and not is_conformant_uid(syntax):
        errors.append(f"TransferSyntaxUID is not a valid UID: {syntax!r}")
    elif syntax and UID(syntax).name == syntax:
        notes.append(f"unknown transfer syntax {syntax}")
    for meta_keyword, keyword in (("MediaStorageSOPInstanceUID", "SOPInstanceUID"),
                                  ("MediaStorageSOPClassUID", "SOPClassUID")):
        value = safe_text(ds, keyword)
        if meta.get(meta_keyword) and value and str(meta.get(meta_keyword)) != value:
            notes.append(f"{meta_keyword} differs from {keyword}")
    if not parsed.has_preamble:
        notes.append("no 128-byte preamble and 'DICM' prefix")
    if not parsed.has_file_meta:
        notes.append("no file meta information (group 0002): a bare dataset, transfer syntax guessed")
    for keyword in RECOMMENDED:
        if not safe_text(ds, keyword):
            notes.append(f"{keyword} is missing or empty")
    for keyword in ("StudyDate", "PatientBirthDate"):
        value = safe_text(ds, keyword)
        if value and parse_da(value) is None:
            notes.append(f"{keyword} is not a DICOM date (YYYYMMDD): {value!r}")
    sex = safe_text(ds, "PatientSex")
    if sex and sex not in SEXES:
        notes.append(f"PatientSex is not M, F or O: {sex!r}")
    has_pixels = any(tag in ds for tag in PIXEL_TAGS)
    if not has_pixels and "Rows" in ds:
        notes.append("Rows/Columns present but no pixel data")
    notes.extend(parsed.read_warnings[:20])
    report.update(is_valid=not errors, errors=errors, warnings=notes, transfer_syntax=syntax,
                  sop_class_uid=safe_text(ds, "SOPClassUID") or None, modality=safe_text(ds, "Modality") or None,
                  has_pixel_data=has_pixels)
    return report
