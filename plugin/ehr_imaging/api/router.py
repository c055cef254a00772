"""A small router for Orthanc REST callbacks: paths, methods, roles, JSON answers and errors.

Independent of ``orthanc``: ``plugin.py`` turns Orthanc's callback arguments into a ``Request``
and writes the ``Response`` back, so routing and authorization are unit-testable.
Every route must say who may call it (``roles``); there is no default.
"""

from __future__ import annotations

import json
import re
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote_plus

from ..core import errors, fhir
from ..core.auth import Authenticator, AuthError, CrossSiteError, Principal, bearer_token
from ..core.iid import QUERY_TOKEN
from ..core.image_urls import TOKEN_PARAM as IMAGE_TOKEN_PARAM
from ..core.query_token import check_short_lived
from .schemas import Contract

PUBLIC: frozenset[str] = frozenset({"<public>"})
ANY_ROLE: frozenset[str] = frozenset({"<any authenticated>"})
# No header at all: the handler verifies the signed token in the URL (core/image_urls.py), for one image only.
SIGNED_URL: frozenset[str] = frozenset({"<signed URL>"})


# The one place where the plugin's error vocabulary becomes HTTP.
STATUS: dict[type[errors.DomainError], int] = {
    errors.Malformed: 400, errors.Forbidden: 403, errors.NotFound: 404, errors.Conflict: 409,
    errors.TooLarge: 413, errors.UnsupportedMedia: 415, errors.Invalid: 422, errors.RateLimited: 429,
    errors.Unavailable: 503,
}


def status_of(error: errors.DomainError) -> int:
    return next((status for kind, status in STATUS.items() if isinstance(error, kind)), 500)


def headers_of(error: errors.DomainError) -> dict[str, str]:
    """The error's facts, and ``Retry-After`` for what is away for now or over a rate limit."""
    if isinstance(error, (errors.Unavailable, errors.RateLimited)):
        return {**error.facts, "Retry-After": str(error.retry_after_seconds)}
    return dict(error.facts)


class _Unauthenticated(Exception):
    """No valid credentials: answered 401 with the ``WWW-Authenticate`` challenge (the router's own concern)."""

    def __init__(self, detail: str, challenge: str) -> None:
        super().__init__(detail)
        self.detail = detail
        self.challenge = challenge


@dataclass
class UploadedFile:
    """One file of a request: a ``multipart/form-data`` part (a view of the body the API listener received, or
    spooled to disk when large) or a raw request body. Exactly one of ``path`` and ``data`` is set."""

    field: str
    filename: str
    content_type: str
    size: int
    path: Path | None = None
    data: bytes | memoryview | None = None

    def read_bytes(self) -> bytes:
        if self.data is not None:
            return self.data if isinstance(self.data, bytes) else bytes(self.data)
        assert self.path is not None
        return self.path.read_bytes()

    def content(self) -> bytes | memoryview:
        """The content without a copy when it is in memory (a view of the request body, valid while the request
        is answered); ``read_bytes`` when it is on disk."""
        return self.data if self.data is not None else self.read_bytes()

    def open(self) -> IO[bytes]:
        """A binary stream of the content, without reading it all into memory when it is on disk."""
        if self.path is not None:
            return self.path.open("rb")
        import io

        return io.BytesIO(self.data or b"")


RAW_FILE_TYPES = ("application/dicom", "application/octet-stream", "application/zip", "application/x-zip-compressed",
                  "image/jpeg", "image/jpg", "image/png", "application/pdf")  # the last: upload-image


