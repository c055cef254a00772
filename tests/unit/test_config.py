"""``config``: defaults, the JSON section, environment overrides, type checks, redaction."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest

from ehr_imaging.config import (
    ENV_PREFIX,
    SECTION,
    ConfigError,
    Settings,
    env_name,
    load_settings,
    redact_url_password,
)


def section(**values: Any) -> dict[str, Any]:
    return {SECTION: values}


def test_defaults_without_a_section() -> None:
    assert load_settings({}, environ={}) == Settings()
    assert load_settings({SECTION: None}, environ={}) == Settings()
    assert load_settings({SECTION: {}}, environ={}) == Settings()


def test_defaults_are_safe() -> None:
    settings = Settings()
    assert (settings.JwtSecret, settings.SigningSecret, settings.AdminUsers) == ("", "", {})
    assert settings.DatabaseSchema == "ehr_imaging"
    assert Settings().AdminUsers is not settings.AdminUsers  # no shared mutable default


def test_other_orthanc_sections_are_ignored() -> None:
    assert load_settings({"HttpPort": 8042, "DicomWeb": {"Enable": True}}, environ={}) == Settings()


def test_values_from_the_section() -> None:
    settings = load_settings(
        section(DatabaseUrl="postgresql://u:p@h/db", DatabasePoolSize=9, JwtSecret="s", AdminUsers={"root": "pw"}),
        environ={},
    )
    assert settings.DatabaseUrl == "postgresql://u:p@h/db"
    assert settings.DatabasePoolSize == 9
    assert settings.JwtSecret == "s"
    assert settings.AdminUsers == {"root": "pw"}
    assert settings.JwtIssuer == Settings().JwtIssuer  # untouched keys keep their default


def test_environment_overrides_the_section() -> None:
    environ = {
        "EHR_IMAGING_JWT_SECRET": "from-env",
        "EHR_IMAGING_DATABASE_POOL_SIZE": "12",
        "EHR_IMAGING_ADMIN_USERS": json.dumps({"ops": "pw"}),
        "EHR_IMAGING_TOKEN_CACHE_SIZE": " 50 ",
        "UNRELATED": "x",
    }
    settings = load_settings(section(JwtSecret="from-file", DatabasePoolSize=3), environ=environ)
    assert settings.JwtSecret == "from-env"
    assert settings.DatabasePoolSize == 12
    assert settings.AdminUsers == {"ops": "pw"}
    assert settings.TokenCacheSize == 50


def test_empty_environment_value_overrides_too() -> None:
    assert load_settings(section(JwtSecret="from-file"), environ={"EHR_IMAGING_JWT_SECRET": ""}).JwtSecret == ""


def test_os_environ_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EHR_IMAGING_JWT_ISSUER", "issuer-from-os")
    assert load_settings({}).JwtIssuer == "issuer-from-os"


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("JwtSecret", "EHR_IMAGING_JWT_SECRET"),
        ("DatabaseUrl", "EHR_IMAGING_DATABASE_URL"),
        ("AdminSessionTtlSeconds", "EHR_IMAGING_ADMIN_SESSION_TTL_SECONDS"),
        ("JwtPublicKeyFile", "EHR_IMAGING_JWT_PUBLIC_KEY_FILE"),
        ("JwksFile", "EHR_IMAGING_JWKS_FILE"),
        ("DatabaseConnectTimeoutSeconds", "EHR_IMAGING_DATABASE_CONNECT_TIMEOUT_SECONDS"),
    ],
)
def test_env_name(key: str, expected: str) -> None:
    assert env_name(key) == expected


def test_every_setting_has_a_distinct_env_name() -> None:
    names = [env_name(f.name) for f in dataclasses.fields(Settings)]
    assert len(set(names)) == len(names)
    assert all(n.startswith(ENV_PREFIX) and n.isupper() and "__" not in n for n in names)


@pytest.mark.parametrize(
    ("config", "environ", "message"),
    [
        ({SECTION: ["not", "an", "object"]}, {}, "must be an object"),
        ({SECTION: "text"}, {}, "must be an object"),
        (section(JwtSecrett="typo"), {}, "unknown keys in EhrImaging: JwtSecrett"),
        (section(b=1, a=2), {}, "unknown keys in EhrImaging: a, b"),
        (section(DatabasePoolSize="5"), {}, "DatabasePoolSize must be a int"),
        (section(DatabasePoolSize=5.0), {}, "DatabasePoolSize must be a int"),
        (section(DatabasePoolSize=True), {}, "DatabasePoolSize must be a int"),
        (section(DatabasePoolSize=None), {}, "DatabasePoolSize must be a int"),
        (section(JwtSecret=123), {}, "JwtSecret must be a str"),
        (section(JwtSecret=None), {}, "JwtSecret must be a str"),
        (section(AdminUsers=["root", "pw"]), {}, "AdminUsers must be a dict"),
        (section(AdminUsers={"root": 1234}), {}, "AdminUsers must map strings to strings"),
        (section(AdminUsers={"root": None}), {}, "AdminUsers must map strings to strings"),
        ({}, {"EHR_IMAGING_DATABASE_POOL_SIZE": "five"}, "EHR_IMAGING_DATABASE_POOL_SIZE is not a valid int"),
        ({}, {"EHR_IMAGING_DATABASE_POOL_SIZE": ""}, "EHR_IMAGING_DATABASE_POOL_SIZE is not a valid int"),
        ({}, {"EHR_IMAGING_DATABASE_POOL_SIZE": "2.5"}, "EHR_IMAGING_DATABASE_POOL_SIZE is not a valid int"),
        ({}, {"EHR_IMAGING_ADMIN_USERS": "{not json"}, "EHR_IMAGING_ADMIN_USERS is not a valid dict"),
        ({}, {"EHR_IMAGING_ADMIN_USERS": '["root"]'}, "AdminUsers must be a dict"),
        ({}, {"EHR_IMAGING_ADMIN_USERS": '{"root": 1}'}, "AdminUsers must map strings to strings"),
    ],
)
def test_config_errors(config: dict[str, Any], environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(config, environ=environ)
    assert message in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_env_value_of_a_bad_section_key_still_fails_on_unknown_keys() -> None:
    # The environment cannot hide a typo in the JSON file.
    with pytest.raises(ConfigError, match="unknown keys"):
        load_settings(section(Bogus=1), environ={"EHR_IMAGING_JWT_SECRET": "x"})


def test_settings_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().JwtSecret = "x"  # type: ignore[misc]


# --- redaction -------------------------------------------------------------------------------------


def test_redacted_masks_secrets_and_passwords() -> None:
    settings = Settings(
        DatabaseUrl="postgresql://ehr:db-pass@db.example:5432/ehr",
        JwtSecret="jwt-secret",
        SigningSecret="signing-secret",
        AdminUsers={"root": "root-pass", "ops": "ops-pass"},
    )
    redacted = settings.redacted()
    assert redacted["JwtSecret"] == "***"
    assert redacted["SigningSecret"] == "***"
    assert redacted["AdminUsers"] == {"root": "***", "ops": "***"}
    assert redacted["DatabaseUrl"] == "postgresql://ehr:***@db.example:5432/ehr"
    assert set(redacted) == {f.name for f in dataclasses.fields(Settings)}
    text = json.dumps(redacted)
    for secret in ("db-pass", "jwt-secret", "signing-secret", "root-pass", "ops-pass"):
        assert secret not in text
    assert settings.JwtSecret == "jwt-secret"  # the settings themselves are untouched


def test_redacted_keeps_empty_secrets_empty_and_plain_values() -> None:
    redacted = Settings(JwtIssuer="iss", DatabasePoolSize=7).redacted()
    assert (redacted["JwtSecret"], redacted["SigningSecret"], redacted["AdminUsers"]) == ("", "", {})
    assert (redacted["JwtIssuer"], redacted["DatabasePoolSize"]) == ("iss", 7)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u:secret@h/db", "postgresql://u:***@h/db"),
        ("postgresql+psycopg://u:secret@h:5432/db", "postgresql+psycopg://u:***@h:5432/db"),
        ("postgresql://u:p%40ss%2Fw@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:p/w@h/db", "postgresql://u:***@h/db"),
        ("postgresql://:secret@h/db", "postgresql://:***@h/db"),  # empty user name
        ("postgresql://u@h/db?password=secret", "postgresql://u@h/db?password=***"),
        ("postgresql://h/db?sslmode=require&PASSWORD=secret&x=1", "postgresql://h/db?sslmode=require&PASSWORD=***&x=1"),
        ("postgresql://u@h:5432/db", "postgresql://u@h:5432/db"),
        ("postgresql://h:5432/db", "postgresql://h:5432/db"),
        ("", ""),
    ],
)
def test_redact_url_password(url: str, expected: str) -> None:
    assert redact_url_password(url) == expected


@pytest.mark.parametrize("key", ["ApiRequestHeaderTimeoutSeconds", "ApiRequestBodyMinBytesPerSecond",
                                 "ApiIdleTimeoutSeconds", "ApiMaxConnections", "ApiMaxConnectionsPerAddress",
                                 "ApiWorkerThreads", "MaxConcurrentDownloads"])
def test_the_api_ports_limits_cannot_be_switched_off(key: str) -> None:
    """0 would mean no deadline, no connection, no worker or no download at all: refused at start-up."""
    with pytest.raises(ConfigError, match=f"{key} must be at least 1"):
        load_settings({"EhrImaging": {key: 0}}, {})
    assert getattr(load_settings({"EhrImaging": {key: 1}}, {}), key) == 1


def test_orthancs_port_download_limit_may_be_zero() -> None:
    """0: every study's ZIP comes from the API port only."""
    assert load_settings({"EhrImaging": {"MaxOrthancPortDownloadMb": 0}}, {}).MaxOrthancPortDownloadMb == 0


