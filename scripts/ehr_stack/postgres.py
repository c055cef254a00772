"""A private PostgreSQL cluster in a directory of ours, on a loopback port, with a password."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .procs import as_unprivileged, chown_for_unprivileged

SUPERUSER = "ehr"


def pg_bin(name: str) -> str:
    """A PostgreSQL server binary: on PATH, else the newest Debian install."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=_version_key)
    if not candidates:
        raise FileNotFoundError(f"PostgreSQL binary {name} not found (apt-get install postgresql)")
    return candidates[-1]


def run_checked(cmd: list[str], env: dict[str, str] | None = None) -> str:
    """Run a command; on failure raise with its output, which says what PostgreSQL disliked."""
    result = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])}... failed ({result.returncode}): {result.stderr.strip()[-1500:]}")
    return result.stdout


def _version_key(path: str) -> int:
    part = path.split("/")[4]
    return int(part) if part.isdigit() else 0


@dataclass
class PostgresCluster:
    root: Path  # holds data/, the socket and the log
    port: int
    password: str
    database: str = "ehr_imaging"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        return self.root / "postgres.log"

    @property
    def url(self) -> str:
        return f"postgresql://{SUPERUSER}:{self.password}@127.0.0.1:{self.port}/{self.database}"

    def _env(self) -> dict[str, str]:
        return {**os.environ, "PGPASSWORD": self.password}

    def ensure_initialized(self) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.root.mkdir(parents=True, exist_ok=True)
        chown_for_unprivileged(self.root)
        with tempfile.NamedTemporaryFile("w", dir=self.root, delete=False) as pwfile:
            pwfile.write(self.password + "\n")
        chown_for_unprivileged(Path(pwfile.name))
        try:
            run_checked(as_unprivileged([
                pg_bin("initdb"), "-D", str(self.data_dir), "-U", SUPERUSER, f"--pwfile={pwfile.name}",
                "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C.UTF-8",
            ]))
        finally:
            os.unlink(pwfile.name)

    def is_running(self) -> bool:
        result = subprocess.run(
            as_unprivileged([pg_bin("pg_ctl"), "-D", str(self.data_dir), "status"]), capture_output=True
        )
        return result.returncode == 0

    def start(self) -> None:
        self.ensure_initialized()
        if self.is_running():
            return
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=200"
        run_checked(as_unprivileged([
            pg_bin("pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_file), "-w", "-t", "60",
            "-o", options, "start",
        ]))
        self.ensure_database()

    def ensure_database(self) -> None:
        psql = [pg_bin("psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER, "-d", "postgres", "-tAc"]
        exists = run_checked([*psql, f"SELECT 1 FROM pg_database WHERE datname = '{self.database}'"], self._env())
        if exists.strip() != "1":
            run_checked([*psql, f'CREATE DATABASE "{self.database}"'], self._env())

    def stop(self) -> None:
        if self.data_dir.exists() and self.is_running():
            run_checked(as_unprivileged([pg_bin("pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"]))