@dataclass
class Request:
    method: str
    path: str
    params: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    body: bytes = b""
    principal: Principal | None = None
    form: dict[str, str] = field(default_factory=dict)  # the text fields of a multipart/form-data body
    files: list[UploadedFile] = field(default_factory=list)  # its file parts, in order
    body_path: Path | None = None  # a large raw body the API listener spooled to disk instead of ``body``
    client_ip: str = ""
    can_stream: bool = False  # True on the API port, which sends ``Response.stream`` as it comes
    tls: bool = False  # True when it arrived over the API port's own TLS (ApiTlsCertificateFile)

    @property
    def patients(self) -> frozenset[str] | None:
        """The caller's patient scope (core/patient_scope.py); None: unscoped (or not authenticated)."""
        return self.principal.patients if self.principal is not None else None

    def json(self) -> Any:
        """The JSON body (None when there is none). Only as ``Content-Type: application/json``: a browser can send
        ``text/plain`` or a form across sites without a preflight, JSON only from the page's own origin."""
        if self.body and self.content_type != "application/json":
            raise errors.UnsupportedMedia("the body must be JSON sent as Content-Type: application/json")
        try:
            return json.loads(self.body or b"null")
        except (ValueError, UnicodeDecodeError) as exc:
            raise errors.Malformed(f"request body is not valid JSON: {exc}") from None

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()

    def uploaded_files(self, field_name: str) -> list[UploadedFile]:
        """The files sent under ``field_name`` in a form, or the raw body as one file (Content-Type
        ``application/dicom``, ``application/zip`` or ``application/octet-stream``; name in ``X-File-Name``).
        Empty when the request carries neither."""
        if self.files or self.content_type == "multipart/form-data":
            return [f for f in self.files if f.field == field_name]
        if self.content_type not in RAW_FILE_TYPES:
            return []
        name = self.headers.get("x-file-name", "").strip() or "upload"
        if self.body_path is not None:
            return [UploadedFile(field_name, name, self.content_type, self.body_path.stat().st_size,
                                 path=self.body_path)]
        return [UploadedFile(field_name, name, self.content_type, len(self.body), data=self.body)]

    def single_file(self, field_name: str, what: str = "file") -> UploadedFile:
        """The one file of ``field_name`` (or the raw body); 400 when there is none or more than one."""
        files = self.uploaded_files(field_name)
        if len(files) != 1:
            raise errors.Malformed(f"send exactly one {what} in the field '{field_name}' (or as the body)")
        return files[0]

    def option(self, name: str) -> str | None:
        """An option of the request: a form field, a query parameter or an ``X-<Name>`` header
        (``order_id`` -> ``X-Order-Id``), in that order. Orthanc's own HTTP server drops query strings on
        anything but GET, so the header form is what works there for POST and DELETE."""
        header = "x-" + name.replace("_", "-").lower()
        for value in (self.form.get(name), self.query.get(name), self.headers.get(header)):
            if value is not None and value.strip():
                return value.strip()
        return None


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    # A large answer produced piece by piece: the API listener sends it chunked as it comes; Orthanc's own
    # port cannot stream a plugin's answer, so there it is joined first (see ``joined``).
    stream: Iterable[bytes] | None = None

    def joined(self) -> bytes:
        return self.body if self.stream is None else b"".join(self.stream)


def json_response(payload: Any, status: int = 200) -> Response:
    return Response(status=status, body=json.dumps(payload, default=str).encode())


def error_response(status: int, detail: str, headers: Mapping[str, str] | None = None) -> Response:
    response = json_response({"detail": detail}, status)
    response.headers.update(headers or {})
    return response


def is_fhir(path: str) -> bool:
    return path == fhir.FHIR_ROOT or path.startswith(fhir.FHIR_ROOT + "/")


def error_for(path: str, status: int, detail: str, headers: Mapping[str, str] | None = None,
              expression: str | None = None) -> Response:
    """The error answer for a path: ``{"detail"}`` JSON, or under ``/fhir`` an OperationOutcome whose
    diagnostics is the same detail (``application/fhir+json``)."""
    if not is_fhir(path):
        return error_response(status, detail, headers)
    body = json.dumps(fhir.operation_outcome(status, detail, expression)).encode()
    response = Response(status=status, body=body, content_type=fhir.MEDIA_TYPE)
    response.headers.update(headers or {})
    return response


Handler = Callable[[Request], Response]
# Admits one request to a rate-limited route: (caller, body bytes, consume) -> None, or raises
# errors.RateLimited; ``consume`` False only looks (a refusal before the body is read).
Throttle = Callable[[Principal, int, bool], None]


