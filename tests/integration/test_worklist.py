"""A modality asks the worklist (dcmtk findscu -W) and gets the EHR's scheduled orders for it, and only those."""

from __future__ import annotations

import uuid
from pathlib import Path

import pydicom
import pytest

from ehr_stack.dicom import findscu_worklist
from tests.conftest import Client
from tests.dicom_factory import make_study, send
from tests.integration.helpers import put_order, query, wait_for_ingest

pytestmark = pytest.mark.integration

KEYS = [
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber", "RequestedProcedureDescription",
    "ReferringPhysicianName", "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate",
    "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartTime",
    "ScheduledProcedureStepSequence[0].ScheduledProcedureStepDescription",
    "ScheduledProcedureStepSequence[0].ScheduledStationAETitle",
]


def ask(client: Client, tmp_path: Path, *extra: str) -> list[pydicom.Dataset]:
    stack = client.stack
    files = findscu_worklist([*KEYS, *extra], host="127.0.0.1", port=stack.config.dicom_port,
                             calling_aet=stack.config.modality_aet, called_aet=stack.config.orthanc_aet,
                             out_dir=tmp_path / uuid.uuid4().hex)
    return [pydicom.dcmread(f) for f in files]


def test_worklist_lists_scheduled_orders_with_their_attributes(client: Client, tmp_path: Path) -> None:
    mrn = "MRN-W-" + uuid.uuid4().hex[:6].upper()
    accession = "W" + uuid.uuid4().hex[:10].upper()
    station = client.stack.config.modality_aet
    order_id = put_order(client, mrn=mrn, accession_number=accession, modality="MR", patient_family_name="Lovelace",
                         patient_given_name="Ada", birth_date="1815-12-10", sex="F", description="MR brain",
                         referring_physician="BABBAGE^Charles", scheduled_start="2026-12-01T14:30:00Z",
                         station_aet=station)
    cancelled = put_order(client, mrn=mrn, modality="MR", scheduled_start="2026-12-02T09:00:00Z", station_aet=station)
    client.request("DELETE", f"/api/v1/dicom/orders/{cancelled}", "ehr-service")

    items = ask(client, tmp_path, f"PatientID={mrn}", "ScheduledProcedureStepSequence[0].Modality=MR")
    assert len(items) == 1
    item = items[0]
    assert item.AccessionNumber == accession
    assert str(item.PatientName) == "Lovelace^Ada"
    assert (item.PatientBirthDate, item.PatientSex) == ("18151210", "F")
    assert item.RequestedProcedureDescription == "MR brain"
    assert str(item.ReferringPhysicianName) == "BABBAGE^Charles"
    step = item.ScheduledProcedureStepSequence[0]
    # 14:30 UTC is 08:30 in the test site's zone (America/Chicago, CST on 1 December).
    assert (step.ScheduledProcedureStepStartDate, step.ScheduledProcedureStepStartTime) == ("20261201", "083000")
    assert step.Modality == "MR"
    assert step.ScheduledStationAETitle == station

    assert ask(client, tmp_path, f"PatientID={mrn}", "ScheduledProcedureStepSequence[0].Modality=CT") == []
    by_accession = ask(client, tmp_path, f"AccessionNumber={accession}")
    assert [i.PatientID for i in by_accession] == [mrn]

    # Once the modality has sent the images, the order leaves the worklist.
    uid, files = make_study(tmp_path / "study", patient_id=mrn, accession=accession, study_date="20261201",
                            modality="MR")
    send(client.stack, files)
    wait_for_ingest(client, uid, 2)
    assert ask(client, tmp_path, f"PatientID={mrn}") == []
    assert order_id


def test_worklist_refuses_unknown_modalities(client: Client, tmp_path: Path) -> None:
    stack = client.stack
    with pytest.raises(RuntimeError):
        findscu_worklist(KEYS, host="127.0.0.1", port=stack.config.dicom_port, calling_aet="ROGUE",
                         called_aet=stack.config.orthanc_aet, out_dir=tmp_path)


def test_a_modality_sees_only_the_orders_for_it(client: Client, tmp_path: Path) -> None:
    """A wildcard query used to list every open order of every patient to any known AET."""
    station = client.stack.config.modality_aet
    mine, other, unassigned = ("MRN-S-" + uuid.uuid4().hex[:6].upper() for _ in range(3))
    put_order(client, mrn=mine, modality="CT", station_aet=station)
    put_order(client, mrn=other, modality="CT", station_aet="OTHERCT")
    # No station and no WorklistModalities entry for this AET (the session stack has none): nobody's.
    put_order(client, mrn=unassigned, modality="CT")

    seen = {item.PatientID for item in ask(client, tmp_path, "PatientID=MRN-S-*")}
    assert mine in seen
    assert other not in seen and unassigned not in seen
    assert {item.ScheduledProcedureStepSequence[0].ScheduledStationAETitle
            for item in ask(client, tmp_path)} == {station}


def test_every_worklist_query_is_audited(client: Client, tmp_path: Path) -> None:
    station = client.stack.config.modality_aet
    mrn = "MRN-A-" + uuid.uuid4().hex[:6].upper()
    put_order(client, mrn=mrn, modality="US", station_aet=station)
    assert len(ask(client, tmp_path, f"PatientID={mrn}")) == 1
    rows = query(client, "SELECT calling_aet, called_aet, answers, truncated, outcome, query->>'PatientID'"
                 " FROM ehr_imaging.dimse_audit WHERE service = 'MWL' ORDER BY id DESC LIMIT 1")
    assert rows == [(station, client.stack.config.orthanc_aet, 1, False, "answered", mrn)]
