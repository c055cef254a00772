"""A real image full of personal data, to prove that de-identification leaves none of it.

pydicom's CT_small.dcm, with a marker value in:
- every attribute of the de-identification table (PS3.15 Table E.1-1, as ``core.deid_table`` loads it) that has a
  dictionary VR, sequences holding items full of markers themselves (two levels deep), at the top and again
  inside an item of ReferencedImageSequence (kept by the table) and of ReferencedSeriesSequence (not listed);
- every text, date, time and person-name attribute of the DICOM dictionary that the table does not list and that
  is not in ``SAFE_TEXT`` (whatever is not known to be safe must go);
- nested sequences the table does not list (functional groups, referenced series...), private attributes (also
  inside items), an unknown public attribute, encrypted attributes, curves, overlays, and the file meta
  (source/sending AE titles).

``leaks`` finds every marker left, in the written bytes and in the dataset at every depth.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

from pydicom import Dataset, dcmread
from pydicom._dicom_dict import DicomDictionary
from pydicom.data import get_testdata_file
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.multival import MultiValue
from pydicom.uid import UID

from ehr_imaging.core import deid_table

MARK = "PHIMARK"
DATE, TIME = "19770707", "071707"
NUMBER = 7707
DECIMAL, INTEGER, AGE, UID_ROOT = "7707.07", "770707", "077Y", "2.77.77."
TEXT_MARKS = (MARK, DATE, TIME, DECIMAL, INTEGER, AGE, UID_ROOT)
UNKNOWN_PUBLIC_TAG = 0x0018FFF0  # even group, not in the dictionary
NOT_LISTED_SEQUENCES = ("ReferencedSeriesSequence", "AnatomicRegionSequence", "ReferencedInstanceSequence",
                        "SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence")
SKIPPED_GROUPS = (0x0000, 0x0002)  # command and file meta groups: not in a dataset


def marker(tag: int) -> str:
    return f"{MARK}{tag:08X}"  # 15 characters: fits SH, AE and CS


def value_for(vr: str, tag: int, depth: int) -> Any:
    vr = deid_table.vrs(vr)[0]
    if vr == "SQ":
        return [phi_item(depth + 1)] if depth < 2 else [Dataset()]
    if vr in ("AE", "CS", "SH", "LO", "LT", "ST", "UT", "UC"):
        return marker(tag)
    if vr == "PN":
        return f"{marker(tag)}^DOE^JOHN"
    if vr == "UR":
        return f"http://{marker(tag).lower()}.example/"
    return {"DA": DATE, "TM": TIME, "DT": DATE + TIME, "AS": AGE, "DS": DECIMAL, "IS": INTEGER,
            "UI": f"{UID_ROOT}{tag}", "FL": float(NUMBER), "FD": float(NUMBER), "AT": tag,
            }.get(vr, NUMBER if vr in deid_table.NUMBER_VRS else marker(tag).encode() + b"\x00")


def phi_item(depth: int) -> Dataset:
    """A sequence item with what people put in items: patient and institution names, dates, references,
    a private block and an unknown attribute, and one more level of sequences."""
    item = Dataset()
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "OtherPatientIDs", "AccessionNumber",
                    "InstitutionName", "StudyDate", "StudyTime", "AcquisitionDateTime", "OperatorsName",
                    "PatientBirthDateInAlternativeCalendar", "RequestedProcedureDescription", "TextValue",
                    "PersonName", "ReferencedSOPInstanceUID", "StudyInstanceUID"):
        tag = tag_for_keyword(keyword)
        assert tag is not None, keyword
        item.add_new(tag, dictionary_VR(tag), value_for(dictionary_VR(tag), tag, depth))
    item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    item.private_block(0x0011, f"{MARK} CREATOR", create=True).add_new(0x01, "LO", f"{MARK} private in item")
    item.add_new(UNKNOWN_PUBLIC_TAG, "LO", f"{MARK} unknown in item")
    if depth < 2:
        for keyword in ("ReferencedImageSequence", "SourceImageSequence", "FrameContentSequence"):
            item.add_new(keyword, "SQ", [phi_item(depth + 1)])
    return item


def planted() -> Iterator[tuple[int, str]]:
    """(tag, VR) of every attribute that gets a marker at the top level."""
    for tag in deid_table.TABLE:
        if tag >> 16 in SKIPPED_GROUPS:
            continue
        try:
            yield tag, dictionary_VR(tag)
        except KeyError:
            yield tag, "LT"  # a newer attribute than pydicom's dictionary: the table still lists it by tag
    for tag, entry in DicomDictionary.items():
        vr, keyword = entry[0], entry[4]
        if tag in deid_table.TABLE or tag >> 16 in SKIPPED_GROUPS or keyword in deid_table.SAFE_TEXT:
            continue
        if set(deid_table.vrs(vr)) <= deid_table.TEXT_VRS:
            yield tag, vr


def full_item(depth: int) -> Dataset:
    """An item with every planted attribute: the table applies inside items as at the top."""
    item = Dataset()
    for tag, vr in planted():
        item.add_new(tag, vr, value_for(vr, tag, depth))
    return item


def phi_dataset() -> Dataset:
    path = get_testdata_file("CT_small.dcm")
    assert path is not None
    ds = dcmread(path)
    for tag, vr in planted():
        ds.add_new(tag, vr, value_for(vr, tag, 0))
    for keyword in NOT_LISTED_SEQUENCES:
        ds.add_new(keyword, "SQ", [phi_item(1)])
    ds.ReferencedSeriesSequence.append(full_item(1))  # a sequence the table does not list
    ds.ReferencedImageSequence.append(full_item(1))  # X/Z/U*: its items are kept, so cleaned
    ds.private_block(0x0009, f"{MARK} CREATOR", create=True).add_new(0x01, "LO", f"{MARK} private")
    ds.add_new(UNKNOWN_PUBLIC_TAG, "LO", f"{MARK} unknown")
    encrypted = Dataset()  # the original values, encrypted for whoever holds the key: never handed out
    encrypted.EncryptedContentTransferSyntaxUID = "1.2.840.10008.1.2.1"
    encrypted.EncryptedContent = f"{MARK} encrypted content".encode()
    ds.EncryptedAttributesSequence = [encrypted]
    ds.add_new(0x50000022, "LO", f"{MARK} curve description")
    ds.add_new(0x50003000, "OB", f"{MARK} curve data".encode())
    ds.add_new(0x60000010, "US", 16)
    ds.add_new(0x60003000, "OW", f"{MARK} overlay data..".encode())
    ds.add_new(0x60004000, "LT", f"{MARK} overlay comments")
    ds.add_new(0x60020022, "LO", f"{MARK} overlay description")
    ds.file_meta.SourceApplicationEntityTitle = f"{MARK}SRC"
    ds.file_meta.SendingApplicationEntityTitle = f"{MARK}SEND"
    ds.file_meta.PrivateInformationCreatorUID = UID(f"{UID_ROOT}1")
    ds.file_meta.PrivateInformation = f"{MARK} private information".encode()
    return ds


def phi_file() -> bytes:
    buffer = io.BytesIO()
    phi_dataset().save_as(buffer)
    return buffer.getvalue()


def leaks(data: bytes) -> list[str]:
    """Every marker left: in the bytes (case-insensitive), then in the dataset and its items at every depth."""
    found = [mark for mark in TEXT_MARKS if mark.lower().encode() in data.lower()]
    ds = dcmread(io.BytesIO(data))
    for element in [*ds.file_meta.iterall(), *ds.iterall()]:
        if element.VR == "SQ":
            continue  # its items' elements come next
        values = element.value if isinstance(element.value, MultiValue | list) else [element.value]
        for value in values:
            text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
            if any(mark in text for mark in TEXT_MARKS) or value == NUMBER:
                found.append(f"{element.tag} {element.keyword}: {text[:40]}")
    return found

