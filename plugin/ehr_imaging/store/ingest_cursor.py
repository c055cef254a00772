"""Where the ingest worker is in Orthanc's change log: one row per change log, with a lease.

``log_id`` names one Orthanc change log (a value the plugin keeps in Orthanc's own index as a global property):
nodes sharing Orthanc's index in PostgreSQL share it and so one row; nodes with their own SQLite index each have
their own. ``seq`` is the last change handled (at-least-once: advanced only after the change is handled).
``holder`` and ``lease_until`` make one node at a time the follower of a shared log: a node takes the row when it
is free or its lease has run out, and renews it with every advance; another node takes over once a dead one's
lease runs out. No access decisions here: the worker (app/ingest_worker.py) decides what to do with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Engine, func, text
from sqlalchemy.orm import Mapped, mapped_column

from .model_base import Base


class IngestCursor(Base):
    """Migration 14: the change log cursor of the ingest worker, and the lease of the node that follows it."""

    __tablename__ = "ingest_cursors"

    log_id: Mapped[str] = mapped_column(primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    holder: Mapped[str | None]
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


@dataclass(frozen=True)
class Cursor:
    seq: int  # the last change handled
    holder: str | None  # the node that follows the log (None: nobody yet)
    mine: bool  # this node holds the lease now


def create(engine: Engine, log_id: str, seq: int) -> None:
    """The first cursor of a change log (a no-op if another node created it meanwhile)."""
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO ingest_cursors (log_id, seq) VALUES (:k, :s) ON CONFLICT DO NOTHING"),
                     {"k": log_id, "s": seq})


def claim(engine: Engine, log_id: str, node: str, lease_seconds: float) -> Cursor | None:
    """Take or renew the lease of ``log_id`` for ``node`` when it is free, expired or already ``node``'s; the
    cursor either way (``mine`` says whether this node follows); None when the log has no cursor yet."""
    with engine.begin() as conn:
        row = conn.execute(text(
            "UPDATE ingest_cursors SET holder = :n, lease_until = now() + make_interval(secs => :t)"
            " WHERE log_id = :k AND (holder IS NULL OR holder = :n OR lease_until IS NULL OR lease_until < now())"
            " RETURNING seq"), {"k": log_id, "n": node, "t": lease_seconds}).first()
        if row is not None:
            return Cursor(int(row[0]), node, True)
        other = conn.execute(text("SELECT seq, holder FROM ingest_cursors WHERE log_id = :k"), {"k": log_id}).first()
    return None if other is None else Cursor(int(other[0]), other[1], False)


def advance(engine: Engine, log_id: str, node: str, seq: int, lease_seconds: float) -> bool:
    """Record that every change up to ``seq`` is handled, renewing ``node``'s lease; False if the lease was lost
    (another node took over: it goes on from the cursor it found, this one stops following)."""
    with engine.begin() as conn:
        row = conn.execute(text(
            "UPDATE ingest_cursors SET seq = :s, lease_until = now() + make_interval(secs => :t), updated_at = now()"
            " WHERE log_id = :k AND holder = :n RETURNING seq"),
            {"k": log_id, "n": node, "s": seq, "t": lease_seconds}).first()
    return row is not None


def release(engine: Engine, log_id: str, node: str) -> None:
    """Give the lease up (at stop), so another node takes over at once rather than after the lease."""
    with engine.begin() as conn:
        conn.execute(text("UPDATE ingest_cursors SET holder = NULL, lease_until = NULL"
                          " WHERE log_id = :k AND holder = :n"), {"k": log_id, "n": node})
