"""Small process helpers: run as the postgres user when root, free ports, waiting, stopping."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

# A listening port is chosen below the kernel's range for outgoing connections: a port from binding port 0 comes
# from that very range, and under heavy connection churn (the fuzz and load runs) a client's ephemeral port took
# one before Orthanc bound it ("The TCP port of the HTTP server is ... already in use").
LISTEN_PORTS_WIDTH = 12000
_handed_out: set[int] = set()
_handed_out_lock = threading.Lock()


def ephemeral_start(path: Path = Path("/proc/sys/net/ipv4/ip_local_port_range")) -> int:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def free_port() -> int:
    """A loopback port free now, never handed out before by this process, outside the ephemeral range."""
    high = ephemeral_start()
    low = max(1024, high - LISTEN_PORTS_WIDTH)
    for _ in range(500):
        port = random.randrange(low, high)
        with _handed_out_lock:
            if port in _handed_out:
                continue
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
            _handed_out.add(port)
            return port
    with socket.socket() as sock:  # the whole range busy: let the kernel choose
        sock.bind(("127.0.0.1", 0))
        chosen: int = sock.getsockname()[1]
        return chosen


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def as_unprivileged(cmd: Sequence[str], user: str = "postgres") -> list[str]:
    """PostgreSQL refuses to run as root: when we are root, run the command as ``user``."""
    if os.geteuid() == 0:
        return ["runuser", "-u", user, "--", *cmd]
    return list(cmd)


def chown_for_unprivileged(path: Path, user: str = "postgres") -> None:
    if os.geteuid() == 0:
        subprocess.run(["chown", "-R", f"{user}:", str(path)], check=True)


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def runs(pid: int, command: str, argument: str) -> bool:
    """Is ``pid`` a live process (not a zombie) running ``command`` with ``argument`` on its command line?
    A PID file outlives its process: the PID may be a zombie not yet reaped, or reused by another program."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        argv = [part.decode(errors="replace") for part in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")]
    except (FileNotFoundError, ProcessLookupError, PermissionError, ValueError):
        return False
    fields = stat.rsplit(")", 1)[-1].split()  # the command name (in parentheses) may hold spaces
    if not fields or fields[0] in ("Z", "X", "x"):  # zombie, dead
        return False
    return bool(argv) and os.path.basename(argv[0]) == command and argument in argv[1:]


def stop_pid(pid: int, timeout: float = 20.0) -> None:
    """SIGTERM, wait, then SIGKILL: a stack must never leave a process behind."""
    if not pid_alive(pid):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done == pid:
                return
        except ChildProcessError:
            pass  # not our child: poll for its disappearance
        if not pid_alive(pid):
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
