"""One typed settings object for the plugin.

Values come from the ``EhrImaging`` section of Orthanc's JSON configuration; each key can be
overridden by an environment variable ``EHR_IMAGING_<KEY_IN_UPPER_SNAKE_CASE>`` (``JwtSecret`` ->
``EHR_IMAGING_JWT_SECRET``), so containers and clusters can inject secrets without editing files.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Mapping
from typing import Any

SECTION = "EhrImaging"
ENV_PREFIX = "EHR_IMAGING_"


@dataclasses.dataclass(frozen=True)
class Settings:
    """Every plugin setting with its default. ``README.md`` documents each one."""

    DatabaseUrl: str = ""
    DatabaseSchema: str = "ehr_imaging"
    DatabasePoolSize: int = 5
    DatabaseConnectTimeoutSeconds: int = 3
    # The health monitor (README "Resilience"): a ping this often; one unanswered this long, or failed, makes
    # every route needing the database answer 503 at once and cuts the connections waiting on it.
    DatabaseHealthIntervalSeconds: int = 1
    DatabaseHealthTimeoutSeconds: int = 2
    DatabasePoolTimeoutSeconds: int = 2  # a request waits this long at most for a free connection (then 503)
    DatabaseStatementTimeoutSeconds: int = 30  # the server cancels a statement running longer (PostgreSQL's own)
    JwtSecret: str = ""
    SigningSecret: str = ""
    AdminSessionTtlSeconds: int = 28800
    JwtPublicKeyFile: str = ""
    JwksFile: str = ""
    JwtIssuer: str = "ehr-imaging-dev"
    JwtAudience: str = "ehr-imaging"
    JwtLeewaySeconds: int = 30
    TokenCacheSize: int = 10000
    AdminUsers: dict[str, str] = dataclasses.field(default_factory=dict)
    MaxFileSizeMb: int = 100
    MaxUploadSizeMb: int = 2048  # one request's body on the API port (a ZIP, a form of many files)
    OrthancPortMaxBodyMb: int = 256  # one request's body on Orthanc's own port (Orthanc holds it whole in memory)
    MaxImageSizeMb: int = 25  # a photo (JPEG, PNG) sent to upload-image; larger: 400 (PDFs: MaxFileSizeMb)
    MaxImagePixels: int = 50_000_000  # its width x height (Orthanc decodes it whole); more: 400
    MaxFilesPerUpload: int = 500  # files of one upload-multiple request, or members of one ZIP
    MaxZipUncompressedMb: int = 8192  # what one ZIP may expand to (zip bombs)
    UploadJobAboveFiles: int = 200  # a ZIP with more files runs as a job (202, polled)
    UploadJobAboveMb: int = 256  # ... or one that expands to more than this
    UploadRequestsPerMinute: int = 0  # upload requests one caller (token subject) may send a minute, per node; 0: off
    UploadMegabytesPerMinute: int = 0  # ... and megabytes of them; 0: off
    MetricsIntervalSeconds: int = 10  # how often the metrics are handed to Orthanc (/tools/metrics-prometheus)
    UploadJobDir: str = ""  # a private folder (0700, ours, no link) where a job's ZIP waits; "": jobs refused
    ApiPort: int = 0  # the plugin's own HTTP listener for the EHR API; 0: none (Orthanc's port only)
    ApiListenAddress: str = "127.0.0.1"  # loopback unless a deployment opens it (the Docker image: 0.0.0.0)
    ApiRequestHeaderTimeoutSeconds: int = 10  # accept (or a kept-alive request's first byte) -> end of its head
    ApiRequestBodyMinBytesPerSecond: int = 32768  # a body's average rate, after the same grace
    ApiIdleTimeoutSeconds: int = 30  # a kept-alive connection silent this long, or a client not reading its answer
    ApiMaxConnections: int = 256  # open connections on the API port; more are closed at once
    ApiMaxConnectionsPerAddress: int = 32  # ... from one client address (behind a proxy: the proxy's)
    ApiWorkerThreads: int = 8  # requests answered at once on the API port (waiting clients hold no thread)
    # One PEM file with the private key and the certificate chain (Orthanc's SslCertificate format): the API
    # port then speaks HTTPS only; "": plain HTTP (behind a TLS proxy, or on loopback).
    ApiTlsCertificateFile: str = ""
    ApiPublicBaseUrl: str = ""  # the API port's public URL (https://host:8044): where redirects send API paths
    HttpRedirectPort: int = 0  # a plain-HTTP port answering every request with a 308 to HTTPS; 0: none
    MaxConcurrentDownloads: int = 4  # study ZIPs being sent at once, both ports together; more: 503
    MaxOrthancPortDownloadMb: int = 256  # a larger study's ZIP only from the API port (Orthanc's builds it in memory)
    MatchWindowDays: int = 3
    CoerceTags: bool = False
    Timezone: str = "UTC"  # the site's zone: DICOM dates are local, order times are absolute
    VirtualEnv: str = ""
    PublicBaseUrl: str = ""
    ViewerTokenMaxTtlSeconds: int = 3600  # viewer tokens live this long at most (and by default)
    ImageUrlMaxTtlSeconds: int = 600  # signed image URLs live this long at most (and by default)
    ViewerPath: str = "/ohif/viewer"  # where OHIF's viewer route is served, joined to PublicBaseUrl
    ViewerAppDir: str = ""  # the prepared OHIF dist served under /ohif/; empty: the viewer answers 404
    WorklistMaxAnswers: int = 200  # worklist items one query gets at most (then marked incomplete)
    # Calling AET -> "CT,MR": orders without station_aet of these modalities go to that AET's worklist;
    # an AET not listed sees only the orders that name it (README "Security: DICOM services").
    WorklistModalities: dict[str, str] = dataclasses.field(default_factory=dict)
    DicomFindMaxAnswers: int = 100  # C-FIND answers at most, for a modality allowed to C-FIND
    # Deletion (README "Deletion: approval and recovery"): "none" deletes at once; "required": a second admin approves.
    DeletionApproval: str = "none"
    OrderStatusUpdates: bool = True  # the images move an order: scheduled -> in-progress -> completed
    IngestBatchSize: int = 50  # stable studies the ingest worker records per transaction; 1: one at a time
    DeletionRequestTtlHours: float = 72.0  # a request not approved or rejected by then expires
    DeletedStudyRetentionDays: float = 30.0  # a deleted study's files are kept (restorable) this long; 0: not kept
    DeletedStudyDir: str = ""  # the private folder of deleted studies' files (shared by the nodes of a cluster)
    # Events to the EHR (README "Events to the EHR"): [{"url", "secret", "types"}]; empty: no events written.
    EventEndpoints: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    EventRetryBaseSeconds: int = 30  # the first retry's delay; each next one doubles, up to EventRetryMaxSeconds
    EventRetryMaxSeconds: int = 3600  # the longest wait between two attempts
    EventRetryHours: float = 48.0  # an event not delivered this long after its first attempt: failed
    EventTimeoutSeconds: int = 5  # one delivery attempt's connect and answer, at most
    EventRetentionDays: int = 30  # an event delivered to every endpoint is removed from the outbox after this
    # This node's durable audit spool (README "Audit: what is durable when"); "": a folder per node inside
    # Orthanc's StorageDirectory. Never shared by two nodes (locked).
    AuditSpoolDirectory: str = ""
    AuditSpoolSyncMillis: int = 200  # the spool is fsync'd at least this often: what a power loss may lose
    # A DIMSE query or retrieval while PostgreSQL is away: "spool" (its audit row fsync'd to the spool, then
    # answered) or "refuse" (no row in PostgreSQL, no answer).
    DimseWhenDatabaseDown: str = "spool"

    def redacted(self) -> dict[str, Any]:
        """The settings as a dict that is safe to log: secrets and passwords are masked."""
        out: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name in _SECRET_FIELDS:
                value = "***" if value else ""
            elif field.name == "AdminUsers":
                value = {user: "***" for user in value}
            elif field.name == "EventEndpoints":
                value = [{**item, "secret": "***", "url": redact_url_password(str(item.get("url", "")))}
                         if isinstance(item, dict) else item for item in value]
            elif field.name == "DatabaseUrl":
                value = redact_url_password(value)
            out[field.name] = value
        return out


_SECRET_FIELDS = {"JwtSecret", "SigningSecret"}


class ConfigError(ValueError):
    """A setting has a value of the wrong type or shape."""


def env_name(key: str) -> str:
    """``JwtSecret`` -> ``EHR_IMAGING_JWT_SECRET``."""
    return ENV_PREFIX + re.sub(r"(?<!^)(?=[A-Z])", "_", key).upper()


def redact_url_password(url: str) -> str:
    # The user name may be empty (``postgresql://:secret@host``) and libpq also takes ``?password=``.
    url = re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)
    return re.sub(r"([?&]password=)[^&]*", r"\1***", url, flags=re.IGNORECASE)


def load_settings(orthanc_config: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Settings:
    """Build the settings from Orthanc's parsed configuration and the environment."""
    environ = os.environ if environ is None else environ
    section = orthanc_config.get(SECTION, {}) or {}
    if not isinstance(section, Mapping):
        raise ConfigError(f"configuration section {SECTION} must be an object")
    known = {f.name: f for f in dataclasses.fields(Settings)}
    unknown = sorted(set(section) - set(known))
    if unknown:
        raise ConfigError(f"unknown keys in {SECTION}: {', '.join(unknown)}")
    values: dict[str, Any] = {}
    for name, field in known.items():
        raw: Any
        if env_name(name) in environ:
            raw = _parse_env(name, environ[env_name(name)], _kind(field))
        elif name in section:
            raw = section[name]
        else:
            continue
        values[name] = _check_type(name, raw, _kind(field))
    return Settings(**values)


