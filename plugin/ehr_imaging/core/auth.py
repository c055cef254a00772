"""Who is calling: JWT verification, roles, and HTTP basic credentials for admins.

Pure logic: keys arrive as strings or key objects, nothing is read from disk here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import jwt

from .lockout import FailureLimiter
from .patient_scope import ScopeClaimError, patients_from_claims

# The roles and role groups live in core/roles.py; named here too, where the routes and tokens use them.
from .roles import ADMIN as ADMIN
from .roles import ADMIN_ONLY as ADMIN_ONLY
from .roles import ALL_ROLES as ALL_ROLES
from .roles import AUDIT_READING as AUDIT_READING
from .roles import AUDITING as AUDITING
from .roles import DELETING as DELETING
from .roles import DOCTOR as DOCTOR
from .roles import EHR_SERVICE as EHR_SERVICE
from .roles import FILE_READING as FILE_READING
from .roles import FORCE_LINKING as FORCE_LINKING
from .roles import NURSE as NURSE
from .roles import ORDER_WRITING as ORDER_WRITING
from .roles import PATIENT as PATIENT
from .roles import RADIOLOGIST as RADIOLOGIST
from .roles import RECONCILING as RECONCILING
from .roles import ROLE_GROUPS as ROLE_GROUPS
from .roles import TECHNICIAN as TECHNICIAN
from .roles import UPLOADING as UPLOADING
from .roles import VIEWING as VIEWING

HMAC_ALGORITHMS = ("HS256",)
PUBLIC_KEY_ALGORITHMS = ("RS256", "ES256")


class AuthError(Exception):
    """The caller is not authenticated (HTTP 401)."""


class CrossSiteError(AuthError):
    """A state-changing request authenticated by the session cookie came from another site (HTTP 403)."""


def valid_subject(subject: object) -> bool:
    """A token's ``sub`` goes into audit rows and log lines: a non-empty string without control characters."""
    return (isinstance(subject, str) and 0 < len(subject) <= 256 and subject.strip() == subject
            and not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 or c in "\u2028\u2029" for c in subject))


@dataclass(frozen=True)
class Principal:
    """An authenticated caller."""

    subject: str
    roles: frozenset[str]
    via: str  # "jwt", "basic" or "viewer"
    expires_at: float | None = None
    scope: frozenset[str] | None = None  # a viewer token's StudyInstanceUIDs; None for people and services
    # A viewer token's Orthanc study for each StudyInstanceUID of ``scope``, fixed when it was minted: another
    # patient's study stored later under the same UID is never in scope (core.study_identity).
    scope_studies: Mapping[str, str] | None = None
    token_id: str | None = None  # a viewer token's ``jti`` (revocation, access audit)
    patients: frozenset[str] | None = None  # a user token's patient scope (core/patient_scope.py); None: unscoped

    @property
    def is_admin(self) -> bool:
        return ADMIN in self.roles

    def has_any_role(self, roles: Iterable[str]) -> bool:
        return not self.roles.isdisjoint(roles)


def bearer_token(headers: Mapping[str, str]) -> str | None:
    """The token of an ``Authorization: Bearer`` header (headers with lower-case names)."""
    value = headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class TokenVerifier:
    """Verifies user JWTs: signature, ``exp``, ``nbf``, ``iss``, ``aud``, ``sub`` and ``role``.

    The accepted algorithms follow the configured keys: HS256 only with a shared secret, RS256/ES256
    only with public keys. So ``alg: none`` and HS256-signed-with-the-public-key (algorithm
    confusion) are refused. Verified tokens are cached (bounded, never past their ``exp``) because
    the HTTP filter runs on every request, frames included.
    """

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        secret: str = "",
        public_keys: Mapping[str | None, Any] | None = None,
        leeway_seconds: int = 30,
        cache_size: int = 10000,
        clock: Any = time.time,
        principal_from_claims: Callable[[Mapping[str, Any]], Principal] | None = None,
        required_claims: Iterable[str] = ("exp", "iss", "aud", "sub"),
    ) -> None:
        if not secret and not public_keys:
            raise ValueError("a JWT secret or at least one public key is required")
        self._issuer = issuer
        self._audience = audience
        self._secret = secret
        self._public_keys = dict(public_keys or {})
        self._leeway = leeway_seconds
        self._clock = clock
        self._cache: OrderedDict[str, Principal] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self._principal_from_claims = principal_from_claims or user_principal
        self._required = list(required_claims)

    def verify(self, token: str) -> Principal:
        now = self._clock()
        with self._lock:
            cached = self._cache.get(token)
            if cached is not None:
                if cached.expires_at is not None and cached.expires_at + self._leeway > now:
                    self._cache.move_to_end(token)
                    return cached
                del self._cache[token]
        principal = self._decode(token, now)
        with self._lock:
            self._cache[token] = principal
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return principal

    def _decode(self, token: str, now: float) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise AuthError("malformed token") from exc
        alg = header.get("alg")
        key: Any
        if alg in HMAC_ALGORITHMS and self._secret:
            key = self._secret
        elif alg in PUBLIC_KEY_ALGORITHMS and self._public_keys:
            kid = header.get("kid")
            key = self._public_keys.get(kid) if kid in self._public_keys else self._public_keys.get(None)
            if key is None:
                raise AuthError("unknown signing key")
        else:
            raise AuthError("token algorithm not accepted")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": self._required},
            )
        except jwt.ExpiredSignatureError as exc:
            raise AuthError("token expired") from exc
        except jwt.PyJWTError as exc:
            raise AuthError(f"invalid token: {exc}") from exc
        except TypeError as exc:
            # PyJWT raises TypeError (not PyJWTError) when the header's alg does not fit the key type,
            # e.g. alg RS256 against an EC key: still a bad token, not a server error.
            raise AuthError("token algorithm does not match the signing key") from exc
        if "sub" in claims and not valid_subject(claims["sub"]):
            raise AuthError("token subject (sub) is empty or has control characters")
        return self._principal_from_claims(claims)