@dataclass(frozen=True)
class Route:
    method: str
    template: str
    handler: Handler
    roles: frozenset[str]
    contract: Contract | None = None  # from the route table; None only for routes made in tests
    rate_limited: bool = False  # the router's throttle admits each request first (429 over a caller's limit)
    query_token: bool = False  # a short-lived user JWT in ``?token=`` is accepted too (core/query_token.py)

    @property
    def regex(self) -> str:
        return template_regex(self.template)

    @property
    def param_names(self) -> list[str]:
        return re.findall(r"{(\w+)}", self.template)

    @property
    def body_types(self) -> frozenset[str]:
        """The media types of the body this route reads, from its contract; empty: no body."""
        return frozenset(self.contract.body) if self.contract is not None else frozenset()


def declared_length(headers: Mapping[str, str]) -> int:
    """The body's declared ``Content-Length`` (0 when absent or not a number)."""
    value = headers.get("content-length", "").strip()
    return int(value) if value.isdigit() else 0


def body_size(request: Request) -> int:
    """The request body's size: as declared, else as received."""
    if request.body_path is not None:
        return max(declared_length(request.headers), request.body_path.stat().st_size)
    return max(declared_length(request.headers), len(request.body))


def decode_query(raw: Mapping[str, str]) -> dict[str, str]:
    """Orthanc 1.10 hands plugins the query string's keys and values still percent-encoded: decode them
    as a form would (``+`` is a space), as the API listener's parser does."""
    return {unquote_plus(str(key)): unquote_plus(str(value)) for key, value in raw.items()}


def template_regex(template: str) -> str:
    """``/orders/{order_id}`` -> ``/orders/([^/]+)``: Orthanc hands back the groups in order."""
    return re.sub(r"{\w+}", "([^/]+)", template)


def _refuse_nul_characters(request: Request) -> None:
    """No query or path value reaches a handler with a NUL character: PostgreSQL's text refuses it (a 500 the fuzz
    found, ``?mrn=%00``), and no identifier has one."""
    for name, value in (*request.query.items(), *request.params.items()):
        if "\x00" in name or "\x00" in value:
            raise errors.Malformed(f"{name.replace(chr(0), '?')!r}: a NUL character is not allowed")


