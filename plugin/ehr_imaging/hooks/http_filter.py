"""The incoming-HTTP-request filter: runs for every request Orthanc receives, frames included.

Returning False makes Orthanc answer 403. The decision itself is ``core.access``; this module only
adapts Orthanc's arguments and keeps the hot path short (cached token checks, no database).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from ..core import access
from ..core.auth import Authenticator, AuthError

_HTTP_GET = 1  # Orthanc passes its OrthancPluginHttpMethod as an int; it answers HEAD without plugins


def make_filter(
    authenticator: Authenticator, log_warning: Callable[[str], None]
) -> Callable[..., bool]:
    def http_filter(
        uri: str, method: object, ip: str, headers: Mapping[str, str], get: object = None
    ) -> bool:
        area = access.classify(uri)
        if area is access.Area.PLUGIN_API:
            return True  # the route authenticates and answers 401/403 with a JSON detail
        if area is access.Area.VIEWER_APP and method == _HTTP_GET:
            return True  # static files only; the DICOMweb requests the viewer makes carry its token
        try:
            principal = authenticator.authenticate(headers)
        except AuthError as exc:
            log_warning(f"refused {uri} from {ip}: {exc}")
            return False
        if principal is not None and principal.is_admin:
            return True
        log_warning(f"refused {uri} from {ip}: administrator credentials required")
        return False

    return http_filter
