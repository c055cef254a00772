"""``api.router``: authentication and authorization of every route, errors as JSON, never a crash."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from ehr_imaging.api.router import (
    ANY_ROLE,
    PUBLIC,
    Request,
    Response,
    Router,
    error_response,
    json_response,
    template_regex,
)
from ehr_imaging.core import errors
from ehr_imaging.core.auth import (
    ADMIN,
    DOCTOR,
    NURSE,
    RADIOLOGIST,
    Authenticator,
    BasicAuthenticator,
    Principal,
    TokenVerifier,
    mint_token,
)

ISSUER = "router-tests"
AUDIENCE = "ehr-imaging"
SECRET = "router-test-secret-0123456789abcdef"


def token(*roles: str, subject: str = "user-1", secret: str = SECRET) -> str:
    scope = {"patient_id": "p-1"} if "patient" in roles else None  # a patient token names its patient
    return mint_token(secret=secret, issuer=ISSUER, audience=AUDIENCE, subject=subject, roles=roles,
                      ttl_seconds=86400,  # minted at collection: must outlive a slow suite
                      extra=scope)


def bearer(*roles: str, **kwargs: Any) -> dict[str, str]:
    return {"authorization": f"Bearer {token(*roles, **kwargs)}"}


def basic(user: str, password: str) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def body(response: Response) -> Any:
    assert response.content_type == "application/json"
    return json.loads(response.body)


class Harness:
    """A router with a few routes, recording what reached the handlers and what was logged."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.seen: list[Request] = []
        authenticator = Authenticator(
            users=TokenVerifier(issuer=ISSUER, audience=AUDIENCE, secret=SECRET),
            admins=BasicAuthenticator({"root": "root-pw"}),
            sessions=None,
        )
        self.router = Router(authenticator, self.errors.append)
        r = self.router
        r.add("GET", "/api/v1/dicom/health", self.ok, roles=PUBLIC)
        r.add("GET", "/api/v1/dicom/orders/{order_id}", self.ok, roles=[DOCTOR, NURSE])
        r.add("put", "/api/v1/dicom/orders/{order_id}", self.ok, roles=[DOCTOR])
        r.add("DELETE", "/api/v1/dicom/orders/{order_id}", self.ok, roles={ADMIN})
        r.add("GET", "/api/v1/dicom/me", self.ok, roles=ANY_ROLE)
        r.add("GET", "/api/v1/dicom/orders/{order_id}/studies/{uid}", self.ok, roles=[RADIOLOGIST])
        r.add("GET", "/api/v1/dicom/boom", self.boom, roles=ANY_ROLE)
        r.add("GET", "/api/v1/dicom/public-boom", self.boom, roles=PUBLIC)
        r.add("POST", "/api/v1/dicom/conflict", self.conflict, roles=ANY_ROLE)
        r.add("POST", "/api/v1/dicom/echo", self.echo, roles=PUBLIC)

    def ok(self, request: Request) -> Response:
        self.seen.append(request)
        principal = request.principal
        return json_response({"params": request.params, "subject": principal.subject if principal else None})

    def boom(self, request: Request) -> Response:
        raise RuntimeError("secret database detail")

    def conflict(self, request: Request) -> Response:
        raise errors.Conflict("order already linked", {"Retry-After": "5"})

    def echo(self, request: Request) -> Response:
        return json_response(request.json(), status=201)

    def dispatch(
        self, method: str, template: str, headers: dict[str, str] | None = None, groups: tuple[str, ...] = (),
        body: bytes = b"",
    ) -> Response:
        request = Request(method=method, path=template, headers=headers or {}, body=body)
        return self.router.dispatch(template, request, groups)


@pytest.fixture
def h() -> Harness:
    return Harness()


ORDER = "/api/v1/dicom/orders/{order_id}"


# --- authentication: 401 ---------------------------------------------------------------------------


def test_no_credentials_is_401_with_challenge(h: Harness) -> None:
    response = h.dispatch("GET", ORDER, groups=("ORD-1",))
    assert response.status == 401
    assert body(response) == {"detail": "authentication required"}
    assert response.headers == {"WWW-Authenticate": "Bearer"}
    assert h.seen == []


