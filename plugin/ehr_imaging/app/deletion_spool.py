"""Study deletions Orthanc announced but the worker has not recorded yet, kept on this node's disk.

Orthanc 1.10 never writes a deletion into its change log (the DELETED event exists only in memory, and the
deleted resource's earlier changes go with it), so a deletion signalled while PostgreSQL is away, or just before
a crash, would be lost with the process. Each one is appended here as Orthanc announces it (the change callback,
through the worker's ``submit_deleted``; one Orthanc study ID a line, fsync'd) before anything tries to record it;
the worker removes it once recorded, and at the next start records what is left first.
Without a usable folder the spool keeps them in memory only (and the plugin says so at start-up).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path


class DeletionSpool:
    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._pending: list[str] = self._read()

    @property
    def durable(self) -> bool:
        return self._path is not None

    def _read(self) -> list[str]:
        if self._path is None or not self._path.exists():
            return []
        return [line.strip() for line in self._path.read_text().splitlines() if line.strip()]

    def add(self, orthanc_study_ids: list[str]) -> None:
        """Append (and fsync) before anything else is done with them."""
        if not orthanc_study_ids:
            return
        with self._lock:
            if self._path is not None:
                fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    os.write(fd, "".join(f"{study}\n" for study in orthanc_study_ids).encode())
                    os.fsync(fd)
                finally:
                    os.close(fd)
            self._pending.extend(orthanc_study_ids)

    def pending(self) -> list[str]:
        with self._lock:
            return list(self._pending)

    def done(self, orthanc_study_id: str) -> None:
        """Recorded: out of the spool (the file is replaced whole, atomically)."""
        with self._lock:
            if orthanc_study_id in self._pending:
                self._pending.remove(orthanc_study_id)
            if self._path is None:
                return
            temporary = self._path.with_suffix(".tmp")
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, "".join(f"{study}\n" for study in self._pending).encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temporary, self._path)
