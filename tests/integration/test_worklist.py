"""A modality asks the worklist (dcmtk findscu -W) and gets the EHR's scheduled orders."""

from __future__ import annotations

import uuid
from pathlib import Path

import pydicom
import pytest

from ehr_stack.dicom import findscu_worklist
from tests.conftest import Client
from tests.dicom_factory import make_study, send
from tests.integration.test_matching import put_order, wait_for_ingest

pytestmark = pytest.mark.integration

KEYS = [
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber", "RequestedProcedureDescription",
    "ReferringPhysicianName", "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate",
    "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartTime",
    "ScheduledProcedureStepSequence[0].ScheduledProcedureStepDescription",
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
    order_id = put_order(client, mrn=mrn, accession_number=accession, modality="MR", patient_family_name="Lovelace",
                         patient_given_name="Ada", birth_date="1815-12-10", sex="F", description="MR brain",
                         referring_physician="BABBAGE^Charles", scheduled_start="2026-12-01T14:30:00Z")
    cancelled = put_order(client, mrn=mrn, modality="MR", scheduled_start="2026-12-02T09:00:00Z")
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