@pytest.mark.parametrize(
    ("headers", "detail"),
    [
        ({"authorization": "Bearer not-a-jwt"}, "malformed token"),
        (bearer(DOCTOR, secret="some-other-secret-0123456789abcdef"), "Signature verification failed"),
        (bearer("superuser"), "token carries no known role"),
        (basic("root", "wrong"), "invalid credentials"),
        ({"authorization": "Digest username=root"}, "unsupported authorization scheme"),
    ],
)
def test_bad_credentials_are_401_with_invalid_token_challenge(h: Harness, headers: dict[str, str], detail: str) -> None:
    response = h.dispatch("GET", ORDER, headers, groups=("ORD-1",))
    assert response.status == 401
    assert detail in body(response)["detail"]
    assert response.headers == {"WWW-Authenticate": 'Bearer error="invalid_token"'}
    assert h.seen == []
    assert h.errors == []  # a refused caller is not a server error


def test_token_whose_alg_does_not_fit_the_key_is_401_not_500() -> None:
    # Regression: an RS256 header against an EC key made PyJWT raise TypeError, answered as a 500.
    ec_public = ec.generate_private_key(ec.SECP256R1()).public_key()
    errors: list[str] = []
    users = TokenVerifier(issuer=ISSUER, audience=AUDIENCE, public_keys={None: ec_public})
    router = Router(Authenticator(users=users, admins=BasicAuthenticator({}), sessions=None), errors.append)
    router.add("GET", "/x", lambda r: json_response({}), roles=ANY_ROLE)

    def segment(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    forged = f"{segment({'alg': 'RS256'})}.{segment({'sub': 'x', 'role': ADMIN})}.{segment({})}"
    response = router.dispatch("/x", Request(method="GET", path="/x", headers={"authorization": f"Bearer {forged}"}))
    assert response.status == 401
    assert errors == []


@pytest.mark.parametrize("template", [ORDER, "/api/v1/dicom/me"])
def test_any_route_but_public_needs_credentials(h: Harness, template: str) -> None:
    assert h.dispatch("GET", template, groups=("x",)).status == 401


# --- authorization: 403 ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "headers", "status"),
    [
        ("GET", bearer(DOCTOR), 200),
        ("GET", bearer(NURSE), 200),
        ("GET", bearer(RADIOLOGIST), 403),
        ("GET", bearer(RADIOLOGIST, NURSE), 200),  # any one of the roles is enough
        ("GET", basic("root", "root-pw"), 403),  # admin is not implicitly every role
        ("PUT", bearer(DOCTOR), 200),
        ("PUT", bearer(NURSE), 403),
        ("DELETE", bearer(DOCTOR), 403),
        ("DELETE", basic("root", "root-pw"), 200),
        ("DELETE", bearer(ADMIN), 200),
    ],
)
def test_roles_per_method(h: Harness, method: str, headers: dict[str, str], status: int) -> None:
    response = h.dispatch(method, ORDER, headers, groups=("ORD-1",))
    assert response.status == status
    if status == 403:
        assert body(response) == {"detail": f"role not allowed for {method} {ORDER}"}
        assert "WWW-Authenticate" not in response.headers
        assert h.seen == []
    else:
        assert body(response)["params"] == {"order_id": "ORD-1"}


def test_principal_reaches_the_handler(h: Harness) -> None:
    response = h.dispatch("GET", ORDER, bearer(DOCTOR, subject="dr-who"), groups=("ORD-1",))
    assert body(response)["subject"] == "dr-who"
    principal = h.seen[0].principal
    assert isinstance(principal, Principal) and principal.roles == {DOCTOR}


@pytest.mark.parametrize("headers", [bearer(NURSE), bearer("ehr-service"), basic("root", "root-pw")])
def test_any_role_accepts_any_authenticated_caller(h: Harness, headers: dict[str, str]) -> None:
    assert h.dispatch("GET", "/api/v1/dicom/me", headers).status == 200


# --- public routes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [{}, {"authorization": "Bearer garbage"}, basic("root", "wrong")])
def test_public_route_needs_no_authentication(h: Harness, headers: dict[str, str]) -> None:
    response = h.dispatch("GET", "/api/v1/dicom/health", headers)
    assert response.status == 200
    assert body(response) == {"params": {}, "subject": None}
    assert h.seen[0].principal is None  # credentials on a public route are not even looked at


# --- 405 -------------------------------------------------------------------------------------------


