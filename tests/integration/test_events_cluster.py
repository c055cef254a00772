"""Two Orthanc nodes with the plugin deliver one outbox: each event reaches the EHR exactly once (no receiver
failure, so no retry), in order per study, whichever node recorded the change."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from ehr_imaging.core.events import SIGNATURE_HEADER, verify
from ehr_stack.procs import free_port
from ehr_stack.stack import Stack
from tests.conftest import Client, running_second_node, running_stack
from tests.dicom_factory import make_study, send
from tests.integration.helpers import accession, mrn, put_order, query, wait_for_ingest
from tests.waiting import eventually

pytestmark = pytest.mark.integration

SECRET = "receiver-secret-for-the-cluster-events-test"


class Receiver:
    """Accepts every event; keeps (event_id, study, signature valid) in the order they came."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, str | None, bool]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                document = json.loads(body)
                signed = verify(SECRET, self.headers.get(SIGNATURE_HEADER, ""), body, int(document_time(self)))
                with receiver.lock:
                    receiver.posts.append((document["event_id"], document["study_instance_uid"], signed))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/events"


def document_time(handler: BaseHTTPRequestHandler) -> int:
    return int(handler.headers.get(SIGNATURE_HEADER, "t=0").split(",")[0].removeprefix("t="))


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    yield found
    found.server.shutdown()
    found.server.server_close()


@pytest.fixture(scope="module")
def two_nodes(receiver: Receiver) -> Iterator[tuple[Stack, Stack]]:
    settings = {"Timezone": "America/Chicago", "EventRetryBaseSeconds": 1,
                "EventEndpoints": [{"url": receiver.url, "secret": SECRET}]}
    with running_stack("events-node-a", index="postgresql", extra_settings=settings) as first, \
            running_second_node(first, "events-node-b") as second:
        yield first, second


def test_two_nodes_deliver_each_event_once_in_order(two_nodes: tuple[Stack, Stack], receiver: Receiver,
                                                     tmp_path: Path) -> None:
    first, second = two_nodes
    client = Client(first)
    uids = []
    for index in range(6):
        patient, acc = mrn(), accession()
        if index % 2 == 0:  # half linked to an order (four events each), half unmatched (two)
            put_order(client, mrn=patient, accession_number=acc)
        uid, files = make_study(tmp_path / str(index), patient_id=patient, accession=acc, study_date="20261120")
        send((first, second)[index % 2], files)
        uids.append(uid)
    for uid in uids:
        wait_for_ingest(client, uid, 2)

    def written() -> list[tuple[Any, ...]]:
        return query(client, "SELECT e.event_id::text, e.study_instance_uid, d.status FROM ehr_imaging.event_outbox e"
                             " JOIN ehr_imaging.event_deliveries d ON d.event_seq = e.seq ORDER BY e.seq")

    eventually(lambda: len(written()) == 3 * 4 + 3 * 2 and all(row[2] == "delivered" for row in written()),
               timeout=60, what="every event of the six studies delivered")
    events = written()
    with receiver.lock:
        posts = list(receiver.posts)
    assert sorted(p[0] for p in posts) == sorted(row[0] for row in events)  # each exactly once, none lost
    assert all(p[2] for p in posts)
    for uid in uids:
        assert [p[0] for p in posts if p[1] == uid] == [row[0] for row in events if row[1] == uid]
