"""Builds the plugin's services from its settings: keys, token verifiers, database engine.

Kept apart from ``plugin.py`` (which talks to ``orthanc``) so the construction is testable.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from .config import ConfigError, Settings
from .core import events
from .core.auth import ADMIN_SESSION_AUDIENCE, Authenticator, BasicAuthenticator, TokenVerifier, session_principal
from .core.rate_limit import RateLimiter
from .core.viewer_tokens import VIEWER_AUDIENCE, viewer_principal
from .services import Pacs, Services
from .store import db, outbox


def load_public_keys(settings: Settings) -> dict[str | None, Any]:
    """Public keys by ``kid`` (None: the key for tokens without ``kid``)."""
    keys: dict[str | None, Any] = {}
    if settings.JwtPublicKeyFile:
        key = load_pem_public_key(Path(settings.JwtPublicKeyFile).read_bytes())
        if not isinstance(key, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey)):
            raise ConfigError("JwtPublicKeyFile must hold an RSA or EC public key")
        keys[None] = key
    if settings.JwksFile:
        for jwk in jwt.PyJWKSet.from_json(Path(settings.JwksFile).read_text()).keys:
            keys[jwk.key_id] = jwk.key
    return keys


def signing_secret(settings: Settings) -> tuple[str, bool]:
    """The HMAC key the plugin signs its own tokens with, and whether it is shared (not random)."""
    if settings.SigningSecret:
        return settings.SigningSecret, True
    if settings.JwtSecret:
        return settings.JwtSecret, True
    return secrets.token_urlsafe(32), False


def build_authenticator(settings: Settings, session_secret: str) -> Authenticator:
    public_keys = load_public_keys(settings)
    if not settings.JwtSecret and not public_keys:
        raise ConfigError("set EhrImaging.JwtSecret (development) or JwtPublicKeyFile / JwksFile")
    users = TokenVerifier(
        issuer=settings.JwtIssuer,
        audience=settings.JwtAudience,
        secret=settings.JwtSecret,
        public_keys=public_keys,
        leeway_seconds=settings.JwtLeewaySeconds,
        cache_size=settings.TokenCacheSize,
    )
    sessions = TokenVerifier(
        issuer=settings.JwtIssuer,
        audience=ADMIN_SESSION_AUDIENCE,
        secret=session_secret,
        leeway_seconds=settings.JwtLeewaySeconds,
        cache_size=settings.TokenCacheSize,
        principal_from_claims=session_principal,  # via "session", its jti the id logout revokes
        required_claims=("exp", "iss", "aud", "sub", "jti"),
    )
    # Sessions stay refused until plugin.py connects the revocation list of ended sessions (deny by default).
    return Authenticator(users=users, admins=BasicAuthenticator(settings.AdminUsers), sessions=sessions,
                         trusted_origins=[settings.PublicBaseUrl] if settings.PublicBaseUrl else [])


def build_services(settings: Settings, pacs: Pacs) -> Services:
    if not settings.DatabaseUrl:
        raise ConfigError("set EhrImaging.DatabaseUrl (or EHR_IMAGING_DATABASE_URL)")
    try:
        ZoneInfo(settings.Timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(f"Timezone: unknown zone {settings.Timezone!r}") from exc
    try:
        endpoints = events.parse_endpoints(settings.EventEndpoints)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    secret, _shared = signing_secret(settings)
    breaker = db.Breaker()
    engine = db.create_db_engine(
        settings.DatabaseUrl,
        pool_size=settings.DatabasePoolSize,
        connect_timeout=settings.DatabaseConnectTimeoutSeconds,
        schema=settings.DatabaseSchema,
        pool_timeout=settings.DatabasePoolTimeoutSeconds,
        statement_timeout_seconds=settings.DatabaseStatementTimeoutSeconds,
        breaker=breaker,
    )
    outbox.configure(engine, endpoints)  # the changes write their events in their own transactions
    return Services(
        settings=settings,
        engine=engine,
        database=breaker,
        pacs=pacs,
        authenticator=build_authenticator(settings, secret),
        signing_secret=secret,
        viewer_tokens=build_viewer_verifier(settings, secret),
        upload_limiter=RateLimiter(settings.UploadRequestsPerMinute, settings.UploadMegabytesPerMinute,
                                   time.monotonic),
        event_endpoints=endpoints,
    )


def build_viewer_verifier(settings: Settings, secret: str) -> TokenVerifier:
    """Viewer tokens are the plugin's own: HS256 with the signing secret, their own audience, ``typ``,
    ``jti`` and a study list required."""
    return TokenVerifier(
        issuer=settings.JwtIssuer,
        audience=VIEWER_AUDIENCE,
        secret=secret,
        # The plugin issues these itself: only the nodes' clock skew to allow for, not a foreign issuer's.
        leeway_seconds=min(settings.JwtLeewaySeconds, 5),
        cache_size=settings.TokenCacheSize,
        principal_from_claims=viewer_principal,
        required_claims=("exp", "iss", "aud", "sub", "jti", "nbf"),
    )
