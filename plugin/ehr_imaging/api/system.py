"""Health and statistics."""

from __future__ import annotations

from typing import Any

from .. import __version__
from ..core.auth import AuthError
from ..services import Services
from ..store import db, migrations, summary
from . import presenters
from .context import Api
from .router import Request, Response, json_response


def health(api: Api, request: Request) -> Response:
    """Public: load balancers and the EHR poll it. Says what is down without saying why in detail.
    Versions only to administrators: to anyone else they are a map of known vulnerabilities (null)."""
    services = api.services
    admin = _is_admin(services, request)
    body: dict[str, Any] = {
        "status": "healthy",
        "plugin_version": __version__ if admin else None,
        "orthanc_version": services.pacs.system().get("Version") if admin else None,
        "database": "ok",
    }
    try:
        services.database.check()  # not answering the health monitor: 503 at once, not a wait on the socket
        db.ping(services.engine)
        version = migrations.current_version(services.engine, services.settings.DatabaseSchema)
        body["schema_version"] = version
        if version != migrations.LATEST_VERSION:
            body["database"] = "schema not at the expected version"
    except db.DatabaseUnavailable:
        body["database"] = f"unavailable ({services.database.reason or 'not answering'})"
    except Exception as exc:  # noqa: BLE001 - any database failure means unhealthy
        body["database"] = f"unavailable ({type(exc).__name__})"
    if body["database"] != "ok":
        body["status"] = "unhealthy"
        unhealthy = json_response(body, 503)
        unhealthy.headers["Retry-After"] = str(services.database.retry_after_seconds)
        return unhealthy
    return json_response(body)


def stats(api: Api, request: Request) -> Response:
    services = api.services
    orthanc = services.pacs.statistics()
    body: dict[str, Any] = {
        "total_patients": orthanc.get("CountPatients", 0),
        "total_studies": orthanc.get("CountStudies", 0),
        "total_series": orthanc.get("CountSeries", 0),
        "total_instances": orthanc.get("CountInstances", 0),
        "disk_size_mb": orthanc.get("TotalDiskSizeMB", 0),
    }
    body.update(presenters.counts(summary.counts(services.engine, services.settings.DatabaseSchema)))
    return json_response(body)


def _is_admin(services: Services, request: Request) -> bool:
    """An administrator's credentials on a public route; wrong or missing ones count as anonymous."""
    try:
        principal = services.authenticator.authenticate(request.headers, method=request.method,
                                                          client=request.client_ip)
    except AuthError:
        return False
    return principal is not None and principal.is_admin
