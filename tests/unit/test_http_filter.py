"""The HTTP filter's judgement of request bodies, from the headers alone (Orthanc reads the body after it).

The route table is the real one (api.routes.register_all), so which routes take a body comes from the same
place the router and the OpenAPI document use.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any
from unittest import mock

import pytest

from ehr_imaging.api.router import Router
from ehr_imaging.api.routes import register_all
from ehr_imaging.app import uploading
from ehr_imaging.app.access_log import AccessLog
from ehr_imaging.app.dicomweb_gate import ViewerGate
from ehr_imaging.app.study_hierarchy import StudyHierarchy
from ehr_imaging.app.token_revocations import RevocationList
from ehr_imaging.core import metrics as m
from ehr_imaging.core.access import UNAUTHENTICATED_BODY_BYTES
from ehr_imaging.core.auth import (
    ALL_ROLES,
    SESSION_COOKIE,
    Authenticator,
    BasicAuthenticator,
    TokenVerifier,
    mint_token,
    session_principal,
)
from ehr_imaging.hooks.http_filter import make_filter
from tests.unit.auth_helpers import Ended

SECRET = "filter-test-secret-0123456789abcdef"
LIMIT = 1_000_000
GB = 1_000_000_000
SMALL = 100  # a JSON body: reaches the route, which answers 401/403 JSON itself
LARGE = UNAUTHENTICATED_BODY_BYTES + 1  # needs credentials and a role in the filter


def token(*roles: str) -> str:
    scope = {"patient_id": "p-1"} if "patient" in roles else None  # a patient token names its patient
    return mint_token(secret=SECRET, issuer="i", audience="a", subject="dr", roles=list(roles),
                      ttl_seconds=86400,  # minted at collection: must outlive a slow suite
                      extra=scope)


def bearer(*roles: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token(*roles)}"}


BASIC = {"authorization": "Basic " + base64.b64encode(b"admin:pw").decode()}
SESSION = mint_token(secret=SECRET, issuer="i", audience="session", subject="admin", roles=["admin"],
                     ttl_seconds=86400, extra={"jti": "sid"})  # minted at import: must outlive a slow suite
COOKIE = {"cookie": f"{SESSION_COOKIE}={SESSION}", "host": "pacs.example:8042"}


@pytest.fixture(scope="module")
def routes() -> Router:
    """Every route, registered as plugin.py does (services mocked: registering reads settings only)."""
    router = Router(mock.MagicMock(), lambda message: None)
    with mock.patch.object(uploading.JobRunner, "start"):  # no worker thread in a unit test
        register_all(router, mock.MagicMock(), mock.MagicMock())
    return router


@pytest.fixture()
def logged() -> list[str]:
    return []


@pytest.fixture()
def allowed(routes: Router, logged: list[str]) -> Callable[..., bool]:
    authenticator = Authenticator(
        users=TokenVerifier(issuer="i", audience="a", secret=SECRET), admins=BasicAuthenticator({"admin": "pw"}),
        sessions=TokenVerifier(issuer="i", audience="session", secret=SECRET, principal_from_claims=session_principal),
        session_revocations=Ended())
    viewers = TokenVerifier(issuer="i", audience="viewer", secret=SECRET)
    gate = ViewerGate(viewers, RevocationList(dict), StudyHierarchy(None), AccessLog(lambda counts: None))  # type: ignore[arg-type]
    http_filter = make_filter(authenticator, gate, logged.append, body_refusal=routes.body_refusal,
                              max_body_bytes=LIMIT)

    def call(method: str, uri: str, headers: dict[str, str] | None = None, length: int | None = None,
             **extra: str) -> bool:
        sent = dict(headers or {})
        if length is not None:
            sent["content-length"] = str(length)
        sent.update({k.replace("_", "-"): v for k, v in extra.items()})
        return bool(http_filter(uri, method, "192.0.2.7", sent, {}))

    return call


UPLOAD = "/api/v1/dicom/upload"


@pytest.mark.parametrize("uri", [UPLOAD, "/api/v1/dicom/health", "/api/v1/dicom/stats",
                                 "/ehr-imaging/dicom-web/studies", "/api/v1/dicom/no-such-route", "/system",
                                 "/instances", "/ohif/index.html", "/dicom-web/studies"])
@pytest.mark.parametrize("method", ["POST", "PUT"])
def test_a_huge_declared_body_without_credentials_is_refused_everywhere(
        allowed: Callable[..., bool], uri: str, method: str) -> None:
    assert not allowed(method, uri, length=GB)


def test_a_huge_declared_body_is_refused_even_with_valid_credentials(allowed: Callable[..., bool]) -> None:
    assert not allowed("POST", UPLOAD, bearer("doctor"), LIMIT + 1)
    assert not allowed("POST", "/instances", BASIC, LIMIT + 1)  # administrators too: Orthanc holds it in memory
    assert allowed("POST", UPLOAD, bearer("doctor"), LIMIT)


@pytest.mark.parametrize("headers", [{}, {"authorization": "Bearer garbage"}, {"authorization": "Token x"},
                                     {"authorization": "Basic " + base64.b64encode(b"admin:wrong").decode()}])
def test_a_large_body_needs_valid_credentials(allowed: Callable[..., bool], headers: dict[str, str]) -> None:
    assert not allowed("POST", UPLOAD, headers, LARGE)
    assert allowed("POST", UPLOAD, headers, SMALL)  # small: the route answers 401 with a JSON detail
    assert allowed("POST", UPLOAD, headers)  # no body: likewise
    assert allowed("POST", UPLOAD, bearer("doctor"), LARGE)


def test_a_large_body_needs_a_role_of_the_route(allowed: Callable[..., bool]) -> None:
    assert not allowed("POST", UPLOAD, bearer("nurse"), LARGE)  # uploads are for doctors, technicians, ...
    assert allowed("POST", UPLOAD, bearer("technician"), LARGE)


@pytest.mark.parametrize(("method", "uri"), [
    ("POST", "/api/v1/dicom/health"), ("GET", "/api/v1/dicom/stats"), ("POST", "/api/v1/dicom/admin/logout"),
    ("DELETE", "/api/v1/dicom/orders/o-1"), ("GET", "/api/v1/dicom/orders"), ("POST", "/api/v1/dicom/nothing-here"),
])
def test_routes_that_take_no_body_refuse_one(allowed: Callable[..., bool], method: str, uri: str) -> None:
    assert not allowed(method, uri, bearer(*sorted(ALL_ROLES)), 10)
    assert not allowed(method, uri, {}, 1)
    assert allowed(method, uri, {}, 0)  # without a body the router answers (401, 404 or 405 JSON)


def _concrete(template: str) -> str:
    return template.replace("{", "").replace("}", "")  # /orders/{order_id} -> /orders/order_id


def test_every_route_of_the_table_is_judged_by_its_own_contract(
        allowed: Callable[..., bool], routes: Router) -> None:
    everyone = bearer(*sorted(ALL_ROLES))
    checked = 0
    for route in routes.routes():
        uri = _concrete(route.template)
        if routes.route_for(route.method, uri) is not route:
            continue  # a literal path of another template wins (e.g. /studies/patient/x): checked there
        takes = bool(route.body_types)
        for size in (SMALL, LARGE):
            assert allowed(route.method, uri, everyone, size) is takes, (route.method, route.template, size)
        checked += 1
    assert checked >= 35


def test_chunked_bodies_cannot_be_bounded_so_only_administrators_send_them(allowed: Callable[..., bool]) -> None:
    assert not allowed("POST", UPLOAD, bearer("doctor"), transfer_encoding="chunked")
    assert not allowed("POST", "/instances", {}, transfer_encoding="chunked")
    assert allowed("POST", "/instances", BASIC, transfer_encoding="chunked")


@pytest.mark.parametrize("value", ["abc", "1, 1", "-1", "1e9", " ", "١٢"])
def test_an_unparseable_content_length_is_refused(allowed: Callable[..., bool], value: str) -> None:
    assert not allowed("POST", UPLOAD, {**bearer("doctor"), "content-length": value})


def test_the_scoped_qido_root_takes_get_without_a_body_only(allowed: Callable[..., bool]) -> None:
    root = "/ehr-imaging/dicom-web/studies"
    assert allowed("GET", root)  # the callback authenticates
    assert allowed("GET", root, length=0)
    assert not allowed("GET", root, length=1)
    for method in ("POST", "PUT", "DELETE"):
        assert not allowed(method, root)
        assert not allowed(method, root, BASIC)


def test_viewer_files_take_no_body(allowed: Callable[..., bool]) -> None:
    assert allowed("GET", "/ohif/index.html")
    assert not allowed("GET", "/ohif/index.html", length=5)


def test_orthanc_rest_api_bodies_are_for_administrators(allowed: Callable[..., bool]) -> None:
    assert allowed("POST", "/instances", BASIC, 100)
    assert allowed("POST", "/tools/find", bearer("admin"), 100)
    assert not allowed("POST", "/tools/find", bearer("doctor"), 100)


def test_cookie_state_changes_need_this_origin(allowed: Callable[..., bool], logged: list[str]) -> None:
    script = "/tools/execute-script"
    assert not allowed("POST", script, {**COOKIE, "origin": "http://evil.example"}, 10)
    assert not allowed("POST", script, {**COOKIE, "sec-fetch-site": "cross-site"}, 10)
    assert not allowed("POST", script, COOKIE, 10)  # neither Origin nor Sec-Fetch-Site
    assert not allowed("DELETE", "/studies/x", {**COOKIE, "origin": "http://evil.example"})
    assert allowed("POST", script, {**COOKIE, "origin": "http://pacs.example:8042"}, 10)
    assert allowed("POST", script, {**COOKIE, "sec-fetch-site": "same-origin"}, 10)
    assert allowed("GET", "/system", COOKIE)  # reads need no origin
    assert any("cross-site" in line or "Origin" in line for line in logged)


def test_the_frame_path_stays_as_it_was(allowed: Callable[..., bool]) -> None:
    """No body, no Content-Length: viewer reads are judged by the viewer gate exactly as before."""
    assert not allowed("GET", "/dicom-web/studies/1.2.3/metadata", {"authorization": "Bearer x"})
    assert allowed("GET", "/dicom-web/studies", BASIC)


def test_refusals_are_logged_without_the_body_or_credentials(allowed: Callable[..., bool], logged: list[str]) -> None:
    assert not allowed("POST", UPLOAD, bearer("nurse"), LARGE)
    assert logged and "Bearer" not in logged[-1] and token("nurse") not in logged[-1]


@pytest.mark.parametrize(("headers", "expected"), [
    ({}, (0, False, True, False)), ({"content-length": "0"}, (0, False, True, False)),
    ({"content-length": " 12 "}, (12, False, True, True)), ({"transfer-encoding": "chunked"}, (0, True, True, True)),
    ({"transfer-encoding": "identity", "content-length": "5"}, (5, False, True, True)),
    ({"content-length": "5, 5"}, (0, False, False, False)), ({"content-length": "+5"}, (0, False, False, False)),
])
def test_declared_body(headers: dict[str, str], expected: tuple[int, bool, bool, bool]) -> None:
    from ehr_imaging.core.access import declared_body

    body = declared_body(headers)
    assert (body.length, body.chunked, body.valid, body.present) == expected


@pytest.mark.parametrize(("tls", "public", "forwarded", "secure"), [
    (False, "", "", False), (True, "", "", True), (False, "https://pacs.example", "", True),
    (False, "http://pacs.example", "https", True), (False, "http://pacs.example", "http", False),
])
def test_the_session_cookie_is_secure_under_tls(tls: bool, public: str, forwarded: str, secure: bool) -> None:
    from ehr_imaging.api.admin_session import served_over_tls, session_cookie
    from ehr_imaging.api.router import Request

    services = mock.MagicMock(tls=tls)
    services.settings.PublicBaseUrl = public
    request = Request("GET", "/api/v1/dicom/admin/login", headers={"x-forwarded-proto": forwarded} if forwarded else {})
    assert served_over_tls(services, request) is secure
    cookie = session_cookie("v", 60, served_over_tls(services, request))
    assert cookie.endswith("; Secure") is secure and "HttpOnly; SameSite=Strict" in cookie


def test_each_refusal_is_counted_by_its_kind(routes: Router) -> None:
    registry = m.Metrics()
    authenticator = Authenticator(users=TokenVerifier(issuer="i", audience="a", secret=SECRET),
                                  admins=BasicAuthenticator({"admin": "pw"}), sessions=None)
    viewers = TokenVerifier(issuer="i", audience="viewer", secret=SECRET)
    gate = ViewerGate(viewers, RevocationList(dict), StudyHierarchy(None), AccessLog(lambda counts: None))  # type: ignore[arg-type]
    http_filter = make_filter(authenticator, gate, lambda message: None, body_refusal=routes.body_refusal,
                              max_body_bytes=LIMIT, metrics=registry)
    assert not http_filter("/system", "GET", "192.0.2.7", {}, {})  # no credentials
    assert not http_filter("/system", "GET", "192.0.2.7", {"authorization": "Bearer junk"}, {})
    assert not http_filter("/system", "GET", "192.0.2.7", bearer("doctor"), {})  # a person, not an administrator
    assert not http_filter(UPLOAD, "POST", "192.0.2.7", {"content-length": str(GB)}, {})  # too large a body
    assert http_filter("/system", "GET", "192.0.2.7", BASIC, {})  # allowed: not counted
    assert registry.get(m.FILTER_REFUSALS) == 4
    assert registry.get(m.refusal_name(m.REFUSAL_CREDENTIALS)) == 2
    assert registry.get(m.refusal_name(m.REFUSAL_NOT_ADMIN)) == 1
    assert registry.get(m.refusal_name(m.REFUSAL_BODY)) == 1
    assert registry.get(m.refusal_name(m.REFUSAL_VIEWER_SCOPE)) == 0


def _filter_with(routes: Router, **options: Any) -> Callable[..., bool]:
    authenticator = Authenticator(users=TokenVerifier(issuer="i", audience="a", secret=SECRET),
                                  admins=BasicAuthenticator({"admin": "pw"}), sessions=None)
    viewers = TokenVerifier(issuer="i", audience="viewer", secret=SECRET)
    gate = ViewerGate(viewers, RevocationList(dict), StudyHierarchy(None), AccessLog(lambda counts: None))  # type: ignore[arg-type]
    return make_filter(authenticator, gate, lambda message: None, body_refusal=routes.body_refusal,
                       max_body_bytes=LIMIT, **options)


def test_a_token_scoped_to_patients_never_reaches_orthancs_own_api(routes: Router) -> None:
    http_filter = _filter_with(routes)
    scoped = mint_token(secret=SECRET, issuer="i", audience="a", subject="dr", roles=["admin"], ttl_seconds=86400,
                        extra={"patients": ["p-1"]})
    for method, uri in (("GET", "/patients"), ("GET", "/studies"), ("POST", "/tools/find"),
                        ("GET", "/dicom-web/studies"), ("DELETE", "/studies/abc")):
        assert not http_filter(uri, method, "192.0.2.7", {"authorization": f"Bearer {scoped}"}, {}), uri
    assert http_filter("/patients", "GET", "192.0.2.7", bearer("admin"), {})  # the same role, unscoped


def test_while_deletions_need_approval_only_an_admin_account_deletes_on_orthancs_port(routes: Router) -> None:
    approval = _filter_with(routes, deletion_approval=True)
    for method, uri in (("DELETE", "/studies/abc"), ("DELETE", "/patients/abc"), ("DELETE", "/series/abc/"),
                        ("DELETE", "/instances/abc"), ("POST", "/tools/bulk-delete")):
        assert not approval(uri, method, "192.0.2.7", bearer("admin"), {}), uri  # an admin's JWT: ask instead
        assert approval(uri, method, "192.0.2.7", BASIC, {}), uri  # break-glass: an AdminUsers account
    assert approval("/studies/abc", "GET", "192.0.2.7", bearer("admin"), {})  # reading is not deleting
    assert approval("/studies/abc/attachments/x", "DELETE", "192.0.2.7", bearer("admin"), {})
    assert _filter_with(routes)("/studies/abc", "DELETE", "192.0.2.7", bearer("admin"), {})  # approval off
