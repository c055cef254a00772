"""The ingest of a stable study (``app.ingest``) on an in-memory Orthanc: what it records, and what it links."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from ehr_imaging.app import ingest
from ehr_imaging.services import Services
from ehr_imaging.store import orders, reconciliation
from tests.app.records import accession, mrn, put_order, upload_rows
from tests.dicom_factory import make_study
from tests.fakes.orthanc import FakeOrthanc


def stored_by_a_modality(orthanc: FakeOrthanc, files: list[Path], aet: str = "CT-SCANNER") -> str:
    """C-STORE of every file (what the real Orthanc records: Origin DicomProtocol, the calling AET)."""
    study_ids = {str(orthanc.receive(path.read_bytes(), origin="DicomProtocol", remote_aet=aet)["ParentStudy"])
                 for path in files}
    assert len(study_ids) == 1
    [study_id] = study_ids
    orthanc.make_stable(study_id)
    return study_id


def test_a_stable_study_is_recorded_and_linked_to_the_order_of_its_accession(
        services: Services, orthanc: FakeOrthanc, tmp_path: Path) -> None:
    patient, acc = mrn(), accession()
    order_id = put_order(services, mrn=patient, accession_number=acc, modality="CT",
                         scheduled_start="2026-03-10T09:00:00Z")
    uid, files = make_study(tmp_path, patient_id=patient, accession=acc, study_date="20260310", instances=3)
    study_id = stored_by_a_modality(orthanc, files)

    outcome = ingest.process_stable_study(services, study_id)

    assert outcome is not None and (outcome.order_id, outcome.new_instances) == (order_id, 3)
    linked = orders.get(services.engine, order_id)
    assert linked is not None
    assert (linked.study_instance_uid, linked.orthanc_study_id, linked.match_rule) == (uid, study_id,
                                                                                               "accession")
    assert (linked.number_of_series, linked.number_of_images, linked.study_date) == (1, 3, date(2026, 3, 10))
    assert (linked.upload_source, linked.uploaded_by) == ("modality", "CT-SCANNER")
    total = sum(len(path.read_bytes()) for path in files)
    assert upload_rows(services, uid) == [("success", "modality", "CT-SCANNER", 3, total, order_id)]
    # Read from Orthanc through the adapter only: the study, its counts, its series, who sent it.
    first_instance = min(i.id for i in orthanc.instances_of(study_id))
    assert orthanc.calls == [("GET", f"/studies/{study_id}"), ("GET", f"/studies/{study_id}/statistics"),
                             ("GET", f"/studies/{study_id}/series"),
                             ("GET", f"/instances/{first_instance}/metadata?expand")]


def test_a_study_of_another_patient_stays_unmatched_and_the_order_unlinked(
        services: Services, orthanc: FakeOrthanc, tmp_path: Path) -> None:
    acc = accession()
    order_id = put_order(services, mrn=mrn(), accession_number=acc)
    uid, files = make_study(tmp_path, patient_id=mrn(), accession=acc, study_date="20261120")
    study_id = stored_by_a_modality(orthanc, files)

    outcome = ingest.process_stable_study(services, study_id)

    assert outcome is not None and (outcome.order_id, outcome.reason) == (None, "patient mismatch")
    linked = orders.get(services.engine, order_id)
    assert linked is not None and linked.study_instance_uid is None
    status = reconciliation.match_status(services.engine, uid)
    assert (status.status, status.order_id, status.reason) == ("unmatched", None, "patient mismatch")
    assert [row[0] for row in upload_rows(services, uid)] == ["success"]  # what arrived is audited all the same


def test_a_later_batch_updates_the_counts_and_audits_only_what_is_new(
        services: Services, orthanc: FakeOrthanc, tmp_path: Path) -> None:
    patient, acc = mrn(), accession()
    order_id = put_order(services, mrn=patient, accession_number=acc)
    uid, first = make_study(tmp_path / "a", patient_id=patient, accession=acc, study_date="20261120", instances=2)
    study_id = stored_by_a_modality(orthanc, first)
    assert ingest.process_stable_study(services, study_id) is not None
    _, second = make_study(tmp_path / "b", patient_id=patient, accession=acc, study_date="20261120", instances=3,
                           study_uid=uid)
    assert stored_by_a_modality(orthanc, second) == study_id

    outcome = ingest.process_stable_study(services, study_id)

    assert outcome is not None and (outcome.order_id, outcome.new_instances) == (order_id, 3)
    linked = orders.get(services.engine, order_id)
    assert linked is not None and (linked.number_of_series, linked.number_of_images) == (2, 5)
    assert [(row[3], row[5]) for row in upload_rows(services, uid)] == [(2, order_id), (3, order_id)]
    assert ingest.process_stable_study(services, study_id) is not None  # nothing new: no third row
    assert len(upload_rows(services, uid)) == 2


def test_a_study_an_upload_holds_or_one_deleted_meanwhile_is_not_recorded(
        services: Services, orthanc: FakeOrthanc, tmp_path: Path) -> None:
    uid, files = make_study(tmp_path, patient_id=mrn(), accession=None, study_date="20261120")
    study_id = stored_by_a_modality(orthanc, files)
    services.holds.hold(study_id)
    assert ingest.process_stable_study(services, study_id) is None  # the upload records it at its end
    assert reconciliation.match_status(services.engine, uid).status == "unknown"
    services.holds.release(study_id)
    orthanc.delete(f"/studies/{study_id}")
    assert ingest.process_stable_study(services, study_id) is None  # gone before the worker got to it
    assert upload_rows(services, uid) == []
