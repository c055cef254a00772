"""The ingest worker records several stable studies per transaction (``IngestBatchSize``), on the fake Orthanc's
change log: a batch is one transaction, a study that fails never fails its batch-mates (read from Orthanc,
or inside the transaction: then one by one), a batch cut by a database error records nothing and the cursor
stays before it, and replaying it afterwards records each study once."""

from __future__ import annotations

import dataclasses
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from ehr_imaging.app import ingest_changes, ingest_worker, observation
from ehr_imaging.app.ingest_worker import IngestWorker
from ehr_imaging.core.errors import ArchiveError
from ehr_imaging.core.holds import StudyHolds
from ehr_imaging.services import Services
from ehr_imaging.store import links
from tests.app.records import accession, mrn, put_order, upload_rows
from tests.dicom_factory import make_study
from tests.fakes.orthanc import FakeOrthanc


class Node:
    """One worker on a fresh change log; ``rounds`` runs its rounds until nothing waits, noting what it raised."""

    def __init__(self, services: Services) -> None:
        self.log: list[str] = []
        self.services = services
        self.log_id = f"log-{uuid.uuid4()}"
        self.worker = IngestWorker(services, self.log.append, self.log.append, log_id=lambda: self.log_id,
                                   node="node-a")

    def rounds(self, limit: int = 100) -> list[Exception]:
        raised: list[Exception] = []
        for _ in range(limit):
            try:
                if not self.worker.step():
                    return raised
            except Exception as exc:  # noqa: BLE001 - what the worker's thread would pause on and retry
                raised.append(exc)
        raise AssertionError(f"the worker never caught up: {raised[-3:]}")

    def cursor(self) -> int:
        with self.services.engine.connect() as conn:
            return int(conn.execute(text("SELECT seq FROM ehr_imaging.ingest_cursors WHERE log_id = :k"),
                                    {"k": self.log_id}).scalar_one())


def arrive(orthanc: FakeOrthanc, tmp_path: Path, name: str, *, patient: str | None = None,
           acc: str | None = None) -> tuple[str, str]:
    """A study a modality sent, not stable yet: (StudyInstanceUID, Orthanc study ID)."""
    uid, files = make_study(tmp_path / name, patient_id=patient or mrn(), accession=acc, study_date="20261120",
                            instances=2)
    return uid, {str(orthanc.receive(path.read_bytes())["ParentStudy"]) for path in files}.pop()


def flood(orthanc: FakeOrthanc, tmp_path: Path, count: int) -> list[tuple[str, str]]:
    """``count`` studies arrived, then all stable: their STABLE_STUDY changes one after another in the log."""
    studies = [arrive(orthanc, tmp_path, f"s{n}") for n in range(count)]
    for _, study_id in studies:
        orthanc.make_stable(study_id)
    return studies


def stable_seqs(orthanc: FakeOrthanc) -> list[int]:
    return [int(c["Seq"]) for c in orthanc.changes if c["ChangeType"] == "StableStudy"]


def transactions(services: Services, uids: list[str]) -> int:
    """How many transactions wrote these studies' links (PostgreSQL's xmin of each row)."""
    with services.engine.connect() as conn:
        return int(conn.execute(text("SELECT count(DISTINCT xmin::text) FROM ehr_imaging.study_links"
                                     " WHERE study_instance_uid = ANY(:u)"), {"u": uids}).scalar_one())


def count(services: Services, sql: str, uid: str) -> int:
    with services.engine.connect() as conn:
        return int(conn.execute(text(sql), {"u": uid}).scalar_one())


@pytest.fixture()
def node(services: Services) -> Node:
    started = Node(dataclasses.replace(services, settings=dataclasses.replace(services.settings,
                                                                              IngestBatchSize=50)))
    assert started.rounds() == []  # the first start: follows from the (empty) log's end
    return started


def test_a_flood_is_recorded_one_transaction_per_batch_and_replays_record_nothing_twice(
        node: Node, services: Services, orthanc: FakeOrthanc, tmp_path: Path) -> None:
    patient, acc = mrn(), accession()
    order_id = put_order(services, mrn=patient, accession_number=acc)
    linked_uid, linked_id = arrive(orthanc, tmp_path, "ordered", patient=patient, acc=acc)
    orthanc.make_stable(linked_id)
    studies = [(linked_uid, linked_id), *flood(orthanc, tmp_path, 6)]
    uids = [uid for uid, _ in studies]
    assert node.rounds() == []
    assert [len(upload_rows(services, uid)) for uid in uids] == [1] * 7
    assert transactions(services, uids) == 1
    assert upload_rows(services, linked_uid)[0][5] == order_id
    link_audit = "SELECT count(*) FROM ehr_imaging.link_audit WHERE study_instance_uid = :u"
    assert count(services, link_audit, linked_uid) == 1
    status = "SELECT status FROM ehr_imaging.imaging_orders WHERE order_id = :u"
    with services.engine.connect() as conn:
        assert conn.execute(text(status), {"u": order_id}).scalar_one() == "completed"
    assert node.cursor() == orthanc.changes[-1]["Seq"]

    # The whole log again (a crash after handling, before advancing): nothing is recorded twice.
    with services.engine.begin() as conn:
        conn.execute(text("UPDATE ehr_imaging.ingest_cursors SET seq = 0 WHERE log_id = :k"), {"k": node.log_id})
    assert node.rounds() == []
    assert [len(upload_rows(services, uid)) for uid in uids] == [1] * 7
    assert count(services, link_audit, linked_uid) == 1


