"""HTTPS without servers: the stack's TLS configuration, its certificates, the redirect port's rules."""

from __future__ import annotations

import datetime
import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509

from ehr_imaging.api.redirect import location, redirect_bases
from ehr_imaging.config import ConfigError, Settings, load_settings
from ehr_stack import certs
from ehr_stack.certs import ensure_certificates
from ehr_stack.stack import Stack, StackConfig


def _stack(tmp_path: Path, **overrides: object) -> Stack:
    return Stack(StackConfig(var_dir=tmp_path / "var", api_port=9044, http_port=9042, **overrides))  # type: ignore[arg-type]


def test_a_plain_stack_has_no_tls_anywhere(tmp_path: Path) -> None:
    plain = _stack(tmp_path)
    cfg = plain.orthanc_config()
    assert "SslEnabled" not in cfg and cfg["DicomWeb"]["Ssl"] is False
    assert "ApiTlsCertificateFile" not in cfg["EhrImaging"] and "HttpRedirectPort" not in cfg["EhrImaging"]
    assert plain.url == "http://127.0.0.1:9042" and plain.verify is True
    assert "TLS_CA_FILE" not in plain.env_values() and plain.redirect_url is None
    assert not (plain.config.var_dir / "tls").exists()


def test_a_tls_stack_serves_both_ports_over_https_with_one_pem(tmp_path: Path) -> None:
    tls = _stack(tmp_path, tls=True, redirect_port=9040)
    cfg = tls.orthanc_config()
    pem = str(tls.config.var_dir / "tls" / "server.pem")
    assert (cfg["SslEnabled"], cfg["SslCertificate"], cfg["SslMinimumProtocolVersion"]) == (True, pem, 4)
    assert cfg["DicomWeb"]["Ssl"] is True
    plugin = cfg["EhrImaging"]
    assert plugin["ApiTlsCertificateFile"] == pem and plugin["HttpRedirectPort"] == 9040
    assert plugin["PublicBaseUrl"] == "https://127.0.0.1:9042" and plugin["ApiPublicBaseUrl"] == "https://127.0.0.1:9044"
    env = tls.env_values()
    assert env["ORTHANC_URL"] == "https://127.0.0.1:9042"
    assert env["API_BASE_URL"] == "https://127.0.0.1:9044/api/v1/dicom"
    assert env["TLS_CA_FILE"] == str(tls.config.var_dir / "tls" / "ca.pem") == tls.verify
    assert env["HTTP_REDIRECT_URL"] == "http://127.0.0.1:9040"
    assert "HTTP_REDIRECT_URL" not in _stack(tmp_path / "b", tls=True, redirect_port=0).env_values()


def test_orthanc_gets_the_openssl_shim_on_its_library_path(tmp_path: Path) -> None:
    folder = Path(_stack(tmp_path, tls=True).orthanc_environment()["LD_LIBRARY_PATH"].split(":")[0])
    assert (folder / "libssl.so").is_file() and (folder / "libcrypto.so").resolve().name == "libcrypto.so.3"
    assert "openssl-compat" not in _stack(tmp_path / "plain").orthanc_environment().get("LD_LIBRARY_PATH", "")


def test_the_environment_turns_tls_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EHR_TLS", raising=False)
    assert StackConfig.from_environment().tls is False
    monkeypatch.setenv("EHR_TLS", "1")
    monkeypatch.setenv("EHR_HTTP_REDIRECT_PORT", "8081")
    config = StackConfig.from_environment()
    assert (config.tls, config.redirect_port) == (True, 8081)


def test_certificates_chain_to_the_ca_name_the_hosts_and_keep_keys_private(tmp_path: Path) -> None:
    files = ensure_certificates(tmp_path / "tls", ["localhost", "127.0.0.1"])
    ca = x509.load_pem_x509_certificate(files.ca_file.read_bytes())
    server = x509.load_pem_x509_certificate(files.server_pem.read_bytes())
    assert server.issuer == ca.subject
    server.verify_directly_issued_by(ca)
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert b"PRIVATE KEY" in files.server_pem.read_bytes()  # key + certificate in one file (Orthanc's format)
    assert b"PRIVATE KEY" not in files.ca_file.read_bytes()
    for private in (files.server_pem, files.folder / "ca-key.pem"):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert stat.S_IMODE(files.folder.stat().st_mode) == 0o700


def test_the_ca_is_kept_and_the_server_certificate_renewed_when_needed(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "tls"
    first = ensure_certificates(folder, ["127.0.0.1"])
    ca, pem = first.ca_file.read_bytes(), first.server_pem.read_bytes()
    assert ensure_certificates(folder, ["127.0.0.1"]).server_pem.read_bytes() == pem  # current: kept
    renamed = ensure_certificates(folder, ["127.0.0.1", "pacs.example"])
    assert renamed.server_pem.read_bytes() != pem and renamed.ca_file.read_bytes() == ca  # new name: new cert
    pem = renamed.server_pem.read_bytes()
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=certs.SERVER_DAYS - 10)
    monkeypatch.setattr(certs, "_now", lambda: later)  # 10 days before expiry: renewed
    assert ensure_certificates(folder, ["127.0.0.1", "pacs.example"]).server_pem.read_bytes() != pem
    assert first.ca_file.read_bytes() == ca


@pytest.mark.parametrize(("target", "expected"), [
    ("/api/v1/dicom/orders/x?reason=a%20b", "https://api.example:8044/api/v1/dicom/orders/x?reason=a%20b"),
    ("/api/v1/dicom", "https://api.example:8044/api/v1/dicom"),
    ("/api/v1/dicomx", "https://pacs.example/api/v1/dicomx"),
    ("/ohif/viewer?StudyInstanceUIDs=1.2", "https://pacs.example/ohif/viewer?StudyInstanceUIDs=1.2"),
    ("/", "https://pacs.example/"),
    ("//evil.example/x", "https://pacs.example//evil.example/x"),  # a path on our host, never another host
])
def test_where_the_redirect_sends_a_target(target: str, expected: str) -> None:
    assert location(target, api_base="https://api.example:8044", public_base="https://pacs.example") == expected


def test_the_redirect_port_needs_https_targets() -> None:
    both = Settings(PublicBaseUrl="https://pacs.example/", ApiPublicBaseUrl="https://api.example:8044")
    assert redirect_bases(both) == ("https://api.example:8044", "https://pacs.example")
    assert redirect_bases(Settings(PublicBaseUrl="https://pacs.example")) == ("https://pacs.example",) * 2
    for bad in (Settings(), Settings(PublicBaseUrl="http://pacs.example"),
                Settings(PublicBaseUrl="https://pacs.example", ApiPublicBaseUrl="http://api.example"),
                Settings(PublicBaseUrl="https://pacs.example\r\nX-Evil: 1")):
        with pytest.raises(ConfigError, match="HttpRedirectPort needs an https://"):
            redirect_bases(bad)


def test_the_tls_settings_come_from_the_environment() -> None:
    settings = load_settings({}, {"EHR_IMAGING_API_TLS_CERTIFICATE_FILE": "/etc/tls/server.pem",
                                  "EHR_IMAGING_HTTP_REDIRECT_PORT": "8080",
                                  "EHR_IMAGING_API_PUBLIC_BASE_URL": "https://api.example"})
    assert (settings.ApiTlsCertificateFile, settings.HttpRedirectPort, settings.ApiPublicBaseUrl) == (
        "/etc/tls/server.pem", 8080, "https://api.example")
