"""DICOM query/retrieve (dcmtk findscu, movescu, getscu as a modality would call them).

The stack's modality may C-STORE, C-ECHO and ask its worklist, nothing else: its C-FIND, C-MOVE and C-GET
are refused. A workstation configured with ``AllowFind``/``AllowMove`` gets answers, and each one leaves a
``dimse_audit`` row. C-GET cannot be audited (no plugin callback in Orthanc 1.10), so no configuration
that allows it starts.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest

from ehr_stack.dicom import DCMTK_ENV, findscu_worklist
from ehr_stack.procs import free_port
from ehr_stack.stack import Stack, modality_entry
from tests.conftest import Client, assert_refuses_to_start, running_stack
from tests.dicom_factory import make_study, send
from tests.integration.helpers import put_order, query, wait_for_ingest

pytestmark = pytest.mark.integration

WORKSTATION = "QUERYWS"


def dcmtk(tool: str, stack: Stack, calling_aet: str, keys: list[str], out_dir: Path, *extra: str,
          level: str = "STUDY") -> tuple[subprocess.CompletedProcess[str], list[Path]]:
    """Run findscu -S / movescu / getscu against the stack; (the run, the files it wrote)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = [tool, "-S", "-aet", calling_aet, "-aec", stack.config.orthanc_aet, "-od", str(out_dir), *extra,
           "-k", f"QueryRetrieveLevel={level}"]
    for key in keys:
        cmd += ["-k", key]
    run = subprocess.run([*cmd, "127.0.0.1", str(stack.config.dicom_port)], capture_output=True, text=True,
                         timeout=120, env=DCMTK_ENV)
    return run, sorted(path for path in out_dir.iterdir() if path.is_file())


def refused(run: subprocess.CompletedProcess[str]) -> bool:
    """dcmtk may exit 0 when Orthanc aborts the association: read what it says too."""
    return run.returncode != 0 or any(text in run.stderr for text in ("Failed", "Failure", "Association Rejected",
                                                                      "Peer aborted"))


def aborted(run: subprocess.CompletedProcess[str]) -> bool:
    """Orthanc refused the request itself (it aborts the association), rather than failing to deliver."""
    return "Peer aborted Association" in run.stderr or "Association Rejected" in run.stderr


def stored_study(client: Client, tmp_path: Path, mrn: str) -> str:
    uid, files = make_study(tmp_path / uuid.uuid4().hex, patient_id=mrn, accession="Q" + uuid.uuid4().hex[:10].upper(),
                            study_date="20261201", modality="CT")
    send(client.stack, files)
    wait_for_ingest(client, uid, 2)
    return uid


def audit_rows(client: Client, calling_aet: str, service: str) -> list[tuple[Any, ...]]:
    return query(client, "SELECT level, query, answers, truncated, target_aet, outcome, called_aet"
                 " FROM ehr_imaging.dimse_audit WHERE calling_aet = :a AND service = :s ORDER BY id",
                 a=calling_aet, s=service)


# --- the stack's own modality: C-STORE and worklist only -----------------------------------------------------


def test_the_modality_cannot_query_or_retrieve_the_archive(client: Client, tmp_path: Path) -> None:
    stack = client.stack
    mrn = "MRN-Q-" + uuid.uuid4().hex[:6].upper()
    uid = stored_study(client, tmp_path, mrn)
    modality = stack.config.modality_aet

    run, files = dcmtk("findscu", stack, modality, ["PatientName=*", "PatientID", "StudyInstanceUID"],
                       tmp_path / "find", "-X")
    assert aborted(run) and files == [], run.stderr
    # Before: the move was accepted and sent to the modality's configured port; now the request is refused.
    receiver = free_port()
    run, files = dcmtk("movescu", stack, modality, [f"StudyInstanceUID={uid}"], tmp_path / "move",
                       "-aem", modality, "--port", str(receiver))
    assert aborted(run) and "Move Request Failed" in run.stderr and files == [], run.stderr
    run, files = dcmtk("getscu", stack, modality, [f"StudyInstanceUID={uid}"], tmp_path / "get")
    assert aborted(run) and files == [], run.stderr
    # Refused by Orthanc before the plugin: nothing answered, so nothing to audit as answered.
    assert [row for row in audit_rows(client, modality, "C-FIND") if row[5] == "answered"] == []


# --- a workstation allowed to query and retrieve, audited ----------------------------------------------------


