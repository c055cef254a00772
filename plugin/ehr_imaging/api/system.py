"""Health and statistics."""

from __future__ import annotations

from typing import Any

from .. import __version__
from ..services import Services
from ..store import db, migrations, summary
from .router import ANY_ROLE, PUBLIC, Request, Response, Router, json_response


def register(router: Router, services: Services) -> None:
    schema = services.settings.DatabaseSchema

    def health(request: Request) -> Response:
        """Public: load balancers and the EHR poll it. Says what is down without saying why in detail."""
        body: dict[str, Any] = {
            "status": "healthy",
            "plugin_version": __version__,
            "orthanc_version": services.pacs.system().get("Version"),
            "database": "ok",
        }
        try:
            db.ping(services.engine)
            version = migrations.current_version(services.engine, schema)
            body["schema_version"] = version
            if version != migrations.LATEST_VERSION:
                body["database"] = "schema not at the expected version"
        except Exception as exc:  # noqa: BLE001 - any database failure means unhealthy
            body["database"] = f"unavailable ({type(exc).__name__})"
        if body["database"] != "ok":
            body["status"] = "unhealthy"
            return json_response(body, 503)
        return json_response(body)

    def stats(request: Request) -> Response:
        orthanc = services.pacs.statistics()
        body: dict[str, Any] = {
            "total_patients": orthanc.get("CountPatients", 0),
            "total_studies": orthanc.get("CountStudies", 0),
            "total_series": orthanc.get("CountSeries", 0),
            "total_instances": orthanc.get("CountInstances", 0),
            "disk_size_mb": orthanc.get("TotalDiskSizeMB", 0),
        }
        body.update(summary.counts(services.engine, schema))
        return json_response(body)

    router.add("GET", "/api/v1/dicom/health", health, roles=PUBLIC)
    router.add("GET", "/api/v1/dicom/stats", stats, roles=ANY_ROLE)
