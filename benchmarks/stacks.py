"""What every side-by-side benchmark starts from: a fresh stack on free loopback ports, with or without the plugin
(plain Orthanc 1.10.1 with the same settings), and the sample studies' folder. Every server started here (or
handed to ``remember``) is kept in a list until ``stop_all``, so ``make bench`` stops whatever a failed or
timed-out part left running and removes its folder."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ehr_stack.procs import free_port
from ehr_stack.stack import REPO, Stack, StackConfig
from tests.conftest import stack_dir

SAMPLES = REPO / "var" / "test-samples"
RUNTIME_ONLY_ENTRY = Path(__file__).with_name("runtime_only_entry.py")
PYTHON_PLUGIN = "/usr/share/orthanc/plugins/libOrthancPython.so"
_STARTED: list[tuple[Callable[[], None], Path]] = []  # (stop, folder) of every server not yet stop_all()ed


def remember(stop: Callable[[], None], folder: Path) -> None:
    """``stop_all`` calls ``stop`` (it must do nothing if already stopped) and removes ``folder``."""
    _STARTED.append((stop, folder))


def start(with_plugin: bool, **settings: Any) -> Stack:
    """A fresh stack; ``settings`` are further ``StackConfig`` fields (``with_gdcm=False``, ``stable_age=2``...)."""
    config = StackConfig(var_dir=stack_dir(), http_port=free_port(), dicom_port=free_port(), api_port=free_port(),
                         pg_port=free_port(), with_plugin=with_plugin, **settings)
    stack = Stack(config)
    remember(stack.stop, config.var_dir)
    stack.start()
    return stack


class _RuntimeOnly(Stack):
    """Plain Orthanc's settings with orthanc-python loaded and a script that does nothing (runtime_only_entry.py)."""

    def orthanc_config(self) -> dict[str, Any]:
        cfg = super().orthanc_config()
        cfg["Plugins"] = [*cfg["Plugins"], PYTHON_PLUGIN]
        cfg["PythonScript"] = str(RUNTIME_ONLY_ENTRY)
        return cfg


def start_runtime_only() -> Stack:
    """A plain stack (``with_plugin=False``: no plugin tables, /system as health) plus the Python runtime."""
    config = StackConfig(var_dir=stack_dir(), http_port=free_port(), dicom_port=free_port(), api_port=free_port(),
                         pg_port=free_port(), with_plugin=False)
    stack = _RuntimeOnly(config)
    remember(stack.stop, config.var_dir)
    stack.start()
    return stack


def stop_all() -> int:
    """Stop every remembered server (the latest first) and remove its folder; how many there were."""
    count = 0
    while _STARTED:
        stop, folder = _STARTED.pop()
        count += 1
        try:
            stop()
        except Exception as exc:  # noqa: BLE001 - one server refusing to stop must not keep the others running
            print(f"could not stop the server in {folder}: {exc}", file=sys.stderr)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    return count