def _kind(field: dataclasses.Field[Any]) -> type:
    if field.default_factory is not dataclasses.MISSING:
        return type(field.default_factory())
    return type(field.default)


def _parse_env(name: str, text: str, kind: type) -> Any:
    try:
        if kind is bool:
            return text.strip().lower() in {"1", "true", "yes", "on"}
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
        if kind in (dict, list):
            return json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"environment variable {env_name(name)} is not a valid {kind.__name__}") from exc
    return text


# Lower bounds of the numeric settings: a zero pool or a negative cache would break every request.
_MINIMUMS: dict[str, int] = {"DatabasePoolSize": 1, "DatabaseConnectTimeoutSeconds": 1, "JwtLeewaySeconds": 0,
             "DatabaseHealthIntervalSeconds": 1, "DatabaseHealthTimeoutSeconds": 1, "DatabasePoolTimeoutSeconds": 1,
             "DatabaseStatementTimeoutSeconds": 1,
             "TokenCacheSize": 0, "AdminSessionTtlSeconds": 60, "MatchWindowDays": 0,
             "MaxFileSizeMb": 1, "MaxUploadSizeMb": 1, "MaxFilesPerUpload": 1, "MaxZipUncompressedMb": 1,
             "OrthancPortMaxBodyMb": 1, "MaxImageSizeMb": 1, "MaxImagePixels": 1, "MetricsIntervalSeconds": 1,
             "ViewerTokenMaxTtlSeconds": 60, "ImageUrlMaxTtlSeconds": 10, "ApiRequestHeaderTimeoutSeconds": 1,
             "ApiRequestBodyMinBytesPerSecond": 1, "ApiIdleTimeoutSeconds": 1, "ApiMaxConnections": 1,
             "ApiMaxConnectionsPerAddress": 1, "ApiWorkerThreads": 1, "MaxConcurrentDownloads": 1,
             "WorklistMaxAnswers": 1, "DicomFindMaxAnswers": 1, "EventRetryBaseSeconds": 1,
             "EventRetryMaxSeconds": 1, "EventTimeoutSeconds": 1, "AuditSpoolSyncMillis": 1,
             "EventRetentionDays": 1, "IngestBatchSize": 1}


