"""The ingest worker follows Orthanc's change log (``app.ingest_worker``) from a cursor in PostgreSQL, on the fake
Orthanc's log: a first start follows from the log's end and lets the paged repair find what came before, a restart
resumes from the cursor (no read of every study), replaying changes records nothing twice, a deletion (never in
Orthanc's log) is spooled on disk and survives a restart, and two nodes on one log take turns by its lease."""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from ehr_imaging.app import hold_exchange, ingest, ingest_repair, ingest_worker
from ehr_imaging.app.deletion_spool import DeletionSpool
from ehr_imaging.app.hold_exchange import HoldExchange
from ehr_imaging.app.ingest_worker import IngestWorker
from ehr_imaging.app.uploading import Batch
from ehr_imaging.app.uploading import batch as batch_module
from ehr_imaging.core import errors, metrics
from ehr_imaging.core.holds import StudyHolds
from ehr_imaging.services import Services
from ehr_imaging.store import ingest_cursor, upload_holds
from tests.app.records import accession, mrn, put_order, upload_rows
from tests.dicom_factory import make_study
from tests.fakes.orthanc import FakeOrthanc
from tests.waiting import eventually


class Node:
    """One node's worker on a change log, with what it logged; ``drain`` runs its rounds until nothing waits."""

    def __init__(self, services: Services, log_id: str, name: str, spool: DeletionSpool | None = None) -> None:
        self.services = dataclasses.replace(services)
        self.log: list[str] = []
        self.worker = IngestWorker(self.services, self.log.append, self.log.append, log_id=lambda: log_id,
                                   node=name, spool=spool)
        self.handed = threading.Event()

        def hand(study: str) -> None:
            self.worker.submit(study)
            self.handed.set()

        self.services.ingest_later = hand
        self.services.ingest_deleted = self.worker.submit_deleted

    def drain(self) -> None:
        for _ in range(100):
            if not self.worker.step():
                return
        raise AssertionError("the worker never caught up")


def stored(orthanc: FakeOrthanc, tmp_path: Path, name: str, *, patient: str | None = None,
           acc: str | None = None) -> tuple[str, str]:
    """A study a modality sent, stable in Orthanc: (StudyInstanceUID, Orthanc study ID)."""
    uid, files = make_study(tmp_path / name, patient_id=patient or mrn(), accession=acc, study_date="20261120",
                            instances=2)
    study_id = {str(orthanc.receive(path.read_bytes())["ParentStudy"]) for path in files}.pop()
    orthanc.make_stable(study_id)
    return uid, study_id


def cursor_of(services: Services, log_id: str) -> int:
    with services.engine.connect() as conn:
        return int(conn.execute(text("SELECT seq FROM ehr_imaging.ingest_cursors WHERE log_id = :k"),
                                {"k": log_id}).scalar_one())


def count(services: Services, sql: str, uid: str) -> int:
    with services.engine.connect() as conn:
        return int(conn.execute(text(sql), {"u": uid}).scalar_one())


def test_first_start_repairs_once_then_a_restart_resumes_from_the_cursor(
        services: Services, orthanc: FakeOrthanc, tmp_path: Path) -> None:
    log_id = f"log-{uuid.uuid4()}"
    before_uid, _ = stored(orthanc, tmp_path, "before")  # in Orthanc before the plugin ever followed this log
    first = Node(services, log_id, "node-a")
    first.drain()
    assert cursor_of(services, log_id) == orthanc.changes[-1]["Seq"]  # followed from the log's end
    assert any("no cursor for Orthanc's change log" in line for line in first.log)
    assert eventually(first.handed.is_set, timeout=10, what="the first start's repair to hand the study over")
    first.drain()
    assert len(upload_rows(services, before_uid)) == 1

    live_uid, _ = stored(orthanc, tmp_path, "live")
    first.drain()
    assert len(upload_rows(services, live_uid)) == 1
    assert cursor_of(services, log_id) == orthanc.changes[-1]["Seq"]

    # The plugin stops (its lease given up); a study arrives meanwhile; a new process resumes from the cursor.
    first.worker.release()
    missed_uid, _ = stored(orthanc, tmp_path, "missed")
    orthanc.calls.clear()
    restarted = Node(services, log_id, "node-a")
    restarted.drain()
    assert len(upload_rows(services, missed_uid)) == 1
    assert not [call for call in orthanc.calls if call[1].startswith("/studies?")], "read every study again"
    assert any("resuming Orthanc's change log after change" in line for line in restarted.log), restarted.log
    assert restarted.worker.gauges()[metrics.INGEST_QUEUE_DEPTH] == 0


