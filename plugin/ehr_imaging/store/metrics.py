"""What the metrics read from the database: study counts by match state, and pending deletion requests."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session

from ..core.study_identity import REASON_COLLISION
from .models import StudyLink, StudyUidCollision

# The deletion-request table (issue 11 item 1) and the statuses of a request still waiting for a manager.
DELETION_REQUESTS_TABLE = "deletion_requests"
PENDING_STATUSES = ("pending", "pending_approval")


@dataclass(frozen=True)
class StudyCounts:
    recorded: int  # studies recorded (study_links), on every node
    linked: int  # ... linked to an order
    unmatched: dict[str, int]  # the reconciliation queue by reason (quarantined collisions included)


def study_counts(engine: Engine) -> StudyCounts:
    with Session(engine) as session:
        rows = session.execute(
            select(StudyLink.order_id.is_(None), StudyLink.match_reason, func.count())
            .group_by(StudyLink.order_id.is_(None), StudyLink.match_reason)).all()
        collisions = session.scalar(select(func.count()).select_from(StudyUidCollision)) or 0
    recorded = sum(int(count) for _, _, count in rows)
    linked = sum(int(count) for unlinked, _, count in rows if not unlinked)
    unmatched: dict[str, int] = {}
    for unlinked, reason, count in rows:
        if unlinked:
            unmatched[reason or "other"] = unmatched.get(reason or "other", 0) + int(count)
    if collisions:
        unmatched[REASON_COLLISION] = unmatched.get(REASON_COLLISION, 0) + int(collisions)
    return StudyCounts(recorded, linked, unmatched)


def pending_deletion_requests(engine: Engine) -> int | None:
    """Deletion requests waiting for approval; None while the table does not exist (a schema before it)."""
    with engine.connect() as conn:
        if conn.scalar(text("SELECT to_regclass(:name)"), {"name": DELETION_REQUESTS_TABLE}) is None:
            return None
        count = conn.scalar(text(f"SELECT count(*) FROM {DELETION_REQUESTS_TABLE} WHERE status = ANY(:pending)"),
                            {"pending": list(PENDING_STATUSES)})
        return int(count or 0)
