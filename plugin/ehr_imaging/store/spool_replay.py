"""The audit spool into PostgreSQL, idempotently and in order: rows and the spool's high-water mark together.

Each stream of a node's spool (store/audit_spool.py) has one row in ``audit_spool_marks``: every record up
to ``applied_seq`` is in the audit tables. Applying locks that row, adds only the records after it, moves it,
and commits all at once: a replay after a crash (or a commit whose answer was lost) counts nothing twice.
Segments are deleted only after the commit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, insert, text

from ..core.audit_record import ACCESS, DIMSE, Record
from .access_models import DimseAudit
from .audit_spool import AuditSpool, Snapshot
from .viewer_tokens import AccessCount, add_access, upsert_access_counts


def _locked_mark(conn: Connection, spool: AuditSpool) -> int:
    keys = {"i": spool.identity, "s": spool.stream}
    conn.execute(text("INSERT INTO audit_spool_marks (spool_id, stream, applied_seq) VALUES (:i, :s, 0)"
                      " ON CONFLICT DO NOTHING"), keys)
    return int(conn.execute(text("SELECT applied_seq FROM audit_spool_marks WHERE spool_id = :i AND stream = :s"
                                 " FOR UPDATE"), keys).scalar_one())


def _move_mark(conn: Connection, spool: AuditSpool, seq: int) -> None:
    conn.execute(text("UPDATE audit_spool_marks SET applied_seq = :q, updated_at = now()"
                      " WHERE spool_id = :i AND stream = :s"), {"i": spool.identity, "s": spool.stream, "q": seq})


def access_counts(records: Iterable[Record]) -> list[AccessCount]:
    """Viewer requests of the spool, aggregated per token and study (as the live access log does)."""
    pending: dict[tuple[str, str], AccessCount] = {}
    for record in records:
        if record.kind == ACCESS:
            token_id, study_uid, subject, at, allowed, size = record.payload
            add_access(pending, str(token_id), str(study_uid), str(subject), float(at), allowed=bool(allowed),
                       size=int(size))
    return list(pending.values())


def apply_access(engine: Engine, spool: AuditSpool, counts: Iterable[AccessCount], first: int,
                 snapshot: Snapshot) -> int:
    """Add viewer access counts up to ``snapshot.last_seq``: ``counts`` (the live aggregate of records
    ``first``..last) when PostgreSQL holds exactly what precedes them, otherwise what the spool holds after
    its mark (a restart, a failed flush). Returns the records added."""
    last = snapshot.last_seq
    with engine.begin() as conn:
        mark = _locked_mark(conn, spool)
        if mark >= last:
            added = 0
        else:
            rows = list(counts) if mark == first - 1 else access_counts(spool.records(mark, snapshot))
            upsert_access_counts(conn, rows)
            _move_mark(conn, spool, last)
            added = last - mark
    spool.applied(max(mark, last))
    return added


def apply_events(engine: Engine, spool: AuditSpool, log: Callable[[str], None] = print) -> int:
    """Insert the spooled audit rows after the mark, in spool order; returns how many records were applied."""
    snapshot = spool.snapshot()
    with engine.begin() as conn:
        mark = _locked_mark(conn, spool)
        if mark < snapshot.last_seq:
            dimse: list[dict[str, Any]] = []
            for record in spool.records(mark, snapshot):
                if record.kind == DIMSE:
                    dimse.append(_dimse_row(record.payload))
                else:
                    log(f"ehr-imaging: audit spool record {record.seq} of unknown kind {record.kind!r} skipped")
            if dimse:
                conn.execute(insert(DimseAudit), dimse)  # one statement; rows keep the spool's order
            _move_mark(conn, spool, snapshot.last_seq)
    spool.applied(max(mark, snapshot.last_seq))
    return max(snapshot.last_seq - mark, 0)


def dimse_payload(event: dict[str, Any], node: str, at: float) -> dict[str, Any]:
    return {**event, "node": node or None, "at": at}


def _dimse_row(payload: dict[str, Any]) -> dict[str, Any]:
    row = dict(payload)
    row["at"] = datetime.fromtimestamp(float(row["at"]), UTC)
    return row
