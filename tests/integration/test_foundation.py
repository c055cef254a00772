"""The plugin inside a real Orthanc with a real PostgreSQL: health, stats, auth, schema, C-STORE."""

from __future__ import annotations

import base64
import threading
from pathlib import Path

import pytest
import requests
from sqlalchemy import create_engine, text

from ehr_imaging import __version__
from ehr_imaging.store import db, migrations
from ehr_stack.dicom import storescu
from ehr_stack.stack import Stack
from samples.build_samples import build_samples
from tests.conftest import SAMPLES_CACHE, Client

pytestmark = pytest.mark.integration


def test_health_reports_versions_and_database(client: Client) -> None:
    answer = client.get("/api/v1/dicom/health", "admin")
    assert answer.status_code == 200
    body = answer.json()
    assert body["status"] == "healthy"
    assert body["database"] == "ok"
    assert body["plugin_version"] == __version__
    assert body["orthanc_version"] == "1.10.1"
    assert body["schema_version"] == migrations.LATEST_VERSION


@pytest.mark.parametrize("role", [None, "doctor", "ehr-service", "bad-token"])
def test_health_tells_versions_to_administrators_only(client: Client, role: str | None) -> None:
    """Public callers (load balancers) learn healthy or not; the versions stay null (the fields are kept)."""
    headers = {"Authorization": "Bearer not-a-jwt"} if role == "bad-token" else {}
    answer = client.get("/api/v1/dicom/health", None if role == "bad-token" else role, headers=headers)
    assert answer.status_code == 200
    body = answer.json()
    assert body["status"] == "healthy" and body["schema_version"] == migrations.LATEST_VERSION
    assert body["plugin_version"] is None and body["orthanc_version"] is None
    assert __version__ not in answer.text and "1.10.1" not in answer.text


