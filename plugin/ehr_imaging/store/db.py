"""The database engine: one per process, created from the settings."""

from __future__ import annotations

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import InterfaceError, OperationalError

# The engine's type, for the modules that hold one without touching SQLAlchemy themselves.
__all__ = ["UNAVAILABLE", "Engine", "create_db_engine", "normalize_url", "ping"]

# What the database raises while it cannot be reached (down, restarting, partitioned): a wait, not a bug.
UNAVAILABLE: tuple[type[Exception], ...] = (OperationalError, InterfaceError)


def normalize_url(url: str) -> str:
    """Accept ``postgresql://`` URLs as the EHR and tools write them; SQLAlchemy needs the driver."""
    parsed = make_url(url)
    if parsed.drivername in {"postgresql", "postgres"}:
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def create_db_engine(url: str, *, pool_size: int, connect_timeout: int, schema: str) -> Engine:
    return create_engine(
        normalize_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_timeout=connect_timeout,
        connect_args={
            "connect_timeout": connect_timeout,
            "application_name": "ehr-imaging",
            # A hung statement must not hold an Orthanc HTTP thread for ever.
            "options": f"-c statement_timeout=30000 -c search_path={schema},public",
        },
    )


def ping(engine: Engine) -> None:
    """Raise when the database cannot answer a trivial query."""
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
