"""Issue 9 against the real stack: bodies judged before Orthanc reads them, bounded rendering, admin sessions
(logout, Secure, CSRF), JSON content type, the basic-auth limiter, token subjects and log lines."""

from __future__ import annotations

import base64
import json
import socket
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import create_engine, text

from ehr_imaging.core.auth import SESSION_COOKIE, mint_token
from ehr_imaging.core.study_identity import orthanc_study_id
from ehr_imaging.core.viewer_tokens import mint_viewer_token
from ehr_imaging.store import db
from ehr_stack.stack import Stack
from tests.conftest import Client
from tests.integration.viewer_helpers import StoredStudy, as_viewer, viewer_token
from tests.waiting import eventually

pytestmark = pytest.mark.integration

GB = 1_000_000_000
MB = 1024 * 1024


# --- item 1: a declared body is judged from the headers, before Orthanc allocates it ---------------------

def rss_mb(stack: Stack) -> float:
    pid = stack.orthanc_pid()
    assert pid is not None
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def open_request(stack: Stack, method: str, path: str, length: int, headers: dict[str, str] | None = None,
                 source: str = "") -> socket.socket:
    """Send the headers of a request declaring ``length`` bytes of body, and one byte of it; keep it open."""
    sock = socket.create_connection(("127.0.0.1", stack.config.http_port), timeout=15,
                                    source_address=(source, 0) if source else None)
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{stack.config.http_port}",
             f"Content-Length: {length}", "Content-Type: application/dicom"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + b"x")
    return sock


def status_of(sock: socket.socket) -> int | None:
    """The status Orthanc answers, or None when it keeps waiting for the body (15 s)."""
    try:
        head = sock.recv(4096)
    except TimeoutError:
        return None
    return int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else None


@pytest.mark.parametrize(("method", "path", "length"), [
    ("POST", "/api/v1/dicom/upload", GB), ("POST", "/api/v1/dicom/upload", 200 * MB),
    ("POST", "/api/v1/dicom/health", GB), ("GET", "/api/v1/dicom/health", GB),
    ("POST", "/ehr-imaging/dicom-web/studies", GB), ("GET", "/ehr-imaging/dicom-web/studies", 200 * MB),
    ("POST", "/instances", GB), ("PUT", "/api/v1/dicom/orders/o-1", 200 * MB),
])
def test_a_huge_body_without_credentials_is_refused_before_orthanc_allocates_it(
        stack: Stack, method: str, path: str, length: int) -> None:
    before = rss_mb(stack)
    socks = [open_request(stack, method, path, length) for _ in range(4)]
    try:
        started = time.monotonic()
        statuses = [status_of(sock) for sock in socks]
        answered_in = time.monotonic() - started
        during = rss_mb(stack)
    finally:
        for sock in socks:
            sock.close()
    print(f"\n{method} {path}: 4 x Content-Length {length}: statuses {statuses} in {answered_in:.2f} s;"
          f" Orthanc RSS {before:.0f} MB -> {during:.0f} MB")
    assert statuses == [403] * 4
    assert during - before < 100, f"Orthanc's memory grew by {during - before:.0f} MB"


def test_a_body_over_the_port_limit_is_refused_even_for_an_administrator(stack: Stack) -> None:
    user, password = stack.admin_auth
    basic = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    before = rss_mb(stack)
    sock = open_request(stack, "POST", "/instances", GB, {"Authorization": basic})
    try:
        assert status_of(sock) == 403
        assert rss_mb(stack) - before < 100
    finally:
        sock.close()


def test_small_json_with_a_bad_token_still_gets_the_routes_401(client: Client) -> None:
    answer = client.request("PUT", "/api/v1/dicom/orders/o-401", json={"patient_id": "x"},
                            headers={"Authorization": "Bearer expired.or.garbage"})
    assert answer.status_code == 401
    assert answer.json()["detail"]


def test_a_large_body_needs_credentials_and_a_role_of_the_route(client: Client) -> None:
    body = b"\0" * (65 * 1024)
    upload = "/api/v1/dicom/upload"
    kinds = {"Content-Type": "application/dicom"}
    assert client.request("POST", upload, data=body, headers=kinds).status_code == 403  # no credentials
    assert client.request("POST", upload, "nurse", data=body, headers=kinds).status_code == 403  # role
    passed = client.request("POST", upload, "technician", data=body, headers=kinds)
    assert passed.status_code == 400, passed.text  # through the filter to the route: zeros are not DICOM (README)
    assert client.request("POST", "/api/v1/dicom/stats", "admin", data=b"{}").status_code == 403  # no body taken


# --- item 7: bounded rendering ------------------------------------------------------------------------

