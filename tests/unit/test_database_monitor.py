"""The database health monitor, its breaker and the engine guard (no PostgreSQL: fakes, SQLite, socket pairs).

tests/integration/test_database_faults.py checks the same against a frozen and a stopped PostgreSQL.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, event, text

from ehr_imaging.api.router import PUBLIC, Request, Response, Router, json_response
from ehr_imaging.app.database_monitor import WATCH_STEP_SECONDS, DatabaseMonitor
from ehr_imaging.core import errors
from ehr_imaging.core.auth import DOCTOR, Authenticator, BasicAuthenticator, TokenVerifier, mint_token
from ehr_imaging.store import db
from ehr_imaging.store.db_guard import GuardedPool, Sockets, connect_unless_opened, guard
from tests.waiting import eventually


class FakeConnection:
    """What ``Sockets`` reads of a psycopg connection: ``closed`` and ``pgconn.socket``."""

    def __init__(self, fd: int) -> None:
        self.closed = False
        self.pgconn = self
        self.socket = fd


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Harness:
    def __init__(self) -> None:
        self.clock = Clock()
        self.breaker = db.Breaker()
        self.cuts = 0
        self.failure: Exception | None = None
        self.logged: list[str] = []
        self.during_ping: list[bool] = []
        self.monitor = DatabaseMonitor(self.ping, self.interrupt, self.breaker, interval=1, timeout=2,
                                       log_warning=self.logged.append, clock=self.clock)

    def ping(self) -> None:
        self.breaker.check()  # the probe passes an open breaker
        self.during_ping.append(self.monitor.watch())
        if self.failure is not None:
            raise self.failure

    def interrupt(self) -> int:
        self.cuts += 1
        return 3

    def is_open(self) -> bool:  # a call, so that mypy does not narrow the property between steps
        return self.breaker.is_open

    def reason(self) -> str | None:
        return self.breaker.reason


def test_an_answered_ping_keeps_the_breaker_closed() -> None:
    h = Harness()
    h.monitor.probe()
    assert not h.is_open() and h.reason() is None
    h.breaker.check()  # no exception
    assert h.logged == [] and h.cuts == 0


def test_a_failed_ping_opens_the_breaker_and_the_next_answer_closes_it() -> None:
    h = Harness()
    h.failure = ConnectionRefusedError("refused")
    h.monitor.probe()
    assert h.is_open() and h.reason() == "ConnectionRefusedError"
    with pytest.raises(db.DatabaseUnavailable) as refused:
        h.breaker.check()
    assert isinstance(refused.value, errors.Unavailable) and refused.value.retry_after_seconds == 5
    assert "ConnectionRefusedError" in refused.value.detail
    assert isinstance(refused.value, db.UNAVAILABLE)  # the ingest worker waits for it like a refusal
    h.failure = None
    h.monitor.probe()
    assert not h.is_open()
    assert len(h.logged) == 2 and "answers again" in h.logged[1]
    assert h.cuts == 0  # a refusal wakes its waiters by itself: nothing to cut


def test_a_ping_unanswered_past_the_deadline_opens_the_breaker_and_cuts_the_connections_once() -> None:
    h = Harness()
    assert h.monitor.watch() is False  # no ping in progress
    blocked = threading.Event()
    release = threading.Event()

    def hung_ping() -> None:
        blocked.set()
        release.wait(10)
        raise OSError("connection cut")

    h.monitor._ping = hung_ping
    worker = threading.Thread(target=h.monitor.probe)
    worker.start()
    try:
        assert blocked.wait(5)
        for _ in range(9):  # the deadline thread's steps, to 1.8 s of the 2 s deadline: not yet
            h.clock.now += WATCH_STEP_SECONDS
            assert h.monitor.watch() is False and not h.is_open()
        h.clock.now += 0.5
        assert h.monitor.watch() is True
        assert h.is_open() and h.reason() == "no answer within 2 s" and h.cuts == 1
        assert h.monitor.watch() is False and h.cuts == 1  # the same ping is cut once
    finally:
        release.set()
        worker.join(5)
    assert h.reason() == "no answer within 2 s"  # the first reason stands while it is open
    assert any("cut 3 waiting connections" in line for line in h.logged)


def test_a_pause_of_the_plugin_itself_is_not_the_database_failing_to_answer() -> None:
    """orthanc-python holds the GIL through a call into Orthanc (a large file stored): every Python thread, the
    ping's and the deadline's, stops for seconds. That gap counts as one step; the steps seen after it still
    reach the deadline of a ping that goes on unanswered."""
    h = Harness()
    blocked = threading.Event()
    release = threading.Event()

    def slow_ping() -> None:
        blocked.set()
        release.wait(10)

    h.monitor._ping = slow_ping
    worker = threading.Thread(target=h.monitor.probe)
    worker.start()
    try:
        assert blocked.wait(5)
        h.clock.now += WATCH_STEP_SECONDS
        assert h.monitor.watch() is False
        h.clock.now += 30  # Python stopped for 30 s, the ping's answer waiting
        assert h.monitor.watch() is False and not h.is_open() and h.cuts == 0
        for _ in range(7):  # 0.2 + 0.2 (the pause) + 7 x 0.2 = 1.8 s seen
            h.clock.now += WATCH_STEP_SECONDS
            assert h.monitor.watch() is False
        h.clock.now += 0.5  # and unanswered past the deadline as seen step by step
        assert h.monitor.watch() is True and h.is_open() and h.cuts == 1
    finally:
        release.set()
        worker.join(5)
    assert not h.is_open()  # it answered after all: closed again


def test_the_monitor_threads_close_the_breaker_once_the_database_answers() -> None:
    h = Harness()
    h.breaker.open("earlier")
    monitor = DatabaseMonitor(lambda: None, lambda: 0, h.breaker, interval=1, timeout=2, log_warning=h.logged.append)
    monitor.start()
    try:
        eventually(lambda: not h.is_open(), timeout=5, what="the monitor's first ping to close the breaker")
    finally:
        monitor.stop()


def test_an_open_breaker_refuses_the_engine_before_any_connection_is_made(tmp_path: Path) -> None:
    breaker = db.Breaker()
    engine = create_engine(f"sqlite:///{tmp_path / 'x.db'}", poolclass=GuardedPool, pool_size=1)
    connects: list[object] = []
    sockets = guard(engine, breaker)
    assert isinstance(sockets, Sockets)
    event.listen(engine, "connect", lambda conn, record: connects.append(conn))
    with engine.connect() as conn:
        assert conn.execute(text("SELECT 1")).scalar() == 1
    assert len(connects) == 1
    breaker.open("no answer within 2 s")
    started = time.monotonic()
    with pytest.raises(db.DatabaseUnavailable):
        engine.connect()
    assert time.monotonic() - started < 0.5
    engine.dispose()  # a recreated pool keeps the breaker, and a new connection asks it too
    with pytest.raises(db.DatabaseUnavailable):
        engine.connect()
    assert len(connects) == 1
    with breaker.probing(), engine.connect() as conn:  # the monitor's own probe goes through
        assert conn.execute(text("SELECT 1")).scalar() == 1
    breaker.close()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT 1")).scalar() == 1
    assert isinstance(engine.pool, GuardedPool) and engine.pool.checkedout() == 0


def test_interrupt_wakes_a_thread_waiting_on_a_connection_socket() -> None:
    ours, server = socket.socketpair()
    try:
        connection = FakeConnection(ours.fileno())
        sockets = Sockets()
        sockets.add(connection)
        got: list[bytes] = []
        waiter = threading.Thread(target=lambda: got.append(ours.recv(10)))  # a statement awaiting its answer
        waiter.start()
        time.sleep(0.2)  # the scenario: a statement already waiting on its socket (nothing signals that)
        assert waiter.is_alive()
        assert sockets.interrupt() == 1
        waiter.join(5)
        assert not waiter.is_alive() and got == [b""]  # woken: the connection reads as closed
        assert ours.fileno() >= 0  # shut down, not closed: its owner closes it
        connection.closed = True
        assert sockets.interrupt() == 0  # a closed connection is left alone
    finally:
        ours.close()
        server.close()


def test_interrupt_leaves_a_reused_descriptor_alone() -> None:
    first, first_peer = socket.socketpair()
    other, other_peer = socket.socket(), socket.socket()
    try:
        connection = FakeConnection(first.fileno())
        sockets = Sockets()
        sockets.add(connection)
        listener = socket.create_server(("127.0.0.1", 0))
        other.connect(listener.getsockname())
        connection.socket = other.fileno()  # the fd now names a socket to another peer
        assert sockets.interrupt() == 0
        other.settimeout(0.2)
        with pytest.raises(TimeoutError):
            other.recv(1)  # still open both ways
        listener.close()
    finally:
        for sock in (first, first_peer, other, other_peer):
            sock.close()


class SlowConnection:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


def test_a_caller_stops_waiting_for_a_new_connection_once_the_breaker_opens() -> None:
    breaker = db.Breaker()
    assert connect_unless_opened(breaker, lambda: "connection") == "connection"
    with pytest.raises(ConnectionRefusedError):
        connect_unless_opened(breaker, _refused)
    release = threading.Event()
    late = SlowConnection()

    def hung_connect() -> SlowConnection:  # a frozen server: TCP accepted, the start-up never answered
        release.wait(10)
        return late

    threading.Timer(0.3, breaker.open, args=("no answer within 2 s",)).start()
    started = time.monotonic()
    with pytest.raises(db.DatabaseUnavailable):
        connect_unless_opened(breaker, hung_connect)
    assert 0.25 < time.monotonic() - started < 2
    release.set()
    # Arrived after its caller left: closed, not leaked.
    eventually(lambda: late.closed, timeout=5, what="the late connection to be closed")


def _refused() -> None:
    raise ConnectionRefusedError("refused")


def test_the_router_answers_503_with_retry_after_while_the_breaker_is_open() -> None:
    secret = "monitor-test-secret-0123456789abcdef"
    authenticator = Authenticator(users=TokenVerifier(issuer="t", audience="a", secret=secret),
                                  admins=BasicAuthenticator({}), sessions=None)
    breaker = db.Breaker()
    reached: list[str] = []
    router = Router(authenticator, print, unavailable=db.UNAVAILABLE, available=breaker.check)
    router.add("GET", "/orders/{order_id}", lambda r: _ok(reached, "orders"), roles=[DOCTOR])
    router.add("GET", "/health", lambda r: _ok(reached, "health"), roles=PUBLIC)
    doctor = {"authorization": "Bearer " + mint_token(secret=secret, issuer="t", audience="a", subject="d",
                                                      roles=(DOCTOR,), ttl_seconds=600)}
    breaker.open("no answer within 2 s")
    refused = router.dispatch("/orders/{order_id}", Request("GET", "/orders/1", headers=doctor), ("1",))
    assert refused.status == 503 and refused.headers["Retry-After"] == "5"
    assert b"the database is unavailable (no answer within 2 s)" in refused.body
    unauthenticated = router.dispatch("/orders/{order_id}", Request("GET", "/orders/1"), ("1",))
    assert unauthenticated.status == 401  # who may call it is still said first
    assert router.dispatch("/health", Request("GET", "/health"), ()).status == 200  # public: answers itself
    assert reached == ["health"]
    breaker.close()
    assert router.dispatch("/orders/{order_id}", Request("GET", "/orders/1", headers=doctor), ("1",)).status == 200


def _ok(reached: list[str], name: str) -> Response:
    reached.append(name)
    return json_response({"ok": True})
