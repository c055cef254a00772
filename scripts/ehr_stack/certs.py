"""The development stack's certificates (``EHR_TLS=1``): a private CA and a server certificate it signs.

Under ``<var>/tls/``: ``ca.pem`` (the CA's certificate: what clients trust, ``TLS_CA_FILE``), ``ca-key.pem``
(its key, 0600) and ``server.pem`` (the server's key and certificate in one PEM, 0600: Orthanc's
``SslCertificate`` and the plugin's ``ApiTlsCertificateFile``). The CA is kept across runs (clients keep
trusting it); the server certificate is made again when it is missing, names other hosts, or expires
within 30 days. For development only: production uses the hospital's certificates (README "HTTPS").
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
SERVER_DAYS = 397  # what browsers accept for a server certificate
RENEW_BEFORE = datetime.timedelta(days=30)


@dataclass(frozen=True)
class TlsFiles:
    ca_file: Path  # trust this
    server_pem: Path  # key + certificate chain

    @property
    def folder(self) -> Path:
        return self.ca_file.parent


def ensure_certificates(folder: Path, hosts: list[str]) -> TlsFiles:
    """The CA (made once) and a server certificate for ``hosts`` (DNS names or IP addresses)."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)
    files = TlsFiles(folder / "ca.pem", folder / "server.pem")
    ca_key_file = folder / "ca-key.pem"
    if not (files.ca_file.exists() and ca_key_file.exists()):
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_cert = _ca_certificate(ca_key)
        _write(ca_key_file, _key_pem(ca_key), 0o600)
        _write(files.ca_file, ca_cert.public_bytes(serialization.Encoding.PEM), 0o644)
        files.server_pem.unlink(missing_ok=True)
    else:
        loaded = serialization.load_pem_private_key(ca_key_file.read_bytes(), password=None)
        assert isinstance(loaded, ec.EllipticCurvePrivateKey)
        ca_key, ca_cert = loaded, x509.load_pem_x509_certificate(files.ca_file.read_bytes())
    if not _server_is_current(files.server_pem, hosts):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _server_certificate(key, hosts, ca_key, ca_cert)
        _write(files.server_pem, _key_pem(key) + cert.public_bytes(serialization.Encoding.PEM), 0o600)
    return files


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _ca_certificate(key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ehr-imaging development CA")])
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() - datetime.timedelta(minutes=5))
            .not_valid_after(_now() + datetime.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False),
                           critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))


def _names(hosts: list[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def _server_certificate(key: ec.EllipticCurvePrivateKey, hosts: list[str], ca_key: ec.EllipticCurvePrivateKey,
                        ca_cert: x509.Certificate) -> x509.Certificate:
    return (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() - datetime.timedelta(minutes=5))
            .not_valid_after(_now() + datetime.timedelta(days=SERVER_DAYS))
            .add_extension(x509.SubjectAlternativeName(_names(hosts)), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))


def _server_is_current(path: Path, hosts: list[str]) -> bool:
    if not path.exists():
        return False
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return False
    return set(names) == set(_names(hosts)) and cert.not_valid_after_utc - _now() > RENEW_BEFORE


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    os.fchmod(fd, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
