"""Free ports for the stacks (ehr_stack.procs.free_port): below the kernel's range for outgoing connections, so
a client's ephemeral port cannot take one before Orthanc or PostgreSQL binds it, and never the same twice."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from ehr_stack import procs


def test_ports_are_free_distinct_and_below_the_ephemeral_range() -> None:
    start = procs.ephemeral_start()
    ports = [procs.free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    assert all(max(1024, start - procs.LISTEN_PORTS_WIDTH) <= port < start for port in ports)
    with socket.socket() as sock:  # and bindable right away
        sock.bind(("127.0.0.1", ports[-1]))


def test_a_port_in_use_is_never_handed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    start = procs.ephemeral_start()
    with socket.socket() as busy:
        for candidate in range(start - 1, start - 2000, -1):  # a port of the range that someone listens on
            try:
                busy.bind(("127.0.0.1", candidate))
                break
            except OSError:
                continue
        busy.listen()
        taken = busy.getsockname()[1]
        offered = iter([taken, taken, taken - 1000])
        monkeypatch.setattr("ehr_stack.procs.random.randrange", lambda low, high: next(offered))
        assert procs.free_port() == taken - 1000


def test_the_ephemeral_range_is_read_from_the_kernel_or_defaults(tmp_path: Path) -> None:
    settings = tmp_path / "ip_local_port_range"
    settings.write_text("40000\t60999\n")
    assert procs.ephemeral_start(settings) == 40000
    assert procs.ephemeral_start(tmp_path / "missing") == 32768