@pytest.fixture(scope="module")
def ws() -> Iterator[tuple[Client, int]]:
    receiver = free_port()
    modalities = {
        "modality": modality_entry("EHRMODALITY", "127.0.0.1", 11112),
        "workstation": modality_entry(WORKSTATION, "127.0.0.1", receiver, AllowFind=True, AllowMove=True),
    }
    # "refuse": test_no_audit_row_no_answer; the default ("spool") is test_audit_spool.py's.
    settings = {"Timezone": "America/Chicago", "DicomFindMaxAnswers": 2, "WorklistMaxAnswers": 2,
                "WorklistModalities": {"EHRMODALITY": "CT, DX"}, "DimseWhenDatabaseDown": "refuse"}
    with running_stack("dimse", orthanc_overrides={"DicomModalities": modalities}, extra_settings=settings) as started:
        yield Client(started), receiver


def test_an_allowed_c_find_is_answered_and_audited(ws: tuple[Client, int], tmp_path: Path) -> None:
    client, _ = ws
    mrn = "MRN-F-" + uuid.uuid4().hex[:6].upper()
    uid = stored_study(client, tmp_path, mrn)
    run, files = dcmtk("findscu", client.stack, WORKSTATION, [f"PatientID={mrn}", "PatientName", "StudyInstanceUID",
                                                              "ModalitiesInStudy", "NumberOfStudyRelatedInstances"],
                       tmp_path / "find", "-X")
    assert not refused(run), run.stderr
    answers = [pydicom.dcmread(path) for path in files]
    assert [(a.PatientID, a.StudyInstanceUID) for a in answers] == [(mrn, uid)]
    assert list(answers[0].ModalitiesInStudy) == ["CT"] or answers[0].ModalitiesInStudy == "CT"
    assert answers[0].NumberOfStudyRelatedInstances == 2
    level, asked, count, truncated, _, outcome, called = audit_rows(client, WORKSTATION, "C-FIND")[-1]
    assert (level, asked["PatientID"], count, truncated, outcome) == ("Study", mrn, 1, False, "answered")
    assert called == client.stack.config.orthanc_aet


def test_c_find_answers_are_capped_and_the_cap_is_audited(ws: tuple[Client, int], tmp_path: Path) -> None:
    client, _ = ws
    for _ in range(3):
        stored_study(client, tmp_path, "MRN-C-" + uuid.uuid4().hex[:6].upper())
    run, files = dcmtk("findscu", client.stack, WORKSTATION, ["PatientID=MRN-C-*", "StudyInstanceUID"],
                       tmp_path / "find", "-X")
    assert len(files) == 2, run.stderr  # DicomFindMaxAnswers
    _, _, count, truncated, _, outcome, _ = audit_rows(client, WORKSTATION, "C-FIND")[-1]
    assert (count, truncated, outcome) == (2, True, "answered")


def test_an_allowed_c_move_is_sent_and_audited(ws: tuple[Client, int], tmp_path: Path) -> None:
    client, receiver = ws
    uid = stored_study(client, tmp_path, "MRN-M-" + uuid.uuid4().hex[:6].upper())
    run, files = dcmtk("movescu", client.stack, WORKSTATION, [f"StudyInstanceUID={uid}"], tmp_path / "move",
                       "-aem", WORKSTATION, "--port", str(receiver))
    assert not refused(run), run.stderr
    assert {pydicom.dcmread(path).StudyInstanceUID for path in files} == {uid} and len(files) == 2
    level, asked, count, _, target, outcome, _ = audit_rows(client, WORKSTATION, "C-MOVE")[-1]
    assert (level, asked, count, target, outcome) == ("Study", {"StudyInstanceUID": uid}, 1, WORKSTATION, "allowed")


def test_a_c_move_to_an_unknown_destination_is_refused_and_audited(ws: tuple[Client, int], tmp_path: Path) -> None:
    client, receiver = ws
    uid = stored_study(client, tmp_path, "MRN-U-" + uuid.uuid4().hex[:6].upper())
    run, files = dcmtk("movescu", client.stack, WORKSTATION, [f"StudyInstanceUID={uid}"], tmp_path / "move",
                       "-aem", "ELSEWHERE", "--port", str(receiver))
    assert refused(run) and files == [], run.stderr
    *_, target, outcome, _ = audit_rows(client, WORKSTATION, "C-MOVE")[-1]
    assert (target, outcome) == ("ELSEWHERE", "refused")