def user_principal(claims: Mapping[str, Any]) -> Principal:
    """A person's or the EHR's token: it must carry at least one known role."""
    roles = roles_from_claims(claims)
    if not roles:
        raise AuthError("token carries no known role")
    try:
        patients = patients_from_claims(claims, patient_role=PATIENT in roles)
    except ScopeClaimError as exc:
        raise AuthError(str(exc)) from None
    return Principal(subject=str(claims["sub"]), roles=roles, via="jwt", expires_at=float(claims["exp"]),
                     patients=patients)


def roles_from_claims(claims: Mapping[str, Any]) -> frozenset[str]:
    """Known roles from ``role`` (a string) and/or ``roles`` (a list); unknown names are ignored."""
    found: set[str] = set()
    role = claims.get("role")
    if isinstance(role, str):
        found.add(role)
    roles = claims.get("roles")
    if isinstance(roles, list):
        found.update(r for r in roles if isinstance(r, str))
    return frozenset(found & ALL_ROLES)


# Failed admin sign-ins (HTTP basic): per address 10 within 5 minutes lock that address for 5 minutes; per user
# name 50 (attempts spread over many addresses) lock that name for 5 minutes. In memory, per node (core/lockout.py).
ADDRESS_FAILURES, USER_FAILURES, FAILURE_WINDOW_SECONDS, LOCKOUT_SECONDS = 10, 50, 300.0, 300.0
LOCKED_OUT = "too many failed sign-ins; try again later"


class BasicAuthenticator:
    """Checks ``Authorization: Basic`` against the configured admin users, in constant time, with a bounded
    failure limiter per client address and per user name."""

    def __init__(self, users: Mapping[str, str], *, by_address: FailureLimiter | None = None,
                 by_user: FailureLimiter | None = None) -> None:
        self._users = {name: password.encode() for name, password in users.items() if password}
        window, lockout = FAILURE_WINDOW_SECONDS, LOCKOUT_SECONDS
        self.by_address = by_address or FailureLimiter(max_failures=ADDRESS_FAILURES, window_seconds=window,
                                                       lockout_seconds=lockout)
        self.by_user = by_user or FailureLimiter(max_failures=USER_FAILURES, window_seconds=window,
                                                 lockout_seconds=lockout)

    def verify(self, headers: Mapping[str, str], client: str = "") -> Principal | None:
        """The admin of valid basic credentials; None without basic credentials; AuthError otherwise.
        ``client`` is the caller's address when known (Orthanc's filter and the API port know it)."""
        value = headers.get("authorization", "")
        scheme, _, encoded = value.partition(" ")
        if scheme.lower() != "basic" or not self._users:
            return None
        address = [client] if client else []
        if self.by_address.locked(address):
            raise AuthError(LOCKED_OUT)
        try:
            user, sep, password = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            self.by_address.failed(address)
            raise AuthError("malformed basic credentials") from None
        if self.by_user.locked([user]):
            raise AuthError(LOCKED_OUT)
        expected = self._users.get(user)
        # Compare fixed-length digests (length and user existence stay hidden from timing).
        given_digest = hashlib.sha256(password.encode()).digest()
        expected_digest = hashlib.sha256(expected if expected is not None else b"\0").digest()
        ok = hmac.compare_digest(given_digest, expected_digest)
        if not sep or expected is None or not ok:
            self.by_address.failed(address)
            if expected is not None:  # only real names: made-up ones cannot fill the table or lock anyone
                self.by_user.failed([user])
            raise AuthError("invalid credentials")
        self.by_user.succeeded([user])
        self.by_address.succeeded(address)
        return Principal(subject=user, roles=frozenset({ADMIN}), via="basic")