def test_a_viewer_token_cannot_ask_for_a_huge_rendering(client: Client, two_studies: tuple[StoredStudy, Any]) -> None:
    a = two_studies[0]
    token = viewer_token(client, study_uids=[a.uid])["token"]
    rendered = f"/dicom-web/studies/{a.uid}/series/{a.series}/instances/{a.instances[0]}/rendered"
    started = time.monotonic()
    huge = as_viewer(client, token, rendered + "?viewport=60000,60000", headers={"Accept": "image/png"})
    assert huge.status_code == 403
    assert time.monotonic() - started < 5
    small = as_viewer(client, token, rendered + "?viewport=64,64", headers={"Accept": "image/png"})
    assert small.status_code == 200 and small.content.startswith(b"\x89PNG")
    for query in ("quality=1000", "viewport=64,64&quality=0", "window=nan,1"):
        assert as_viewer(client, token, f"{rendered}?{query}").status_code == 403, query
    wado = f"/wado?requestType=WADO&studyUID={a.uid}&seriesUID={a.series}&objectUID={a.instances[0]}"
    assert as_viewer(client, token, wado + "&contentType=image/jpeg&rows=60000&columns=60000").status_code == 403
    assert as_viewer(client, token, wado + "&contentType=image/jpeg&rows=64&columns=64").status_code == 200
    scoped = "/ehr-imaging/dicom-web/studies?limit=100000"
    assert as_viewer(client, token, scoped).status_code == 400


# --- item 11: admin sessions -------------------------------------------------------------------------

def sign_in(client: Client, **headers: str) -> tuple[requests.Session, requests.Response]:
    browser = requests.Session()
    answer = browser.get(f"{client.base}/api/v1/dicom/admin/login", auth=client.stack.admin_auth,
                         allow_redirects=False, timeout=10, headers=headers)
    assert answer.status_code == 302
    return browser, answer


def test_logout_ends_the_session_everywhere_not_only_in_this_browser(client: Client) -> None:
    browser, _ = sign_in(client)
    stolen = browser.cookies.get(SESSION_COOKIE)
    assert stolen
    replay = {"Cookie": f"{SESSION_COOKIE}={stolen}"}
    assert requests.get(f"{client.base}/system", headers=replay, timeout=10).status_code == 200
    assert requests.get(f"{client.stack.api_url}/api/v1/dicom/stats", headers=replay, timeout=10).status_code == 200
    out = browser.post(f"{client.base}/api/v1/dicom/admin/logout", timeout=10, headers={"Origin": client.base})
    assert out.status_code == 204
    # The cookie copied before the logout (another tab, a stolen copy) no longer works, on either port.
    assert requests.get(f"{client.base}/system", headers=replay, timeout=10).status_code == 403
    on_api = requests.get(f"{client.stack.api_url}/api/v1/dicom/stats", headers=replay, timeout=10)
    assert on_api.status_code == 401 and "session ended" in on_api.json()["detail"]
    claims = json.loads(base64.urlsafe_b64decode(stolen.split(".")[1] + "=="))
    engine = create_engine(db.normalize_url(client.stack.postgres.url))
    with engine.connect() as conn:
        row = conn.execute(text("SELECT subject FROM ehr_imaging.admin_session_revocations WHERE session_id = :s"),
                           {"s": claims["jti"]}).one()
    engine.dispose()
    assert row[0] == client.stack.admin_auth[0]


def test_the_cookie_is_secure_when_served_over_tls(client: Client) -> None:
    _, plain = sign_in(client)
    assert "Secure" not in plain.headers["Set-Cookie"]
    _, tls = sign_in(client, **{"X-Forwarded-Proto": "https"})
    assert "; Secure" in tls.headers["Set-Cookie"] and "HttpOnly" in tls.headers["Set-Cookie"]


def test_cookie_state_changes_from_another_site_are_refused(client: Client) -> None:
    browser, _ = sign_in(client)
    evil = {"Origin": "http://evil.example", "Content-Type": "text/plain"}
    find, query = f"{client.base}/tools/find", json.dumps({"Level": "Study", "Query": {}}).encode()
    # Orthanc's own REST API behind the cookie: a cross-site text/plain POST (no preflight) is refused.
    assert browser.post(find, data=query, headers=evil, timeout=10).status_code == 403
    assert browser.post(find, data=query, headers={"Sec-Fetch-Site": "cross-site"}, timeout=10).status_code == 403
    assert browser.post(find, data=query, timeout=10).status_code == 403  # neither header: refused too
    assert browser.delete(f"{client.base}/studies/0", headers={"Origin": "http://evil.example"},
                          timeout=10).status_code == 403
    same = {"Origin": client.base}
    assert browser.post(find, data=query, headers=same, timeout=10).status_code == 200
    assert browser.post(find, data=query, headers={"Sec-Fetch-Site": "same-origin"}, timeout=10).status_code == 200
    # Our routes: the origin is checked by the router too (JSON detail), and JSON must say application/json.
    token = f"{client.base}/api/v1/dicom/viewer-token"
    cross = browser.post(token, json={"study_uids": ["1.2.3"]}, headers={"Origin": "http://evil.example"}, timeout=10)
    assert cross.status_code == 403 and "cross-origin" in cross.json()["detail"]
    plain = browser.post(token, data=b'{"study_uids": ["1.2.3"]}', headers={**same, "Content-Type": "text/plain"},
                         timeout=10)
    assert plain.status_code == 415 and "application/json" in plain.json()["detail"]
    assert browser.get(f"{client.base}/system", headers={"Origin": "http://evil.example"}, timeout=10).status_code \
        == 200  # reads are not state changes


