"""Ended admin browser sessions in PostgreSQL, so a logout on one node ends the session on all of them."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Engine, delete, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from .access_models import AdminSessionRevocation


def revoke_session(engine: Engine, *, session_id: str, subject: str, expires_at: float) -> None:
    with Session(engine) as session, session.begin():
        # Rows of sessions whose cookie has expired anyway are no longer needed.
        session.execute(delete(AdminSessionRevocation).where(AdminSessionRevocation.expires_at < datetime.now(UTC)))
        session.execute(insert(AdminSessionRevocation).values(
            session_id=session_id, subject=subject, expires_at=datetime.fromtimestamp(expires_at, UTC),
        ).on_conflict_do_nothing(index_elements=["session_id"]))


def revoked_session_ids(engine: Engine) -> dict[str, float]:
    """Ended sessions whose cookie has not expired yet: session id -> expiry (epoch seconds)."""
    with Session(engine) as session:
        rows = session.execute(select(AdminSessionRevocation.session_id, AdminSessionRevocation.expires_at)
                               .where(AdminSessionRevocation.expires_at > datetime.now(UTC)))
        return {session_id: expires.timestamp() for session_id, expires in rows}
