"""Orthanc, in process: the one module (with ``plugin.py`` and ``hooks/``) that imports ``orthanc``."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import orthanc

from .core.errors import ArchiveError, NotFound
from .core.logsafe import loggable

# What /tools/lookup refuses ("Parameter out of range") rather than finding nothing: DICOM wildcards, a list.
LOOKUP_WILDCARDS = frozenset("*?\\")


def configuration() -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(orthanc.GetConfiguration())
    return parsed


def log_info(message: str) -> None:
    orthanc.LogInfo(loggable(message))  # one line: request data never writes a raw CR/LF into the log


def log_warning(message: str) -> None:
    orthanc.LogWarning(loggable(message))  # one line: request data never writes a raw CR/LF into the log


def log_error(message: str) -> None:
    orthanc.LogError(loggable(message))  # one line: request data never writes a raw CR/LF into the log


def set_metric(name: str, value: float) -> None:
    """One value of Orthanc's metrics (``/tools/metrics-prometheus``; ignored when ``MetricsEnabled`` is false).
    Orthanc 1.10 takes no labels: a label is part of the name (core/metrics.py)."""
    orthanc.SetMetricsValue(name, float(value), orthanc.MetricsType.DEFAULT)


# A global property of Orthanc's index (plugins own the ids from 1024): the id of a node's own change log.
CHANGE_LOG_PROPERTY = 5472


def change_log_id(config: dict[str, Any]) -> str:
    """The id of the change log this node's Orthanc writes. With Orthanc's index in PostgreSQL (shared by the
    nodes of a cluster) it names that database (host, port, database: no credentials), so every node of the
    cluster gets the same id. Otherwise (SQLite, one index per node) it is a random id made at the first start and
    kept in Orthanc's own index as a global property (Orthanc keeps a plugin's properties per server anyway)."""
    index = config.get("PostgreSQL") or {}
    if index.get("EnableIndex"):
        uri = urlsplit(str(index.get("ConnectionUri") or ""))
        host = uri.hostname or index.get("Host") or "localhost"
        port = uri.port or index.get("Port") or 5432
        database = uri.path.lstrip("/") or index.get("Database") or "orthanc"
        return f"orthanc-index-postgresql://{host}:{port}/{database}"
    current = str(orthanc.GetGlobalProperty(CHANGE_LOG_PROPERTY, "") or "")
    if not current:
        orthanc.SetGlobalProperty(CHANGE_LOG_PROPERTY, f"orthanc-index-{uuid.uuid4()}")
        current = str(orthanc.GetGlobalProperty(CHANGE_LOG_PROPERTY, "") or "")
    return current


# orthanc-python (since 3.3) raises OrthancException(code, description) when an in-process call fails.
_ORTHANC_ERROR: type[Exception] = getattr(orthanc, "OrthancException", Exception)


def _in_process(call: Callable[..., Any], uri: str, *args: Any) -> Any:
    """One in-process call; Orthanc's "unknown resource" becomes the plugin's NotFound and any other error
    of Orthanc's an ArchiveError, so callers catch exactly those instead of every exception."""
    try:
        return call(uri, *args)
    except _ORTHANC_ERROR as exc:
        where = uri.split("?", 1)[0][:200]
        unknown = getattr(getattr(orthanc, "ErrorCode", None), "UNKNOWN_RESOURCE", None)
        code = exc.args[0] if exc.args else None
        if unknown is not None and code == unknown:
            raise NotFound(f"not in Orthanc: {where}") from None
        description = str(exc.args[1]) if len(exc.args) > 1 else str(exc)
        raise ArchiveError(where, description, code if isinstance(code, int) else None) from None


class OrthancPacs:
    """Orthanc's REST API called in process (no HTTP, no HTTP filter)."""

    def get_json(self, uri: str) -> Any:
        return json.loads(_in_process(orthanc.RestApiGet, uri))


    def post_json(self, uri: str, body: Any) -> Any:
        return json.loads(self.post_bytes(uri, json.dumps(body)))

    def get_bytes(self, uri: str, *, after_plugins: bool = False) -> bytes:
        """A binary answer (an archive, an image); ``after_plugins`` reaches plugin routes (DICOMweb)."""
        answer: bytes = _in_process(orthanc.RestApiGetAfterPlugins if after_plugins else orthanc.RestApiGet, uri)
        return answer

    def lookup(self, uid: str, level: str) -> str | None:
        """The Orthanc ID of the resource of ``level`` ("Study", "Instance", ...) with this DICOM UID, if stored."""
        return next(iter(self._lookup_all(uid, level)), None)

    def find_study_ids(self, study_uid: str) -> list[str]:
        return self._lookup_all(study_uid, "Study")

    def _lookup_all(self, uid: str, level: str) -> list[str]:
        if not uid.strip() or any(c in uid for c in LOOKUP_WILDCARDS):  # Orthanc: "Parameter out of range"
            return []  # a wildcard or an empty value names no stored resource
        return [str(m["ID"]) for m in json.loads(self.post_bytes("/tools/lookup", uid)) if m.get("Type") == level]

    def post_bytes(self, uri: str, body: bytes | memoryview | str) -> bytes:
        answer: bytes = _in_process(orthanc.RestApiPost, uri, body)
        return answer

    def post_json_bytes(self, uri: str, body: bytes | memoryview) -> Any:
        """POST raw bytes (a DICOM file), answer parsed as JSON. A memoryview is passed on as it is: orthanc-python
        takes any buffer (``s*``), so a file that is a view of the request body is not copied."""
        return json.loads(self.post_bytes(uri, body))

    def delete(self, uri: str) -> None:
        _in_process(orthanc.RestApiDelete, uri)

    def system(self) -> dict[str, Any]:
        result: dict[str, Any] = self.get_json("/system")
        return result

    def statistics(self) -> dict[str, Any]:
        result: dict[str, Any] = self.get_json("/statistics")
        return result