def test_deletion_settings_defaults_and_the_shipped_production_configuration() -> None:
    defaults = Settings()
    assert (defaults.DeletionApproval, defaults.DeletionRequestTtlHours, defaults.DeletedStudyRetentionDays,
            defaults.DeletedStudyDir) == ("none", 72.0, 30.0, "")
    shipped = json.loads((Path(__file__).resolve().parents[2] / "orthanc-config" / "docker" / "orthanc.json")
                         .read_text())
    production = load_settings({SECTION: shipped[SECTION]}, environ={})
    assert production.DeletionApproval == "required"
    assert production.DeletedStudyRetentionDays > 0 and production.DeletedStudyDir


@pytest.mark.parametrize(("values", "environ", "message"), [
    ({"DeletionApproval": "maybe"}, {}, "DeletionApproval must be one of none, required"),
    ({}, {"EHR_IMAGING_DELETION_APPROVAL": "REQUIRED"}, "DeletionApproval must be one of none, required"),
    ({"DeletionRequestTtlHours": 0}, {}, "DeletionRequestTtlHours must be more than 0"),
    ({"DeletionRequestTtlHours": -1.5}, {}, "DeletionRequestTtlHours must be more than 0"),
    ({"DeletionRequestTtlHours": True}, {}, "DeletionRequestTtlHours must be a float"),
    ({"DeletionRequestTtlHours": "72"}, {}, "DeletionRequestTtlHours must be a float"),
    ({"DeletedStudyRetentionDays": -1}, {}, "DeletedStudyRetentionDays must be at least 0"),
    ({}, {"EHR_IMAGING_DELETED_STUDY_RETENTION_DAYS": "thirty"},
     "EHR_IMAGING_DELETED_STUDY_RETENTION_DAYS is not a valid float"),
])
def test_deletion_settings_refused(values: dict[str, Any], environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(section(**values), environ=environ)
    assert message in str(caught.value)


def test_deletion_settings_accepted() -> None:
    loaded = load_settings(section(DeletionApproval="required", DeletionRequestTtlHours=24,
                                   DeletedStudyRetentionDays=0), environ={})
    assert (loaded.DeletionApproval, loaded.DeletionRequestTtlHours, loaded.DeletedStudyRetentionDays) == (
        "required", 24.0, 0.0)
    assert isinstance(loaded.DeletionRequestTtlHours, float)
    from_env = load_settings({}, environ={"EHR_IMAGING_DELETION_REQUEST_TTL_HOURS": "0.5",
                                          "EHR_IMAGING_DELETED_STUDY_RETENTION_DAYS": "7"})
    assert (from_env.DeletionRequestTtlHours, from_env.DeletedStudyRetentionDays) == (0.5, 7.0)


def test_the_readme_documents_every_setting_with_its_environment_variable() -> None:
    """README "Configuration": one row per setting, ``| `Name` | `EHR_IMAGING_NAME` ...`` (a new setting
    fails here until it is documented)."""
    from pathlib import Path

    from ehr_imaging.config import Settings, env_name

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    undocumented = [f.name for f in dataclasses.fields(Settings)
                    if not re.search(rf"^\| `{f.name}` \| `{env_name(f.name)}`", readme, re.M)]
    assert undocumented == []