def test_replaying_the_log_records_nothing_twice(services: Services, orthanc: FakeOrthanc, tmp_path: Path) -> None:
    log_id = f"log-{uuid.uuid4()}"
    node = Node(services, log_id, "node-a")
    node.drain()  # the first start: follows from the (empty) log's end
    patient, acc = mrn(), accession()
    order_id = put_order(services, mrn=patient, accession_number=acc)
    uid, _ = stored(orthanc, tmp_path, "one", patient=patient, acc=acc)
    other_uid, other_id = stored(orthanc, tmp_path, "two")
    node.drain()
    orthanc.delete(f"/studies/{other_id}")
    node.worker.submit_deleted(other_id)
    node.drain()
    link_audit = "SELECT count(*) FROM ehr_imaging.link_audit WHERE study_instance_uid = :u"
    deletions = "SELECT count(*) FROM ehr_imaging.dicom_deletion_logs WHERE study_instance_uid = :u"
    assert (count(services, link_audit, uid), len(upload_rows(services, uid))) == (1, 1)
    assert count(services, deletions, other_uid) == 1

    # The same range again: the cursor set back (a crash after handling, before advancing), and the deletion too.
    assert ingest_cursor.advance(services.engine, log_id, "node-a", 0, 15)
    node.worker.submit_deleted(other_id)
    node.drain()
    assert (count(services, link_audit, uid), len(upload_rows(services, uid))) == (1, 1)
    assert count(services, deletions, other_uid) == 1
    assert upload_rows(services, uid)[0][5] == order_id


def test_a_deletion_is_spooled_on_disk_until_recorded_and_a_stale_one_records_nothing(
        services: Services, orthanc: FakeOrthanc, tmp_path: Path) -> None:
    log_id = f"log-{uuid.uuid4()}"
    spool_file = tmp_path / "deletions.spool"
    node = Node(services, log_id, "node-a", DeletionSpool(spool_file))
    uid, study_id = stored(orthanc, tmp_path, "one")
    node.drain()
    node.worker.submit(study_id)  # recorded (the first start's log end is after it)
    node.drain()
    assert len(upload_rows(services, uid)) == 1
    orthanc.delete(f"/studies/{study_id}")
    node.worker.submit_deleted(study_id)  # on Orthanc's change thread: on disk before the worker's next round
    assert spool_file.read_text() == f"{study_id}\n"

    # The process dies before recording it: the next one finds it in the spool and audits it.
    again = Node(services, log_id, "node-a", DeletionSpool(spool_file))
    again.drain()
    deletions = "SELECT count(*) FROM ehr_imaging.dicom_deletion_logs WHERE study_instance_uid = :u"
    assert count(services, deletions, uid) == 1
    assert spool_file.read_text() == ""

    # A deletion of a study Orthanc holds again (stored anew since): nothing recorded.
    back_uid, back_id = stored(orthanc, tmp_path, "back")
    again.worker.submit(back_id)
    again.drain()
    again.worker.submit_deleted(back_id)
    again.drain()
    assert count(services, deletions, back_uid) == 0


class RefusingOnce(DeletionSpool):
    """A spool whose first write of the study ``refuse`` fails (a full or read-only disk for a moment)."""

    refuse = ""

    def add(self, orthanc_study_ids: list[str]) -> None:
        if self.refuse in orthanc_study_ids:
            self.refuse = ""
            raise OSError(28, "No space left on device")
        super().add(orthanc_study_ids)


def test_a_deletion_the_spool_refuses_is_kept_and_spooled_in_the_next_round(
        services: Services, orthanc: FakeOrthanc, tmp_path: Path) -> None:
    spool_file = tmp_path / "deletions.spool"
    spool = RefusingOnce(spool_file)
    node = Node(services, f"log-{uuid.uuid4()}", "node-a", spool)
    uid, study_id = stored(orthanc, tmp_path, "one")
    node.drain()
    node.worker.submit(study_id)
    node.drain()
    orthanc.delete(f"/studies/{study_id}")
    spool.refuse = study_id
    node.worker.submit_deleted(study_id)  # the write fails: kept in memory, said in the log
    assert study_id not in spool.pending() and spool.refuse == ""
    assert any("deletion spool write failed (OSError)" in line for line in node.log), node.log
    node.drain()  # the next round spools it, then audits it
    deletions = "SELECT count(*) FROM ehr_imaging.dicom_deletion_logs WHERE study_instance_uid = :u"
    assert count(services, deletions, uid) == 1
    assert spool_file.read_text() == ""


