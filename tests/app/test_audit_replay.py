"""The audit spool into a real PostgreSQL: in order, exactly once (a replay after a crash between the commit
and the segment's deletion counts nothing twice), a failed flush rebuilt from the spool, DIMSE rows spooled
while the database is unreachable."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from ehr_imaging.app.access_log import AccessLog
from ehr_imaging.core.audit_record import ACCESS, Record
from ehr_imaging.core.dimse import DimseEvent
from ehr_imaging.services import Services
from ehr_imaging.store import dimse_audit
from ehr_imaging.store.audit_spool import AuditSpool, Snapshot
from ehr_imaging.store.db import Engine, create_db_engine
from ehr_imaging.store.spool_replay import access_counts, apply_access, apply_events
from ehr_imaging.store.viewer_tokens import AccessCount
from ehr_stack.procs import free_port


def counts(engine: Engine, token_id: str) -> dict[str, tuple[int, int, int]]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT study_instance_uid, request_count, denied_count, bytes FROM viewer_access_log"
                                 " WHERE token_id = :t"), {"t": token_id})
        return {row[0]: (row[1], row[2], row[3]) for row in rows}


def new_spool(folder: Path, identity: str, stream: str = "access") -> AuditSpool:
    return AuditSpool(folder, stream, identity, log=lambda line: None)


def test_a_replay_after_the_commit_counts_nothing_twice(base_services: Services, tmp_path: Path) -> None:
    engine, identity, token = base_services.engine, uuid.uuid4().hex, uuid.uuid4().hex
    spool = new_spool(tmp_path / "access", identity)
    for size in (10, 20, 30):
        spool.append(ACCESS, [token, "1.2.3", "dr", 100.0, True, size])
    spool.append(ACCESS, [token, "1.2.3", "dr", 101.0, False, 0])
    spool.close()
    shutil.copytree(tmp_path / "access", tmp_path / "copy", ignore=shutil.ignore_patterns(".lock"))
    spool = new_spool(tmp_path / "access", identity)
    snapshot = spool.snapshot()
    # After a restart the live aggregate holds nothing (it starts after the spool's last record): read back.
    assert apply_access(engine, spool, [], snapshot.last_seq + 1, snapshot) == 4
    assert counts(engine, token) == {"1.2.3": (3, 1, 60)}
    assert apply_access(engine, spool, [], snapshot.last_seq + 1, snapshot) == 0  # applied twice: counted once
    assert list((tmp_path / "access").glob("*.seg")) and all(
        p.stat().st_size == 0 for p in (tmp_path / "access").glob("*.seg"))  # only the next number is left
    # Killed after the commit, before the segment was deleted: the same records again, none counted.
    crashed = new_spool(tmp_path / "copy", identity)
    assert crashed.depth()[0] == 4
    assert apply_access(engine, crashed, [], crashed.last_seq() + 1, crashed.snapshot()) == 0
    assert counts(engine, token) == {"1.2.3": (3, 1, 60)}
    assert crashed.depth() == (0, 0)


def test_the_live_log_is_counted_once_through_a_failed_flush_and_a_restart(base_services: Services,
                                                                           tmp_path: Path) -> None:
    engine, identity, token = base_services.engine, uuid.uuid4().hex, uuid.uuid4().hex
    down = [False]

    def log_for(spool: AuditSpool) -> AccessLog:
        def apply(batch: list[AccessCount], first: int, snapshot: Snapshot) -> int:
            if down[0]:
                raise ConnectionError("database down")
            return apply_access(engine, spool, batch, first, snapshot)
        return AccessLog(lambda c: None, spool=spool, apply_spooled=apply)

    spool = new_spool(tmp_path / "access", identity)
    log = log_for(spool)
    for _ in range(2):
        log.record(token, "dr", "A", allowed=True, size=1)
    assert log.flush() == 2
    down[0] = True
    for _ in range(3):
        log.record(token, "dr", "A", allowed=True, size=1)
    log.record(token, "dr", "B", allowed=False)
    with pytest.raises(ConnectionError):
        log.flush()
    down[0] = False
    log.record(token, "dr", "B", allowed=True, size=7)
    assert log.flush() == 5  # the failed batch read back from the spool, with the new request
    assert counts(engine, token) == {"A": (5, 0, 5), "B": (1, 1, 7)}
    log.record(token, "dr", "A", allowed=True, size=1)
    spool.close()  # Orthanc killed: the last request only in the spool
    spool = new_spool(tmp_path / "access", identity)
    log = log_for(spool)
    log.record(token, "dr", "A", allowed=True, size=1)
    assert log.flush() == 2
    assert counts(engine, token) == {"A": (7, 0, 7), "B": (1, 1, 7)}
    assert spool.depth() == (0, 0)


def test_spool_records_aggregate_in_order_of_arrival() -> None:
    spool_records = [("t", "A", "dr", 5.0, True, 1), ("t", "A", "dr", 3.0, True, 1)]
    aggregate = access_counts(Record(n, ACCESS, list(r)) for n, r in enumerate(spool_records, 1))
    assert [(c.first_at, c.last_at, c.requests) for c in aggregate] == [(3.0, 5.0, 2)]


def dimse_rows(engine: Engine, calling: str) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(text(
            "SELECT service, outcome, answers, query, node FROM dimse_audit WHERE calling_aet = :a ORDER BY id"),
            {"a": calling})]


def test_dimse_rows_spooled_while_the_database_is_unreachable_arrive_once_in_order(base_services: Services,
                                                                                  tmp_path: Path) -> None:
    engine, calling = base_services.engine, "WS" + uuid.uuid4().hex[:10].upper()
    unreachable = create_db_engine(f"postgresql://nobody:x@127.0.0.1:{free_port()}/none", pool_size=1,
                                   connect_timeout=1, schema="ehr_imaging")
    spool = new_spool(tmp_path / "events", uuid.uuid4().hex, "events")
    with pytest.raises(OperationalError):  # no spool: refused, as before
        dimse_audit.record(unreachable, DimseEvent("C-FIND", calling, "ORTHANC", "answered"), "node-1")
    for answers, service in ((1, "C-FIND"), (2, "MWL"), (3, "C-MOVE")):
        dimse_audit.record(unreachable, DimseEvent(service, calling, "ORTHANC", "answered", level="Study",
                                                   query={"PatientID": "P1"}, answers=answers), "node-1", spool)
    assert spool.depth()[0] == 3 and dimse_rows(engine, calling) == []
    # PostgreSQL back before the replay: a new row queues behind the spooled ones (the table keeps the order).
    dimse_audit.record(engine, DimseEvent("C-FIND", calling, "ORTHANC", "answered", level="Study",
                                          query={"PatientID": "P1"}, answers=9), "node-1", spool)
    assert spool.depth()[0] == 4 and dimse_rows(engine, calling) == []
    assert apply_events(engine, spool) == 4
    assert apply_events(engine, spool) == 0
    expected = [(service, "answered", answers, {"PatientID": "P1"}, "node-1")
                for answers, service in ((1, "C-FIND"), (2, "MWL"), (3, "C-MOVE"), (9, "C-FIND"))]
    assert dimse_rows(engine, calling) == expected
    dimse_audit.record(engine, DimseEvent("C-FIND", calling, "ORTHANC", "answered", answers=4), "node-1", spool)
    assert len(dimse_rows(engine, calling)) == 5 and spool.depth() == (0, 0)  # caught up: written, not spooled
    unreachable.dispose()
