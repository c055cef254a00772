"""Deletion and recovery (``app.deletion``, ``app.deletion_recovery``) on an in-memory Orthanc: what happens when
a step fails (Orthanc refuses, the kept folder is unusable, a kept file changed), what retention 0 means, and a
restore whose order was cancelled meanwhile."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from ehr_imaging.app import deletion, deletion_recovery, ingest, observation
from ehr_imaging.app.uploading import Batch
from ehr_imaging.core import errors
from ehr_imaging.core.study_identity import StudyObservation
from ehr_imaging.services import Services
from ehr_imaging.store import deletions, orders, studies
from tests.app.records import accession, mrn, put_order, upload_rows
from tests.dicom_factory import make_study
from tests.fakes.orthanc import FakeOrthanc
from tests.waiting import eventually


def keeping(services: Services, folder: Path | str, **settings: object) -> Services:
    return dataclasses.replace(services, settings=dataclasses.replace(
        services.settings, DeletedStudyDir=str(folder), **settings))  # type: ignore[arg-type]


def linked_study(services: Services, orthanc: FakeOrthanc, tmp_path: Path, instances: int = 2) -> tuple[str, str]:
    patient, acc = mrn(), accession()
    order_id = put_order(services, mrn=patient, accession_number=acc)
    uid, files = make_study(tmp_path / "study", patient_id=patient, accession=acc, study_date="20261120",
                            instances=instances)
    stored = [orthanc.receive(path.read_bytes()) for path in files]
    study_id = str(stored[0]["ParentStudy"])
    orthanc.make_stable(study_id)
    outcome = ingest.process_stable_study(services, study_id)
    assert outcome is not None and outcome.order_id == order_id
    return uid, order_id


def test_a_deletion_orthanc_refuses_records_nothing_and_keeps_nothing(
        services: Services, orthanc: FakeOrthanc, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    own = keeping(services, tmp_path / "kept")
    uid, order_id = linked_study(own, orthanc, tmp_path)

    def refuse(uri: str) -> None:
        raise errors.ArchiveError(uri, "refused")

    monkeypatch.setattr(orthanc, "delete", refuse)
    with pytest.raises(errors.Conflict, match="Orthanc could not delete the study"):
        deletion.delete_study(own, uid, actor="admin-1", reason="duplicate")
    assert list((tmp_path / "kept").iterdir()) == []  # the copy made before Orthanc refused is discarded
    assert deletions.deletions(own.engine, study_uid=uid)[0] == 0
    assert studies.get(own.engine, uid) is not None
    found = orders.get(own.engine, order_id)
    assert found is not None and found.study_instance_uid == uid


def test_no_usable_folder_refuses_the_deletion_and_retention_zero_keeps_nothing(
        services: Services, orthanc: FakeOrthanc, tmp_path: Path) -> None:
    uid, _ = linked_study(services, orthanc, tmp_path)
    assert services.settings.DeletedStudyDir == ""
    with pytest.raises(errors.Unavailable, match="DeletedStudyDir is not set"):
        deletion.delete_study(services, uid, actor="admin-1", reason="duplicate")
    open_folder = tmp_path / "open"
    open_folder.mkdir(mode=0o755)
    open_folder.chmod(0o755)
    with pytest.raises(errors.Unavailable, match="open to group or others"):
        deletion.delete_study(keeping(services, open_folder), uid, actor="admin-1", reason="duplicate")
    assert len(orthanc.studies) == 1  # nothing deleted

    final = keeping(services, "", DeletedStudyRetentionDays=0.0)
    done = deletion.delete_study(final, uid, actor="admin-1", reason="duplicate")
    assert (done.record.restorable, done.record.kept_files, done.record.files_kept_until) == (False, 0, None)
    assert orthanc.studies == {}
    with pytest.raises(errors.Unavailable):  # no folder at all: nothing can be restored
        deletion_recovery.restore(final, done.record.id, actor="admin-2")
    with pytest.raises(errors.Conflict, match="its files were not kept"):
        deletion_recovery.restore(keeping(services, tmp_path / "kept"), done.record.id, actor="admin-2")


def test_a_kept_file_that_changed_is_not_restored(services: Services, orthanc: FakeOrthanc, tmp_path: Path) -> None:
    own = keeping(services, tmp_path / "kept")
    uid, _ = linked_study(own, orthanc, tmp_path)
    done = deletion.delete_study(own, uid, actor="admin-1", reason="duplicate")
    assert (done.record.restorable, done.record.kept_files) == (True, 2)
    kept = tmp_path / "kept" / str(done.record.id)
    first = sorted(kept.glob("*.dcm"))[-1]  # the last: nothing before it is stored either
    data = first.read_bytes()
    first.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))  # one bit pattern changed in the pixel data
    with pytest.raises(errors.Conflict, match="no longer has the MD5 it was kept with"):
        deletion_recovery.restore(own, done.record.id, actor="admin-2")
    record = deletions.deletion(own.engine, done.record.id)
    assert record is not None and record.restorable and record.restored_at is None
    assert orthanc.studies == {}


def test_a_restore_whose_order_was_cancelled_waits_unmatched(services: Services, orthanc: FakeOrthanc,
                                                             tmp_path: Path) -> None:
    own = keeping(services, tmp_path / "kept")
    uid, order_id = linked_study(own, orthanc, tmp_path, instances=3)
    before = {i.dataset.SOPInstanceUID: i.data for i in orthanc.instances.values()}
    done = deletion.delete_study(own, uid, actor="admin-1", reason="wrong order")
    assert orders.cancel(own.engine, order_id) is not None
    restored = deletion_recovery.restore(own, done.record.id, actor="admin-2")
    assert (restored.restored_instances, restored.order_id) == (3, None)
    assert restored.match_reason is not None and "cancel" in restored.match_reason
    assert {i.dataset.SOPInstanceUID: i.data for i in orthanc.instances.values()} == before  # bit for bit
    assert (restored.deletion.restorable, restored.deletion.restored_by) == (False, "admin-2")
    assert not (tmp_path / "kept" / str(done.record.id)).exists()
    with pytest.raises(errors.Conflict, match="it was restored"):
        deletion_recovery.restore(own, done.record.id, actor="admin-2")


def test_the_requester_never_approves_and_a_request_is_decided_once(
        services: Services, orthanc: FakeOrthanc, tmp_path: Path) -> None:
    own = keeping(services, tmp_path / "kept", DeletionApproval="required")
    uid, _ = linked_study(own, orthanc, tmp_path)
    asked = deletion.request_deletion(own, uid, actor="alice", reason="duplicate")
    assert isinstance(asked, deletions.RequestRecord) and asked.status == "pending"
    with pytest.raises(errors.Conflict, match="already pending"):
        deletion.request_deletion(own, uid, actor="rita", reason="duplicate too")
    with pytest.raises(errors.Forbidden, match="another admin must approve it"):
        deletion.approve(own, asked.id, actor="alice")
    assert len(orthanc.studies) == 1
    rejected = deletion.reject(own, asked.id, actor="bob", reason="keep it")
    assert (rejected.status, rejected.decided_by, rejected.decision_reason) == ("rejected", "bob", "keep it")
    with pytest.raises(errors.Conflict, match="is rejected, not pending"):
        deletion.approve(own, asked.id, actor="carol")
    assert len(orthanc.studies) == 1


def test_one_restore_at_a_time(services: Services, orthanc: FakeOrthanc, tmp_path: Path) -> None:
    own = keeping(services, tmp_path / "kept")
    uid, _ = linked_study(own, orthanc, tmp_path)
    done = deletion.delete_study(own, uid, actor="admin-1", reason="duplicate")
    with (deletions.restoring(own.engine, done.record.id),  # another restore holds it
          pytest.raises(errors.Conflict, match="being restored or purged right now")):
        deletion_recovery.restore(own, done.record.id, actor="admin-2")
    assert orthanc.studies == {}
    assert deletion_recovery.restore(own, done.record.id, actor="admin-2").restored_instances == 2


def test_a_purge_skips_a_locked_deletion_and_removes_it_once_free(
        services: Services, orthanc: FakeOrthanc, tmp_path: Path) -> None:
    own = keeping(services, tmp_path / "kept", DeletedStudyRetentionDays=0.00001)  # kept 0.86 s
    uid, _ = linked_study(own, orthanc, tmp_path)
    done = deletion.delete_study(own, uid, actor="admin-1", reason="duplicate")
    kept = tmp_path / "kept" / str(done.record.id)
    eventually(lambda: done.record.id in deletions.purgeable(own.engine), timeout=10,
               what="the deletion to be past its retention")
    with own.engine.connect() as holder:  # a restore (or another node's purge) holding the row
        holder.execute(text("SELECT 1 FROM ehr_imaging.dicom_deletion_logs WHERE id = :i FOR UPDATE"),
                       {"i": done.record.id})
        assert deletion_recovery.purge(own) == []  # skipped, not waited for
        assert kept.is_dir()
        holder.rollback()
    assert deletion_recovery.purge(own) == [done.record.id]
    assert not kept.exists()
    record = deletions.deletion(own.engine, done.record.id)
    assert record is not None and not record.restorable and record.purged_at is not None


def test_an_upload_whose_study_is_deleted_after_its_read_records_a_failed_row_and_no_link(
        services: Services, orthanc: FakeOrthanc, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # An upload's second batch of a linked study: the upload reads the study from Orthanc, and an API deletion of
    # it runs before the upload takes the study's lock. Recorded after that, the link came back for a study
    # Orthanc no longer holds. Under the lock it is gone: the upload's row says so, nothing else is written.
    own = dataclasses.replace(services, settings=dataclasses.replace(services.settings, DeletedStudyRetentionDays=0))
    patient, acc = mrn(), accession()
    order_id = put_order(own, mrn=patient, accession_number=acc)
    uid, files = make_study(tmp_path / "study", patient_id=patient, accession=acc, study_date="20261120",
                            instances=4)
    with Batch(own, uploaded_by="tech-1", source="api") as first:
        for path in files[:2]:
            first.add(path.name, path.read_bytes())
        assert first.finish()[uid].order_id == order_id
    read = observation.observe_study

    def read_then_deleted(svc: Services, orthanc_study_id: str, **kwargs: Any) -> StudyObservation | None:
        seen = read(svc, orthanc_study_id, **kwargs)
        monkeypatch.setattr(observation, "observe_study", read)  # the deletion reads it as ever
        deletion.delete_study(own, uid, actor="rita", reason="duplicate")
        return seen

    monkeypatch.setattr(observation, "observe_study", read_then_deleted)
    with Batch(own, uploaded_by="tech-2", source="api") as second:
        stored = [second.add(path.name, path.read_bytes()) for path in files[2:]]
        assert [r.status for r in stored] == ["stored", "stored"]
        outcome = second.finish()[uid]
    assert (outcome.orthanc_study_id, outcome.order_id, outcome.upload_status) == (None, None, "failed")
    gone = "the study was deleted while it was being uploaded"
    assert [(r.status, r.error) for r in stored] == [("failed", gone)] * 2
    assert studies.get(own.engine, uid) is None  # no link of a study Orthanc does not hold
    assert orthanc.studies == {}
    sent = sum(len(path.read_bytes()) for path in files[2:])
    assert upload_rows(own, uid)[-1] == ("failed", "api", "tech-2", 2, sent, None)
    assert len(upload_rows(own, uid)) == 2  # the first upload's row, and this one's
    with own.engine.connect() as conn:
        audited = conn.execute(text("SELECT deleted_by, reason, order_id FROM ehr_imaging.dicom_deletion_logs"
                                    " WHERE study_instance_uid = :u"), {"u": uid}).all()
    assert [tuple(row) for row in audited] == [("rita", "duplicate", order_id)]
    freed = orders.get(own.engine, order_id)
    assert freed is not None and freed.status == "scheduled" and freed.study_instance_uid is None


def test_a_stable_study_read_before_its_deletion_is_not_recorded_again(
        services: Services, orthanc: FakeOrthanc, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The worker reads a stable study from Orthanc, then waits for its lock while an API deletion holds it
    # (Orthanc's delete, the link removed, the audit row: one transaction). Recorded again after that, the study
    # came back as a link of nothing Orthanc holds, and the deletion change that followed audited it a second
    # time, as "deleted in Orthanc outside the EHR API". Under the lock it is gone, so nothing of it is written.
    own = dataclasses.replace(services, settings=dataclasses.replace(services.settings, DeletedStudyRetentionDays=0))
    uid, order_id = linked_study(own, orthanc, tmp_path / "a")
    other_uid, other_order = linked_study(own, orthanc, tmp_path / "b")
    recorded = studies.get(own.engine, uid)
    other = studies.get(own.engine, other_uid)
    assert recorded is not None and other is not None
    study_id, other_id = recorded.orthanc_study_id, other.orthanc_study_id
    read_before = {s: ingest._observe_unless_held(own, s) for s in (study_id, other_id)}
    deletion.delete_study(own, uid, actor="rita", reason="duplicate")
    monkeypatch.setattr(ingest, "_observe_unless_held", lambda _services, study, read=None: read_before[study])

    assert ingest.process_stable_study(own, study_id) is None
    batch = ingest.record_stable_studies(own, [study_id, other_id])
    assert (set(batch.outcomes), batch.failed) == ({other_id}, {})  # its batch-mate recorded as ever
    assert batch.outcomes[other_id].order_id == other_order
    assert studies.get(own.engine, uid) is None
    assert ingest.study_deleted(own, study_id) == []  # the deletion change after it: nothing to audit
    with own.engine.connect() as conn:
        audited = conn.execute(text("SELECT deleted_by, reason, order_id FROM ehr_imaging.dicom_deletion_logs"
                                    " WHERE study_instance_uid = :u"), {"u": uid}).all()
    assert [tuple(row) for row in audited] == [("rita", "duplicate", order_id)]
    freed = orders.get(own.engine, order_id)
    assert freed is not None and freed.status == "scheduled"  # freed by the deletion, and left so