def test_two_nodes_on_one_log_take_turns_by_the_lease(services: Services, orthanc: FakeOrthanc, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ingest_worker, "LEASE_SECONDS", 1.0)
    log_id = f"log-{uuid.uuid4()}"
    a, b = Node(services, log_id, "node-a"), Node(services, log_id, "node-b")
    a.drain()
    uid, _ = stored(orthanc, tmp_path, "one")
    b.drain()  # node a holds the lease: b reads no change
    orthanc.calls.clear()
    b.drain()
    assert not [call for call in orthanc.calls if call[1].startswith("/changes?since")]
    assert upload_rows(services, uid) == []
    a.drain()
    assert len(upload_rows(services, uid)) == 1

    # Node a dies (its lease is not renewed): b takes over from a's cursor once the lease ran out.
    second_uid, _ = stored(orthanc, tmp_path, "two")

    def b_took_over() -> bool:
        b.drain()
        return len(upload_rows(services, second_uid)) == 1

    eventually(b_took_over, timeout=10, what="node b to take the lease over", interval=0.2)
    assert len(upload_rows(services, uid)) == 1  # a's change not handled again
    assert any("resuming Orthanc's change log after change" in line for line in b.log)
    # Node a comes back: b holds the lease, so a handles nothing and says who follows; b handles it, once.
    third_uid, _ = stored(orthanc, tmp_path, "three")
    a.drain()
    assert upload_rows(services, third_uid) == []
    assert "ehr-imaging: node node-b follows Orthanc's change log now" in a.log
    b.drain()
    assert len(upload_rows(services, third_uid)) == 1
    # And a follower that lost its lease in the middle of a batch stops at its next advance.
    with pytest.raises(ingest_worker.LeaseLost):
        a.worker._advance(10**6)


def test_a_study_held_by_an_upload_is_replayed_after_a_crash_during_the_upload(
        services: Services, orthanc: FakeOrthanc, tmp_path: Path) -> None:
    """An upload records its studies at its end, so the worker passes their STABLE_STUDY; the cursor it writes
    stays before such a change until the upload ends, so a crash during the upload replays it."""
    log_id = f"log-{uuid.uuid4()}"
    node = Node(dataclasses.replace(services, holds=StudyHolds()), log_id, "node-a")
    node.drain()
    uid, files = make_study(tmp_path / "held", patient_id=mrn(), accession=None, study_date="20261120", instances=1)
    study_id = str(orthanc.receive(files[0].read_bytes(), origin="RestApi")["ParentStudy"])
    node.services.holds.hold(study_id)
    orthanc.make_stable(study_id)
    stable_seq = orthanc.changes[-1]["Seq"]
    node.drain()
    assert upload_rows(services, uid) == []  # the upload's to record
    assert cursor_of(services, log_id) == stable_seq - 1

    # The process dies with the upload; the next one (no hold) replays the change and records the study.
    again = Node(dataclasses.replace(services, holds=StudyHolds()), log_id, "node-a")
    again.drain()
    assert len(upload_rows(services, uid)) == 1
    assert cursor_of(services, log_id) == orthanc.changes[-1]["Seq"]