def test_wrong_method_is_405_with_allow_header(h: Harness) -> None:
    response = h.dispatch("POST", ORDER, bearer(DOCTOR), groups=("ORD-1",))
    assert response.status == 405
    assert body(response) == {"detail": "method POST not allowed"}
    assert response.headers == {"Allow": "DELETE, GET, PUT"}
    assert h.seen == []


def test_method_names_are_upper_case(h: Harness) -> None:
    # "put" was registered lower-case; the router stores it upper-case, Orthanc sends upper-case.
    assert h.dispatch("PUT", ORDER, bearer(DOCTOR), groups=("1",)).status == 200
    assert {route.method for route in h.router.routes()} <= {"GET", "PUT", "POST", "DELETE"}


def test_unknown_template_is_405_with_empty_allow(h: Harness) -> None:
    response = h.dispatch("GET", "/api/v1/dicom/nowhere")
    assert (response.status, response.headers) == (405, {"Allow": ""})


# --- 500 and the error vocabulary ------------------------------------------------------------------------------


def test_handler_exception_is_500_and_logged(h: Harness) -> None:
    response = h.dispatch("GET", "/api/v1/dicom/boom", bearer(DOCTOR))
    assert response.status == 500
    assert body(response) == {"detail": "internal error"}
    assert b"secret database detail" not in response.body  # no internals to the caller ...
    assert len(h.errors) == 1  # ... but all of them in the log
    logged = h.errors[0]
    assert logged.startswith("GET /api/v1/dicom/boom failed:\n")
    assert "Traceback (most recent call last)" in logged
    assert "RuntimeError: secret database detail" in logged
    assert "in boom" in logged


def test_public_handler_exception_is_500_too(h: Harness) -> None:
    assert h.dispatch("GET", "/api/v1/dicom/public-boom").status == 500
    assert len(h.errors) == 1


def test_authenticator_crash_is_500_not_a_pass() -> None:
    class Broken(Authenticator):
        def authenticate(self, headers: Any, *, method: str, client: str = "") -> Principal | None:
            raise KeyError("boom")

    errors: list[str] = []
    base = Authenticator(users=TokenVerifier(issuer="i", audience="a", secret=SECRET),
                         admins=BasicAuthenticator({}), sessions=None)
    router = Router(Broken(users=base.users, admins=base.admins, sessions=None), errors.append)
    called: list[Request] = []

    def handler(request: Request) -> Response:
        called.append(request)
        return json_response({})

    router.add("GET", "/x", handler, roles=ANY_ROLE)
    response = router.dispatch("/x", Request(method="GET", path="/x"))
    assert response.status == 500 and called == [] and "KeyError" in errors[0]


def test_api_error_is_mapped(h: Harness) -> None:
    response = h.dispatch("POST", "/api/v1/dicom/conflict", bearer(NURSE))
    assert response.status == 409
    assert body(response) == {"detail": "order already linked"}
    assert response.headers == {"Retry-After": "5"}
    assert h.errors == []


JSON_TYPE = {"content-type": "application/json; charset=utf-8"}


def test_request_json(h: Harness) -> None:
    ok = h.dispatch("POST", "/api/v1/dicom/echo", JSON_TYPE, body=b'{"a": [1, 2]}')
    assert (ok.status, body(ok)) == (201, {"a": [1, 2]})
    assert body(h.dispatch("POST", "/api/v1/dicom/echo")) is None  # empty body
    bad = h.dispatch("POST", "/api/v1/dicom/echo", JSON_TYPE, body=b"{nope")
    assert bad.status == 400
    assert body(bad)["detail"].startswith("request body is not valid JSON")
    assert h.dispatch("POST", "/api/v1/dicom/echo", JSON_TYPE, body=b"\xff\xfe").status == 400


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", "application/jsonx", "text/json"])
def test_a_json_body_must_say_application_json(h: Harness, content_type: str | None) -> None:
    """A page on another site can POST text/plain or a form without a preflight, never application/json."""
    headers = {"content-type": content_type} if content_type else {}
    refused = h.dispatch("POST", "/api/v1/dicom/echo", headers, body=b'{"a": 1}')
    assert refused.status == 415
    assert "application/json" in body(refused)["detail"]


# --- params ----------------------------------------------------------------------------------------


def test_params_come_from_the_groups_in_order(h: Harness) -> None:
    template = "/api/v1/dicom/orders/{order_id}/studies/{uid}"
    response = h.dispatch("GET", template, bearer(RADIOLOGIST), groups=("ORD-9", "1.2.3"))
    assert body(response)["params"] == {"order_id": "ORD-9", "uid": "1.2.3"}
    assert h.seen[0].params == {"order_id": "ORD-9", "uid": "1.2.3"}


