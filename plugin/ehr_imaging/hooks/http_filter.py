"""The incoming-HTTP-request filter: runs for every request Orthanc receives, frames included.

Returning False makes Orthanc answer 403. The decisions are ``core.access`` (which area a path is in,
what a viewer token may read) and ``app/dicomweb_gate``; this module only adapts Orthanc's arguments and keeps
the hot path short: cached token checks, in-memory revocations and hierarchy, no database.

Orthanc 1.10 calls the filter *before* it reads a request's body, then allocates the whole declared
``Content-Length`` and waits for it. So a body is judged here from the headers alone: a declared size
within ``max_body_bytes``, a route that reads a body (our routes) or administrator credentials (Orthanc's
own API), and above ``access.UNAUTHENTICATED_BODY_BYTES`` valid credentials with a role of the route;
otherwise the request is refused before Orthanc allocates anything.

A request carrying a signed image URL's token (``image_token`` in its query) is judged by that URL's rule
alone (app/image_urls.SignedImages): GET of the one rendered image it is for, without a body, or refused.

Each refusal is counted in the metrics by its kind (core.metrics ``FILTER_REASONS``), and each DICOMweb
request a viewer token may make as a viewer request.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from urllib.parse import unquote_plus

from ..app.dicomweb_gate import ViewerGate
from ..app.image_urls import SignedImages
from ..core import access
from ..core import metrics as m
from ..core.auth import Authenticator, AuthError, Principal, bearer_token
from ..core.image_urls import TOKEN_PARAM as IMAGE_TOKEN

# Why a body sent to ``method path`` (one of our routes) is refused, or None when the route reads one and the
# caller (None: not known yet) may call it (api.router.Router.body_refusal: derived from the route table).
BodyRefusal = Callable[[str, str, "Principal | None"], "str | None"]


def make_filter(
    authenticator: Authenticator, gate: ViewerGate, log_warning: Callable[[str], None], *,
    body_refusal: BodyRefusal, max_body_bytes: int, signed_images: SignedImages | None = None,
    metrics: m.Metrics | None = None, deletion_approval: bool = False,
) -> Callable[..., bool]:
    registry = metrics or m.Metrics()

    def refuse(uri: str, ip: str, reason: str, kind: str = m.REFUSAL_BODY) -> bool:
        log_warning(f"refused {uri} from {ip}: {reason}")
        registry.refused(kind)
        return False

    def http_filter(
        uri: str, method: object, ip: str, headers: Mapping[str, str], get: Mapping[str, str] | None = None
    ) -> bool:
        verb = method_name(method)
        if get:
            query = {unquote_plus(str(key)): unquote_plus(str(value)) for key, value in get.items()}
            if IMAGE_TOKEN in query:  # a signed image URL: judged by its own rule alone, wherever it is sent
                return _signed_image(uri.split("?", 1)[0], verb, ip, headers, query)
        area = access.classify(uri)
        body = access.declared_body(headers)
        if not body.valid:
            return refuse(uri, ip, "invalid Content-Length")
        if body.length > max_body_bytes:
            return refuse(uri, ip, f"declared body of {body.length} bytes is over the {max_body_bytes} bytes"
                                   " this port accepts (large uploads go to the API port)")
        if area is access.Area.PLUGIN_API:
            if _is_form_post(verb, headers):
                # Orthanc 1.10 would answer this itself with an empty 200 after handing our route each part
                # without its headers: refuse it rather than let the caller believe it was stored.
                return refuse(uri, ip, "multipart/form-data reaches the plugin only on its API port")
            if body.present:
                return _body_for_route(uri, verb, ip, headers, body)
            return True  # the callback authenticates and answers 401/403 with a JSON detail
        if area is access.Area.SCOPED_QIDO:
            if verb != "GET" or body.present:
                return refuse(uri, ip, "the scoped QIDO root answers GET without a body only")
            return True  # the callback authenticates the viewer token and answers 401 with a JSON detail
        if area is access.Area.VIEWER_APP and verb == "GET":
            # Static files only; the DICOMweb requests the viewer makes carry its token.
            return True if not body.present else refuse(uri, ip, "GET with a body")
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
                    if body.present:
                        return refuse(uri, ip, f"viewer token of {principal.subject}: a body (viewers only read)")
                    decision = gate.decide(principal, verb, uri.split("?", 1)[0], get or {})
                    if not decision.allowed:
                        log_warning(f"refused {uri} from {ip} to viewer token of {principal.subject}:"
                                    f" {decision.reason}")
                        registry.refused(m.REFUSAL_VIEWER_SCOPE)
                    else:
                        registry.count(m.VIEWER_REQUESTS)
                    return decision.allowed
        try:
            caller = authenticator.authenticate(headers, method=verb, client=ip)
        except AuthError as exc:
            return refuse(uri, ip, f"{viewer_refusal}{exc}", m.REFUSAL_CREDENTIALS)
        if caller is not None and caller.is_admin:
            # Orthanc's own REST API, Explorer, STOW: bodies only for administrators (size bounded). Never for a
            # token scoped to patients (Orthanc's API knows no scope), and, while deletions need a second
            # admin's approval, no deletion there but by an AdminUsers account (break-glass, basic auth).
            if caller.patients is not None:
                return refuse(uri, ip, "a token scoped to patients never reaches Orthanc's own API",
                              m.REFUSAL_NOT_ADMIN)
            if deletion_approval and caller.via != "basic" and access.deletes_stored_data(verb, uri):
                return refuse(uri, ip, "deletions need a second admin's approval: DELETE /api/v1/dicom/studies/"
                                       "{study_uid} asks for one (AdminUsers accounts may delete here)",
                              m.REFUSAL_NOT_ADMIN)
            return True
        kind = m.REFUSAL_CREDENTIALS if caller is None else m.REFUSAL_NOT_ADMIN
        return refuse(uri, ip, f"{viewer_refusal}administrator credentials required", kind)

    def _signed_image(path: str, verb: str, ip: str, headers: Mapping[str, str], query: Mapping[str, str]) -> bool:
        """Only ``GET`` of the one rendered image the token is for (core/image_urls.decide); the route judges it
        again (both ports) and counts it. Logged by path and reason, never with the query (the token)."""
        if signed_images is None:
            return refuse(path, ip, "signed image URLs are not served here")
        body = access.declared_body(headers)
        verdict = signed_images.judge(query[IMAGE_TOKEN], verb, path, query, body=body.present or not body.valid)
        return True if verdict.decision.allowed else refuse(path, ip, f"signed image URL: {verdict.decision.reason}")

    def _body_for_route(uri: str, verb: str, ip: str, headers: Mapping[str, str], body: access.DeclaredBody) -> bool:
        path = uri.split("?", 1)[0]
        reason = body_refusal(verb, path, None)  # does the route read a body at all?
        if reason is not None:
            return refuse(uri, ip, reason)
        if body.chunked:
            return refuse(uri, ip, "a chunked body cannot be bounded before it is read: send Content-Length")
        if body.length <= access.UNAUTHENTICATED_BODY_BYTES:
            return True  # small: the route authenticates and answers 401/403 with a JSON detail
        try:
            caller = authenticator.authenticate(headers, method=verb, client=ip)
        except AuthError as exc:
            return refuse(uri, ip, f"a body of {body.length} bytes needs valid credentials ({exc})",
                          m.REFUSAL_CREDENTIALS)
        if caller is None:
            return refuse(uri, ip, f"a body of {body.length} bytes needs credentials", m.REFUSAL_CREDENTIALS)
        reason = body_refusal(verb, path, caller)
        return True if reason is None else refuse(uri, ip, reason)

    return http_filter


def _is_form_post(verb: str, headers: Mapping[str, str]) -> bool:
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    return content_type == "multipart/form-data" and verb == "POST"


def method_name(method: object) -> str:
    """Orthanc passes an ``orthanc.HttpMethod`` member; tests may pass the name."""
    if isinstance(method, str):
        return method.upper()
    name = getattr(method, "name", None)
    if isinstance(name, str):
        return name.upper()
    return {1: "GET", 2: "POST", 3: "PUT", 4: "DELETE"}.get(int(method), "UNKNOWN")  # type: ignore[call-overload]
