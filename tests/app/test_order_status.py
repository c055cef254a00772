"""The order's status follows the images (OrderStatusUpdates; store/order_status.py), on an in-memory Orthanc."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from sqlalchemy import text

from ehr_imaging.app import deletion, ingest
from ehr_imaging.services import Services
from ehr_imaging.store import links, orders
from tests.app.records import accession, mrn, put_order
from tests.dicom_factory import make_study
from tests.fakes.orthanc import FakeOrthanc


def arrive(orthanc: FakeOrthanc, files: list[Path]) -> str:
    study_ids = {str(orthanc.receive(path.read_bytes(), origin="DicomProtocol", remote_aet="CT1")["ParentStudy"])
                 for path in files}
    [study_id] = study_ids
    return study_id


def changes(services: Services, order_id: str) -> list[tuple[str, str]]:
    with services.engine.connect() as conn:
        rows = conn.execute(text("SELECT from_status, to_status FROM order_status_audit WHERE order_id = :o"
                                 " ORDER BY id"), {"o": order_id}).all()
    return [(str(a), str(b)) for a, b in rows]


def status(services: Services, order_id: str) -> str:
    order = orders.get(services.engine, order_id)
    assert order is not None
    return order.status


def linked_study(services: Services, orthanc: FakeOrthanc, folder: Path) -> tuple[str, str, str]:
    """An order and a one-instance study with its accession and MRN, arrived, stable and linked to it:
    (order id, StudyInstanceUID, Orthanc study ID)."""
    patient, acc = mrn(), accession()
    order_id = put_order(services, mrn=patient, accession_number=acc, scheduled_start="2026-03-10T09:00:00Z")
    uid, files = make_study(folder, patient_id=patient, accession=acc, study_date="20260310", instances=1)
    study_id = arrive(orthanc, files)
    orthanc.make_stable(study_id)
    assert ingest.process_stable_study(services, study_id) is not None
    return order_id, uid, study_id


def test_first_instance_in_progress_then_linked_completed_and_unlinked_scheduled_again(
        services: Services, orthanc: FakeOrthanc, tmp_path: Path) -> None:
    patient, acc = mrn(), accession()
    order_id = put_order(services, mrn=patient, accession_number=acc, modality="CT",
                         scheduled_start="2026-03-10T09:00:00Z")
    uid, files = make_study(tmp_path, patient_id=patient.lower(), accession=acc, study_date="20260310", instances=2)
    study_id = arrive(orthanc, files[:1])
    assert ingest.study_arrived(services, study_id) == order_id  # identifiers compared as matching compares them
    assert status(services, order_id) == "in-progress"
    arrive(orthanc, files[1:])
    orthanc.make_stable(study_id)
    assert ingest.process_stable_study(services, study_id) is not None
    assert status(services, order_id) == "completed"
    links.unlink(services.engine, uid, actor="rita", reason="wrong order")
    assert status(services, order_id) == "scheduled"
    assert changes(services, order_id) == [("scheduled", "in-progress"), ("in-progress", "completed"),
                                           ("completed", "scheduled")]


def test_a_cancelled_order_and_another_patients_study_change_nothing(
        services: Services, orthanc: FakeOrthanc, tmp_path: Path) -> None:
    patient, acc = mrn(), accession()
    cancelled = put_order(services, mrn=patient, accession_number=acc, status="cancelled")
    _, files = make_study(tmp_path / "a", patient_id=patient, accession=acc, study_date="20260310", instances=1)
    assert ingest.study_arrived(services, arrive(orthanc, files)) is None
    assert status(services, cancelled) == "cancelled" and changes(services, cancelled) == []
    other_acc = accession()
    scheduled = put_order(services, mrn=patient, accession_number=other_acc)
    _, theirs = make_study(tmp_path / "b", patient_id=mrn(), accession=other_acc, study_date="20260310", instances=1)
    assert ingest.study_arrived(services, arrive(orthanc, theirs)) is None  # same accession, another PatientID
    assert status(services, scheduled) == "scheduled" and changes(services, scheduled) == []


def test_a_status_the_ehr_set_is_never_undone_and_updates_can_be_off(
        services: Services, orthanc: FakeOrthanc, tmp_path: Path) -> None:
    order_id, uid, study_id = linked_study(services, orthanc, tmp_path / "a")
    with services.engine.begin() as conn:  # the EHR says so (PUT /orders keeps its own status)
        conn.execute(text("UPDATE imaging_orders SET status = 'in-progress' WHERE order_id = :o"), {"o": order_id})
    links.unlink(services.engine, uid, actor="rita", reason=None)
    assert status(services, order_id) == "in-progress"  # not the images' to undo

    off = dataclasses.replace(services, settings=dataclasses.replace(services.settings, OrderStatusUpdates=False))
    patient, acc = mrn(), accession()
    untouched = put_order(off, mrn=patient, accession_number=acc, scheduled_start="2026-03-10T09:00:00Z")
    _, files = make_study(tmp_path / "b", patient_id=patient, accession=acc, study_date="20260310", instances=1)
    study_id = arrive(orthanc, files)
    assert ingest.study_arrived(off, study_id) is None
    orthanc.make_stable(study_id)
    outcome = ingest.process_stable_study(off, study_id)
    assert outcome is not None and outcome.order_id == untouched  # linked all the same
    assert status(off, untouched) == "scheduled" and changes(off, untouched) == []


def test_a_first_instance_handled_after_its_study_was_deleted_leaves_the_freed_order_alone(
        services: Services, orthanc: FakeOrthanc, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The worker reads a NewStudy's study from Orthanc, then waits for the study's lock while an API deletion
    # holds it (Orthanc's delete and the order freed, in one transaction): seen by a fresh-clone run, the order
    # went back to in progress. Under the lock the study is gone, so nothing of it is written.
    services = dataclasses.replace(services, settings=dataclasses.replace(
        services.settings, DeletedStudyRetentionDays=0))
    order_id, uid, study_id = linked_study(services, orthanc, tmp_path / "a")
    _, others = make_study(tmp_path / "b", patient_id=mrn(), accession=accession(), study_date="20260310",
                           instances=1)
    other_id = arrive(orthanc, others)
    read_before = {s: ingest._arrival(services, s) for s in (study_id, other_id)}
    deletion.delete_study(services, uid, actor="rita", reason="duplicate")
    assert status(services, order_id) == "scheduled"
    monkeypatch.setattr(ingest, "_arrival", lambda _services, study, read=None: read_before[study])

    assert ingest.study_arrived(services, study_id) is None
    assert ingest.studies_arrived(services, [study_id, other_id]) == []  # (none to try alone)
    assert status(services, order_id) == "scheduled"
    assert changes(services, order_id) == [("scheduled", "completed"), ("completed", "scheduled")]
