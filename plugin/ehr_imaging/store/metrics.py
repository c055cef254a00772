"""What the metrics read from the database: study counts by match state, and pending deletion requests."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from ..core.study_identity import REASON_COLLISION
from .models import DeletionRequest, StudyLink, StudyUidCollision


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


def pending_deletion_requests(engine: Engine) -> int:
    """Deletion requests waiting for a second admin (expired ones are marked when next read: not counted)."""
    with Session(engine) as session:
        return int(session.scalar(select(func.count()).select_from(DeletionRequest).where(
            DeletionRequest.status == "pending", DeletionRequest.expires_at > func.now())) or 0)