def test_params_are_replaced_not_merged(h: Harness) -> None:
    request = Request(method="GET", path=ORDER, params={"injected": "x"}, headers=bearer(DOCTOR))
    h.router.dispatch(ORDER, request, iter(["ORD-2"]))
    assert h.seen[0].params == {"order_id": "ORD-2"}


# --- registration ----------------------------------------------------------------------------------


@pytest.mark.parametrize("roles", [[], set(), frozenset(), ()])
def test_add_refuses_empty_roles(roles: Any) -> None:
    router = Harness().router
    with pytest.raises(ValueError, match="must say who may call it"):
        router.add("GET", "/api/v1/dicom/open", lambda r: json_response({}), roles=roles)
    assert "/api/v1/dicom/open" not in router.templates()


def test_add_accepts_any_iterable_of_roles() -> None:
    router = Harness().router
    router.add("GET", "/g", lambda r: json_response({}), roles=(role for role in [DOCTOR]))
    assert next(r for r in router.routes() if r.template == "/g").roles == {DOCTOR}


def test_templates_put_literal_segments_first() -> None:
    router = Harness().router
    noop = lambda r: json_response({})  # noqa: E731
    added = [
        "/api/v1/dicom/studies/{uid}",
        "/api/v1/dicom/studies/{uid}/series/{series}",
        "/api/v1/dicom/studies/patient/{patient_id}",
        "/api/v1/dicom/studies/summary",
    ]
    for template in added:
        router.add("GET", template, noop, roles=ANY_ROLE)
    order = [t for t in router.templates() if t.startswith("/api/v1/dicom/studies")]
    assert order == [
        "/api/v1/dicom/studies/summary",
        "/api/v1/dicom/studies/patient/{patient_id}",
        "/api/v1/dicom/studies/{uid}",
        "/api/v1/dicom/studies/{uid}/series/{series}",
    ]
    # What the order is for: Orthanc takes the first registered regex that matches.
    def first_match(path: str) -> str:
        return next(t for t in router.templates() if re.fullmatch(template_regex(t), path))

    assert first_match("/api/v1/dicom/studies/summary") == "/api/v1/dicom/studies/summary"
    assert first_match("/api/v1/dicom/studies/patient/P1") == "/api/v1/dicom/studies/patient/{patient_id}"
    assert first_match("/api/v1/dicom/studies/1.2.3") == "/api/v1/dicom/studies/{uid}"
    assert first_match("/api/v1/dicom/studies/1.2.3/series/4.5") == "/api/v1/dicom/studies/{uid}/series/{series}"


def test_routes_follow_templates(h: Harness) -> None:
    routes = h.router.routes()
    assert list(dict.fromkeys(r.template for r in routes)) == h.router.templates()
    assert [r.method for r in routes if r.template == ORDER] == ["GET", "PUT", "DELETE"]


@pytest.mark.parametrize(
    ("template", "regex", "names"),
    [
        ("/a/b", "/a/b", []),
        ("/orders/{order_id}", "/orders/([^/]+)", ["order_id"]),
        ("/o/{a}/s/{b}", "/o/([^/]+)/s/([^/]+)", ["a", "b"]),
    ],
)
def test_template_regex(template: str, regex: str, names: list[str]) -> None:
    assert template_regex(template) == regex
    router = Harness().router
    router.add("GET", template, lambda r: json_response({}), roles=PUBLIC)
    route = next(r for r in router.routes() if r.template == template)
    assert (route.regex, route.param_names) == (regex, names)


def test_group_regex_does_not_cross_segments() -> None:
    assert re.fullmatch(template_regex("/orders/{id}"), "/orders/a/b") is None
    assert re.fullmatch(template_regex("/orders/{id}"), "/orders/") is None


# --- response helpers ------------------------------------------------------------------------------


def test_json_response_serialises_anything_via_str() -> None:
    import datetime

    response = json_response({"when": datetime.date(2024, 1, 2)}, status=202)
    assert (response.status, json.loads(response.body)) == (202, {"when": "2024-01-02"})


def test_error_response_headers_are_copied() -> None:
    headers = {"X": "1"}
    response = error_response(418, "teapot", headers)
    response.headers["Y"] = "2"
    assert headers == {"X": "1"}
    assert json.loads(response.body) == {"detail": "teapot"}


