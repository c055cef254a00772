"""Modality worklist items from imaging orders (pure): what a modality gets before it scans.

The accession number, patient identity and requested procedure come from the EHR's order, so the
images come back carrying them and match by accession without anyone typing.
"""

from __future__ import annotations

from collections.abc import Mapping
from io import BytesIO
from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import UID, ExplicitVRLittleEndian

from .dicom_values import to_da, to_tm
from .orders import MODALITIES, ae_title, person_name

MODALITY_WORKLIST_FIND = "1.2.840.10008.5.1.4.31"


def station_modalities(setting: dict[str, str]) -> dict[str, frozenset[str]]:
    """``WorklistModalities`` ({"CT1": "CT, MR"}) checked: AE title -> the modalities of its fallback orders.

    Raises ValueError naming the bad AE title or modality code (start-up refuses the configuration).
    """
    out: dict[str, frozenset[str]] = {}
    for aet, codes in setting.items():
        title = ae_title(aet)
        if title is None:
            raise ValueError(f"WorklistModalities: {aet!r} is not a DICOM AE title")
        modalities = frozenset(code.strip().upper() for code in codes.split(",") if code.strip())
        unknown = sorted(modalities - MODALITIES)
        if unknown:
            raise ValueError(f"WorklistModalities[{aet!r}]: unknown modality {unknown[0]!r}")
        out[title] = modalities
    return out


def worklist_item(order: Mapping[str, Any], station_aet: str = "") -> Dataset:
    """An MWL item (PS3.4 K.6) for one order given as its fields by name (``store.orders.Order.fields()``, the
    start in the site's zone); dates as ``date`` values or ISO text.

    ``station_aet`` fills Scheduled Station AE Title when the order names none (the modality it went to).
    """
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.AccessionNumber = order.get("accession_number") or ""
    ds.PatientID = order.get("mrn") or ""
    ds.PatientName = person_name(order)
    ds.PatientBirthDate = to_da(order.get("birth_date"))
    ds.PatientSex = order.get("sex") or ""
    ds.ReferringPhysicianName = order.get("referring_physician") or ""
    ds.RequestedProcedureDescription = (order.get("description") or "")[:64]
    ds.RequestedProcedureID = order["order_id"][:16]
    ds.StudyInstanceUID = ""
    step = Dataset()
    step.Modality = order.get("modality") or ""
    step.ScheduledStationAETitle = order.get("station_aet") or station_aet
    start = order.get("scheduled_start")  # in the site's zone (store.orders.open_orders)
    step.ScheduledProcedureStepStartDate = to_da(start)
    step.ScheduledProcedureStepStartTime = to_tm(start)
    step.ScheduledProcedureStepDescription = (order.get("description") or "")[:64]
    step.ScheduledProcedureStepID = order["order_id"][:16]
    step.ScheduledPerformingPhysicianName = ""
    ds.ScheduledProcedureStepSequence = [step]
    return ds


def audit_keys(query: Dataset) -> dict[str, str]:
    """The keys a worklist query constrained (those with a value), for its audit row; the step's as
    ``ScheduledProcedureStepSequence.<keyword>``."""
    out: dict[str, str] = {}

    def add(ds: Dataset, prefix: str) -> None:
        for element in ds:
            if element.VR == "SQ":
                if element.keyword == "ScheduledProcedureStepSequence" and element.value:
                    add(element.value[0], element.keyword + ".")
            elif element.value not in (None, "", b"") and element.keyword and element.keyword != "SpecificCharacterSet":
                out[prefix + element.keyword] = str(element.value)

    add(query, "")
    return out


def to_bytes(ds: Dataset, sop_class: str = MODALITY_WORKLIST_FIND) -> bytes:
    """A DICOM file in memory: Orthanc's worklist matcher (and its C-FIND answers) parse a complete file."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID("1.2.3")
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    out = BytesIO()
    dcmwrite(out, ds, enforce_file_format=True)
    return out.getvalue()
