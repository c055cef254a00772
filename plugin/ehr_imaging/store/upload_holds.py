"""The studies API uploads are writing, as every node sharing one Orthanc index sees them (migration 18).

An upload holds its studies from the ingest worker on its own node (core/holds.py); with several nodes on one
Orthanc index, the follower of the shared change log may be another node, so each node publishes its holds here
and reads the others'. A row lives ``ttl`` seconds unless its node renews it: a node that dies with an upload
half stored lets its hold run out, and the follower then records the study as stored. PostgreSQL's clock decides
what has run out, so the nodes' own clocks never matter.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from sqlalchemy import DateTime, Engine, text
from sqlalchemy.orm import Mapped, mapped_column

from .model_base import Base


class UploadHold(Base):
    """Migration 18: one node's hold of one Orthanc study, until ``expires_at`` unless renewed."""

    __tablename__ = "upload_holds"  # a few rows at most (the uploads running now): no index but its key

    orthanc_study_id: Mapped[str] = mapped_column(primary_key=True)
    node: Mapped[str] = mapped_column(primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


def exchange(engine: Engine, node: str, held_here: Collection[str], ttl_seconds: float) -> set[str]:
    """Publish ``node``'s holds (each renewed for ``ttl_seconds``; its other rows removed, and every node's run
    out rows) and answer the studies other nodes hold now. One transaction."""
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM upload_holds WHERE expires_at <= now()"
                          " OR (node = :n AND orthanc_study_id <> ALL(CAST(:ids AS text[])))"),
                     {"n": node, "ids": sorted(held_here)})
        if held_here:
            conn.execute(text(
                "INSERT INTO upload_holds (orthanc_study_id, node, expires_at)"
                " SELECT s, :n, now() + make_interval(secs => :t) FROM unnest(CAST(:ids AS text[])) AS s"
                " ON CONFLICT (orthanc_study_id, node) DO UPDATE SET expires_at = EXCLUDED.expires_at"),
                {"n": node, "t": ttl_seconds, "ids": sorted(held_here)})
        return set(conn.execute(text("SELECT DISTINCT orthanc_study_id FROM upload_holds"
                                     " WHERE node <> :n AND expires_at > now()"), {"n": node}).scalars())
