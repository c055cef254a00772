"""No audit event only in memory (issue 12, item 2), with real processes: viewer reads and a C-FIND while
PostgreSQL is stopped, then Orthanc killed with SIGKILL before anything reached the database; PostgreSQL back,
Orthanc restarted: every request is in ``viewer_access_log`` and the C-FIND in ``dimse_audit``, each once."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ehr_stack.dicom import DCMTK_ENV
from ehr_stack.procs import free_port, pid_alive
from ehr_stack.stack import Stack, modality_entry
from tests.conftest import Client, running_stack
from tests.dicom_factory import make_study, send
from tests.integration.helpers import query, wait_for_ingest
from tests.integration.viewer_helpers import as_viewer, viewer_token
from tests.waiting import eventually

pytestmark = pytest.mark.integration

WORKSTATION = "SPOOLWS"


@pytest.fixture()
def own_stack() -> Iterator[Stack]:
    """A stack of its own: this test stops its database and kills its Orthanc."""
    modalities = {"modality": modality_entry("EHRMODALITY", "127.0.0.1", 11112),
                  "workstation": modality_entry(WORKSTATION, "127.0.0.1", free_port(), AllowFind=True)}
    with running_stack("audit-spool", orthanc_overrides={"DicomModalities": modalities}) as stack:
        yield stack


def spool_folder(stack: Stack) -> Path:
    return stack.storage_dir / "ehr-imaging-audit-spool" / f"{socket.gethostname()}-{stack.config.http_port}"


def unapplied_bytes(stack: Stack) -> int:
    return sum(path.stat().st_size for path in spool_folder(stack).glob("*/*.seg"))


def access(client: Client, token_id: str) -> dict[str, tuple[int, int]]:
    rows = query(client, "SELECT study_instance_uid, request_count, denied_count FROM ehr_imaging.viewer_access_log"
                 " WHERE token_id = :t", t=token_id)
    return {row[0]: (row[1], row[2]) for row in rows}


def c_find(stack: Stack, mrn: str, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True)
    run = subprocess.run(["findscu", "-S", "-aet", WORKSTATION, "-aec", stack.config.orthanc_aet, "-od", str(out_dir),
                          "-X", "-k", "QueryRetrieveLevel=STUDY", "-k", f"PatientID={mrn}", "-k", "StudyInstanceUID",
                          "127.0.0.1", str(stack.config.dicom_port)],
                         capture_output=True, text=True, timeout=120, env=DCMTK_ENV)
    assert run.returncode == 0 and "Failed" not in run.stderr, run.stderr
    return sorted(out_dir.iterdir())


def kill_orthanc(stack: Stack) -> None:
    pid = stack.orthanc_pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)  # our child (the stack started it here): reaped, so its PID is gone
    eventually(lambda: not pid_alive(pid), timeout=10, what="the killed Orthanc to be gone")


def test_viewer_reads_and_a_c_find_while_postgres_is_down_survive_sigkill(own_stack: Stack, tmp_path: Path) -> None:
    client = Client(own_stack)
    mrn = "MRN-SPOOL-" + uuid.uuid4().hex[:6].upper()
    uid, files = make_study(tmp_path / "study", patient_id=mrn, accession=None, study_date="20261201")
    send(own_stack, files)
    wait_for_ingest(client, uid, 2)
    issued = viewer_token(client, study_uids=[uid])
    token, token_id = issued["token"], issued["token_id"]
    other = "1.2.826.0.1.3680043.8.498." + str(uuid.uuid4().int)[:20]
    assert as_viewer(client, token, f"/dicom-web/studies/{uid}/metadata").status_code == 200
    eventually(lambda: access(client, token_id) == {uid: (1, 0)} or None, timeout=30,
               what="the first read counted through the live path")

    own_stack.postgres.stop()
    for _ in range(7):
        assert as_viewer(client, token, f"/dicom-web/studies/{uid}/metadata").status_code == 200
    for _ in range(2):
        assert as_viewer(client, token, f"/dicom-web/studies/{other}/metadata").status_code == 403
    answers = c_find(own_stack, mrn, tmp_path / "find")  # answered: its audit row is in the spool
    assert len(answers) == 1
    kill_orthanc(own_stack)  # nothing of the above reached PostgreSQL; only the spool holds it
    assert unapplied_bytes(own_stack) > 0

    own_stack.postgres.start()
    own_stack.start()
    eventually(lambda: unapplied_bytes(own_stack) == 0 or None, timeout=60,
               what="the spool written to PostgreSQL and its segments deleted")
    assert access(client, token_id) == {uid: (8, 0), other: (0, 2)}
    rows = query(client, "SELECT outcome, answers, query->>'PatientID' FROM ehr_imaging.dimse_audit"
                 " WHERE calling_aet = :a AND service = 'C-FIND'", a=WORKSTATION)
    assert rows == [("answered", 1, mrn)]
    assert "records from before this start" in own_stack.log_file.read_text()
