"""Modality worklist items (core.worklist): the dataset built from an order, and its bytes as a DICOM file."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from io import BytesIO
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from ehr_imaging.core.worklist import (
    MODALITY_WORKLIST_FIND,
    audit_keys,
    station_modalities,
    to_bytes,
    worklist_item,
)
from ehr_imaging.store.orders import ORDER_FIELDS, Order

CHICAGO_CST = timezone(timedelta(hours=-6))


def order(**changes: Any) -> dict[str, Any]:
    """An order as the store hands it to the worklist (to_dict plus the start in the site's zone)."""
    base: dict[str, Any] = {
        "order_id": "ORD-2026-0001",
        "accession_number": "ACC-1001",
        "mrn": "MRN-200001",
        "patient_id": "PID-7",
        "patient_family_name": "Lovelace",
        "patient_given_name": "Ada",
        "birth_date": "1815-12-10",
        "sex": "F",
        "modality": "MR",
        "scheduled_start": datetime(2026, 11, 20, 9, 30, 15, tzinfo=CHICAGO_CST),
        "description": "MR brain w/o contrast",
        "referring_physician": "House^Gregory^^Dr",
        "status": "scheduled",
        # Match fields and timestamps ride along in the store's dict; the worklist ignores them.
        "study_instance_uid": None,
        "matched_rule": None,
        "created_at": "2026-11-01T08:00:00+00:00",
        "updated_at": "2026-11-01T08:00:00+00:00",
    }
    base.update(changes)
    return base


def only_step(ds: Dataset) -> Dataset:
    steps = ds.ScheduledProcedureStepSequence
    assert len(steps) == 1
    step: Dataset = steps[0]
    return step


def read_back(data: bytes) -> Dataset:
    return pydicom.dcmread(BytesIO(data))


# --- the dataset -------------------------------------------------------------------------------------------


def test_patient_and_request_attributes() -> None:
    ds = worklist_item(order())
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert str(ds.PatientName) == "Lovelace^Ada"
    assert (ds.PatientName.family_name, ds.PatientName.given_name) == ("Lovelace", "Ada")
    assert ds.PatientID == "MRN-200001"  # the MRN, not the EHR's internal patient id
    assert ds.AccessionNumber == "ACC-1001"
    assert ds.PatientBirthDate == "18151210"
    assert ds.PatientSex == "F"
    assert str(ds.ReferringPhysicianName) == "House^Gregory^^Dr"
    assert ds.RequestedProcedureID == "ORD-2026-0001"
    assert ds.RequestedProcedureDescription == "MR brain w/o contrast"
    assert "StudyInstanceUID" in ds


def test_an_order_from_the_store_gives_the_same_item() -> None:
    """What hooks/worklist passes: ``store.orders.Order.fields()``, its dates as ``date`` values."""
    values: dict[str, Any] = {name: order().get(name) for name in ORDER_FIELDS}
    recorded = Order(**{**values, "birth_date": date(1815, 12, 10)})
    ds = worklist_item(recorded.fields())
    assert ds.PatientBirthDate == "18151210"
    assert ds == worklist_item(order())


def test_scheduled_procedure_step() -> None:
    step = only_step(worklist_item(order()))
    assert step.Modality == "MR"
    assert step.ScheduledProcedureStepStartDate == "20261120"
    assert step.ScheduledProcedureStepStartTime == "093015"
    assert step.ScheduledProcedureStepID == "ORD-2026-0001"
    assert step.ScheduledProcedureStepDescription == "MR brain w/o contrast"
    # Present though empty, so Orthanc's matcher can answer C-FIND keys on them.
    assert step.ScheduledStationAETitle == ""
    assert str(step.ScheduledPerformingPhysicianName) == ""


@pytest.mark.parametrize(
    "start",
    [
        datetime(2026, 11, 20, 9, 30, 15, tzinfo=CHICAGO_CST),
        datetime(2026, 11, 20, 9, 30, 15),
        "2026-11-20T09:30:15-06:00",
        "2026-11-20T09:30:15",
        "2026-11-20 09:30:15.750",
    ],
)
def test_start_from_datetime_or_iso_string_keeps_its_wall_clock(start: datetime | str) -> None:
    step = only_step(worklist_item(order(scheduled_start=start)))
    assert (step.ScheduledProcedureStepStartDate, step.ScheduledProcedureStepStartTime) == ("20261120", "093015")


def test_start_is_not_converted_to_another_zone() -> None:
    # 23:45 UTC is already the next day in UTC but not in Chicago: the item shows the time it is given in.
    start = datetime(2026, 11, 20, 23, 45, tzinfo=CHICAGO_CST)
    assert start.astimezone(UTC).day == 21
    step = only_step(worklist_item(order(scheduled_start=start)))
    assert (step.ScheduledProcedureStepStartDate, step.ScheduledProcedureStepStartTime) == ("20261120", "234500")


def test_order_id_is_truncated_to_sixteen_characters() -> None:
    long_id = "ORD:2026.11.20-CT-000123456789"
    ds = worklist_item(order(order_id=long_id))
    assert ds.RequestedProcedureID == long_id[:16] == "ORD:2026.11.20-C"
    assert only_step(ds).ScheduledProcedureStepID == long_id[:16]


def test_description_is_truncated_to_sixty_four_characters() -> None:
    description = "CT thorax abdomen pelvis with contrast, staging, compare with prior study of 2025-01-02"
    assert len(description) > 64
    ds = worklist_item(order(description=description))
    assert ds.RequestedProcedureDescription == description[:64]
    assert only_step(ds).ScheduledProcedureStepDescription == description[:64]


def test_family_name_alone() -> None:
    assert str(worklist_item(order(patient_given_name=None)).PatientName) == "Lovelace"


@pytest.mark.parametrize("missing", [None, ""])
def test_missing_optional_fields_give_empty_values(missing: Any) -> None:
    optional = ("accession_number", "mrn", "patient_id", "patient_family_name", "patient_given_name", "birth_date",
                "sex", "modality", "scheduled_start", "description", "referring_physician")
    ds = worklist_item(order(**dict.fromkeys(optional, missing)))
    assert ds.AccessionNumber == ""
    assert ds.PatientID == ""
    assert str(ds.PatientName) == ""
    assert ds.PatientBirthDate == ""
    assert ds.PatientSex == ""
    assert str(ds.ReferringPhysicianName) == ""
    assert ds.RequestedProcedureDescription == ""
    step = only_step(ds)
    assert step.Modality == ""
    assert step.ScheduledProcedureStepStartDate == ""
    assert step.ScheduledProcedureStepStartTime == ""
    assert step.ScheduledProcedureStepDescription == ""
    assert ds.RequestedProcedureID == "ORD-2026-0001"


def test_absent_keys_give_empty_values() -> None:
    ds = worklist_item({"order_id": "ORD-9"})
    assert (ds.AccessionNumber, ds.PatientID, str(ds.PatientName), ds.PatientBirthDate) == ("", "", "", "")
    assert only_step(ds).ScheduledProcedureStepStartDate == ""
    assert ds.RequestedProcedureID == "ORD-9"


# --- the bytes ---------------------------------------------------------------------------------------------


def test_to_bytes_is_a_complete_dicom_file() -> None:
    data = to_bytes(worklist_item(order()))
    assert data[128:132] == b"DICM"  # 128-byte preamble, then the magic
    ds = read_back(data)
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert ds.file_meta.MediaStorageSOPClassUID == MODALITY_WORKLIST_FIND
    assert ds.file_meta.MediaStorageSOPInstanceUID
    assert ds.PatientID == "MRN-200001"
    assert ds.AccessionNumber == "ACC-1001"
    assert ds.PatientBirthDate == "18151210"
    assert ds.RequestedProcedureID == "ORD-2026-0001"
    step = only_step(ds)
    assert step.Modality == "MR"
    assert (step.ScheduledProcedureStepStartDate, step.ScheduledProcedureStepStartTime) == ("20261120", "093015")


def test_utf8_names_survive_the_round_trip() -> None:
    item = worklist_item(order(patient_family_name="Müller", patient_given_name="Jürgen",
                               referring_physician="Åström^Øystein", description="Röntgen Thorax – 2 Ebenen"))
    data = to_bytes(item)
    assert "Müller^Jürgen".encode() in data  # encoded as UTF-8 (ISO_IR 192), not Latin-1
    ds = read_back(data)
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert str(ds.PatientName) == "Müller^Jürgen"
    assert ds.PatientName.given_name == "Jürgen"
    assert str(ds.ReferringPhysicianName) == "Åström^Øystein"
    assert ds.RequestedProcedureDescription == "Röntgen Thorax – 2 Ebenen"
    assert only_step(ds).ScheduledProcedureStepDescription == "Röntgen Thorax – 2 Ebenen"


def test_empty_item_round_trips() -> None:
    ds = read_back(to_bytes(worklist_item({"order_id": "ORD-9"})))
    assert str(ds.PatientName) == ""
    assert ds.RequestedProcedureID == "ORD-9"
    assert only_step(ds).Modality == ""


# --- which station -----------------------------------------------------------------------------------------


def test_the_order_names_its_station() -> None:
    assert only_step(worklist_item(order(station_aet="CT1"), station_aet="OTHER")).ScheduledStationAETitle == "CT1"


def test_an_order_without_station_shows_the_modality_it_went_to() -> None:
    assert only_step(worklist_item(order(station_aet=None), station_aet="CT1")).ScheduledStationAETitle == "CT1"
    assert only_step(worklist_item(order())).ScheduledStationAETitle == ""


def test_station_modalities_setting_is_checked() -> None:
    assert station_modalities({"CT1": "ct, MR", " US2 ": "US", "NONE": ""}) == {
        "CT1": frozenset({"CT", "MR"}), "US2": frozenset({"US"}), "NONE": frozenset()}
    with pytest.raises(ValueError, match="unknown modality 'XX'"):
        station_modalities({"CT1": "CT,XX"})
    with pytest.raises(ValueError, match="not a DICOM AE title"):
        station_modalities({"A" * 17: "CT"})


def test_the_audit_keeps_the_keys_a_query_constrained() -> None:
    query = Dataset()
    query.SpecificCharacterSet = "ISO_IR 100"
    query.PatientName = "DOE*"
    query.PatientID = ""
    step = Dataset()
    step.Modality = "CT"
    step.ScheduledStationAETitle = ""
    query.ScheduledProcedureStepSequence = [step]
    assert audit_keys(query) == {"PatientName": "DOE*", "ScheduledProcedureStepSequence.Modality": "CT"}
