"""Security review items 15 and 16 on the real stack: private files and folders, loopback-only listeners,
a private upload-job folder that is refused when it is not private, and least-privilege database roles."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError, ProgrammingError

from ehr_imaging.store.db import normalize_url
from ehr_stack.postgres import ORTHANC_DATABASE, ORTHANC_ROLE, PLUGIN_ROLE
from ehr_stack.stack import Stack
from tests.conftest import Client, running_stack
from tests.dicom_factory import make_study, send
from tests.integration.helpers import finished_job, mrn
from tests.zip_factory import files_zip

pytestmark = pytest.mark.integration


# --- helpers ---------------------------------------------------------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def open_to_others(root: Path) -> list[str]:
    """Every file or folder under ``root`` (itself included) that group or others may read, write or enter."""
    found = [f"{root} {mode(root):04o}"] if mode(root) & 0o077 else []
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            if mode(path) & 0o077:
                found.append(f"{path} {mode(path):04o}")
    return found


def rows(url: str, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    engine = create_engine(normalize_url(url))
    try:
        with engine.begin() as conn:
            result = conn.execute(text(sql), params)
            return [tuple(row) for row in result] if result.returns_rows else []
    finally:
        engine.dispose()


def refused(url: str, sql: str) -> str:
    """Run ``sql`` as the URL's role; it must fail with a permission error (returned for the assertion)."""
    with pytest.raises((ProgrammingError, OperationalError)) as caught:
        rows(url, sql)
    message = str(caught.value.orig)
    assert "permission denied" in message, message
    return message


def with_database(url: str, database: str) -> str:
    return url.rsplit("/", 1)[0] + "/" + database


