"""Tokens, credentials and authenticators for the unit tests of authentication (``core.auth``) and of what
relies on it (sessions, the HTTP filter): one test issuer, audience and secret."""

from __future__ import annotations

import base64
import time
from typing import Any

import jwt

from ehr_imaging.core.auth import (
    ADMIN,
    DOCTOR,
    Authenticator,
    BasicAuthenticator,
    TokenVerifier,
    mint_token,
    session_principal,
)

ISSUER = "https://ehr.example/issuer"
AUDIENCE = "ehr-imaging"
SECRET = "unit-test-secret-0123456789abcdef"  # >= 32 bytes: PyJWT warns about short HMAC keys
LEEWAY = 30
SESSION_AUDIENCE = "ehr-imaging-admin-session"
SESSION_SECRET = "session-secret-0123456789abcdef-xyz"


def claims(**overrides: Any) -> dict[str, Any]:
    """Valid claims for the test issuer/audience; an override of None removes the claim. Valid for a day: tables of
    them are built when tests are collected, and the whole suite outlives a few minutes."""
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": ISSUER, "aud": AUDIENCE, "sub": "user-42", "iat": now, "nbf": now, "exp": now + 86_400,
        "role": DOCTOR,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def hs256(payload: dict[str, Any], secret: str = SECRET, headers: dict[str, Any] | None = None) -> str:
    return jwt.encode(payload, secret, algorithm="HS256", headers=headers)


def verifier(**kwargs: Any) -> TokenVerifier:
    kwargs.setdefault("issuer", ISSUER)
    kwargs.setdefault("audience", AUDIENCE)
    kwargs.setdefault("leeway_seconds", LEEWAY)
    if "public_keys" not in kwargs:
        kwargs.setdefault("secret", SECRET)
    return TokenVerifier(**kwargs)


def basic(user_and_password: str | bytes, scheme: str = "Basic") -> dict[str, str]:
    raw = user_and_password.encode() if isinstance(user_and_password, str) else user_and_password
    return {"authorization": f"{scheme} {base64.b64encode(raw).decode()}"}


def session_token(session_id: str = "sid-1", **kwargs: Any) -> str:
    kwargs.setdefault("secret", SESSION_SECRET)
    kwargs.setdefault("audience", SESSION_AUDIENCE)
    return mint_token(issuer=ISSUER, subject="alice", roles=[ADMIN], ttl_seconds=600, extra={"jti": session_id},
                      **kwargs)


class Ended:
    """An in-memory stand-in for the list of ended sessions."""

    def __init__(self) -> None:
        self.ids: dict[str, float] = {}

    def is_revoked(self, token_id: str | None) -> bool:
        return token_id is None or token_id in self.ids

    def add(self, token_id: str, expires_at: float) -> None:
        self.ids[token_id] = expires_at


def authenticator(with_sessions: bool = True, ended: Ended | None = None) -> Authenticator:
    sessions = (verifier(audience=SESSION_AUDIENCE, secret=SESSION_SECRET, principal_from_claims=session_principal,
                         required_claims=("exp", "iss", "aud", "sub", "jti")) if with_sessions else None)
    return Authenticator(users=verifier(), admins=BasicAuthenticator({"alice": "s3cret"}), sessions=sessions,
                         session_revocations=ended if ended is not None else Ended())