def test_schema_is_at_the_expected_version(stack: Stack) -> None:
    engine = create_engine(db.normalize_url(stack.postgres.url))
    with engine.connect() as conn:
        versions = [row[0] for row in conn.execute(text("SELECT version FROM ehr_imaging.schema_migrations"))]
        tables = {row[0] for row in conn.execute(text(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'ehr_imaging'"))}
    engine.dispose()
    assert versions == [m.version for m in migrations.MIGRATIONS]
    assert {"imaging_orders", "dicom_upload_logs", "dicom_deletion_logs", "schema_migrations"} <= tables


def test_migrations_are_idempotent_and_safe_when_nodes_start_together(stack: Stack) -> None:
    """Eight 'nodes' migrate a fresh database at the same moment: each version applies exactly once."""
    engine = create_engine(db.normalize_url(stack.postgres.url), pool_size=10)
    schema = "race_test"
    with engine.begin() as conn:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
    applied: list[list[int]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def node() -> None:
        try:
            barrier.wait()
            applied.append(migrations.migrate(engine, schema))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=node) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(v for versions in applied for v in versions) == [m.version for m in migrations.MIGRATIONS]
    assert migrations.migrate(engine, schema) == []
    assert migrations.current_version(engine, schema) == migrations.LATEST_VERSION
    with engine.begin() as conn:
        conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    engine.dispose()


def test_stats_needs_a_token(client: Client) -> None:
    answer = client.get("/api/v1/dicom/stats")
    assert answer.status_code == 401
    assert answer.json()["detail"] == "authentication required"
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("role", ["admin", "radiologist", "doctor", "nurse", "technician", "ehr-service"])
def test_stats_answers_every_role(client: Client, role: str) -> None:
    answer = client.get("/api/v1/dicom/stats", role)
    assert answer.status_code == 200
    body = answer.json()
    for key in ("total_studies", "total_series", "total_instances", "disk_size_mb", "total_orders"):
        assert isinstance(body[key], int), key


@pytest.mark.parametrize(
    "header",
    [
        "Bearer not-a-jwt",
        "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.",
        "Token abc",
        "Basic " + base64.b64encode(b"admin:wrong").decode(),
    ],
)
def test_bad_credentials_answer_401_with_detail(client: Client, header: str) -> None:
    answer = client.get("/api/v1/dicom/stats", headers={"Authorization": header})
    assert answer.status_code == 401
    assert answer.json()["detail"]


def test_a_token_signed_with_another_secret_is_refused(client: Client) -> None:
    from ehr_imaging.core.auth import mint_token

    forged = mint_token(secret="not-the-secret-but-long-enough-for-hs256!",
                        issuer=client.stack.settings_value("JwtIssuer"),
                        audience=client.stack.settings_value("JwtAudience"), subject="mallory",
                        roles=["admin"], ttl_seconds=600)
    answer = client.get("/api/v1/dicom/stats", headers={"Authorization": f"Bearer {forged}"})
    assert answer.status_code == 401
    assert client.get("/system", headers={"Authorization": f"Bearer {forged}"}).status_code == 403


def test_unknown_api_path_and_wrong_method_answer_json_404_and_405(client: Client) -> None:
    missing = client.get("/api/v1/dicom/no-such-route", "admin")
    assert missing.status_code == 404
    assert "no route" in missing.json()["detail"]
    wrong = client.request("DELETE", "/api/v1/dicom/health")
    assert wrong.status_code == 405
    assert wrong.headers["Allow"] == "GET"


@pytest.mark.parametrize(
    "path", ["/system", "/studies", "/app/explorer.html", "/dicom-web/studies", "/tools/find", "/",
             "/api/v1/dicom/../../system", "/instances//"],
)
def test_orthanc_itself_is_for_admins_only(client: Client, path: str) -> None:
    assert client.get(path).status_code == 403
    for role in ("doctor", "ehr-service", "radiologist"):
        assert client.get(path, role).status_code == 403, role


def test_admins_reach_orthanc_by_basic_auth_or_admin_token(client: Client) -> None:
    assert client.get("/system", auth=client.stack.admin_auth).status_code == 200
    assert client.get("/system", "admin").json()["Version"] == "1.10.1"
    user, _ = client.stack.admin_auth
    assert client.get("/system", auth=(user, "wrong")).status_code == 403


def test_admin_browser_sign_in_opens_explorer(client: Client) -> None:
    browser = requests.Session()
    challenge = browser.get(f"{client.base}/api/v1/dicom/admin/login", allow_redirects=False, timeout=10)
    assert challenge.status_code == 401
    assert challenge.headers["WWW-Authenticate"].startswith("Basic")
    signed_in = browser.get(f"{client.base}/api/v1/dicom/admin/login?next=//evil.example/",
                            auth=client.stack.admin_auth, allow_redirects=False, timeout=10)
    assert signed_in.status_code == 302
    assert signed_in.headers["Location"] == "/app/explorer.html"
    assert "HttpOnly" in signed_in.headers["Set-Cookie"]
    assert "SameSite=Strict" in signed_in.headers["Set-Cookie"]
    explorer = browser.get(f"{client.base}/app/explorer.html", timeout=10)
    assert explorer.status_code == 200
    assert "Orthanc" in explorer.text
    assert browser.get(f"{client.base}/system", timeout=10).status_code == 200
    browser.post(f"{client.base}/api/v1/dicom/admin/logout", timeout=10)
    assert browser.get(f"{client.base}/system", timeout=10).status_code == 403


def _ct_files(count: int) -> list[Path]:
    manifest = build_samples(SAMPLES_CACHE)
    study = next(s for s in manifest["studies"] if s["modality"] == "CT" and s["instance_count"] >= 100)
    return [SAMPLES_CACHE / f for f in study["series"][0]["files"][:count]]


def test_c_store_from_the_modality_is_counted_by_stats(client: Client) -> None:
    before = client.get("/api/v1/dicom/stats", "ehr-service").json()
    files = _ct_files(5)
    stack = client.stack
    result = storescu(files, host="127.0.0.1", port=stack.config.dicom_port,
                      calling_aet=stack.config.modality_aet, called_aet=stack.config.orthanc_aet)
    assert result.returncode == 0, result.stderr
    after = client.get("/api/v1/dicom/stats", "ehr-service").json()
    assert after["total_instances"] == before["total_instances"] + 5
    assert after["total_studies"] == before["total_studies"] + 1


def test_c_store_from_an_unknown_calling_aet_is_refused(client: Client) -> None:
    before = client.get("/api/v1/dicom/stats", "ehr-service").json()
    stack = client.stack
    result = storescu(_ct_files(1), host="127.0.0.1", port=stack.config.dicom_port,
                      calling_aet="ROGUE", called_aet=stack.config.orthanc_aet)
    assert result.returncode != 0
    after = client.get("/api/v1/dicom/stats", "ehr-service").json()
    assert after["total_instances"] == before["total_instances"]


def test_openapi_document_lists_every_route_with_its_roles(client: Client) -> None:
    assert client.get("/api/v1/dicom/openapi.json").status_code == 401  # any role, not public
    answer = client.get("/api/v1/dicom/openapi.json", "doctor")
    assert answer.status_code == 200
    doc = answer.json()
    assert doc["openapi"].startswith("3.")
    paths = doc["paths"]
    assert paths["/api/v1/dicom/health"]["get"]["x-roles"] == ["public"]
    assert paths["/api/v1/dicom/orders/{order_id}"]["put"]["x-roles"] == ["admin", "ehr-service"]
    assert paths["/api/v1/dicom/orders/{order_id}"]["put"]["parameters"][0]["name"] == "order_id"
    assert "post" in paths["/api/v1/dicom/upload"]
    assert paths["/api/v1/dicom/stats"]["get"]["security"] == [{"bearer": []}]


def test_a_fresh_database_is_read_only_once_migrated(client: Client, stack: Stack) -> None:
    """The session stack started on an empty database: nothing read the plugin's tables before the
    migrations made them (the revocation lists and the upload-job worker start once the schema is there)."""
    assert client.get("/api/v1/dicom/health").json()["database"] == "ok"  # started, and migrated
    log = stack.log_file.read_text(errors="replace")
    assert "schema at version" in log
    for symptom in ("cannot reload revoked", "UndefinedTable", "ProgrammingError", "upload jobs not ready"):
        assert symptom not in log, symptom