def non_loopback_address() -> str:
    """An IPv4 address of this machine that is not loopback (the route a remote caller would use)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
            address: str = probe.getsockname()[0]
        except OSError:
            address = ""
    if not address or address.startswith("127."):
        pytest.skip("this machine has no non-loopback IPv4 address to call from")
    return address



def upload_zip(api: Client, data: bytes) -> requests.Response:
    return api.request("POST", "/api/v1/dicom/upload-zip", "technician",
                       files={"file": ("cd.zip", data, "application/zip")})


# --- item 15: files, folders, listeners -------------------------------------------------------------------


def test_stored_files_and_the_index_are_private_to_orthancs_user(stack: Stack, tmp_path: Path) -> None:
    """Orthanc runs with umask 077 in folders of mode 0700: nothing it writes is readable by other users."""
    _, files = make_study(tmp_path, patient_id=mrn(), accession=None, study_date="20261120", instances=3)
    send(stack, files)
    stored = [p for p in stack.storage_dir.rglob("*") if p.is_file()]
    assert len(stored) >= 3
    assert open_to_others(stack.storage_dir) == []
    index = stack.orthanc_dir / "index" / "index"  # Orthanc's SQLite index
    assert index.is_file()
    assert open_to_others(stack.orthanc_dir) == []  # index, configuration, log, upload jobs
    assert mode(stack.postgres.root) == 0o700  # PostgreSQL's socket, log and data
    for secret in ("secrets.json", "stack.env"):
        assert mode(stack.config.var_dir / secret) == 0o600
    # The stack's folder: others may not list it (as root, PostgreSQL's user must pass through it).
    assert mode(stack.config.var_dir) == (0o711 if os.geteuid() == 0 else 0o700)


def test_the_listeners_answer_loopback_only(stack: Stack, client: Client) -> None:
    """Orthanc 1.10 binds HTTP on every interface (no bind option): with RemoteAccessAllowed false it refuses
    a caller from another address before the plugin's filter (401, empty body, even with an administrator's
    credentials that the filter would accept); the plugin's own API port binds loopback; DICOM associations
    are rejected for every caller but the configured modality from its host (no C-ECHO for strangers)."""
    address = non_loopback_address()
    assert client.get("/api/v1/dicom/health").status_code == 200  # from loopback
    remote = f"http://{address}:{stack.config.http_port}"
    for auth in (None, stack.admin_auth):
        answer = requests.get(remote + "/api/v1/dicom/health", auth=auth, timeout=10)
        assert (answer.status_code, answer.content) == (401, b"")
        assert requests.get(remote + "/patients", auth=auth, timeout=10).status_code == 401
    with socket.socket() as probe:  # nothing listens on the API port but loopback
        probe.settimeout(5)
        assert probe.connect_ex((address, stack.config.api_port)) != 0
    assert requests.get(stack.api_url + "/api/v1/dicom/health", timeout=10).status_code == 200
    # DICOM (also on every interface): only the configured modality, from its host, gets an association.
    assert echo(stack, "127.0.0.1", stack.config.modality_aet).returncode == 0
    for host, aet in ((address, stack.config.modality_aet), (address, "STRANGER"), ("127.0.0.1", "STRANGER")):
        refused = echo(stack, host, aet)
        assert refused.returncode != 0 and "Association Rejected" in refused.stderr + refused.stdout, (host, aet)


def echo(stack: Stack, host: str, calling_aet: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["echoscu", "-aet", calling_aet, "-aec", stack.config.orthanc_aet, host,
                           str(stack.config.dicom_port)], capture_output=True, text=True, timeout=30)


# --- item 16: database roles (SQLite index) ---------------------------------------------------------------


def test_the_plugin_connects_with_its_own_role_that_owns_only_its_schema(stack: Stack) -> None:
    plugin, admin = stack.postgres.plugin_url, stack.postgres.url
    [(user, superuser, createdb, createrole)] = rows(
        plugin, "SELECT current_user, rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = current_user")
    assert (user, superuser, createdb, createrole) == (PLUGIN_ROLE, False, False, False)
    # The plugin's migrations ran as its role: the schema and every object in it belong to it.
    owners = rows(admin, "SELECT DISTINCT pg_get_userbyid(c.relowner) FROM pg_class c"
                         " WHERE c.relnamespace = 'ehr_imaging'::regnamespace")
    assert owners == [(PLUGIN_ROLE,)]
    assert rows(admin, "SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'ehr_imaging'") \
        == [(PLUGIN_ROLE,)]
    # ... and it owns nothing else: no other schema, no table in public, no other database.
    refused(plugin, "CREATE SCHEMA ehr_imaging_extra")
    refused(plugin, "CREATE TABLE public.ehr_imaging_probe (id int)")
    refused(plugin, "CREATE TABLE ehr_imaging_ext.ehr_imaging_probe (id int)")  # pg_trgm's: used, not owned
    refused(with_database(plugin, ORTHANC_DATABASE), "SELECT 1")
    # What the running plugin was given: its role's URL, never PostgreSQL's superuser password.
    environ = Path(f"/proc/{stack.orthanc_pid()}/environ").read_bytes().decode(errors="replace").split("\0")
    assert f"EHR_IMAGING_DATABASE_URL={plugin}" in environ
    assert not any(stack.secrets.pg_password in entry for entry in environ)
    env_file = (stack.config.var_dir / "stack.env").read_text()
    assert f"DATABASE_URL={plugin}\n" in env_file and "DATABASE_ADMIN_URL=" in env_file


# --- the PostgreSQL-index stack: Orthanc's role, and the upload-job folder -------------------------------


@pytest.fixture(scope="module")
def pg_stack() -> Iterator[Stack]:
    with running_stack("ops-security", index="postgresql",
                       extra_settings={"Timezone": "UTC", "UploadJobAboveFiles": 3}) as own:
        yield own


def test_orthanc_and_the_plugin_cannot_reach_each_others_tables(pg_stack: Stack, tmp_path: Path) -> None:
    stack = pg_stack
    _, files = make_study(tmp_path, patient_id=mrn(), accession=None, study_date="20261120", instances=2)
    send(stack, files)
    admin, plugin, orthanc = stack.postgres.url, stack.postgres.plugin_url, stack.postgres.orthanc_url
    admin_on_orthanc = with_database(admin, ORTHANC_DATABASE)
    # Orthanc's index lives in its own database, created by its own (unprivileged) role.
    tables = dict(rows(admin_on_orthanc, "SELECT tablename, tableowner FROM pg_tables WHERE schemaname = 'public'"))
    assert "resources" in tables and set(tables.values()) == {ORTHANC_ROLE}
    assert rows(orthanc, "SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = current_user") \
        == [(False, False, False)]
    assert rows(orthanc, "SELECT count(*) FROM resources")[0][0] >= 4  # patient, study, series, instances
    # The plugin's role may not even connect there; nor Orthanc's role to the plugin's database.
    refused(with_database(plugin, ORTHANC_DATABASE), "SELECT 1")
    refused(with_database(orthanc, stack.postgres.database), "SELECT 1")
    # Even if it could connect, it could neither read nor write the index's tables (nor Orthanc the plugin's).
    rows(admin_on_orthanc, f"GRANT CONNECT ON DATABASE {ORTHANC_DATABASE} TO {PLUGIN_ROLE}")
    rows(admin, f"GRANT CONNECT ON DATABASE {stack.postgres.database} TO {ORTHANC_ROLE}")
    try:
        refused(with_database(plugin, ORTHANC_DATABASE), "SELECT count(*) FROM resources")
        refused(with_database(plugin, ORTHANC_DATABASE), "DELETE FROM resources")
        refused(with_database(plugin, ORTHANC_DATABASE), "CREATE TABLE public.probe (id int)")
        refused(with_database(orthanc, stack.postgres.database), "SELECT count(*) FROM ehr_imaging.imaging_orders")
    finally:
        rows(admin_on_orthanc, f"REVOKE CONNECT ON DATABASE {ORTHANC_DATABASE} FROM {PLUGIN_ROLE}")
        rows(admin, f"REVOKE CONNECT ON DATABASE {stack.postgres.database} FROM {ORTHANC_ROLE}")
    # Orthanc's process holds its own role's password only.
    environ = Path(f"/proc/{stack.orthanc_pid()}/environ").read_bytes().decode(errors="replace")
    assert stack.secrets.pg_password not in environ
    # The stack works as before: the study is in Orthanc and the plugin answers healthy.
    health = Client(stack).get("/api/v1/dicom/health").json()
    assert health["status"] == "healthy" and health["database"] == "ok"
    assert Client(stack).get("/api/v1/dicom/stats", "admin").json()["total_instances"] >= 2


def job_rows(stack: Stack) -> int:
    count: int = rows(stack.postgres.url, "SELECT count(*) FROM ehr_imaging.upload_jobs")[0][0]
    return count


def test_upload_jobs_use_a_private_folder_and_refuse_an_unsafe_one(pg_stack: Stack, tmp_path: Path) -> None:
    stack = pg_stack
    api = Client(stack, stack.api_url)
    base = stack.upload_job_dir
    assert base.is_relative_to(stack.config.var_dir)  # not the shared temp folder
    [node_dir] = list(base.iterdir())  # made at start-up, one per node
    assert mode(base) == 0o700 and mode(node_dir) == 0o700
    _, files = make_study(tmp_path, patient_id=mrn(), accession=None, study_date="20261120", instances=5)
    data = files_zip(files, compression=zipfile.ZIP_DEFLATED)

    def refused_job(reason: str) -> None:
        before, log_size = job_rows(stack), stack.log_file.stat().st_size
        answer = upload_zip(api, data)
        assert answer.status_code == 503, answer.text
        assert "job folder is not usable" in answer.json()["detail"]
        assert str(stack.config.var_dir) not in answer.text  # the path is for the log, not for the caller
        assert job_rows(stack) == before  # refused before a job exists
        with stack.log_file.open() as log:
            log.seek(log_size)
            assert reason in log.read()

    base.chmod(0o750)  # open to the group
    refused_job("is open to group or others")
    base.chmod(0o700)
    node_dir.chmod(0o705)  # open to others
    refused_job("is open to group or others")
    node_dir.chmod(0o700)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    node_dir.rename(tmp_path / "moved")
    node_dir.symlink_to(elsewhere)  # a link, even to a private folder of ours
    refused_job("is a symbolic link")
    node_dir.unlink()
    (tmp_path / "moved").rename(node_dir)
    if os.geteuid() == 0:  # a folder of another user
        subprocess.run(["chown", "postgres:", str(base)], check=True)
        try:
            refused_job("not to Orthanc's user")
        finally:
            os.chown(base, 0, 0)
    # Fixed: the same upload runs as a job again, and its archive never left the private folder.
    answer = upload_zip(api, data)
    assert answer.status_code == 202, answer.text
    status = finished_job(api, answer.json()["status_url"])
    assert status["status"] == "completed" and status["successful"] == 5, status
    assert list(elsewhere.iterdir()) == []
    shutil.rmtree(elsewhere)
