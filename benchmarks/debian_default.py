"""Debian's default Orthanc: the ``orthanc`` package's own configuration, run as its service runs it.

The service (``/lib/systemd/system/orthanc.service``) starts ``Orthanc /etc/orthanc`` with no environment of its
own, so without ``TCP_NODELAY`` (DCMTK then delays its small writes: every C-STORE reply waits on the peer's
delayed ACK), and with every plugin in ``/usr/share/orthanc/plugins/`` loaded with the package's settings (the
PostgreSQL plugins installed but disabled, so SQLite index and files on disk, as ours; the sample Python script).
Here the folder's JSON files are copied and only what two servers on one machine cannot share is changed: the
HTTP and DICOM ports and the storage and index folders. The baseline of issue 12's "≥ 8× Debian's default Orthanc".
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import requests

from ehr_stack.procs import free_port, runs, stop_pid, wait_until

PACKAGE_CONFIG = Path("/etc/orthanc")


def configured(text: str, replacements: dict[str, str]) -> str:
    """The package's orthanc.json (comments and all) with each top-level ``"Key" : value`` replaced once."""
    for key, value in replacements.items():
        found = re.search(rf'^\s*"{key}"\s*:\s*("[^"]*"|\d+)', text, re.MULTILINE)
        if found is None:
            raise RuntimeError(f"{key} not found in {PACKAGE_CONFIG / 'orthanc.json'}")
        text = text[:found.start(1)] + value + text[found.end(1):]
    return text


class DebianDefault:
    """An Orthanc with the package's configuration in ``folder``: ``start()``, ``stop()``, ``url``, ``pid``."""

    orthanc_aet = "ORTHANC"  # the package's DicomAet (it checks no called AET: any is accepted)

    def __init__(self, folder: Path, nodelay: bool = False) -> None:
        self.folder = folder
        self.nodelay = nodelay  # True: TCP_NODELAY=1 after all, to see how much of the gap it is
        self.http_port, self.dicom_port = free_port(), free_port()
        self.config_dir = folder / "etc-orthanc"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def pid(self) -> int | None:
        proc = self.proc
        return proc.pid if proc is not None and runs(proc.pid, "Orthanc", str(self.config_dir)) else None

    def start(self, timeout: float = 90) -> None:
        storage = self.folder / "db-v6"
        storage.mkdir(parents=True, exist_ok=True)
        self.config_dir.mkdir(parents=True, exist_ok=True)
        for source in PACKAGE_CONFIG.glob("*.json"):
            shutil.copy(source, self.config_dir / source.name)
        main = self.config_dir / "orthanc.json"
        main.write_text(configured(main.read_text(), {
            "HttpPort": str(self.http_port), "DicomPort": str(self.dicom_port),
            "StorageDirectory": json.dumps(str(storage)), "IndexDirectory": json.dumps(str(storage))}))
        environment = {key: value for key, value in os.environ.items() if key != "TCP_NODELAY"}
        if self.nodelay:
            environment["TCP_NODELAY"] = "1"
        with open(self.folder / "orthanc.log", "ab") as log:
            self.proc = subprocess.Popen(["Orthanc", f"--logdir={self.folder}", str(self.config_dir)],
                                         env=environment, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)

        def up() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"Debian's default Orthanc exited with {self.proc.returncode}; see {self.folder}")
            try:
                return requests.get(self.url + "/system", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        try:
            wait_until(up, timeout, "Debian's default Orthanc to answer")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            stop_pid(self.proc.pid)
            self.proc.wait(timeout=30)
        self.proc = None