SESSION_COOKIE = "ehr_imaging_session"
ADMIN_SESSION_AUDIENCE = "ehr-imaging-admin-session"  # an admin session token is good for nothing else
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def session_principal(claims: Mapping[str, Any]) -> Principal:
    """An admin browser session (the cookie): its ``jti`` is the server-side id that logout revokes."""
    principal = user_principal(claims)
    session_id = claims.get("jti")
    if not isinstance(session_id, str) or not session_id:
        raise AuthError("session without an id")
    return Principal(subject=principal.subject, roles=principal.roles, via="session",
                     expires_at=principal.expires_at, token_id=session_id)


class Revocations(Protocol):
    """Revoked token ids known in memory (app/token_revocations.RevocationList)."""

    def is_revoked(self, token_id: str | None) -> bool: ...

    def add(self, token_id: str, expires_at: float) -> None: ...


def _origin_of(url: str) -> str:
    parts = urlsplit(url.strip())
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}" if parts.scheme and parts.netloc else ""


def check_same_site(method: str, headers: Mapping[str, str], trusted_origins: Iterable[str] = ()) -> None:
    """CSRF defence for requests authenticated by the session cookie: a state change (anything but GET, HEAD,
    OPTIONS) must come from this origin. ``Sec-Fetch-Site`` decides when the browser sends it; otherwise
    ``Origin`` must name the request's own host (or a trusted origin, e.g. PublicBaseUrl behind a proxy);
    a state change with neither header is refused (every current browser sends one of them)."""
    if method.upper() in SAFE_METHODS:
        return
    site = headers.get("sec-fetch-site", "").strip().lower()
    if site:
        if site in ("same-origin", "none"):
            return
        raise CrossSiteError(f"cross-site request refused (Sec-Fetch-Site: {site[:20]})")
    origin = headers.get("origin", "").strip()
    if not origin:
        raise CrossSiteError("a state-changing request with the session cookie needs an Origin header")
    host = headers.get("host", "").strip().lower()
    netloc = urlsplit(origin).netloc.lower()
    if (host and netloc == host) or _origin_of(origin) in {_origin_of(o) for o in trusted_origins if o}:
        return
    raise CrossSiteError("cross-origin request refused (Origin does not match)")


def cookie_value(headers: Mapping[str, str], name: str) -> str | None:
    for part in headers.get("cookie", "").split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name and value:
            return value
    return None


class Authenticator:
    """Every way a caller can prove who they are, tried in one place.

    ``authenticate`` returns None when no credentials were presented and raises ``AuthError`` when
    credentials were presented but are wrong, so callers can answer 401 with a reason.
    """

    def __init__(
        self, *, users: TokenVerifier, admins: BasicAuthenticator, sessions: TokenVerifier | None,
        session_revocations: Revocations | None = None, trusted_origins: Iterable[str] = (),
    ) -> None:
        self.users = users
        self.admins = admins
        self.sessions = sessions
        # Ended admin sessions (logout); plugin.py connects the shared, database-backed list.
        self.session_revocations = session_revocations
        self.trusted_origins = tuple(trusted_origins)

    def authenticate(self, headers: Mapping[str, str], *, method: str, client: str = "") -> Principal | None:
        """``method`` decides the CSRF check of cookie sessions; ``client`` keys the basic-auth failure limiter."""
        token = bearer_token(headers)
        if token is not None:
            return self.users.verify(token)
        principal = self.admins.verify(headers, client)
        if principal is not None:
            return principal
        session = self.session(headers)
        if session is not None:
            check_same_site(method, headers, self.trusted_origins)
            return session
        if headers.get("authorization"):
            raise AuthError("unsupported authorization scheme")
        return None

    def session(self, headers: Mapping[str, str]) -> Principal | None:
        """The admin session of the cookie, if any (AuthError when it is invalid, expired or ended)."""
        cookie = cookie_value(headers, SESSION_COOKIE)
        if cookie is None or self.sessions is None:
            return None
        principal = self.sessions.verify(cookie)
        if self.session_revocations is None or self.session_revocations.is_revoked(principal.token_id):
            raise AuthError("session ended; sign in again")
        return principal


def mint_token(
    *, secret: str, issuer: str, audience: str, subject: str, roles: Iterable[str], ttl_seconds: int,
    now: float | None = None, extra: Mapping[str, Any] | None = None,
) -> str:
    """An HS256 JWT. The plugin signs admin sessions with it; development tooling mints user tokens."""
    issued = int(time.time() if now is None else now)
    role_list = list(roles)
    if not role_list:
        raise ValueError("a token needs at least one role")
    claims: dict[str, Any] = {
        "iss": issuer, "aud": audience, "sub": subject, "iat": issued, "nbf": issued,
        "exp": issued + ttl_seconds, "role": role_list[0],
    }
    if len(role_list) > 1:
        claims["roles"] = role_list
    claims.update(extra or {})
    return jwt.encode(claims, secret, algorithm="HS256")
