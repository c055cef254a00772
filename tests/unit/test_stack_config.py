"""The development stack's generated configuration (no servers): loopback, private folders, database roles."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from ehr_stack.postgres import ORTHANC_DATABASE, ORTHANC_ROLE, PLUGIN_ROLE, _psql_quote
from ehr_stack.stack import Secrets, Stack, StackConfig


def stack(tmp_path: Path, **overrides: object) -> Stack:
    config = StackConfig(var_dir=tmp_path / "var", **overrides)  # type: ignore[arg-type]
    return Stack(config)


def test_development_listeners_are_loopback_by_default(tmp_path: Path) -> None:
    cfg = stack(tmp_path).orthanc_config()
    assert cfg["RemoteAccessAllowed"] is False  # Orthanc 1.10 cannot bind loopback: it refuses other callers
    assert cfg["DicomAlwaysAllowEcho"] is False  # only the configured modalities, from their host, associate
    assert cfg["EhrImaging"]["ApiListenAddress"] == "127.0.0.1"
    opened = stack(tmp_path, listen_address="0.0.0.0").orthanc_config()
    assert opened["RemoteAccessAllowed"] is True and opened["EhrImaging"]["ApiListenAddress"] == "0.0.0.0"
    assert opened["DicomAlwaysAllowEcho"] is True


def test_the_environment_can_open_the_listeners(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EHR_LISTEN_ADDRESS", raising=False)
    assert StackConfig.from_environment().listen_address == "127.0.0.1"
    monkeypatch.setenv("EHR_LISTEN_ADDRESS", "0.0.0.0")
    assert StackConfig.from_environment().listen_address == "0.0.0.0"


def test_the_upload_job_folder_is_under_the_stacks_own_folder(tmp_path: Path) -> None:
    own = stack(tmp_path)
    job_dir = Path(own.orthanc_config()["EhrImaging"]["UploadJobDir"])
    assert job_dir == own.upload_job_dir and job_dir.is_relative_to(own.config.var_dir)


def test_deleted_studies_are_kept_in_the_folder_the_nodes_share(tmp_path: Path) -> None:
    own = stack(tmp_path / "a")
    kept = Path(own.orthanc_config()["EhrImaging"]["DeletedStudyDir"])
    assert kept == own.deleted_study_dir == own.config.var_dir / "orthanc" / "deleted-studies"
    second = stack(tmp_path / "b", node_of=own.config.var_dir)
    assert Path(second.orthanc_config()["EhrImaging"]["DeletedStudyDir"]) == kept  # like the storage


def test_the_var_folder_is_closed_to_others(tmp_path: Path) -> None:
    own = stack(tmp_path)
    expected = 0o711 if os.geteuid() == 0 else 0o700  # root: PostgreSQL's user passes through, cannot list
    assert stat.S_IMODE(own.config.var_dir.stat().st_mode) == expected
    own.make_private_dirs()
    for path in (own.orthanc_dir, own.storage_dir, own.orthanc_dir / "index"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700


def test_orthanc_gets_its_own_role_and_the_plugin_its_own_never_the_superuser(tmp_path: Path) -> None:
    own = stack(tmp_path, index="postgresql")
    pg = own.orthanc_config()["PostgreSQL"]
    assert (pg["Database"], pg["Username"], pg["Password"]) == (ORTHANC_DATABASE, ORTHANC_ROLE,
                                                                "${EHR_PG_ORTHANC_PASSWORD}")
    env = own.orthanc_environment()
    assert env["EHR_PG_ORTHANC_PASSWORD"] == own.secrets.pg_orthanc_password
    assert env["EHR_IMAGING_DATABASE_URL"].startswith(f"postgresql://{PLUGIN_ROLE}:")
    assert own.secrets.pg_password not in json.dumps(env)
    assert "EHR_PG_ORTHANC_PASSWORD" not in stack(tmp_path / "sqlite").orthanc_environment()
    values = own.env_values()
    assert values["DATABASE_URL"] == own.postgres.plugin_url
    assert values["DATABASE_ADMIN_URL"] == own.postgres.url


def test_secrets_of_an_older_var_folder_gain_the_role_passwords(tmp_path: Path) -> None:
    path = tmp_path / "secrets.json"
    older = {"pg_password": "p", "jwt_secret": "j", "admin_user": "admin", "admin_password": "a"}
    path.write_text(json.dumps(older))
    path.chmod(0o600)
    upgraded = Secrets.load_or_create(path)
    assert (upgraded.pg_password, upgraded.jwt_secret) == ("p", "j")  # kept
    assert len(upgraded.pg_plugin_password) >= 20 and len(upgraded.pg_orthanc_password) >= 20
    assert upgraded.pg_plugin_password != upgraded.pg_orthanc_password
    assert Secrets.load_or_create(path) == upgraded  # written once, then read back
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_passwords_are_quoted_for_psql_meta_commands() -> None:
    assert _psql_quote("plain") == "'plain'"
    assert _psql_quote("it's") == "'it''s'"
    assert _psql_quote("back\\slash") == "'back\\\\slash'"


GDCM = "/usr/share/orthanc/plugins/libOrthancGdcm.so"


@pytest.mark.parametrize("config_file", ["orthanc.json", "docker/orthanc.json"])
def test_gdcm_decodes_first_and_nothing_is_transcoded_on_store(config_file: str) -> None:
    """Both shipped configurations load GDCM's decoder, try it before Orthanc's own (DCMTK, the fallback) for
    every transfer syntax, and never transcode what a modality stores (no Ingest* option)."""
    root = Path(__file__).resolve().parents[2] / "orthanc-config"
    cfg = json.loads((root / config_file).read_text())
    assert GDCM in cfg["Plugins"]
    assert cfg["Gdcm"] == {"Enable": True, "Throttling": 4}  # no RestrictTransferSyntaxes: every syntax
    assert cfg["BuiltinDecoderTranscoderOrder"] == "After"
    assert not [key for key in cfg if key.startswith("IngestTranscoding")]


def test_the_stack_loads_gdcm_unless_asked_not_to(tmp_path: Path) -> None:
    with_gdcm = stack(tmp_path).orthanc_config()
    assert GDCM in with_gdcm["Plugins"] and with_gdcm["Gdcm"]["Enable"] is True
    plain = stack(tmp_path, with_plugin=False).orthanc_config()
    assert GDCM in plain["Plugins"]  # the plugin-vs-plain baseline differs only by the Python plugin
    without = stack(tmp_path, with_gdcm=False).orthanc_config()
    assert GDCM not in without["Plugins"] and "Gdcm" not in without
    assert [p for p in with_gdcm["Plugins"] if p != GDCM] == without["Plugins"]
