"""The engine's circuit breaker and its escape hatch for a hung database.

A stopped or partitioned PostgreSQL (SIGSTOP, a dead host) accepts TCP but never answers: libpq's
``connect_timeout`` bounds only a new connection, and ``statement_timeout`` is the server's own, so a
statement, a pool pre-ping or a commit waits on the socket for ever. Two things bound it here:

- ``Breaker``: open while the health monitor (app/database_monitor.py) gets no answer. The engine's pool
  asks it before it touches a socket (a checkout, and every new connection), so a request fails at once
  with ``DatabaseUnavailable`` (503 with Retry-After) instead of waiting; only the monitor's own probe
  passes an open breaker.
- ``interrupt``: every connection the pool made is known by its socket; when the monitor's ping goes
  unanswered past its deadline it shuts those sockets down, which wakes each thread blocked on one with a
  connection error (the request answers 503, the ingest worker retries later).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.pool import PoolProxiedConnection, QueuePool

from ..core import errors

CONNECT_WATCH_SECONDS = 0.05  # how often a caller waiting for a new connection looks at the breaker


class DatabaseUnavailable(errors.Unavailable):
    """The database did not answer the health monitor's last ping: refused at once, not waited for."""


class Breaker:
    """Closed (requests pass) until the monitor opens it with a reason; closed again by the next answer."""

    def __init__(self, retry_after_seconds: int = 5) -> None:
        self.retry_after_seconds = retry_after_seconds
        self._reason: str | None = None
        self._probing = threading.local()

    @property
    def is_open(self) -> bool:
        return self._reason is not None

    @property
    def reason(self) -> str | None:
        return self._reason

    def open(self, reason: str) -> None:
        self._reason = reason

    def close(self) -> None:
        self._reason = None

    def check(self) -> None:
        """Raise ``DatabaseUnavailable`` while open, except in the monitor's probe."""
        if self._reason is not None and not self.probing_now:
            raise self.refusal()

    def refusal(self) -> DatabaseUnavailable:
        return DatabaseUnavailable(f"the database is unavailable ({self._reason or 'not answering'}); try again"
                                   " shortly", self.retry_after_seconds)

    @property
    def probing_now(self) -> bool:
        """Is this thread the monitor's probe?"""
        return bool(getattr(self._probing, "active", False))

    @contextmanager
    def probing(self) -> Iterator[None]:
        """The monitor's ping: allowed through an open breaker (it is what closes it)."""
        self._probing.active = True
        try:
            yield
        finally:
            self._probing.active = False


class GuardedPool(QueuePool):
    """A QueuePool that asks the breaker before a checkout (before its pre-ping touches a socket)."""

    breaker: Breaker | None = None
    sockets: Sockets | None = None  # set by ``guard``

    def connect(self) -> PoolProxiedConnection:
        if self.breaker is not None:
            self.breaker.check()
        return super().connect()

    def recreate(self) -> QueuePool:
        new = super().recreate()  # engine.dispose(): the new pool keeps the same breaker
        if isinstance(new, GuardedPool):
            new.breaker, new.sockets = self.breaker, self.sockets
        return new


class Sockets:
    """The sockets of every live connection an engine made, each with the peer it was opened to."""

    def __init__(self) -> None:
        self._peers: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def add(self, dbapi_connection: Any) -> None:
        fd = _fd(dbapi_connection)
        if fd is None:
            return
        with _dup(fd) as sock:
            peer = _peer(sock)
        with self._lock:
            self._peers[dbapi_connection] = peer

    def interrupt(self) -> int:
        """Shut down every open connection's socket (its owner's wait ends with an error); how many."""
        with self._lock:
            known = list(self._peers.items())
        cut = 0
        for connection, peer in known:
            fd = _fd(connection)
            if fd is None:
                continue
            try:
                with _dup(fd) as sock:
                    # The fd may have been closed and reused since: only the socket to the same peer is cut.
                    if _peer(sock) == peer:
                        sock.shutdown(socket.SHUT_RDWR)
                        cut += 1
            except OSError:
                continue
        return cut


def guard(engine: Engine, breaker: Breaker) -> Sockets:
    """Put the breaker in front of the engine's pool and connections; returns their sockets."""
    sockets = Sockets()
    if isinstance(engine.pool, GuardedPool):
        engine.pool.breaker, engine.pool.sockets = breaker, sockets

    @event.listens_for(engine, "do_connect")
    def _before_connect(dialect: Any, record: Any, cargs: Any, cparams: Any) -> Any:
        # Also the reconnect after a failed pre-ping, and an overflow connection.
        if breaker.probing_now:
            return None  # the monitor's own connection: bounded by connect_timeout, on its own thread
        breaker.check()
        return connect_unless_opened(breaker, lambda: dialect.connect(*cargs, **cparams))

    @event.listens_for(engine, "connect")
    def _connected(dbapi_connection: Any, record: Any) -> None:
        sockets.add(dbapi_connection)

    return sockets


def connect_unless_opened(breaker: Breaker, connect: Callable[[], Any]) -> Any:
    """A new connection, made on a thread of its own; the caller stops waiting for it the moment the breaker
    opens (a hung server: the connect would wait out its whole ``connect_timeout``). A connection that
    arrives after its caller left is closed."""
    lock = threading.Lock()
    done = threading.Event()
    outcome: list[Any] = []  # [connection] or [exception], set under ``lock``
    abandoned = False

    def run() -> None:
        try:
            result: Any = connect()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            result = exc
        with lock:
            if abandoned:
                if not isinstance(result, BaseException):
                    _close_quietly(result)
                return
            outcome.append(result)
        done.set()

    threading.Thread(target=run, name="ehr-db-connect", daemon=True).start()
    while not done.wait(CONNECT_WATCH_SECONDS):
        if breaker.is_open:
            with lock:
                abandoned = not outcome
            if abandoned:
                raise breaker.refusal()
            break
    done.wait()
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]


def _close_quietly(connection: Any) -> None:
    with contextlib.suppress(Exception):  # nobody is waiting for it any more
        connection.close()


def _fd(dbapi_connection: Any) -> int | None:
    try:
        if getattr(dbapi_connection, "closed", False):
            return None
        fd = dbapi_connection.pgconn.socket
    except Exception:  # noqa: BLE001 - closed or broken: nothing to cut
        return None
    return fd if isinstance(fd, int) and fd >= 0 else None


@contextmanager
def _dup(fd: int) -> Iterator[socket.socket]:
    """A socket object on a duplicate of ``fd``: shutting it down acts on the connection, closing it does not."""
    sock = socket.socket(fileno=os.dup(fd))
    try:
        yield sock
    finally:
        sock.close()


def _peer(sock: socket.socket) -> Any:
    try:
        return (sock.family, sock.getpeername())
    except OSError:
        return (sock.family, None)
