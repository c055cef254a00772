"""A private PostgreSQL cluster in a directory of ours, on a loopback port, with a password.

Three roles (``orthanc-config/postgres-roles.sql``, run at every start): ``ehr`` the superuser, for set-up
only (and tests that read rows directly); ``ehr_imaging`` the plugin, owner of its schema and nothing else;
``orthanc`` Orthanc's index (PostgreSQL-index mode), owner of the database ``orthanc`` and nothing else.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .procs import as_unprivileged, chown_for_unprivileged

SUPERUSER = "ehr"
PLUGIN_ROLE = "ehr_imaging"  # the plugin's role (owns the schema ehr_imaging)
ORTHANC_ROLE = "orthanc"  # Orthanc's index (owns the database orthanc)
ORTHANC_DATABASE = "orthanc"
ROLES_SQL = Path(__file__).resolve().parents[2] / "orthanc-config" / "postgres-roles.sql"


def pg_bin(name: str) -> str:
    """A PostgreSQL server binary: on PATH, else the newest Debian install."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=_version_key)
    if not candidates:
        raise FileNotFoundError(f"PostgreSQL binary {name} not found (apt-get install postgresql)")
    return candidates[-1]


def run_checked(cmd: list[str], env: dict[str, str] | None = None, stdin: str | None = None) -> str:
    """Run a command; on failure raise with its output, which says what PostgreSQL disliked."""
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, input=stdin)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])}... failed ({result.returncode}): {result.stderr.strip()[-1500:]}")
    return result.stdout


def _version_key(path: str) -> int:
    part = path.split("/")[4]
    return int(part) if part.isdigit() else 0


@dataclass
class PostgresCluster:
    root: Path  # holds data/, the socket and the log (mode 0700)
    port: int
    password: str  # the superuser's
    database: str = "ehr_imaging"  # the plugin's database
    plugin_password: str = ""
    orthanc_password: str = ""

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        return self.root / "postgres.log"

    @property
    def url(self) -> str:
        """The superuser's URL: set-up, and tests that read or check rows directly. Not the plugin's."""
        return f"postgresql://{SUPERUSER}:{self.password}@127.0.0.1:{self.port}/{self.database}"

    @property
    def plugin_url(self) -> str:
        """What the plugin connects with: its own role, owner of its schema only."""
        return f"postgresql://{PLUGIN_ROLE}:{self.plugin_password}@127.0.0.1:{self.port}/{self.database}"

    @property
    def orthanc_url(self) -> str:
        """Orthanc's index role and database (PostgreSQL-index mode)."""
        return f"postgresql://{ORTHANC_ROLE}:{self.orthanc_password}@127.0.0.1:{self.port}/{ORTHANC_DATABASE}"

    def _env(self) -> dict[str, str]:
        return {**os.environ, "PGPASSWORD": self.password}

    def ensure_initialized(self) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        chown_for_unprivileged(self.root)
        self.root.chmod(0o700)  # the socket, the log and the data: the cluster's user only
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
        if not self.is_running():
            options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=200"
            run_checked(as_unprivileged([
                pg_bin("pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_file), "-w", "-t", "60",
                "-o", options, "start",
            ]))
        self.root.chmod(0o700)  # also a cluster made before the roles were
        self.ensure_database()
        self.ensure_roles()

    def _psql(self, database: str) -> list[str]:
        return [pg_bin("psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER, "-d", database]

    def ensure_database(self) -> None:
        psql = [*self._psql("postgres"), "-tAc"]
        exists = run_checked([*psql, f"SELECT 1 FROM pg_database WHERE datname = '{self.database}'"], self._env())
        if exists.strip() != "1":
            run_checked([*psql, f'CREATE DATABASE "{self.database}"'], self._env())

    def ensure_roles(self) -> None:
        """The plugin's and Orthanc's roles (idempotent): the same SQL the README gives for production.
        The passwords reach psql on its standard input, never on a command line."""
        if not (self.plugin_password and self.orthanc_password):
            raise ValueError("PostgresCluster needs plugin_password and orthanc_password to create the roles")
        script = (f"\\set plugin_password {_psql_quote(self.plugin_password)}\n"
                  f"\\set orthanc_password {_psql_quote(self.orthanc_password)}\n"
                  + ROLES_SQL.read_text())
        run_checked([*self._psql(self.database), "-q", "-v", "ON_ERROR_STOP=1", "-f", "-"], self._env(), script)

    def pids(self) -> list[int]:
        """The postmaster (from its PID file) and its children: the server's processes, now."""
        try:
            postmaster = int((self.data_dir / "postmaster.pid").read_text().split()[0])
        except (FileNotFoundError, IndexError, ValueError):
            return []
        children = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue  # gone meanwhile
            if int(fields[1]) == postmaster:
                children.append(int(stat.parent.name))
        return [postmaster, *children]

    def freeze(self) -> None:
        """SIGSTOP the server's processes: a hung database (connections accepted, never answered)."""
        self._signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT after ``freeze``: the server carries on where it stopped."""
        self._signal(signal.SIGCONT)

    def _signal(self, sig: signal.Signals) -> None:
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):  # gone meanwhile
                os.kill(pid, sig)

    def stop(self) -> None:
        if self.data_dir.exists() and self.is_running():
            run_checked(as_unprivileged([pg_bin("pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"]))


def _psql_quote(value: str) -> str:
    """A psql meta-command argument in single quotes (``''`` is a quote, backslashes are escapes)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"