# Settings with a fixed vocabulary; settings that must be more than zero (a float may be a fraction).
_CHOICES: dict[str, tuple[str, ...]] = {"DeletionApproval": ("none", "required"),
                                        "DimseWhenDatabaseDown": ("spool", "refuse")}
_POSITIVE = {"DeletionRequestTtlHours", "EventRetryHours"}


def _check_type(name: str, value: Any, kind: type) -> Any:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)  # JSON 72 for 72.0
    if (kind in (int, float) and isinstance(value, bool)) or not isinstance(value, kind):
        raise ConfigError(f"{SECTION}.{name} must be a {kind.__name__}")
    if name in _CHOICES and value not in _CHOICES[name]:
        raise ConfigError(f"{SECTION}.{name} must be one of {', '.join(_CHOICES[name])}")
    if name in _POSITIVE and isinstance(value, float) and not value > 0:
        raise ConfigError(f"{SECTION}.{name} must be more than 0")
    if isinstance(value, (int, float)) and value < _MINIMUMS.get(name, 0):
        raise ConfigError(f"{SECTION}.{name} must be at least {_MINIMUMS.get(name, 0)}")
    if isinstance(value, list) and not all(isinstance(item, dict) for item in value):
        raise ConfigError(f"{SECTION}.{name} must be a list of objects")
    if isinstance(value, dict) and not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ConfigError(f"{SECTION}.{name} must map strings to strings")
    return value