def test_a_study_an_upload_on_another_node_holds_waits_for_its_end_or_for_its_hold_to_run_out(
        services: Services, orthanc: FakeOrthanc, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two nodes on one Orthanc index: node b follows the change log, node a runs an upload that stalls past
    StableAge. b sees a's hold (the hold exchange) and passes the study over; once a's upload ended, b's record
    adds nothing to a's one upload row. A node that dies mid-upload stops renewing its hold: once it ran out, b
    records what was stored."""
    log_id = f"log-{uuid.uuid4()}"
    a = Node(dataclasses.replace(services, holds=StudyHolds()), log_id, "node-a")
    b = Node(dataclasses.replace(services, holds=StudyHolds()), log_id, "node-b")
    exchanges = [HoldExchange(node.services, name, node.log.append) for node, name in ((a, "node-a"), (b, "node-b"))]

    def exchange() -> None:
        for round_ in exchanges:
            round_.exchange_once()

    b.drain()  # b follows the log
    uid, files = make_study(tmp_path / "slow", patient_id=mrn(), accession=None, study_date="20261120", instances=4)
    with Batch(a.services, uploaded_by="tech-1", source="api") as upload:
        first = [upload.add(path.name, path.read_bytes()) for path in files[:2]]
        assert first[0].orthanc_instance_id is not None
        study_id = orthanc.instances[first[0].orthanc_instance_id].study_id
        exchange()
        assert b.services.holds.is_held(study_id) and not b.services.holds.held_here()
        orthanc.make_stable(study_id)  # the upload stalls past StableAge
        stable_seq = orthanc.changes[-1]["Seq"]
        b.drain()
        assert upload_rows(services, uid) == []  # not half of it: the upload's to record
        assert cursor_of(services, log_id) == stable_seq - 1
        for path in files[2:]:
            upload.add(path.name, path.read_bytes())
        upload.finish()
    exchange()
    b.drain()
    assert [row[0::3] for row in upload_rows(services, uid)] == [("success", 4)]  # one row, the upload's
    assert cursor_of(services, log_id) == orthanc.changes[-1]["Seq"]

    # Node a dies with an upload half stored: its hold runs out and b records the two files stored.
    monkeypatch.setattr(hold_exchange, "TTL_SECONDS", 1.0)
    cut_uid, cut_files = make_study(tmp_path / "cut", patient_id=mrn(), accession=None, study_date="20261120",
                                    instances=2)
    cut_id = {str(orthanc.receive(path.read_bytes(), origin="RestApi")["ParentStudy"]) for path in cut_files}.pop()
    a.services.holds.hold(cut_id)
    exchange()
    orthanc.make_stable(cut_id)
    b.drain()
    assert upload_rows(services, cut_uid) == []
    exchanges.pop(0)  # node a is gone: it renews nothing

    def recorded_once_run_out() -> bool:
        exchange()
        b.drain()
        return len(upload_rows(services, cut_uid)) == 1

    eventually(recorded_once_run_out, timeout=10, what="node a's hold to run out", interval=0.2)
    assert [row[0::3] for row in upload_rows(services, cut_uid)] == [("success", 2)]
    assert cursor_of(services, log_id) == orthanc.changes[-1]["Seq"]


def test_an_upload_stores_a_file_only_while_the_other_nodes_see_its_studys_hold(
        services: Services, orthanc: FakeOrthanc, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With Orthanc's index in PostgreSQL a file goes into a study only once the hold exchange has published the
    study's hold, and while it is renewed. A node that cannot renew (PostgreSQL out of its reach, the follower on
    another node not) refuses its uploads' files (503, nothing stored); a study whose hold may have run out
    meanwhile gets no more of that upload, even once renewed (the follower may have recorded it); a new upload
    stores again."""
    # Seen for 3 s less a 1 s margin after each round (rounds every 0.05 s: slack for a loaded machine).
    monkeypatch.setattr(hold_exchange, "TTL_SECONDS", 3.0)
    monkeypatch.setattr(hold_exchange, "MARGIN_SECONDS", 1.0)
    monkeypatch.setattr(batch_module, "HOLD_PUBLISHED_WITHIN_SECONDS", 2.0)
    node = Node(dataclasses.replace(services, holds=StudyHolds()), f"log-{uuid.uuid4()}", "node-a")
    holds = node.services.holds
    cut_off = threading.Event()
    exchange_rows = upload_holds.exchange

    def exchange_unless_cut_off(*args: Any, **kwargs: Any) -> set[str]:
        if cut_off.is_set():
            raise OSError("PostgreSQL out of reach")
        return exchange_rows(*args, **kwargs)

    monkeypatch.setattr(upload_holds, "exchange", exchange_unless_cut_off)
    exchange, stop = HoldExchange(node.services, "node-a", node.log.append), threading.Event()

    def rounds() -> None:  # the exchange's thread, stoppable
        while not stop.is_set():
            exchange.exchange_once()
            holds.wait_for_new_hold(0.05)

    def study(name: str) -> list[Path]:
        return make_study(tmp_path / name, patient_id=mrn(), accession=None, study_date="20261120", instances=3)[1]

    def lapse() -> None:
        cut_off.set()
        threading.Event().wait(2.5)  # past TTL less the margin since the last renewal

    thread = threading.Thread(target=rounds, daemon=True)
    thread.start()
    try:
        files, other = study("cut-off"), study("after")
        eventually(lambda: holds.ready_for("no study", 0.0) is False, timeout=10, what="the exchange's first round")
        with Batch(node.services, uploaded_by="tech-1", source="api") as upload:
            first = upload.add(files[0].name, files[0].read_bytes())
            assert first.status == "stored" and first.orthanc_instance_id is not None
            study_id = orthanc.instances[first.orthanc_instance_id].study_id
            with node.services.engine.connect() as conn:  # published before its first file went in
                assert conn.execute(text("SELECT count(*) FROM ehr_imaging.upload_holds WHERE orthanc_study_id = :s"),
                                    {"s": study_id}).scalar_one() == 1
            lapse()
            stored_before = len(orthanc.instances)
            refused = upload.add(files[1].name, files[1].read_bytes())
            assert (refused.status, refused.failure) == ("failed", errors.Unavailable)
            assert "send it again later" in (refused.error or "") and len(orthanc.instances) == stored_before
            began = time.monotonic()  # the study's next file is refused at once, not after another wait
            assert upload.add(files[1].name, files[1].read_bytes()).status == "failed"
            assert time.monotonic() - began < 1.5
            cut_off.clear()
            exchange.exchange_once()  # renewed
            again = upload.add(files[2].name, files[2].read_bytes())  # its hold may have run out: still refused
            assert (again.status, again.failure) == ("failed", errors.Unavailable)
        with Batch(node.services, uploaded_by="tech-1", source="api") as later:  # a new upload: stored again
            assert later.add(other[0].name, other[0].read_bytes()).status == "stored"
        lapse()
        with Batch(node.services, uploaded_by="tech-1", source="api") as alone:  # a new study, never published
            assert alone.add(other[1].name, other[1].read_bytes()).status == "failed"
            refusal = alone.storage_refusal()  # nothing stored: the request as a whole is refused, 503
            assert isinstance(refusal, errors.Unavailable) and refusal.retry_after_seconds > 0
    finally:
        stop.set()
        thread.join(5)


def test_without_a_hold_exchange_every_held_study_takes_files_at_once() -> None:
    """Orthanc's own SQLite index: no other node, no exchange; a held study is ready without any wait."""
    holds = StudyHolds()
    holds.hold("study")
    began = time.monotonic()
    assert holds.ready_for("study", 5.0) and time.monotonic() - began < 1.0


def test_a_study_held_only_once_its_change_was_read_is_deferred_as_one_held_before(
        services: Services, orthanc: FakeOrthanc, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An upload's hold appears between the worker reading a STABLE_STUDY change and handling it (another node's
    upload, seen at the hold exchange's next round): the handler passes the study over, and the worker defers it
    as it defers one held when read. The cursor stays before its change; once the hold runs out (that node died
    mid-upload) the study is recorded, its match latency counted from the change's reading."""
    log_id = f"log-{uuid.uuid4()}"
    node = Node(dataclasses.replace(services, holds=StudyHolds()), log_id, "node-a")
    node.drain()
    uid, files = make_study(tmp_path / "late", patient_id=mrn(), accession=None, study_date="20261120", instances=1)
    study_id = str(orthanc.receive(files[0].read_bytes(), origin="RestApi")["ParentStudy"])
    orthanc.make_stable(study_id)
    stable_seq = orthanc.changes[-1]["Seq"]
    handler = node.worker._changes
    flush = handler.flush

    def held_meanwhile(pending: list[tuple[int, str, str]], queued_at: float) -> list[tuple[int, str, str]]:
        node.services.holds.held_elsewhere({study_id})
        return flush(pending, queued_at)

    monkeypatch.setattr(handler, "flush", held_meanwhile)
    node.drain()
    assert upload_rows(services, uid) == []
    assert cursor_of(services, log_id) == stable_seq - 1
    monkeypatch.setattr(handler, "flush", flush)
    waited = 0.5
    threading.Event().wait(waited)
    node.services.holds.held_elsewhere(set())  # its hold ran out
    node.drain()
    assert len(upload_rows(services, uid)) == 1
    assert cursor_of(services, log_id) == orthanc.changes[-1]["Seq"]
    assert (node.services.metrics.get(metrics.MATCH_LATENCY) or 0.0) >= waited


def test_the_repair_pages_through_orthancs_studies(services: Services, orthanc: FakeOrthanc, tmp_path: Path) -> None:
    """Every study in pages (never one answer): the unrecorded stable ones, and the recorded ones Orthanc lost."""
    held = [stored(orthanc, tmp_path, f"s{n}")[1] for n in range(5)]
    orthanc.receive(make_study(tmp_path / "unstable", patient_id=mrn(), accession=None, study_date="20261120",
                               instances=1)[1][0].read_bytes())  # not stable yet: it announces itself later
    ingest.process_stable_study(services, held[0])
    orthanc.delete(f"/studies/{held[0]}")
    report = ingest_repair.differences(services, page=2)
    assert report.pages == 3 and report.studies_in_orthanc == 5
    assert set(report.unrecorded) == set(held[1:]) and held[0] in report.gone
    assert [call[1] for call in orthanc.calls if call[1].startswith("/studies?")] == [
        "/studies?expand&since=0&limit=2", "/studies?expand&since=2&limit=2", "/studies?expand&since=4&limit=2"]