def test_an_unavailable_dependency_is_a_503_with_retry_after() -> None:
    class DatabaseDown(Exception):
        pass

    errors: list[str] = []
    users = TokenVerifier(issuer=ISSUER, audience=AUDIENCE, secret=SECRET)
    router = Router(Authenticator(users=users, admins=BasicAuthenticator({}), sessions=None), errors.append,
                    unavailable=(DatabaseDown,))

    def handler(request: Request) -> Response:
        raise DatabaseDown("connection refused")

    router.add("GET", "/api/v1/dicom/x", handler, roles=PUBLIC)
    answer = router.dispatch("/api/v1/dicom/x", Request(method="GET", path="/api/v1/dicom/x"))
    assert (answer.status, answer.headers["Retry-After"]) == (503, "5")
    assert "connection refused" not in body(answer)["detail"]  # no internals in the answer


@pytest.mark.parametrize(("error", "status"), [
    (errors.Invalid("x"), 422), (errors.NotFound("x"), 404), (errors.Conflict("x"), 409),
    (errors.Forbidden("x"), 403), (errors.TooLarge("x"), 413), (errors.Unavailable("x"), 503),
])
def test_the_error_vocabulary_becomes_statuses_in_the_router(error: errors.DomainError, status: int) -> None:
    router = Harness().router

    def failing(request: Request) -> Response:
        raise error

    router.add("GET", "/api/v1/dicom/fails", failing, roles=PUBLIC)
    answer = router.dispatch("/api/v1/dicom/fails", Request(method="GET", path="/api/v1/dicom/fails"))
    assert answer.status == status and json.loads(answer.body) == {"detail": "x"}
    assert (answer.headers.get("Retry-After") == "5") is (status == 503)


# --- FHIR routes: every error is an OperationOutcome with the same detail ------------------------------------


def outcome(response: Response) -> tuple[int, str, str]:
    assert response.content_type == "application/fhir+json"
    [issue] = json.loads(response.body)["issue"]
    return response.status, issue["code"], issue["diagnostics"]


def test_errors_on_fhir_paths_are_operation_outcomes(h: Harness) -> None:
    h.router.add("GET", "/fhir/ImagingStudy/{study_uid}", h.ok, roles=[DOCTOR])
    h.router.add("PUT", "/fhir/ServiceRequest/{order_id}", h.conflict, roles=ANY_ROLE)
    h.router.add("GET", "/fhir/boom", h.boom, roles=ANY_ROLE)
    read = "/fhir/ImagingStudy/{study_uid}"
    anonymous = h.dispatch("GET", read, groups=("1.2.3",))
    assert outcome(anonymous) == (401, "login", "authentication required")
    assert anonymous.headers == {"WWW-Authenticate": "Bearer"}
    assert outcome(h.dispatch("GET", read, bearer(NURSE), ("1.2.3",))) == (
        403, "forbidden", f"role not allowed for GET {read}")
    assert outcome(h.dispatch("DELETE", read, bearer(DOCTOR), ("1.2.3",)))[:2] == (405, "not-supported")
    conflict = h.dispatch("PUT", "/fhir/ServiceRequest/{order_id}", bearer(NURSE), ("o-1",))
    assert outcome(conflict) == (409, "conflict", "order already linked")
    assert conflict.headers == {"Retry-After": "5"}
    assert outcome(h.dispatch("GET", "/fhir/boom", bearer(NURSE))) == (500, "exception", "internal error")
    ok = h.dispatch("GET", read, bearer(DOCTOR), ("1.2.3",))
    assert ok.status == 200 and body(ok)["params"] == {"study_uid": "1.2.3"}  # the handler's own answer
    assert body(h.dispatch("GET", ORDER, groups=("ORD-1",))) == {"detail": "authentication required"}  # JSON API


def test_a_nul_character_in_a_query_or_path_value_is_400_before_the_handler(h: Harness) -> None:
    for query, groups in (({"mrn": "\x00"}, ("ORD-1",)), ({"a\x00": "1"}, ("ORD-1",)), ({}, ("ORD\x001",))):
        request = Request(method="GET", path=ORDER, headers=bearer(DOCTOR), query=query)
        response = h.router.dispatch(ORDER, request, groups)
        assert response.status == 400 and "NUL character" in body(response)["detail"]
    assert h.seen == []
