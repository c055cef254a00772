"""Events to the EHR against the real stack: a webhook receiver on loopback in this process that refuses
connections (its port closed), then answers 500, then accepts; PostgreSQL restarted in the middle; a slow
receiver while studies arrive. Every event arrives, signed, in order per study, none lost, one per event_id."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from ehr_imaging.core.events import SIGNATURE_HEADER, verify
from ehr_stack.procs import free_port
from ehr_stack.stack import Stack
from tests.conftest import Client, running_stack
from tests.dicom_factory import make_study, send
from tests.integration.helpers import accession, mrn, order, put_order, query, wait_for_ingest
from tests.openapi_validation import fits
from tests.waiting import eventually

pytestmark = pytest.mark.integration

P = "/api/v1/dicom"
SECRET = "receiver-secret-for-the-events-test"
TIMEOUT = 2  # EventTimeoutSeconds
SLOW = 3.0  # seconds the slow receiver sleeps: longer than the timeout, every attempt times out


@dataclass
class Received:
    event_id: str
    type: str
    study_uid: str | None
    signed: bool
    status: int


@dataclass
class Receiver:
    """An EHR's webhook endpoint: ``mode`` error (500), accept (200) or slow (sleeps, then 200)."""

    port: int
    mode: str = "error"
    posts: list[Received] = field(default_factory=list)
    sleeping: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                mode = receiver.mode
                if mode == "slow":
                    with receiver.lock:
                        receiver.sleeping += 1
                    time.sleep(SLOW)  # the scenario: a receiver slower than EventTimeoutSeconds
                status = 500 if mode == "error" else 200
                document = json.loads(body)
                signed = verify(SECRET, self.headers.get(SIGNATURE_HEADER, ""), body, int(time.time()))
                with receiver.lock:
                    receiver.posts.append(Received(document["event_id"], document["type"],
                                                   document["study_instance_uid"], signed, status))
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:  # the plugin stopped waiting (slow mode): its attempt timed out
                    pass

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def delivered(self) -> list[Received]:
        with self.lock:
            return [p for p in self.posts if p.status == 200]


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    found = Receiver(free_port())  # not listening yet: connections are refused
    yield found
    found.stop()


@pytest.fixture(scope="module")
def events_stack(receiver: Receiver) -> Iterator[Stack]:
    endpoint = {"url": f"http://127.0.0.1:{receiver.port}/ehr/events?source=imaging", "secret": SECRET}
    settings = {"Timezone": "America/Chicago", "EventEndpoints": [endpoint], "EventRetryBaseSeconds": 1,
                "EventRetryMaxSeconds": 2, "EventTimeoutSeconds": TIMEOUT}
    with running_stack("events", extra_settings=settings) as stack:
        yield stack


def outbox(client: Client) -> list[tuple[Any, ...]]:
    """(event_id, type, study, delivery status, attempts, last error) in the outbox's order."""
    return query(client, "SELECT e.event_id::text, e.type, e.study_instance_uid, d.status, d.attempts, d.last_error"
                         " FROM ehr_imaging.event_outbox e JOIN ehr_imaging.event_deliveries d ON d.event_seq = e.seq"
                         " ORDER BY e.seq")


def types_of(client: Client, study_uid: str) -> list[str]:
    return [row[1] for row in outbox(client) if row[2] == study_uid]


def test_every_event_arrives_signed_in_order_once_through_refusals_errors_and_a_database_restart(
        events_stack: Stack, receiver: Receiver, tmp_path: Path) -> None:
    client = Client(events_stack)
    patient, acc = mrn(), accession()
    order_id = put_order(client, mrn=patient, accession_number=acc)
    linked_uid, files = make_study(tmp_path / "a", patient_id=patient, accession=acc, study_date="20261120")
    send(events_stack, files)
    wait_for_ingest(client, linked_uid, 2)
    # A later batch of the same study, then a person unlinks it: study.updated, study.unmatched.
    _, more = make_study(tmp_path / "b", patient_id=patient, accession=acc, study_date="20261120", instances=1,
                         study_uid=linked_uid)
    send(events_stack, more)
    wait_for_ingest(client, linked_uid, 3)
    unlinked = client.request("POST", f"{P}/studies/{linked_uid}/unlink", "radiologist", json={"reason": "wrong order"})
    assert unlinked.status_code == 200, unlinked.text
    # A study no order matches, then deleted by an admin.
    orphan_uid, orphan = make_study(tmp_path / "c", patient_id=mrn(), accession=accession(), study_date="20261120")
    send(events_stack, orphan)
    wait_for_ingest(client, orphan_uid, 2)
    deleted = client.request("DELETE", f"{P}/studies/{orphan_uid}", "admin", headers={"X-Reason": "test study"})
    assert deleted.status_code == 200, deleted.text

    assert types_of(client, linked_uid) == [
        "study.arrived", "order.status_changed", "study.linked", "order.status_changed", "study.updated",
        "study.unmatched", "order.status_changed"]
    assert types_of(client, orphan_uid) == ["study.arrived", "study.unmatched", "study.deleted"]
    assert order(client, order_id)["status"] == "scheduled"  # in progress, completed, freed again
    # The port is closed: each study's first event is tried (and refused) again and again; the later ones wait.
    eventually(lambda: all(row[4] >= 2 for row in outbox(client) if row[1] == "study.arrived"), timeout=30,
               what="refused attempts retried")
    refused = [row for row in outbox(client) if row[4]]
    assert {row[1] for row in refused} == {"study.arrived"} and all("not reached" in row[5] for row in refused)
    assert all(row[3] == "pending" for row in outbox(client))

    # PostgreSQL restarts in the middle; a study arrives meanwhile (its ingest waits for the database).
    events_stack.postgres.stop()
    late_patient, late_acc = mrn(), accession()
    late_uid, late = make_study(tmp_path / "d", patient_id=late_patient, accession=late_acc, study_date="20261120")
    send(events_stack, late)
    events_stack.postgres.start()
    wait_for_ingest(client, late_uid, 2)
    assert types_of(client, late_uid) == ["study.arrived", "study.unmatched"]  # the arrival written at its record

    receiver.start()  # now listening, answering 500
    eventually(lambda: any(p.status == 500 for p in receiver.posts), timeout=30, what="an attempt answered 500")
    eventually(lambda: any(row[5] == "HTTP 500" for row in outbox(client)), timeout=30, what="the 500 recorded")
    assert receiver.delivered() == []
    receiver.mode = "accept"
    sent = outbox(client)
    eventually(lambda: all(row[3] == "delivered" for row in outbox(client)), timeout=90,
               what="every event delivered")

    delivered = receiver.delivered()
    assert all(p.signed for p in receiver.posts)
    first_seen: dict[str, Received] = {}
    for post in delivered:
        first_seen.setdefault(post.event_id, post)
    assert sorted(first_seen) == sorted(row[0] for row in sent)  # deduped, exactly the events written
    for study in (linked_uid, orphan_uid, late_uid):
        in_outbox = [row[0] for row in sent if row[2] == study]
        assert [p.event_id for p in first_seen.values() if p.study_uid == study] == in_outbox  # in order