class Router:
    def __init__(self, authenticator: Authenticator, log_error: Callable[[str], None],
                 unavailable: tuple[type[BaseException], ...] = (), throttle: Throttle | None = None,
                 available: Callable[[], None] | None = None) -> None:
        self._authenticator = authenticator
        # Raises errors.Unavailable while the database does not answer (its breaker): checked after
        # authorization, before a route that is not public reaches its handler, so none waits on it.
        self._available = available
        self._throttle = throttle
        self._log_error = log_error
        # Errors that mean a dependency is down (the database): 503, so the EHR retries, not a bare 500.
        self._unavailable = unavailable
        self._routes: dict[str, list[Route]] = {}
        self._patterns: dict[str, re.Pattern[str]] = {}  # template -> compiled, made when a route is added

    def add(self, method: str, template: str, handler: Handler, *, roles: Iterable[str],
            contract: Contract | None = None, rate_limited: bool = False, query_token: bool = False) -> None:
        roles = frozenset(roles)
        if not roles:
            raise ValueError(f"route {method} {template} must say who may call it")
        route = Route(method.upper(), template, handler, roles, contract, rate_limited, query_token)
        self._routes.setdefault(template, []).append(route)
        self._patterns.setdefault(template, re.compile(template_regex(template)))

    def templates(self) -> list[str]:
        """Templates with literal segments first, so ``/studies/patient/{id}`` wins over ``/studies/{uid}``."""
        return sorted(self._routes, key=lambda t: (t.count("{"), -len(t)))

    def routes(self) -> list[Route]:
        return [route for template in self.templates() for route in self._routes[template]]

    def route_for(self, method: str, path: str) -> Route | None:
        """The route that would answer ``method path``, if any (the HTTP filter asks before a body is read)."""
        found = self.resolve(path)
        if found is None:
            return None
        return next((r for r in self._routes[found[0]] if r.method == method.upper()), None)

    def body_refusal(self, method: str, path: str, caller: Principal | None) -> str | None:
        """Why a request body for ``method path`` from ``caller`` is refused before it is read, or None.
        A body is allowed only to a route whose contract declares one, from a caller with one of its roles
        (``caller`` None: the route alone is judged)."""
        route = self.route_for(method, path)
        if route is None:
            return f"no route {method} {path[:200]}: a body is refused"
        if not route.body_types:
            return f"{route.method} {route.template} takes no body"
        if (caller is not None and route.roles not in (PUBLIC, ANY_ROLE, SIGNED_URL)
                and not caller.has_any_role(route.roles)):
            return f"role not allowed for {route.method} {route.template}"
        return None

    def resolve(self, path: str) -> tuple[str, tuple[str, ...]] | None:
        """The template a path belongs to and its parameters, in the order Orthanc would try them."""
        for template in self.templates():
            match = self._patterns[template].fullmatch(path)
            if match is not None:
                return template, match.groups()
        return None

    def dispatch(self, template: str, request: Request, groups: Iterable[str] = ()) -> Response:
        """Answer one request for a path that matched ``template``; never raises."""
        try:
            routes = self._routes.get(template, [])
            route = next((r for r in routes if r.method == request.method), None)
            if route is None:
                allowed = ", ".join(sorted(r.method for r in routes))
                return error_for(request.path, 405, f"method {request.method} not allowed", {"Allow": allowed})
            request.params = dict(zip(route.param_names, groups, strict=False))
            self._authorize(route, request)
            _refuse_nul_characters(request)
            if self._available is not None and route.roles not in (PUBLIC, SIGNED_URL):
                self._available()
            if route.rate_limited and self._throttle is not None and request.principal is not None:
                self._throttle(request.principal, body_size(request), True)
            return route.handler(request)
        except _Unauthenticated as exc:
            return error_for(request.path, 401, exc.detail, {"WWW-Authenticate": exc.challenge})
        except errors.DomainError as exc:
            return error_for(request.path, status_of(exc), exc.detail, headers_of(exc),
                             getattr(exc, "expression", None))
        except self._unavailable as exc:
            self._log_error(f"{request.method} {request.path}: unavailable ({type(exc).__name__})")
            return error_for(request.path, 503, "the database is unavailable; try again shortly", {"Retry-After": "5"})
        except Exception:  # noqa: BLE001 - the last line of defence: never crash Orthanc's thread
            self._log_error(f"{request.method} {request.path} failed:\n{traceback.format_exc()}")
            return error_for(request.path, 500, "internal error")

    def early_refusal(self, method: str, path: str, headers: Mapping[str, str]) -> Response | None:
        """The 429 a rate-limited route would answer, judged from the head alone (the API port asks before it
        reads the body); None when it would not, or cannot tell yet (no valid bearer token: the route answers).
        Only looks: the request is counted when it is dispatched."""
        route = self.route_for(method, path)
        token = bearer_token(headers)
        if route is None or not route.rate_limited or self._throttle is None or token is None:
            return None
        try:
            principal = self._authenticator.users.verify(token)
        except AuthError:
            return None
        if not principal.has_any_role(route.roles):
            return None
        try:
            self._throttle(principal, declared_length(headers), False)
        except errors.RateLimited as exc:
            return error_response(status_of(exc), exc.detail, headers_of(exc))
        return None

    def _authorize(self, route: Route, request: Request) -> None:
        if route.roles == SIGNED_URL:
            return
        if IMAGE_TOKEN_PARAM in request.query:  # a signed image URL's token opens its own image, nothing else
            raise errors.Forbidden(f"a signed image URL does not open {route.method} {route.template}")
        if route.roles == PUBLIC:
            return
        in_url = request.query.get(QUERY_TOKEN, "").strip() if route.query_token else ""
        try:
            if in_url and not request.headers.get("authorization"):  # a browser opened the EHR's link
                principal: Principal | None = check_short_lived(in_url, self._authenticator.users.verify(in_url))
            else:
                principal = self._authenticator.authenticate(request.headers, method=request.method,
                                                             client=request.client_ip)
        except CrossSiteError as exc:
            raise errors.Forbidden(str(exc)) from None
        except AuthError as exc:
            raise _Unauthenticated(str(exc), 'Bearer error="invalid_token"') from None
        if principal is None:
            raise _Unauthenticated("authentication required", "Bearer")
        if route.roles != ANY_ROLE and not principal.has_any_role(route.roles):
            raise errors.Forbidden(f"role not allowed for {route.method} {route.template}")
        request.principal = principal
