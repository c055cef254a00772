"""Which credentials a request to Orthanc's HTTP server needs: the HTTP filter's decision.

Deny by default: a path that is not recognised, or that is not in canonical form (dot segments,
double slashes, backslashes), needs an administrator.
"""

from __future__ import annotations

import enum

API_PREFIX = "/api/v1/dicom/"
VIEWER_APP_PREFIX = "/ohif/"  # the OHIF viewer's static site (viewer_app.py)


class Area(enum.Enum):
    PLUGIN_API = "plugin-api"  # our routes: each one authenticates and answers 401/403 itself
    VIEWER_APP = "viewer-app"  # the viewer's static files: public for reads; its data needs a token
    ADMIN_ONLY = "admin-only"  # Orthanc's REST API, Explorer, DICOMweb until viewer scopes exist


def is_canonical(path: str) -> bool:
    if not path.startswith("/") or "\\" in path or "//" in path or "\x00" in path:
        return False
    return all(segment not in {".", ".."} for segment in path.split("/"))


def classify(uri: str) -> Area:
    path = uri.split("?", 1)[0]
    if is_canonical(path) and (path.startswith(API_PREFIX) or path == API_PREFIX.rstrip("/")):
        return Area.PLUGIN_API
    if is_canonical(path) and (path.startswith(VIEWER_APP_PREFIX) or path == VIEWER_APP_PREFIX.rstrip("/")):
        return Area.VIEWER_APP
    return Area.ADMIN_ONLY