def test_a_study_arrived_reaches_the_ehr_within_seconds(events_stack: Stack, receiver: Receiver,
                                                         tmp_path: Path) -> None:
    receiver.mode = "accept"
    uid, files = make_study(tmp_path, patient_id=mrn(), accession=accession(), study_date="20261120", instances=1)
    send(events_stack, files)
    # NEW_STUDY -> the ingest worker -> the outbox -> the next delivery round (every second when idle).
    eventually(lambda: any(p.study_uid == uid and p.type == "study.arrived" for p in receiver.delivered()),
               timeout=5, what="study.arrived delivered within a few seconds of the C-STORE", interval=0.1)


def test_admins_list_events_by_status_and_redeliver_one(events_stack: Stack, receiver: Receiver) -> None:
    client = Client(events_stack)
    receiver.mode = "accept"
    doc = client.get(f"{P}/openapi.json", "admin").json()
    listed = client.get(f"{P}/events", "admin", params={"status": "delivered", "limit": 5})
    page = fits(doc, "GET", f"{P}/events", listed)  # 200, as its contract (api/event_schemas.py) says
    assert page["total"] >= 1 and len(page["items"]) <= 5
    newest = page["items"][0]
    assert [d["endpoint"] for d in newest["deliveries"]] == [f"http://127.0.0.1:{receiver.port}/ehr/events"]
    assert SECRET not in listed.text and "source=imaging" not in listed.text
    assert client.get(f"{P}/events", "admin", params={"status": "lost"}).status_code == 422
    assert client.get(f"{P}/events", "doctor").status_code == 403
    assert client.get(f"{P}/events", "ehr-service").status_code == 403

    before = sum(1 for p in receiver.delivered() if p.event_id == newest["event_id"])
    again = fits(doc, "POST", f"{P}/events/{{event_id}}/redeliver",
                 client.request("POST", f"{P}/events/{newest['event_id']}/redeliver", "admin"))
    assert again["event_id"] == newest["event_id"]
    assert again["deliveries"][0]["status"] == "pending" and again["deliveries"][0]["attempts"] == 0
    eventually(lambda: sum(1 for p in receiver.delivered() if p.event_id == newest["event_id"]) == before + 1,
               timeout=30, what="the event delivered once more")
    missing = client.request("POST", f"{P}/events/00000000-0000-4000-8000-000000000000/redeliver", "admin")
    assert missing.status_code == 404


def test_a_slow_receiver_slows_neither_ingest_nor_the_api(events_stack: Stack, receiver: Receiver,
                                                           tmp_path: Path) -> None:
    client = Client(events_stack)
    receiver.mode = "slow"
    patient, acc = mrn(), accession()
    order_id = put_order(client, mrn=patient, accession_number=acc)
    first_uid, first = make_study(tmp_path / "a", patient_id=patient, accession=acc, study_date="20261120")
    send(events_stack, first)
    eventually(lambda: receiver.sleeping >= 1, timeout=30, what="the receiver holding a delivery")
    # Meanwhile every attempt waits out the timeout; a modality's C-STORE and the API answer as ever.
    other_patient, other_acc = mrn(), accession()
    other_order = put_order(client, mrn=other_patient, accession_number=other_acc)
    other_uid, other = make_study(tmp_path / "b", patient_id=other_patient, accession=other_acc,
                                  study_date="20261120", instances=3)
    started = time.monotonic()
    send(events_stack, other)
    stored = time.monotonic() - started
    wait_for_ingest(client, other_uid, 3)
    assert order(client, other_order)["study_instance_uid"] == other_uid
    latencies = []
    for _ in range(5):
        started = time.monotonic()
        assert client.get(f"{P}/orders/{order_id}", "ehr-service").status_code == 200
        latencies.append(time.monotonic() - started)
    assert stored < SLOW and max(latencies) < 1.0, (stored, latencies)
    pending = [row for row in outbox(client) if row[2] in (first_uid, other_uid) and row[3] == "pending"]
    assert pending  # the slow receiver still holds them: the work above did not wait for it
    receiver.mode = "accept"
    eventually(lambda: all(row[3] == "delivered" for row in outbox(client)), timeout=120,
               what="the slow receiver's events delivered once it answers in time")
