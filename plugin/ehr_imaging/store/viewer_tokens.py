"""Viewer tokens and viewer access in PostgreSQL: issued tokens (OHIF viewer tokens and the grants of signed image
URLs), revocations, the aggregated access log."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine, select, text
from sqlalchemy.orm import Session

from ..core.errors import NotFound
from .access_models import ViewerTokenRecord


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def record_issued(engine: Engine, *, token_id: str, subject: str, study_uids: Sequence[str], expires_at: float,
                  order_id: str | None = None, patient_id: str | None = None, kind: str = "viewer") -> None:
    """``kind``: "viewer" (an OHIF viewer token) or "image-url" (a grant of signed image URLs)."""
    with Session(engine) as session, session.begin():
        session.add(ViewerTokenRecord(token_id=token_id, subject=subject, study_uids=list(study_uids),
                                      order_id=order_id, patient_id=patient_id, expires_at=_utc(expires_at),
                                      kind=kind))


def owner(engine: Engine, token_id: str) -> str | None:
    """Who asked for an issued token (None: no such token). A token's subject never changes."""
    with Session(engine) as session:
        return session.scalar(select(ViewerTokenRecord.subject).where(ViewerTokenRecord.token_id == token_id))


def revoke(engine: Engine, *, token_id: str, by: str, reason: str | None) -> datetime:
    """Revoke an issued token (who may is the caller's decision: core.ownership); NotFound when there is none.
    A token revoked twice keeps its first revocation. Returns its expiry."""
    with Session(engine) as session, session.begin():
        record = session.get(ViewerTokenRecord, token_id, with_for_update=True)
        if record is None:
            raise NotFound("no such viewer token")
        if record.revoked_at is None:
            record.revoked_at = datetime.now(UTC)
            record.revoked_by = by
            record.revoke_reason = reason
        return record.expires_at


def revoked_token_ids(engine: Engine) -> dict[str, float]:
    """Revoked tokens that have not expired yet: token id -> expiry (epoch seconds)."""
    with Session(engine) as session:
        rows = session.execute(select(ViewerTokenRecord.token_id, ViewerTokenRecord.expires_at).where(
            ViewerTokenRecord.revoked_at.is_not(None), ViewerTokenRecord.expires_at > datetime.now(UTC)))
        return {token_id: expires.timestamp() for token_id, expires in rows}


@dataclass(frozen=True)
class AccessCount:
    token_id: str
    study_uid: str
    subject: str
    first_at: float
    last_at: float
    requests: int
    denied: int
    bytes: int


def add_access(pending: dict[tuple[str, str], AccessCount], token_id: str, study_uid: str, subject: str,
               at: float, *, allowed: bool, size: int = 0) -> None:
    """Count one viewer request into ``pending`` (per token and study): the one aggregation rule, used by
    the live access log and by the spool's replay alike."""
    key = (token_id, study_uid)
    old = pending.get(key)
    pending[key] = AccessCount(
        token_id, study_uid, subject,
        first_at=min(old.first_at, at) if old else at, last_at=max(old.last_at, at) if old else at,
        requests=(old.requests if old else 0) + (1 if allowed else 0),
        denied=(old.denied if old else 0) + (0 if allowed else 1),
        bytes=(old.bytes if old else 0) + (size if allowed else 0),
    )


def add_access_counts(engine: Engine, counts: Iterable[AccessCount]) -> None:
    """Add aggregated counts (one upsert per token and study), all in one transaction."""
    with engine.begin() as conn:
        upsert_access_counts(conn, counts)


def upsert_access_counts(conn: Connection, counts: Iterable[AccessCount]) -> None:
    """The upsert of ``add_access_counts``, in the caller's transaction."""
    rows = [{"t": c.token_id, "s": c.study_uid, "u": c.subject, "f": _utc(c.first_at), "l": _utc(c.last_at),
             "r": c.requests, "d": c.denied, "b": c.bytes} for c in counts]
    if not rows:
        return
    conn.execute(text(
        "INSERT INTO viewer_access_log (token_id, study_instance_uid, subject, first_access_at, last_access_at,"
        " request_count, denied_count, bytes) VALUES (:t, :s, :u, :f, :l, :r, :d, :b)"
        " ON CONFLICT (token_id, study_instance_uid) DO UPDATE SET"
        " first_access_at = least(viewer_access_log.first_access_at, excluded.first_access_at),"
        " last_access_at = greatest(viewer_access_log.last_access_at, excluded.last_access_at),"
        " request_count = viewer_access_log.request_count + excluded.request_count,"
        " denied_count = viewer_access_log.denied_count + excluded.denied_count,"
        " bytes = viewer_access_log.bytes + excluded.bytes"), rows)
