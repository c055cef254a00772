"""Browser sign-in for administrators, so Orthanc Explorer works behind the deny-by-default filter.

The HTTP filter can only allow or answer 403; it cannot ask a browser for credentials. This route
answers the HTTP basic challenge, and on success sets a short-lived, HttpOnly, SameSite=Strict
session cookie (an HS256 JWT signed by the plugin) that the filter accepts for admin paths.
"""

from __future__ import annotations

from ..bootstrap import ADMIN_SESSION_AUDIENCE
from ..core.auth import SESSION_COOKIE, AuthError, mint_token
from ..services import Services
from .router import PUBLIC, Request, Response, Router, error_response

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


def register(router: Router, services: Services) -> None:
    settings = services.settings

    def login(request: Request) -> Response:
        try:
            principal = services.authenticator.admins.verify(request.headers)
        except AuthError:
            principal = None
        if principal is None:
            return error_response(401, "administrator credentials required", {"WWW-Authenticate": REALM})
        ttl = settings.AdminSessionTtlSeconds
        token = mint_token(
            secret=services.signing_secret, issuer=settings.JwtIssuer, audience=ADMIN_SESSION_AUDIENCE,
            subject=principal.subject, roles=["admin"], ttl_seconds=ttl,
        )
        cookie = f"{SESSION_COOKIE}={token}; Path=/; Max-Age={ttl}; HttpOnly; SameSite=Strict"
        return Response(status=302, headers={"Set-Cookie": cookie, "Location": safe_next(request.query.get("next"))})

    def logout(request: Request) -> Response:
        cookie = f"{SESSION_COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict"
        return Response(status=204, headers={"Set-Cookie": cookie})

    router.add("GET", "/api/v1/dicom/admin/login", login, roles=PUBLIC)
    router.add("POST", "/api/v1/dicom/admin/logout", logout, roles=PUBLIC)
