"""``make up`` after a crash: the PID file names this stack's Orthanc only while that process is alive.

Real processes, no servers: a zombie (a child that exited, not reaped), a PID reused by another program,
another stack's Orthanc, and a process that is this stack's Orthanc by its command line.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ehr_stack.procs import runs
from ehr_stack.stack import Stack, StackConfig
from tests.waiting import eventually

SLEEP = "import time; time.sleep(60)"


def stack(tmp_path: Path) -> Stack:
    own = Stack(StackConfig(var_dir=tmp_path / "var"))
    own.make_private_dirs()
    return own


@contextmanager
def process(argv: list[str]) -> Iterator[subprocess.Popen[bytes]]:
    """A child running ``argv`` (``argv[0]`` is only its name: the program is this Python)."""
    proc = subprocess.Popen(argv, executable=sys.executable)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]


def test_a_live_orthanc_with_this_stacks_configuration_is_the_running_orthanc(tmp_path: Path) -> None:
    own = stack(tmp_path)
    with process(["Orthanc", "-c", SLEEP, str(own.config_path)]) as orthanc:
        own.pid_file.write_text(str(orthanc.pid))
        assert own.orthanc_pid() == orthanc.pid
        assert runs(orthanc.pid, "Orthanc", str(own.config_path))


def test_a_zombie_is_not_the_running_orthanc(tmp_path: Path) -> None:
    own = stack(tmp_path)
    # A killed Orthanc its parent has not reaped yet: the PID still answers kill(pid, 0).
    with process(["Orthanc", "-c", "pass", str(own.config_path)]) as dead:
        eventually(lambda: state(dead.pid) == "Z", timeout=10, what="the child to be a zombie")
        own.pid_file.write_text(str(dead.pid))
        assert own.orthanc_pid() is None
        assert not runs(dead.pid, "Orthanc", str(own.config_path))


def test_a_reused_pid_is_not_the_running_orthanc(tmp_path: Path) -> None:
    own = stack(tmp_path)
    with process(["sleep", "-c", SLEEP]) as other:  # an unrelated live program now holds the old PID
        own.pid_file.write_text(str(other.pid))
        assert own.orthanc_pid() is None
    with process(["Orthanc", "-c", SLEEP, str(tmp_path / "other" / "orthanc.json")]) as other_stack:
        own.pid_file.write_text(str(other_stack.pid))  # another stack's Orthanc is not ours to wait for
        assert own.orthanc_pid() is None


def test_no_pid_file_or_a_bad_one_means_no_orthanc(tmp_path: Path) -> None:
    own = stack(tmp_path)
    assert own.orthanc_pid() is None
    own.pid_file.write_text("not a pid")
    assert own.orthanc_pid() is None
    own.pid_file.write_text("999999999")
    assert own.orthanc_pid() is None
