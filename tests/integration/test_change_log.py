"""The ingest worker follows Orthanc's change log from a cursor in PostgreSQL (issue 12, item 1), on a stack of its
own: a restart resumes from the cursor with the changes it missed (no read of every study), the cursor survives
the restart, a replayed range records nothing twice, and ``make reconcile`` (the paged repair) finds a study whose
changes the worker never saw.

"Not following" is made by the lease: the test gives the cursor row to a node that does not exist, as if another
node of a cluster followed the log, and gives it back later."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ehr_stack.reconcile import reconcile
from ehr_stack.stack import Stack
from tests.conftest import Client, running_stack
from tests.dicom_factory import make_study, send
from tests.integration.helpers import accession, execute, mrn, put_order, query, stable_in_orthanc, wait_for_ingest
from tests.waiting import eventually

pytestmark = pytest.mark.integration

ELSEWHERE = "a-node-that-does-not-exist:1"


@pytest.fixture(scope="module")
def own_stack() -> Iterator[Stack]:
    """A stack of its own: these tests restart it and move its cursor."""
    with running_stack("change-log") as stack:
        yield stack


def cursor(client: Client) -> tuple[int, str | None]:
    [(seq, holder)] = query(client, "SELECT seq, holder FROM ehr_imaging.ingest_cursors")
    return int(seq), holder


def hold_elsewhere(stack: Stack, client: Client, **seq: int) -> None:
    """Give the lease to a node that does not exist (optionally moving the cursor); until this node knows it."""
    moved = ", seq = :seq" if seq else ""
    marker = len(stack.log_file.read_text())
    execute(stack, f"UPDATE ehr_imaging.ingest_cursors SET holder = :h, lease_until = now() + interval '1 hour'{moved}",
            h=ELSEWHERE, **seq)
    eventually(lambda: f"node {ELSEWHERE} follows Orthanc's change log now" in stack.log_file.read_text()[marker:],
               timeout=10, what="the worker to see another node hold the lease")


def give_back(stack: Stack) -> None:
    execute(stack, "UPDATE ehr_imaging.ingest_cursors SET holder = NULL, lease_until = NULL")


def orthanc_last(client: Client) -> int:
    return int(client.get("/changes?last", auth=client.stack.admin_auth).json()["Last"])


def stored(stack: Stack, tmp_path: Path, **kwargs: Any) -> str:
    uid, files = make_study(tmp_path, patient_id=kwargs.pop("patient", mrn()), study_date="20261120", instances=2,
                            **kwargs)
    send(stack, files)
    return uid


def recorded(client: Client, uid: str) -> int:
    return len(query(client, "SELECT 1 FROM ehr_imaging.study_links WHERE study_instance_uid = :u", u=uid))


def test_a_restart_resumes_from_the_cursor_with_the_changes_it_missed(own_stack: Stack, tmp_path: Path) -> None:
    client = Client(own_stack)
    patient, acc = mrn(), accession()
    order_id = put_order(client, mrn=patient, accession_number=acc)
    first = stored(own_stack, tmp_path / "first", patient=patient, accession=acc)
    wait_for_ingest(client, first, 2)
    hold_elsewhere(own_stack, client)  # this node stops following
    missed = stored(own_stack, tmp_path / "missed", accession=None)
    stable_in_orthanc(client, missed)
    before_stop = cursor(client)[0]
    assert recorded(client, missed) == 0  # its changes wait in Orthanc's log

    own_stack.stop()
    own_stack.start()
    log_before = len(own_stack.log_file.read_text())
    assert cursor(client) == (before_stop, ELSEWHERE)  # the cursor survived the restart
    give_back(own_stack)
    wait_for_ingest(client, missed, 2)
    since_restart = own_stack.log_file.read_text()[log_before:]
    behind = orthanc_last(client) - before_stop
    assert behind > 0
    assert f"resuming Orthanc's change log after change {before_stop} (" in since_restart, since_restart[-2000:]
    assert "repair read" not in since_restart and "no cursor for" not in since_restart  # no read of every study
    assert query(client, "SELECT order_id FROM ehr_imaging.study_links WHERE study_instance_uid = :u",
                 u=first) == [(order_id,)]
    eventually(lambda: cursor(client)[0] >= orthanc_last(client) or None, timeout=15,
               what="the cursor to reach Orthanc's last change")


def test_replaying_a_range_of_changes_records_nothing_twice(own_stack: Stack, tmp_path: Path) -> None:
    client = Client(own_stack)
    patient, acc = mrn(), accession()
    put_order(client, mrn=patient, accession_number=acc)
    uid = stored(own_stack, tmp_path, patient=patient, accession=acc)
    wait_for_ingest(client, uid, 2)
    audit = {
        "uploads": "SELECT count(*) FROM ehr_imaging.dicom_upload_logs",
        "links": "SELECT count(*) FROM ehr_imaging.link_audit",
        "statuses": "SELECT count(*) FROM ehr_imaging.order_status_audit",
        "deletions": "SELECT count(*) FROM ehr_imaging.dicom_deletion_logs",
    }
    counts = {name: query(client, sql)[0][0] for name, sql in audit.items()}
    assert counts["uploads"] >= 1 and counts["links"] >= 1
    reached = eventually(lambda: cursor(client)[0] if cursor(client)[0] >= orthanc_last(client) else None,
                         timeout=15, what="the cursor to reach Orthanc's last change")

    hold_elsewhere(own_stack, client, seq=0)  # as if every change were handled again (a crash before advancing)
    give_back(own_stack)
    eventually(lambda: cursor(client)[0] >= reached or None, timeout=30, what="the whole log to be replayed")
    assert {name: query(client, sql)[0][0] for name, sql in audit.items()} == counts


def test_make_reconcile_finds_a_study_stored_while_the_plugin_was_not_following(
        own_stack: Stack, tmp_path: Path) -> None:
    client = Client(own_stack)
    hold_elsewhere(own_stack, client)
    lost = stored(own_stack, tmp_path, accession=None)
    stable_in_orthanc(client, lost)
    # Its changes are passed over, as if lost (the cursor moved past them), then the lease comes back.
    execute(own_stack, "UPDATE ehr_imaging.ingest_cursors SET seq = :s, holder = NULL, lease_until = NULL",
            s=orthanc_last(client))
    marker = len(own_stack.log_file.read_text())
    eventually(lambda: "resuming Orthanc's change log" in own_stack.log_file.read_text()[marker:], timeout=10,
               what="the worker to follow again")
    assert recorded(client, lost) == 0

    found = reconcile(own_stack)  # what make reconcile runs
    held = len(client.get("/studies", auth=own_stack.admin_auth).json())
    assert found == {"studies_in_orthanc": held, "pages": 1, "queued_for_ingest": 1, "queued_as_deleted": 0}
    wait_for_ingest(client, lost, 2)
    assert "repair read" in own_stack.log_file.read_text()[marker:]
    assert client.request("POST", "/api/v1/dicom/reconcile", "doctor").status_code == 403


def test_the_change_log_is_keyed_by_orthancs_index(own_stack: Stack) -> None:
    """One cursor row, named by the id the plugin keeps in Orthanc's own index, held by this node."""
    client = Client(own_stack)
    rows = query(client, "SELECT log_id, holder FROM ehr_imaging.ingest_cursors")
    assert len(rows) == 1 and rows[0][0].startswith("orthanc-index-")
    assert rows[0][1] == f"{socket.gethostname()}:{own_stack.config.http_port}"
