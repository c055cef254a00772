"""The database engine: one per process, created from the settings, guarded by the health monitor's breaker."""

from __future__ import annotations

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from .db_guard import Breaker, DatabaseUnavailable, GuardedPool, Sockets, guard

# The engine's type, for the modules that hold one without touching SQLAlchemy themselves.
__all__ = ["UNAVAILABLE", "Breaker", "DatabaseUnavailable", "Engine", "create_db_engine", "create_probe_engine",
           "interrupt", "normalize_url", "ping"]

# What the database raises while it cannot be reached (down, restarting, partitioned, not answering the health
# monitor so the breaker is open, or every connection busy past the pool's timeout): a wait, not a bug.
UNAVAILABLE: tuple[type[Exception], ...] = (OperationalError, InterfaceError, PoolTimeout, DatabaseUnavailable)

# TCP keepalives and a bound on unacknowledged data: a peer gone from the network (a dead host, a partition)
# closes the connection in about this many seconds instead of the kernel's two hours.
TCP_DEAD_PEER_SECONDS = 10


def normalize_url(url: str) -> str:
    """Accept ``postgresql://`` URLs as the EHR and tools write them; SQLAlchemy needs the driver."""
    parsed = make_url(url)
    if parsed.drivername in {"postgresql", "postgres"}:
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def create_db_engine(url: str, *, pool_size: int, connect_timeout: int, schema: str,
                     pool_timeout: int | None = None, statement_timeout_seconds: int = 30,
                     breaker: Breaker | None = None) -> Engine:
    """The engine; with a ``breaker`` its pool refuses at once while the breaker is open (db_guard.py)."""
    engine = create_engine(
        normalize_url(url),
        poolclass=GuardedPool,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_timeout=connect_timeout if pool_timeout is None else pool_timeout,
        connect_args=_connect_args(connect_timeout, schema, statement_timeout_seconds),
    )
    guard(engine, breaker or Breaker())
    return engine


def create_probe_engine(url: str, *, connect_timeout: int, schema: str) -> Engine:
    """A single connection of its own, for the health monitor (its pings never queue behind the requests'
    connections: a pool used up by waiting requests is no answer about the database itself) and for the
    cluster's upload holds (app/hold_exchange.py: renewed whatever the requests hold)."""
    engine = create_engine(normalize_url(url), poolclass=GuardedPool, pool_size=1, max_overflow=0,
                           pool_pre_ping=True, pool_timeout=connect_timeout,
                           connect_args=_connect_args(connect_timeout, schema, connect_timeout))
    guard(engine, Breaker())  # never opened: only its socket is wanted, to be cut when a ping hangs
    return engine


def _connect_args(connect_timeout: int, schema: str, statement_timeout_seconds: int) -> dict[str, object]:
    return {
        "connect_timeout": connect_timeout,
        "application_name": "ehr-imaging",
        "keepalives": 1,
        "keepalives_idle": TCP_DEAD_PEER_SECONDS // 2,
        "keepalives_interval": 1,
        "keepalives_count": TCP_DEAD_PEER_SECONDS // 2,
        "tcp_user_timeout": TCP_DEAD_PEER_SECONDS * 1000,
        # A statement the server runs too long (a lock wait, a bad plan) is cancelled by the server.
        "options": f"-c statement_timeout={statement_timeout_seconds * 1000} -c search_path={schema},public",
    }


def interrupt(engine: Engine) -> int:
    """Shut down the sockets of every connection of ``engine`` (a hung database): how many were cut."""
    sockets = getattr(engine.pool, "sockets", None)
    return sockets.interrupt() if isinstance(sockets, Sockets) else 0


def ping(engine: Engine) -> None:
    """Raise when the database cannot answer a trivial query."""
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
