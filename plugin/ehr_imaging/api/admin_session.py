"""Browser sign-in for administrators, so Orthanc Explorer works behind the deny-by-default filter.

The HTTP filter can only allow or answer 403; it cannot ask a browser for credentials. This route
answers the HTTP basic challenge, and on success sets a short-lived, HttpOnly, SameSite=Strict
session cookie (an HS256 JWT signed by the plugin, ``Secure`` when served over TLS) that the filter
accepts for admin paths. The cookie's ``jti`` is a server-side session id: logout records it as
ended (PostgreSQL, so every node refuses it; in memory at once on this node).
"""

from __future__ import annotations

import secrets

from ..core.auth import ADMIN_SESSION_AUDIENCE, SESSION_COOKIE, AuthError, Principal, mint_token
from ..services import Services
from ..store import sessions as session_store
from .context import Api
from .router import Request, Response, error_response

REALM = 'Basic realm="ehr-imaging administrators", charset="UTF-8"'
DEFAULT_LANDING = "/app/explorer.html"


def safe_next(target: str | None) -> str:
    """Only same-origin absolute paths: never an open redirect."""
    # Browsers drop tabs and newlines inside URLs ("/\t/evil.example" becomes "//evil.example"), so no
    # control characters at all.
    if (
        target and target.startswith("/") and not target.startswith("//") and "\\" not in target
        and not any(ord(c) < 0x20 or ord(c) == 0x7F for c in target)
    ):
        return target
    return DEFAULT_LANDING


def served_over_tls(services: Services, request: Request) -> bool:
    """Orthanc's own TLS, the API port's, a public https URL, or a TLS proxy in front that says so (Secure only
    restricts)."""
    return (services.tls or request.tls or services.settings.PublicBaseUrl.lower().startswith("https://")
            or request.headers.get("x-forwarded-proto", "").strip().lower() == "https")


def session_cookie(value: str, max_age: int, secure: bool) -> str:
    return (f"{SESSION_COOKIE}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict"
            + ("; Secure" if secure else ""))


def login(api: Api, request: Request) -> Response:
    services = api.services
    settings = services.settings
    try:
        principal = services.authenticator.admins.verify(request.headers, request.client_ip)
    except AuthError:
        principal = None
    if principal is None:
        return error_response(401, "administrator credentials required", {"WWW-Authenticate": REALM})
    ttl = settings.AdminSessionTtlSeconds
    token = mint_token(
        secret=services.signing_secret, issuer=settings.JwtIssuer, audience=ADMIN_SESSION_AUDIENCE,
        subject=principal.subject, roles=["admin"], ttl_seconds=ttl,
        extra={"jti": secrets.token_urlsafe(16)},
    )
    cookie = session_cookie(token, ttl, served_over_tls(services, request))
    return Response(status=302, headers={"Set-Cookie": cookie, "Location": safe_next(request.query.get("next"))})


def logout(api: Api, request: Request) -> Response:
    """End the admin session: its id is recorded as ended on every node, and the cookie is cleared."""
    # No origin check here: ending a session only takes rights away, and a logout must never be refused.
    services = api.services
    cleared = {"Set-Cookie": session_cookie("", 0, served_over_tls(services, request))}
    try:
        session = services.authenticator.session(request.headers)
    except AuthError:
        session = None  # already ended, expired or not ours: clearing the cookie is all there is to do
    if session is not None:
        try:
            _end(services, session)
        except Exception as exc:  # noqa: BLE001 - ended on this node; say that the others may not know yet
            services.log_error(f"ehr-imaging: logout of {session.subject} not recorded ({type(exc).__name__})")
            return error_response(503, "session ended on this node only: the database is unavailable;"
                                       " try again shortly", {**cleared, "Retry-After": "5"})
    return Response(status=204, headers=cleared)


def _end(services: Services, session: Principal) -> None:
    assert session.token_id is not None and session.expires_at is not None
    revocations = services.authenticator.session_revocations
    if revocations is not None:
        revocations.add(session.token_id, session.expires_at)  # this node: at once
    session_store.revoke_session(services.engine, session_id=session.token_id, subject=session.subject,
                                 expires_at=session.expires_at)
