"""A user token carried in a URL (``?token=``), for the routes a browser opens from the EHR (IHE Invoke Image
Display): it must be short-lived, because a URL ends up in browser history, proxies and referrers.

The token is a user JWT like any bearer token (same keys, issuer, audience, roles, patient scope); on top of
that it must carry ``iat`` and live at most ``MAX_TTL_SECONDS`` (``exp - iat``). Pure: the router verifies the
signature first (core/auth.TokenVerifier) and hands the verified token here.
"""

from __future__ import annotations

from typing import Any

import jwt

from .auth import AuthError, Principal

MAX_TTL_SECONDS = 300


def check_short_lived(token: str, principal: Principal, max_ttl_seconds: int = MAX_TTL_SECONDS) -> Principal:
    """``principal`` when the (already verified) ``token`` lives at most ``max_ttl_seconds``; AuthError otherwise."""
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})  # verified by the caller
    issued = claims.get("iat")
    if isinstance(issued, bool) or not isinstance(issued, (int, float)) or principal.expires_at is None:
        raise AuthError("a token in the URL must carry iat and exp")
    if principal.expires_at - issued > max_ttl_seconds:
        raise AuthError(f"a token in the URL must live at most {max_ttl_seconds} s (exp - iat); send a longer one"
                        " as an Authorization: Bearer header")
    return principal