def good_recorded_bad_given_up(node: Node, services: Services, orthanc: FakeOrthanc,
                               studies: list[tuple[str, str]], bad: int, error: type[Exception]) -> list[str]:
    """The rounds until the log is handled: ``studies[bad]`` failed with ``error`` at each of its attempts and was
    given up, every other study recorded once, the cursor at the log's end. Returns the good studies' UIDs."""
    bad_uid, bad_id = studies[bad]
    raised = node.rounds()
    assert len(raised) == ingest_changes.MAX_ATTEMPTS - 1 and all(isinstance(e, error) for e in raised)
    good = [uid for uid, _ in studies if uid != bad_uid]
    assert [len(upload_rows(services, uid)) for uid in good] == [1] * len(good)
    assert upload_rows(services, bad_uid) == []
    assert f"ehr-imaging: stable study {bad_id} given up after {ingest_changes.MAX_ATTEMPTS} attempts" in node.log
    assert node.cursor() == orthanc.changes[-1]["Seq"]
    return good


def test_a_study_orthanc_fails_to_answer_for_is_retried_alone_its_batch_mates_recorded(
        node: Node, services: Services, orthanc: FakeOrthanc, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    studies = flood(orthanc, tmp_path, 5)
    bad_id = studies[1][1]
    answer = orthanc.get_json

    def failing(uri: str) -> Any:
        if uri == f"/studies/{bad_id}/statistics":
            raise ArchiveError(uri, "a test's fault")
        return answer(uri)

    monkeypatch.setattr(orthanc, "get_json", failing)
    good = good_recorded_bad_given_up(node, services, orthanc, studies, 1, ArchiveError)
    assert transactions(services, good) == 1  # in one batch (and again so by each replay, recording nothing new)


def test_a_batch_whose_transaction_fails_is_recorded_one_by_one(
        node: Node, services: Services, orthanc: FakeOrthanc, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    studies = flood(orthanc, tmp_path, 4)
    bad_uid = studies[2][0]
    record_in = links.record_in

    def failing(session: Any, seen: Any, *args: Any, **kwargs: Any) -> links.LinkOutcome:
        if seen.study_instance_uid == bad_uid:
            raise ValueError("a bug for this study only (a test's fault)")
        return record_in(session, seen, *args, **kwargs)

    monkeypatch.setattr(links, "record_in", failing)
    good = good_recorded_bad_given_up(node, services, orthanc, studies, 2, ValueError)
    assert any(line.startswith("ehr-imaging: a batch of 4 stable studies failed (ValueError")
               and line.endswith("recording them one by one") for line in node.log), node.log
    assert transactions(services, good) == 3  # each batch rolled back, its studies recorded alone


def test_a_batch_cut_by_a_database_error_records_nothing_and_the_cursor_stays_before_it(
        node: Node, services: Services, orthanc: FakeOrthanc, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ingest_worker, "ADVANCE_EVERY_SECONDS", 0.0)  # the cursor written after every change
    studies = flood(orthanc, tmp_path, 5)
    record_in = links.record_in
    cut: list[str] = []

    def connection_lost(session: Any, seen: Any, *args: Any, **kwargs: Any) -> links.LinkOutcome:
        if len(cut) == 0 and seen.study_instance_uid == studies[3][0]:
            cut.append(seen.study_instance_uid)  # the batch's connection dies in the middle of its transaction
            session.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))
        return record_in(session, seen, *args, **kwargs)

    monkeypatch.setattr(links, "record_in", connection_lost)
    with pytest.raises(OperationalError):
        node.worker.step()
    uids = [uid for uid, _ in studies]
    assert cut == [studies[3][0]]
    assert [upload_rows(services, uid) for uid in uids] == [[]] * 5  # nothing of the batch
    assert node.cursor() < stable_seqs(orthanc)[0]  # before the batch's first study: replayed

    # The database back (the next connection): the replay records each study once, and the cursor moves on.
    assert node.rounds() == []
    assert [len(upload_rows(services, uid)) for uid in uids] == [1] * 5
    assert transactions(services, uids) == 1
    assert node.cursor() == orthanc.changes[-1]["Seq"]


