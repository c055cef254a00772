"""The event outbox on PostgreSQL alone (store/outbox.py, app/event_delivery.py) with an in-memory Orthanc: each
event committed with its change or not at all, one arrival per study, in-order claims, leases, backoff."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Connection, text

from ehr_imaging.app import ingest
from ehr_imaging.app.event_delivery import DeliveryFailed, EndpointWorker
from ehr_imaging.core import events
from ehr_imaging.core.holds import StudyHolds
from ehr_imaging.services import Services
from ehr_imaging.store import outbox, studies
from tests.app.conftest import SECRET, URL
from tests.app.records import accession, mrn, put_order
from tests.dicom_factory import make_study
from tests.fakes.orthanc import FakeOrthanc


@pytest.fixture()
def svc(event_services: Services, orthanc: FakeOrthanc) -> Services:
    return dataclasses.replace(event_services, pacs=orthanc, holds=StudyHolds())


def rows(services: Services, study_uid: str) -> list[tuple[str, str, int]]:
    with services.engine.connect() as conn:
        return [(str(t), str(s), int(a)) for t, s, a in conn.execute(text(
            "SELECT e.type, d.status, d.attempts FROM ehr_imaging.event_outbox e JOIN ehr_imaging.event_deliveries d"
            " ON d.event_seq = e.seq WHERE e.study_instance_uid = :u ORDER BY e.seq"), {"u": study_uid})]


def recorded_study(svc: Services, orthanc: FakeOrthanc, tmp_path: Path, **order: str) -> str:
    uid, files = make_study(tmp_path, study_date="20261120", instances=2, **order)
    [study_id] = {str(orthanc.receive(p.read_bytes(), origin="DicomProtocol", remote_aet="CT1")["ParentStudy"])
                  for p in files}
    ingest.study_arrived(svc, study_id)
    orthanc.make_stable(study_id)
    assert ingest.process_stable_study(svc, study_id) is not None
    return uid


def test_a_linked_study_writes_its_events_once_and_in_the_order_of_its_changes(
        svc: Services, orthanc: FakeOrthanc, tmp_path: Path) -> None:
    patient, acc = mrn(), accession()
    put_order(svc, mrn=patient, accession_number=acc, scheduled_start="2026-11-20T09:00:00Z")
    uid = recorded_study(svc, orthanc, tmp_path, patient_id=patient, accession=acc)
    # One study.arrived: the first record finds the NEW_STUDY's and writes no late one.
    assert [t for t, _, _ in rows(svc, uid)] == ["study.arrived", "order.status_changed", "study.linked",
                                                 "order.status_changed"]
    assert {s for _, s, _ in rows(svc, uid)} == {"pending"}


def test_an_event_is_rolled_back_with_its_change(svc: Services, orthanc: FakeOrthanc, tmp_path: Path) -> None:
    uid = recorded_study(svc, orthanc, tmp_path, patient_id=mrn(), accession=accession())
    facts = studies.facts_of(svc.engine, uid)
    assert facts is not None

    def refused() -> int:
        raise RuntimeError("Orthanc refused the deletion")

    with pytest.raises(RuntimeError):
        studies.record_deletion(svc.engine, facts, actor="admin", reason="wrong patient", delete_in_orthanc=refused)
    assert [t for t, _, _ in rows(svc, uid)] == ["study.arrived", "study.unmatched"]  # no study.deleted
    studies.record_deletion(svc.engine, facts, actor="admin", reason="wrong patient", delete_in_orthanc=lambda: 0)
    assert [t for t, _, _ in rows(svc, uid)] == ["study.arrived", "study.unmatched", "study.deleted"]


def test_delivery_is_in_order_per_study_leased_and_retried_with_backoff(
        svc: Services, orthanc: FakeOrthanc, tmp_path: Path) -> None:
    uid = recorded_study(svc, orthanc, tmp_path, patient_id=mrn(), accession=accession())

    def of_study(claimed: list[outbox.Claimed]) -> list[str]:
        return [c.event.type for c in claimed if c.event.study_instance_uid == uid]

    # One node claims the study's first event; another node, at once, gets nothing of the study: the first is
    # leased to the first node, the second waits behind it.
    assert of_study(outbox.claim(svc.engine, [URL], limit=100, lease=timedelta(seconds=60))) == ["study.arrived"]
    assert of_study(outbox.claim(svc.engine, [URL], limit=100, lease=timedelta(seconds=60))) == []

    def due_now() -> None:  # the lease, or a backoff, has run out
        with svc.engine.begin() as conn:
            conn.execute(text("UPDATE ehr_imaging.event_deliveries SET next_attempt_at = now() WHERE event_seq IN"
                              " (SELECT seq FROM ehr_imaging.event_outbox WHERE study_instance_uid = :u)"), {"u": uid})

    sent: list[tuple[bytes, dict[str, str]]] = []
    answer = {"fail": True}

    def send(url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> None:
        if uid.encode() in body:
            sent.append((body, dict(headers)))
        if answer["fail"]:
            raise DeliveryFailed("HTTP 500")

    worker = EndpointWorker(svc, svc.event_endpoints[0], send=send, log_warning=lambda _: None,
                            log_error=lambda _: None)
    due_now()
    while worker.run_once():  # the failed attempt waits out its backoff (EventRetryBaseSeconds 60): the loop ends
        pass
    assert rows(svc, uid) == [("study.arrived", "pending", 2), ("study.unmatched", "pending", 0)]
    with svc.engine.connect() as conn:
        waits = conn.execute(text(
            "SELECT d.next_attempt_at - now(), d.last_error FROM ehr_imaging.event_deliveries d JOIN"
            " ehr_imaging.event_outbox e ON e.seq = d.event_seq WHERE e.study_instance_uid = :u"
            " AND e.type = 'study.arrived'"), {"u": uid}).one()
    assert timedelta(seconds=100) <= waits[0] <= timedelta(seconds=121) and waits[1] == "HTTP 500"  # 2nd: 2 x 60 s
    due_now()
    answer["fail"] = False
    while worker.run_once():
        pass
    assert rows(svc, uid) == [("study.arrived", "delivered", 3), ("study.unmatched", "delivered", 1)]
    assert [b'"study.arrived"' in body for body, _ in sent] == [True, True, False]
    assert sent[0][0] == sent[1][0]  # a retry sends the same bytes (signed afresh)
    for body, headers in sent:
        assert events.verify(SECRET, headers[events.SIGNATURE_HEADER], body, now=headers_time(headers))
        assert headers["X-EhrImaging-Event-Id"] in body.decode()


def headers_time(headers: Mapping[str, str]) -> int:
    return int(headers[events.SIGNATURE_HEADER].split(",")[0].removeprefix("t="))


def test_delivered_events_past_the_retention_leave_the_outbox_and_undelivered_ones_stay(
        svc: Services, orthanc: FakeOrthanc, tmp_path: Path) -> None:
    """EventRetentionDays: an event every endpoint received is pruned once old enough; a pending or failed one is
    kept whatever its age; the gauges count deliveries by status."""
    delivered_uid = recorded_study(svc, orthanc, tmp_path / "a", patient_id=mrn(), accession=accession())
    pending_uid = recorded_study(svc, orthanc, tmp_path / "b", patient_id=mrn(), accession=accession())
    with svc.engine.begin() as conn:
        mark_delivered(conn, delivered_uid)
        conn.execute(text("UPDATE ehr_imaging.event_outbox SET occurred_at = now() - interval '31 days'"
                          " WHERE study_instance_uid IN (:a, :b)"), {"a": delivered_uid, "b": pending_uid})
    counts = outbox.delivery_counts(svc.engine)
    assert set(counts) == set(events.STATUSES) and counts["pending"] >= len(rows(svc, pending_uid)) > 0
    old_events = len(rows(svc, delivered_uid))  # one endpoint: one delivery per event
    assert old_events > 0 and outbox.prune_delivered(svc.engine, timedelta(days=30), batch=2) == old_events
    assert rows(svc, delivered_uid) == []
    assert {s for _, s, _ in rows(svc, pending_uid)} == {"pending"}  # old, but not delivered: kept
    fresh_uid = recorded_study(svc, orthanc, tmp_path / "c", patient_id=mrn(), accession=accession())
    with svc.engine.begin() as conn:
        mark_delivered(conn, fresh_uid)
    outbox.prune_delivered(svc.engine, timedelta(days=30))
    assert {s for _, s, _ in rows(svc, fresh_uid)} == {"delivered"}  # delivered, but within the retention: kept


def mark_delivered(conn: Connection, study_uid: str) -> None:
    conn.execute(text("UPDATE ehr_imaging.event_deliveries d SET status = 'delivered' FROM ehr_imaging.event_outbox e"
                      " WHERE d.event_seq = e.seq AND e.study_instance_uid = :u"), {"u": study_uid})
