"""The incoming-HTTP-request filter: runs for every request Orthanc receives, frames included.

Returning False makes Orthanc answer 403. The decisions are ``core.access`` (which area a path is in,
what a viewer token may read) and ``viewer.gate``; this module only adapts Orthanc's arguments and keeps
the hot path short: cached token checks, in-memory revocations and hierarchy, no database.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from ..core import access
from ..core.auth import Authenticator, AuthError, bearer_token
from ..viewer.gate import ViewerGate


def make_filter(
    authenticator: Authenticator, gate: ViewerGate, log_warning: Callable[[str], None]
) -> Callable[..., bool]:
    def http_filter(
        uri: str, method: object, ip: str, headers: Mapping[str, str], get: Mapping[str, str] | None = None
    ) -> bool:
        area = access.classify(uri)
        if area is access.Area.PLUGIN_API and _is_form_post(method, headers):
            # Orthanc 1.10 would answer this itself with an empty 200 after handing our route each part
            # without its headers: refuse it rather than let the caller believe it was stored.
            log_warning(f"refused {uri} from {ip}: multipart/form-data reaches the plugin only on its API port")
            return False
        if area is access.Area.PLUGIN_API or area is access.Area.SCOPED_QIDO:
            return True  # the callback authenticates and answers 401/403 with a JSON detail
        if area is access.Area.VIEWER_APP and method_name(method) == "GET":
            return True  # static files only; the DICOMweb requests the viewer makes carry its token
        viewer_refusal = ""
        if area is access.Area.DICOMWEB:
            token = bearer_token(headers)
            if token is not None:
                try:
                    principal = gate.principal(token)
                except AuthError as exc:
                    principal = None  # not a viewer token: perhaps an administrator's JWT
                    viewer_refusal = f"not a valid viewer token ({exc}); "
                if principal is not None:
                    decision = gate.decide(principal, method_name(method), uri.split("?", 1)[0], get or {})
                    if not decision.allowed:
                        log_warning(f"refused {uri} from {ip} to viewer token of {principal.subject}:"
                                    f" {decision.reason}")
                    return decision.allowed
        try:
            caller = authenticator.authenticate(headers)
        except AuthError as exc:
            log_warning(f"refused {uri} from {ip}: {viewer_refusal}{exc}")
            return False
        if caller is not None and caller.is_admin:
            return True
        log_warning(f"refused {uri} from {ip}: {viewer_refusal}administrator credentials required")
        return False

    return http_filter


def _is_form_post(method: object, headers: Mapping[str, str]) -> bool:
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    return content_type == "multipart/form-data" and method_name(method) == "POST"


def method_name(method: object) -> str:
    """Orthanc passes an ``orthanc.HttpMethod`` member; tests may pass the name."""
    if isinstance(method, str):
        return method.upper()
    name = getattr(method, "name", None)
    if isinstance(name, str):
        return name.upper()
    return {1: "GET", 2: "POST", 3: "PUT", 4: "DELETE"}.get(int(method), "UNKNOWN")  # type: ignore[call-overload]