def two_studies_of_one_order(services: Services, orthanc: FakeOrthanc, tmp_path: Path, batch: int,
                             ) -> dict[str, Any]:
    """Two studies with one order's accession and MRN, arrived and stable together, recorded by a worker that
    handles ``batch`` changes at a time: what became of each study, of the order and what events say."""
    node = Node(dataclasses.replace(services, settings=dataclasses.replace(services.settings,
                                                                           IngestBatchSize=batch)))
    assert node.rounds() == []
    patient, acc = mrn(), accession()
    order_id = put_order(services, mrn=patient, accession_number=acc)
    first, second = (arrive(orthanc, tmp_path / f"b{batch}", name, patient=patient, acc=acc)
                     for name in ("first", "second"))
    for _, study_id in (first, second):
        orthanc.make_stable(study_id)
    assert node.rounds() == []
    name = {first[0]: "first", second[0]: "second"}
    ours = {"o": order_id, "u": list(name)}
    with services.engine.connect() as conn:
        studies = {name[uid]: (order == order_id, reason, [c == order_id for c in candidates])
                   for uid, order, reason, candidates in conn.execute(text(
                       "SELECT study_instance_uid, order_id, match_reason, candidates FROM ehr_imaging.study_links"
                       " WHERE study_instance_uid = ANY(:u)"), ours)}
        moves = [(f, t, name.get(uid)) for f, t, uid in conn.execute(text(
            "SELECT from_status, to_status, study_instance_uid FROM ehr_imaging.order_status_audit"
            " WHERE order_id = :o ORDER BY id"), ours)]
        events = [(kind, name.get(uid), order == order_id) for kind, uid, order in conn.execute(text(
            "SELECT type, study_instance_uid, order_id FROM ehr_imaging.event_outbox"
            " WHERE study_instance_uid = ANY(:u) OR order_id = :o ORDER BY seq"), ours)]
    return {"studies": studies, "moves": moves, "events": events}


def test_studies_competing_for_one_order_in_a_batch_end_as_they_do_one_by_one(
        event_services: Services, orthanc: FakeOrthanc, tmp_path: Path) -> None:
    # The batch reads every study's candidate orders (and every first instance's scheduled ones) in one
    # statement; an order its first study takes must be seen taken by the second, as one by one.
    services = dataclasses.replace(event_services, pacs=orthanc, holds=StudyHolds())
    alone, together = (two_studies_of_one_order(services, orthanc, tmp_path, batch) for batch in (1, 50))
    assert together == alone
    first, second = together["studies"]["first"], together["studies"]["second"]
    assert first[0] and not second[0] and second[2] == [True]  # the first linked, the second waits
    assert together["moves"] == [("scheduled", "in-progress", "first"), ("in-progress", "completed", "first")]
    # Only the first study's arrival names the order (the second's came when it was in progress already).
    assert [e for e in together["events"] if e[0] == "study.arrived"] == [("study.arrived", "first", True),
                                                                         ("study.arrived", "second", False)]


def test_a_batch_reads_its_studies_from_orthanc_in_bulk_and_records_the_same_facts(
        node: Node, services: Services, orthanc: FakeOrthanc, tmp_path: Path) -> None:
    studies = flood(orthanc, tmp_path, 6)
    orthanc.calls.clear()
    assert node.rounds() == []
    ids = [study_id for _, study_id in studies]
    per_study = [uri for method, uri in orthanc.calls if method == "GET" and any(i in uri for i in ids)]
    # Only the statistics study by study (Orthanc has no bulk form): no study, series or metadata read alone.
    assert sorted(per_study) == sorted(f"/studies/{i}/statistics" for i in ids)
    # studies, series, first instances; the new studies (none deleted before: Orthanc not asked again under the
    # locks, store/study_locks.still_held)
    assert [uri for method, uri in orthanc.calls if method == "POST"] == ["/tools/bulk-content"] * 4
    alone = dataclasses.replace(services, pacs=orthanc)
    for uid, study_id in studies:
        assert observation.observe_studies(alone, [study_id, "gone-0000"])[study_id] == \
            observation.observe_study(alone, study_id)
        assert upload_rows(services, uid) == [("success", "modality", "MODALITY", 2,
                                               sum(len(i.data) for i in orthanc.instances_of(study_id)), None)]
    assert observation.observe_studies(alone, ["gone-0000", ids[0]])["gone-0000"] is None
