"""The whole local stack: PostgreSQL, then Orthanc with the plugin, plus ``var/stack.env``.

Ports and names come from the environment (documented in README.md) so that two stacks can run side
by side: give each its own ``EHR_VAR_DIR`` and ports. ``EHR_TLS=1``: both HTTP ports speak HTTPS only,
with certificates from ``certs.py``, and an optional plain port answers only redirects.
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import requests

from .certs import TlsFiles, ensure_certificates
from .civetweb_tls import compat_dir
from .ohif import viewer_dir
from .postgres import ORTHANC_DATABASE, ORTHANC_ROLE, PostgresCluster
from .procs import port_in_use, runs, stop_pid, wait_until

REPO = Path(__file__).resolve().parents[2]
BASE_CONFIG = REPO / "orthanc-config" / "orthanc.json"
ENTRY_SCRIPT = REPO / "plugin" / "orthanc_entry.py"
PLUGIN_DIR = Path("/usr/share/orthanc/plugins")
LOOPBACK = "127.0.0.1"
# Orthanc and what it writes (storage, index, logs): the stack's user only (README "Security: files and ports").
PRIVATE_UMASK = 0o077


@dataclass
class StackConfig:
    var_dir: Path
    http_port: int = 8042
    dicom_port: int = 4242
    api_port: int = 8044  # the plugin's own listener for the EHR API (form uploads, query strings on POST)
    pg_port: int = 55432
    orthanc_aet: str = "EHRIMAGING"
    modality_aet: str = "EHRMODALITY"
    index: str = "sqlite"  # or "postgresql": Orthanc's own index in the shared PostgreSQL
    # Where the listeners may be reached from: loopback only by default (EHR_LISTEN_ADDRESS=0.0.0.0 opens them).
    listen_address: str = LOOPBACK
    venv: Path = field(default_factory=lambda: Path(sys.prefix))
    samples_dir: Path | None = None  # None: <var_dir>/samples
    with_plugin: bool = True  # False: plain Orthanc, the baseline benchmarks compare against
    with_gdcm: bool = True  # False: without the GDCM decoder plugin (the benchmark's baseline for it)
    # Another stack's var_dir: run one more Orthanc node on its PostgreSQL, secrets and storage (a cluster).
    node_of: Path | None = None
    stable_age: int | None = None  # seconds; None keeps orthanc-config's value
    extra_settings: dict[str, Any] = field(default_factory=dict)  # EhrImaging overrides (tests)
    orthanc_overrides: dict[str, Any] = field(default_factory=dict)  # top-level Orthanc settings (tests)
    tls: bool = False  # HTTPS only on Orthanc's port and the API port (EHR_TLS=1)
    redirect_port: int = 0  # with tls: a plain-HTTP port that answers only redirects to HTTPS; 0: none

    @classmethod
    def from_environment(cls) -> StackConfig:
        env = os.environ
        return cls(
            var_dir=Path(env.get("EHR_VAR_DIR", REPO / "var")).resolve(),
            http_port=int(env.get("ORTHANC_HTTP_PORT", 8042)),
            dicom_port=int(env.get("ORTHANC_DICOM_PORT", 4242)),
            api_port=int(env.get("EHR_API_PORT", 8044)),
            pg_port=int(env.get("PG_PORT", 55432)),
            orthanc_aet=env.get("ORTHANC_AET", "EHRIMAGING"),
            modality_aet=env.get("MODALITY_AET", "EHRMODALITY"),
            index=env.get("ORTHANC_INDEX", "sqlite"),
            listen_address=env.get("EHR_LISTEN_ADDRESS", LOOPBACK),
            venv=Path(env.get("EHR_VENV", sys.prefix)),
            samples_dir=Path(env["EHR_SAMPLES_DIR"]).resolve() if env.get("EHR_SAMPLES_DIR") else None,
            tls=env.get("EHR_TLS", "0").strip().lower() in ("1", "true", "yes", "on"),
            redirect_port=int(env.get("EHR_HTTP_REDIRECT_PORT", 8040)),
        )


@dataclass(frozen=True)
class Secrets:
    pg_password: str  # PostgreSQL's superuser (set-up only)
    jwt_secret: str
    admin_user: str
    admin_password: str
    pg_plugin_password: str = ""  # the plugin's role; "" in a secrets.json from before the roles: generated
    pg_orthanc_password: str = ""  # Orthanc's index role

    @classmethod
    def load_or_create(cls, path: Path) -> Secrets:
        loaded: dict[str, str] = json.loads(path.read_text()) if path.exists() else {
            "pg_password": secrets.token_urlsafe(18),
            "jwt_secret": secrets.token_urlsafe(32),
            "admin_user": "admin",
            "admin_password": secrets.token_urlsafe(12),
        }
        missing = {key: secrets.token_urlsafe(18) for key in ("pg_plugin_password", "pg_orthanc_password")
                   if not loaded.get(key)}
        result = cls(**{**loaded, **missing})
        if missing or not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                json.dump(result.__dict__, handle)
        return result


class Stack:
    def __init__(self, config: StackConfig) -> None:
        self.config = config
        config.var_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Private to the stack's user; as root, PostgreSQL's user must still pass through (not list) it.
        config.var_dir.chmod(0o711 if os.geteuid() == 0 else 0o700)
        shared = config.node_of or config.var_dir
        self.secrets = Secrets.load_or_create(shared / "secrets.json")
        self.postgres = PostgresCluster(shared / "postgres", config.pg_port, self.secrets.pg_password,
                                        plugin_password=self.secrets.pg_plugin_password,
                                        orthanc_password=self.secrets.pg_orthanc_password)
        self.storage_dir = shared / "orthanc" / "storage"

    # --- paths and derived values -------------------------------------------------------------
    @property
    def orthanc_dir(self) -> Path:
        return self.config.var_dir / "orthanc"

    @property
    def pid_file(self) -> Path:
        return self.orthanc_dir / "orthanc.pid"

    @property
    def config_path(self) -> Path:
        return self.orthanc_dir / "orthanc.json"

    @property
    def log_file(self) -> Path:
        return self.orthanc_dir / "orthanc.log"

    @property
    def upload_job_dir(self) -> Path:
        """The plugin's upload-job folder (UploadJobDir): this node's, private, never the shared temp folder."""
        return self.orthanc_dir / "upload-jobs"

    @property
    def scheme(self) -> str:
        return "https" if self.config.tls else "http"

    @property
    def deleted_study_dir(self) -> Path:
        """Deleted studies' files until purged (DeletedStudyDir): shared by the nodes, like the storage."""
        return (self.config.node_of or self.config.var_dir) / "orthanc" / "deleted-studies"

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.config.http_port}"

    @property
    def api_url(self) -> str:
        """The plugin's own API listener (the EHR API with full HTTP; see api/listener.py)."""
        return f"{self.scheme}://127.0.0.1:{self.config.api_port}"

    @property
    def redirect_url(self) -> str | None:
        """The plain-HTTP port that only redirects (TLS stacks with a redirect port)."""
        if not (self.config.tls and self.config.redirect_port and self.config.with_plugin):
            return None
        return f"http://127.0.0.1:{self.config.redirect_port}"

    @functools.cached_property
    def tls_files(self) -> TlsFiles | None:
        """The CA and the server certificate (made on first use; shared by a cluster's nodes)."""
        if not self.config.tls:
            return None
        hosts = ["localhost", "127.0.0.1", "::1"]
        if self.config.listen_address not in (LOOPBACK, "0.0.0.0", "::"):
            hosts.append(self.config.listen_address)
        return ensure_certificates((self.config.node_of or self.config.var_dir) / "tls", hosts)

    @property
    def verify(self) -> str | bool:
        """What a client of this stack passes to ``requests`` as ``verify``: the stack's CA, or True."""
        files = self.tls_files
        return str(files.ca_file) if files else True

    @property
    def admin_auth(self) -> tuple[str, str]:
        return (self.secrets.admin_user, self.secrets.admin_password)

    def env_values(self) -> dict[str, str]:
        """The contract of ``var/stack.env`` (README lists each key)."""
        c, s = self.config, self.secrets
        return {
            "ORTHANC_URL": self.url,
            "API_BASE_URL": f"{self.api_url}/api/v1/dicom",
            "API_PORT": str(c.api_port),
            "EXPLORER_URL": f"{self.url}/api/v1/dicom/admin/login",
            "DICOM_HOST": "127.0.0.1",
            "DICOM_PORT": str(c.dicom_port),
            "DICOM_AET": c.orthanc_aet,
            "MODALITY_AET": c.modality_aet,
            "DATABASE_URL": self.postgres.plugin_url,
            "DATABASE_ADMIN_URL": self.postgres.url,
            "JWT_SECRET": s.jwt_secret,
            "JWT_ISSUER": self.settings_value("JwtIssuer"),
            "JWT_AUDIENCE": self.settings_value("JwtAudience"),
            "ADMIN_USER": s.admin_user,
            "ADMIN_PASSWORD": s.admin_password,
            "PG_PORT": str(c.pg_port),
            "ORTHANC_INDEX": c.index,
            **self._tls_env_values(),
        }

    def _tls_env_values(self) -> dict[str, str]:
        files = self.tls_files
        if files is None:
            return {}
        values = {"TLS_CA_FILE": str(files.ca_file)}
        if self.redirect_url:
            values["HTTP_REDIRECT_URL"] = self.redirect_url
        return values

    def settings_value(self, key: str) -> str:
        value = self.config.extra_settings.get(key) or _base_config()["EhrImaging"].get(key, "")
        return str(value)

    # --- configuration ------------------------------------------------------------------------
    def orthanc_config(self) -> dict[str, Any]:
        c = self.config
        cfg = _base_config()
        cfg.update({
            "HttpPort": c.http_port,
            "DicomPort": c.dicom_port,
            "DicomAet": c.orthanc_aet,
            "StorageDirectory": str(self.storage_dir),
            "IndexDirectory": str(self.orthanc_dir / "index"),
            "PythonScript": str(ENTRY_SCRIPT),
            # Only this modality, and only from loopback (DicomCheckModalityHost): it may C-STORE, C-ECHO and
            # ask its worklist; never C-FIND, C-MOVE or C-GET the archive (README "Security: DICOM services").
            "DicomModalities": {"modality": modality_entry(c.modality_aet, "127.0.0.1", 11112)},
        })
        if c.stable_age is not None:
            cfg["StableAge"] = c.stable_age
        # Orthanc 1.10 binds its HTTP and DICOM ports on every interface (it has no bind-address option):
        # on loopback, its HTTP server refuses every other caller, and only the modalities configured (from
        # their host) may even C-ECHO (README "Security: files and ports").
        cfg["RemoteAccessAllowed"] = cfg["DicomAlwaysAllowEcho"] = c.listen_address != LOOPBACK
        tls = self.tls_files
        if tls is not None:  # HTTPS only: Orthanc's port has no plain-HTTP side once SslEnabled
            cfg.update({"SslEnabled": True, "SslCertificate": str(tls.server_pem), "SslMinimumProtocolVersion": 4})
            cfg["DicomWeb"] = {**cfg.get("DicomWeb", {}), "Ssl": True}  # https:// in the URLs it answers
        cfg.update(c.orthanc_overrides)
        # Secrets reach the plugin through the environment (see orthanc_environment), not this file.
        cfg["EhrImaging"] = {**cfg.get("EhrImaging", {}), "VirtualEnv": str(c.venv),
                             "PublicBaseUrl": self.url, "ApiPort": c.api_port,
                             "ApiListenAddress": c.listen_address, "UploadJobDir": str(self.upload_job_dir),
                             "DeletedStudyDir": str(self.deleted_study_dir),
                             "ViewerAppDir": str(viewer_dir()), **self._tls_settings(), **c.extra_settings}
        if not c.with_plugin:
            cfg["Plugins"] = [p for p in cfg["Plugins"] if not p.endswith("libOrthancPython.so")]
            del cfg["PythonScript"], cfg["EhrImaging"]
        if not c.with_gdcm:
            cfg["Plugins"] = [p for p in cfg["Plugins"] if not p.endswith("libOrthancGdcm.so")]
            cfg.pop("Gdcm", None)
        if c.index == "postgresql":
            cfg["Plugins"] = [*cfg["Plugins"], str(PLUGIN_DIR / "libOrthancPostgreSQLIndex.so")]
            cfg["PostgreSQL"] = {
                "EnableIndex": True, "EnableStorage": False, "Host": "127.0.0.1", "Port": c.pg_port,
                # Orthanc's own role and database: the plugin's role cannot reach them, nor Orthanc the plugin's.
                "Database": ORTHANC_DATABASE, "Username": ORTHANC_ROLE, "Password": "${EHR_PG_ORTHANC_PASSWORD}",
                "Lock": False, "EnableSsl": False,
            }
        elif c.index != "sqlite":
            raise ValueError(f"ORTHANC_INDEX must be sqlite or postgresql, not {c.index!r}")
        return cfg

    def _tls_settings(self) -> dict[str, Any]:
        tls = self.tls_files
        if tls is None:
            return {}
        return {"ApiTlsCertificateFile": str(tls.server_pem), "ApiPublicBaseUrl": self.api_url,
                "HttpRedirectPort": self.config.redirect_port if self.redirect_url else 0}

    def orthanc_environment(self) -> dict[str, str]:
        """Orthanc's environment: the plugin's own database role; never PostgreSQL's superuser password."""
        s = self.secrets
        env = {key: value for key, value in os.environ.items() if key not in ("PGPASSWORD", "EHR_PG_PASSWORD")}
        env.update({
            "TCP_NODELAY": "1",  # DCMTK otherwise delays every C-STORE reply (ARCHITECTURE.md)
            "EHR_IMAGING_DATABASE_URL": self.postgres.plugin_url,
            "EHR_IMAGING_JWT_SECRET": s.jwt_secret,
            "EHR_IMAGING_ADMIN_USERS": json.dumps({s.admin_user: s.admin_password}),
        })
        if self.config.index == "postgresql":
            env["EHR_PG_ORTHANC_PASSWORD"] = s.pg_orthanc_password
        tls = self.tls_files
        if tls is not None:  # Debian's civetweb + OpenSSL 3 crash without it (civetweb_tls.py)
            env["LD_LIBRARY_PATH"] = ":".join(filter(None, [str(compat_dir(tls.folder / "openssl-compat")),
                                                            env.get("LD_LIBRARY_PATH")]))
        return env

    # --- lifecycle ----------------------------------------------------------------------------
    def orthanc_pid(self) -> int | None:
        """The PID of this stack's running Orthanc: alive, not a zombie, ``Orthanc`` with this stack's config."""
        try:
            pid = int(self.pid_file.read_text())
        except (FileNotFoundError, ValueError):
            return None
        return pid if runs(pid, "Orthanc", str(self.config_path)) else None

    @property
    def needs_postgres(self) -> bool:
        return self.config.with_plugin or self.config.index == "postgresql"

    def healthy(self) -> bool:
        path = "/api/v1/dicom/health" if self.config.with_plugin else "/system"
        try:
            return requests.get(self.url + path, timeout=2, verify=self.verify).status_code == 200
        except requests.RequestException:
            return False

    def start(self, *, foreground_output: IO[str] | None = None, timeout: float = 90) -> subprocess.Popen[str] | None:
        """Start PostgreSQL and Orthanc unless already up; wait until the plugin answers healthy."""
        if self.needs_postgres:
            self.postgres.start()
        if self.orthanc_pid() is not None:
            wait_until(self.healthy, timeout, "the running Orthanc to be healthy")
            return None
        ports = [self.config.http_port, self.config.dicom_port]
        if self.config.with_plugin:
            ports.append(self.config.api_port)
        if self.redirect_url:
            ports.append(self.config.redirect_port)
        for port in ports:
            if port_in_use(port):
                raise RuntimeError(f"port {port} is already in use: set ORTHANC_HTTP_PORT / ORTHANC_DICOM_PORT"
                                   " / EHR_API_PORT / EHR_HTTP_REDIRECT_PORT")
        self.make_private_dirs()
        config_path = self.config_path
        _write_private(config_path, json.dumps(self.orthanc_config(), indent=2))
        output: IO[str] = foreground_output or _open_private_log(self.log_file)
        proc = subprocess.Popen(
            ["Orthanc", str(config_path)], env=self.orthanc_environment(), stdout=output,
            stderr=subprocess.STDOUT, start_new_session=foreground_output is None, text=True,
            umask=PRIVATE_UMASK,
        )
        _write_private(self.pid_file, str(proc.pid))

        def ready() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {proc.returncode}; see {self.log_file}")
            return self.healthy()

        try:
            wait_until(ready, timeout, "Orthanc and the plugin to answer healthy")
        except BaseException:
            stop_pid(proc.pid)
            raise
        self.write_env_file()
        return proc

    def make_private_dirs(self) -> None:
        """Orthanc's folders, mode 0700 (also those of a var/ made before; files in them keep their modes,
        but nobody else can reach them any more)."""
        for path in (self.orthanc_dir, self.storage_dir.parent, self.storage_dir, self.orthanc_dir / "index"):
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            path.chmod(0o700)

    def stop(self) -> None:
        pid = self.orthanc_pid()
        if pid is not None:
            stop_pid(pid)
        self.pid_file.unlink(missing_ok=True)
        if self.config.node_of is None:  # a cluster's extra node leaves the shared database running
            self.postgres.stop()

    def write_env_file(self) -> Path:
        path = self.config.var_dir / "stack.env"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            for key, value in self.env_values().items():
                handle.write(f"{key}={_shell_quote(value)}\n")
        return path


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def _open_private_log(path: Path) -> IO[str]:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, "a")


def _shell_quote(value: str) -> str:
    if value and all(ch.isalnum() or ch in "-_./:@=+,%" for ch in value):
        return value
    return "'" + value.replace("'", "'\"'\"'") + "'"


def modality_entry(aet: str, host: str, port: int, **allow: bool) -> dict[str, Any]:
    """A ``DicomModalities`` entry in object form: store, echo and worklist; query/retrieve only if asked."""
    return {"AET": aet, "Host": host, "Port": port, "AllowEcho": True, "AllowStore": True,
            "AllowFindWorklist": True, "AllowFind": False, "AllowMove": False, "AllowGet": False,
            "AllowStorageCommitment": False, **allow}


def _base_config() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(BASE_CONFIG.read_text())
    return loaded