def test_c_get_is_refused_even_to_a_workstation_that_may_find(ws: tuple[Client, int], tmp_path: Path) -> None:
    client, _ = ws
    uid = stored_study(client, tmp_path, "MRN-G-" + uuid.uuid4().hex[:6].upper())
    run, files = dcmtk("getscu", client.stack, WORKSTATION, [f"StudyInstanceUID={uid}"], tmp_path / "get")
    assert aborted(run) and files == [], run.stderr


# --- the worklist's fallback and cap (WorklistModalities, WorklistMaxAnswers) ----------------------------------


def worklist(client: Client, calling_aet: str, tmp_path: Path, *keys: str) -> list[pydicom.Dataset]:
    files = findscu_worklist(["PatientID", "ScheduledProcedureStepSequence[0].ScheduledStationAETitle", *keys],
                             host="127.0.0.1", port=client.stack.config.dicom_port, calling_aet=calling_aet,
                             called_aet=client.stack.config.orthanc_aet, out_dir=tmp_path / uuid.uuid4().hex)
    return [pydicom.dcmread(path) for path in files]


def test_orders_without_station_go_to_the_modalities_configured_for_them(ws: tuple[Client, int],
                                                                         tmp_path: Path) -> None:
    client, _ = ws
    ct, mr = ("MRN-FB-" + uuid.uuid4().hex[:6].upper() for _ in range(2))
    put_order(client, mrn=ct, modality="CT")
    put_order(client, mrn=mr, modality="MR")
    items = worklist(client, "EHRMODALITY", tmp_path, f"PatientID={ct}")
    assert [(i.PatientID, i.ScheduledProcedureStepSequence[0].ScheduledStationAETitle) for i in items] == [
        (ct, "EHRMODALITY")]
    assert worklist(client, "EHRMODALITY", tmp_path, f"PatientID={mr}") == []  # MR is not EHRMODALITY's
    assert worklist(client, WORKSTATION, tmp_path, f"PatientID={ct}") == []  # not in WorklistModalities


def test_worklist_answers_are_capped_and_audited(ws: tuple[Client, int], tmp_path: Path) -> None:
    client, _ = ws
    for _ in range(3):
        put_order(client, mrn="MRN-WC-" + uuid.uuid4().hex[:6].upper(), modality="DX", station_aet=WORKSTATION)
    items = worklist(client, WORKSTATION, tmp_path)
    assert len(items) == 2  # WorklistMaxAnswers
    level, _, count, truncated, _, outcome, called = audit_rows(client, WORKSTATION, "MWL")[-1]
    assert (level, count, truncated, outcome, called) == ("WORKLIST", 2, True, "answered", "EHRIMAGING")


def test_a_c_find_that_fails_is_audited(ws: tuple[Client, int], tmp_path: Path) -> None:
    client, _ = ws
    run, files = dcmtk("findscu", client.stack, WORKSTATION, ["PatientID"], tmp_path / "find", "-X", "-v",
                       level="FRAME")  # -v: findscu prints the failed status
    assert refused(run) and files == [], run.stderr
    assert audit_rows(client, WORKSTATION, "C-FIND")[-1][5] == "failed"


def test_no_audit_row_no_answer(ws: tuple[Client, int], tmp_path: Path) -> None:
    """With PostgreSQL down a C-FIND cannot be recorded, so Orthanc's index is not read out (runs last here)."""
    client, _ = ws
    mrn = "MRN-D-" + uuid.uuid4().hex[:6].upper()
    stored_study(client, tmp_path, mrn)
    client.stack.postgres.stop()
    try:
        run, files = dcmtk("findscu", client.stack, WORKSTATION, [f"PatientID={mrn}", "StudyInstanceUID"],
                           tmp_path / "find", "-X", "-v")  # -v: findscu prints the failed status
        assert refused(run) and files == [], run.stderr
    finally:
        client.stack.postgres.start()


# --- configurations that would let a service escape the audit do not start -----------------------------------


@pytest.mark.parametrize("entry", [
    ["ANYTHING", "127.0.0.1", 11112],  # the array form allows every service
    modality_entry("GETTER", "127.0.0.1", 11112, AllowGet=True),
    {"AET": "DEFAULTS", "Host": "127.0.0.1", "Port": 11112},  # Orthanc's defaults: everything allowed
])
def test_a_configuration_allowing_unaudited_services_does_not_start(entry: Any) -> None:
    assert_refuses_to_start("dimse-refused-config", "DicomModalities.m",
                            orthanc_overrides={"DicomModalities": {"m": entry}})