def test_json_routes_refuse_other_content_types(client: Client) -> None:
    body = b'{"study_uids": ["1.2.3"]}'
    for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = {"Content-Type": content_type} if content_type else {}
        answer = client.request("POST", "/api/v1/dicom/viewer-token", "doctor", data=body, headers=headers)
        assert answer.status_code == 415, content_type


# --- info items: the basic-auth limiter, subjects, log lines --------------------------------------------

def test_failed_admin_sign_ins_lock_the_address_out(client: Client) -> None:
    """From a loopback address of its own (127.0.0.23), so the rest of the suite is not locked out. Through the
    API port: Orthanc's own port answers any address but 127.0.0.1 with 401 itself (RemoteAccessAllowed false)."""
    stack = client.stack
    user, password = stack.admin_auth

    def stats(secret: str) -> int | None:
        basic = "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()
        sock = socket.create_connection(("127.0.0.1", stack.config.api_port), timeout=10,
                                        source_address=("127.0.0.23", 0))
        try:
            sock.sendall(f"GET /api/v1/dicom/stats HTTP/1.1\r\nHost: x\r\nAuthorization: {basic}\r\n"
                         "Connection: close\r\n\r\n".encode())
            return status_of(sock)
        finally:
            sock.close()

    assert stats(password) == 200
    assert [stats("guess") for _ in range(10)] == [401] * 10
    assert stats(password) == 401  # locked out, the right password included
    assert client.get("/system", auth=stack.admin_auth).status_code == 200  # other addresses are not


def test_tokens_with_crlf_or_empty_subjects_are_refused(client: Client) -> None:
    stack = client.stack
    for subject in ("dr\r\nW0101 forged", "", " "):
        forged = mint_token(secret=stack.secrets.jwt_secret, issuer=stack.settings_value("JwtIssuer"),
                            audience=stack.settings_value("JwtAudience"), subject=subject, roles=["doctor"],
                            ttl_seconds=600)
        answer = client.get("/api/v1/dicom/stats", headers={"Authorization": f"Bearer {forged}"})
        assert answer.status_code == 401, repr(subject)
        assert "subject" in answer.json()["detail"]


def test_request_data_never_forges_a_log_line(client: Client, two_studies: tuple[StoredStudy, Any]) -> None:
    stack = client.stack
    marker = f"W9999 forged-{time.time_ns()}"
    a, b = two_studies
    # A viewer token signed with the right key whose subject carries CR/LF, used outside its scope (logged).
    token = mint_viewer_token(secret=stack.secrets.jwt_secret, issuer=stack.settings_value("JwtIssuer"),
                              subject=f"x\r\n{marker}", studies={a.uid: orthanc_study_id(a.patient_id, a.uid)},
                              ttl_seconds=60).token
    assert as_viewer(client, token, f"/dicom-web/studies/{b.uid}/metadata").status_code == 403
    raw = socket.create_connection(("127.0.0.1", stack.config.http_port), timeout=10)
    try:
        raw.sendall(f"GET /system%0d%0a{marker.replace(' ', '%20')} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        status_of(raw)
    finally:
        raw.close()
    lines = eventually(lambda: [line for line in stack.log_file.read_text(errors="replace").splitlines()
                                if marker in line] or None, timeout=10, what="the forged subject to be logged")
    assert not [line for line in lines if line.startswith(marker)]  # logged, escaped, inside one line


def test_the_filter_is_still_cheap_for_frames(client: Client, two_studies: tuple[StoredStudy, Any]) -> None:
    """The body checks read two headers: frames (no body) cost what they did (p50 of 200 reads, generous bound)."""
    a = two_studies[0]
    token = viewer_token(client, study_uids=[a.uid])["token"]
    path = f"/dicom-web/studies/{a.uid}/series/{a.series}/instances/{a.instances[0]}/metadata"
    session = requests.Session()
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/dicom+json"}
    times = []
    for _ in range(200):
        started = time.perf_counter()
        assert session.get(client.base + path, headers=headers, timeout=10).status_code == 200
        times.append(time.perf_counter() - started)
    times.sort()
    print(f"\nviewer metadata p50 {times[100] * 1000:.1f} ms, p95 {times[190] * 1000:.1f} ms")
    assert times[100] < 0.2

