"""Security tests for ``core.auth``: JWT verification, roles, the token cache, basic credentials."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ehr_imaging.core.auth import (
    ADMIN,
    ALL_ROLES,
    DOCTOR,
    EHR_SERVICE,
    NURSE,
    RADIOLOGIST,
    SESSION_COOKIE,
    Authenticator,
    AuthError,
    BasicAuthenticator,
    Principal,
    TokenVerifier,
    bearer_token,
    cookie_value,
    mint_token,
    roles_from_claims,
)
from tests.unit.auth_helpers import (
    AUDIENCE,
    ISSUER,
    LEEWAY,
    SECRET,
    SESSION_AUDIENCE,
    SESSION_SECRET,
    authenticator,
    basic,
    claims,
    hs256,
    session_token,
    verifier,
)

# --- helpers ---------------------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(obj: Any) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


def hs256_by_hand(header: dict[str, Any], claims: dict[str, Any], key: bytes) -> str:
    """An HS256 JWT built without PyJWT (which refuses PEM keys as HMAC secrets)."""
    signing_input = f"{b64json(header)}.{b64json(claims)}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def refused(v: TokenVerifier, token: str) -> str:
    """The reason ``v`` refuses ``token``; fails the test if it is accepted or raises anything else."""
    with pytest.raises(AuthError) as caught:
        v.verify(token)
    return str(caught.value)


class FakeClock:
    def __init__(self, now: float | None = None) -> None:
        self.now = time.time() if now is None else now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def decode_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Records every real signature check (``jwt.decode``) the verifier makes."""
    calls: list[str] = []
    real = jwt.decode

    def spy(token: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(token)
        return real(token, *args, **kwargs)

    monkeypatch.setattr(jwt, "decode", spy)
    yield calls


# --- valid tokens ----------------------------------------------------------------------------------


def test_valid_hs256_token_gives_principal() -> None:
    payload = claims(sub="dr-who", role=RADIOLOGIST)
    principal = verifier().verify(hs256(payload))
    assert principal == Principal(
        subject="dr-who", roles=frozenset({RADIOLOGIST}), via="jwt", expires_at=float(payload["exp"])
    )
    assert not principal.is_admin
    assert principal.has_any_role({RADIOLOGIST, NURSE})
    assert not principal.has_any_role({NURSE, ADMIN})


def test_audience_list_containing_ours_is_accepted() -> None:
    assert verifier().verify(hs256(claims(aud=["other-service", AUDIENCE]))).subject == "user-42"


def test_expired_within_leeway_is_still_accepted() -> None:
    now = int(time.time())
    token = hs256(claims(iat=now - 600, nbf=now - 600, exp=now - LEEWAY // 2))
    assert verifier().verify(token).roles == {DOCTOR}


def test_constructor_needs_a_key() -> None:
    with pytest.raises(ValueError, match="secret or at least one public key"):
        TokenVerifier(issuer=ISSUER, audience=AUDIENCE)


# --- refused tokens (table) ------------------------------------------------------------------------

NOW = int(time.time())

REFUSED_CLAIMS: list[tuple[str, dict[str, Any], str]] = [
    ("expired beyond leeway", claims(iat=NOW - 3600, nbf=NOW - 3600, exp=NOW - LEEWAY - 60), "expired"),
    ("nbf in the future", claims(nbf=NOW + LEEWAY + 86_400), "not yet valid"),
    ("iat in the future", claims(iat=NOW + LEEWAY + 86_400, nbf=None), "not yet valid"),
    ("wrong audience", claims(aud="some-other-api"), "audience"),
    ("audience list without ours", claims(aud=["a", "b"]), "audience"),
    ("wrong issuer", claims(iss="https://evil.example"), "issuer"),
    ("missing exp", claims(exp=None), "exp"),
    ("missing sub", claims(sub=None), "sub"),
    ("missing aud", claims(aud=None), "aud"),
    ("missing iss", claims(iss=None), "iss"),
    ("non-integer exp", claims(exp="tomorrow"), "exp"),
    ("unknown role", claims(role="superuser"), "no known role"),
    ("role differs only by case", claims(role="Admin"), "no known role"),
    ("no role at all", claims(role=None), "no known role"),
    ("roles list of unknown names only", claims(role=None, roles=["root", "god"]), "no known role"),
]


@pytest.mark.parametrize(("payload", "reason"), [c[1:] for c in REFUSED_CLAIMS], ids=[c[0] for c in REFUSED_CLAIMS])
def test_refused_claims(payload: dict[str, Any], reason: str) -> None:
    assert reason in refused(verifier(), hs256(payload)).lower()


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_alg_none_is_refused(alg: str) -> None:
    token = f"{b64json({'alg': alg, 'typ': 'JWT'})}.{b64json(claims(role=ADMIN))}."
    assert "algorithm not accepted" in refused(verifier(), token)


@pytest.mark.parametrize("alg", ["HS384", "HS512", "RS512", "PS256", "ES512", "EdDSA", ""])
def test_algorithms_outside_the_allow_list_are_refused(alg: str) -> None:
    token = f"{b64json({'alg': alg})}.{b64json(claims())}.{b64url(b'x' * 32)}"
    assert "algorithm not accepted" in refused(verifier(), token)


def test_missing_alg_is_refused() -> None:
    token = f"{b64json({'typ': 'JWT'})}.{b64json(claims())}.{b64url(b'x' * 32)}"
    assert "algorithm not accepted" in refused(verifier(), token)


def test_tampered_payload_is_refused() -> None:
    header, _, signature = hs256(claims(role=NURSE)).split(".")
    forged = f"{header}.{b64json(claims(role=ADMIN))}.{signature}"
    assert "Signature verification failed" in refused(verifier(), forged)


def test_tampered_signature_is_refused() -> None:
    # Change the signature's first character: all 6 of its bits are significant (the last one's may not be).
    header, payload, signature = hs256(claims()).split(".")
    first = "A" if signature[0] != "A" else "B"
    assert "Signature verification failed" in refused(verifier(), f"{header}.{payload}.{first}{signature[1:]}")


def test_wrong_secret_is_refused() -> None:
    token = hs256(claims(role=ADMIN), secret="another-secret-of-sufficient-length!")
    assert "Signature verification failed" in refused(verifier(), token)


@pytest.mark.parametrize(
    "token", ["", "abc", "a.b", "a.b.c.d", "....", "not base64!.x.y", f"{b64url(b'[1]')}.{b64json(claims())}.sig"]
)
def test_malformed_tokens_are_refused(token: str) -> None:
    assert refused(verifier(), token)


@pytest.mark.parametrize("kid", [["k1"], {"k": 1}, 7])
def test_non_string_kid_is_refused(rsa_key: rsa.RSAPrivateKey, kid: Any) -> None:
    v = verifier(public_keys={"k1": rsa_key.public_key()})
    token = f"{b64json({'alg': 'RS256', 'kid': kid})}.{b64json(claims())}.{b64url(b'x' * 256)}"
    assert refused(v, token)


# --- algorithm confusion ---------------------------------------------------------------------------


def _public_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def test_pyjwt_itself_refuses_a_pem_key_as_hmac_secret(rsa_key: rsa.RSAPrivateKey) -> None:
    # Why the confusion tokens below are built by hand.
    with pytest.raises(jwt.InvalidKeyError):
        jwt.encode(claims(), _public_pem(rsa_key), algorithm="HS256")


def test_hs256_signed_with_the_public_key_is_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    v = verifier(public_keys={None: rsa_key.public_key()})
    pem = _public_pem(rsa_key)
    for key in (pem, pem.strip()):
        forged = hs256_by_hand({"alg": "HS256", "typ": "JWT"}, claims(role=ADMIN), key)
        assert "algorithm not accepted" in refused(v, forged)


def test_hs256_signed_with_the_public_key_is_refused_even_when_a_secret_is_configured(
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    v = verifier(secret=SECRET, public_keys={None: rsa_key.public_key()})
    forged = hs256_by_hand({"alg": "HS256", "typ": "JWT"}, claims(role=ADMIN), _public_pem(rsa_key))
    assert "Signature verification failed" in refused(v, forged)
    # ... while the shared secret still works for HS256.
    assert v.verify(hs256(claims())).roles == {DOCTOR}


def test_rs256_token_is_refused_by_a_secret_only_verifier(rsa_key: rsa.RSAPrivateKey) -> None:
    token = jwt.encode(claims(), rsa_key, algorithm="RS256")
    assert "algorithm not accepted" in refused(verifier(), token)


# --- public keys: RS256, ES256, kid selection ------------------------------------------------------


def test_rs256_verified_with_public_key(rsa_key: rsa.RSAPrivateKey) -> None:
    v = verifier(public_keys={None: rsa_key.public_key()})
    principal = v.verify(jwt.encode(claims(sub="svc", role=EHR_SERVICE), rsa_key, algorithm="RS256"))
    assert (principal.subject, principal.roles, principal.via) == ("svc", frozenset({EHR_SERVICE}), "jwt")


def test_es256_verified_with_public_key(ec_key: ec.EllipticCurvePrivateKey) -> None:
    v = verifier(public_keys={None: ec_key.public_key()})
    assert v.verify(jwt.encode(claims(role=NURSE), ec_key, algorithm="ES256")).roles == {NURSE}


def test_rs256_signed_by_another_key_is_refused(rsa_key: rsa.RSAPrivateKey, other_rsa_key: rsa.RSAPrivateKey) -> None:
    v = verifier(public_keys={None: rsa_key.public_key()})
    token = jwt.encode(claims(role=ADMIN), other_rsa_key, algorithm="RS256")
    assert "Signature verification failed" in refused(v, token)


@pytest.fixture
def keyring(
    rsa_key: rsa.RSAPrivateKey, other_rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> TokenVerifier:
    return verifier(public_keys={"rsa-1": rsa_key.public_key(), "rsa-2": other_rsa_key.public_key(),
                                 "ec-1": ec_key.public_key()})


def test_kid_selects_the_key(
    keyring: TokenVerifier,
    rsa_key: rsa.RSAPrivateKey,
    other_rsa_key: rsa.RSAPrivateKey,
    ec_key: ec.EllipticCurvePrivateKey,
) -> None:
    cases: list[tuple[Any, str, str]] = [(rsa_key, "RS256", "rsa-1"), (other_rsa_key, "RS256", "rsa-2"),
                                         (ec_key, "ES256", "ec-1")]
    for key, alg, kid in cases:
        token = jwt.encode(claims(sub=kid), key, algorithm=alg, headers={"kid": kid})
        assert keyring.verify(token).subject == kid


def test_kid_pointing_at_another_key_is_refused(keyring: TokenVerifier, rsa_key: rsa.RSAPrivateKey) -> None:
    token = jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "rsa-2"})
    assert "Signature verification failed" in refused(keyring, token)


@pytest.mark.parametrize("kid", ["nope", None])
def test_unknown_or_missing_kid_without_default_key_is_refused(
    keyring: TokenVerifier, rsa_key: rsa.RSAPrivateKey, kid: str | None
) -> None:
    headers = {"kid": kid} if kid else None
    token = jwt.encode(claims(), rsa_key, algorithm="RS256", headers=headers)
    assert "unknown signing key" in refused(keyring, token)


def test_unknown_kid_falls_back_to_the_default_key(
    rsa_key: rsa.RSAPrivateKey, other_rsa_key: rsa.RSAPrivateKey
) -> None:
    v = verifier(public_keys={None: rsa_key.public_key(), "rotated": other_rsa_key.public_key()})
    assert v.verify(jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "unknown"})).subject
    # ... but only the default key: a token signed by another key with an unknown kid is refused.
    forged = jwt.encode(claims(), other_rsa_key, algorithm="RS256", headers={"kid": "unknown"})
    assert "Signature verification failed" in refused(v, forged)


@pytest.mark.parametrize(("alg", "kid"), [("RS256", "ec-1"), ("ES256", "rsa-1")])
def test_alg_that_does_not_fit_the_key_type_is_an_auth_error(keyring: TokenVerifier, alg: str, kid: str) -> None:
    # Regression: PyJWT raised TypeError here, which became a 500 instead of a 401.
    token = f"{b64json({'alg': alg, 'kid': kid})}.{b64json(claims(role=ADMIN))}.{b64url(b'x' * 64)}"
    assert "does not match" in refused(keyring, token)


def test_es256_with_a_key_on_another_curve_is_refused(ec_key: ec.EllipticCurvePrivateKey) -> None:
    v = verifier(public_keys={None: ec.generate_private_key(ec.SECP384R1()).public_key()})
    assert refused(v, jwt.encode(claims(), ec_key, algorithm="ES256"))


# --- roles -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"role": DOCTOR}, {DOCTOR}),
        ({"roles": [NURSE, RADIOLOGIST]}, {NURSE, RADIOLOGIST}),
        ({"role": ADMIN, "roles": [NURSE]}, {ADMIN, NURSE}),
        ({"roles": [DOCTOR, "root", 7, None, ["admin"]]}, {DOCTOR}),
        ({"roles": "admin"}, set()),  # ``roles`` must be a list
        ({"role": ["admin"]}, set()),  # ``role`` must be a string
        ({"role": "ADMIN"}, set()),
        ({"role": " admin"}, set()),
        ({}, set()),
        ({"roles": sorted(ALL_ROLES)}, set(ALL_ROLES)),
    ],
)
def test_roles_from_claims(payload: dict[str, Any], expected: set[str]) -> None:
    assert roles_from_claims(payload) == frozenset(expected)


def test_roles_list_claim_in_a_token() -> None:
    principal = verifier().verify(hs256(claims(role=None, roles=[NURSE, "intern", ADMIN])))
    assert principal.roles == {NURSE, ADMIN}
    assert principal.is_admin


# --- cache -----------------------------------------------------------------------------------------


def test_second_verify_returns_the_cached_principal(decode_calls: list[str]) -> None:
    v = verifier(clock=FakeClock())
    token = hs256(claims())
    first = v.verify(token)
    second = v.verify(token)
    assert second is first
    assert decode_calls == [token]


def test_expired_cache_entry_is_not_reused(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    v = verifier(clock=clock)
    payload = claims()
    token = hs256(payload)
    first = v.verify(token)

    def no_more_decoding(*_: Any, **__: Any) -> Any:
        raise jwt.ExpiredSignatureError("Signature has expired")

    monkeypatch.setattr(jwt, "decode", no_more_decoding)
    clock.now = payload["exp"] + LEEWAY - 1  # still inside exp + leeway: served from the cache
    assert v.verify(token) is first
    clock.now = payload["exp"] + LEEWAY  # past it: must be checked again, and the check fails
    assert refused(v, token) == "token expired"
    clock.now = payload["exp"]  # the stale entry was dropped, not just skipped
    assert refused(v, token) == "token expired"


def test_failed_verification_is_not_cached(decode_calls: list[str]) -> None:
    v = verifier()
    token = hs256(claims(), secret="another-secret-of-sufficient-length!")
    refused(v, token)
    refused(v, token)
    assert decode_calls == [token, token]


def test_cache_is_bounded_and_least_recently_used_goes_first(decode_calls: list[str]) -> None:
    v = verifier(cache_size=2, clock=FakeClock())
    t1, t2, t3 = (hs256(claims(sub=f"u{i}")) for i in (1, 2, 3))
    for token in (t1, t2, t1, t3):  # t1 used again, so t2 is the least recently used when t3 arrives
        v.verify(token)
    assert decode_calls == [t1, t2, t3]
    decode_calls.clear()
    assert [v.verify(t).subject for t in (t1, t3)] == ["u1", "u3"]
    assert decode_calls == []  # both still cached
    assert v.verify(t2).subject == "u2"
    assert decode_calls == [t2]  # t2 had been evicted
    assert len(v._cache) == 2


def test_cache_size_zero_disables_the_cache(decode_calls: list[str]) -> None:
    v = verifier(cache_size=0)
    token = hs256(claims())
    v.verify(token)
    v.verify(token)
    assert decode_calls == [token, token]


# --- bearer_token, cookie_value ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"authorization": "Bearer abc.def.ghi"}, "abc.def.ghi"),
        ({"authorization": "bearer abc"}, "abc"),
        ({"authorization": "BEARER   abc  "}, "abc"),
        ({"authorization": "Bearer"}, None),
        ({"authorization": "Bearer    "}, None),
        ({"authorization": "Bearerabc"}, None),
        ({"authorization": "Basic YTpi"}, None),
        ({"authorization": ""}, None),
        ({}, None),
        ({"Authorization": "Bearer abc"}, None),  # header names arrive lower-case
    ],
)
def test_bearer_token(headers: dict[str, str], expected: str | None) -> None:
    assert bearer_token(headers) == expected


@pytest.mark.parametrize(
    ("cookie", "expected"),
    [
        (f"{SESSION_COOKIE}=tok", "tok"),
        (f"a=1; {SESSION_COOKIE}=tok; b=2", "tok"),
        (f"a=1;{SESSION_COOKIE}=tok", "tok"),
        (f"{SESSION_COOKIE}=a.b=c", "a.b=c"),
        (f"{SESSION_COOKIE}=first; {SESSION_COOKIE}=second", "first"),
        (f"{SESSION_COOKIE}=", None),
        (SESSION_COOKIE, None),
        (f"x{SESSION_COOKIE}=tok", None),
        (f"{SESSION_COOKIE}x=tok", None),
        ("a=1; b=2", None),
        ("", None),
    ],
)
def test_cookie_value(cookie: str, expected: str | None) -> None:
    assert cookie_value({"cookie": cookie}, SESSION_COOKIE) == expected


def test_cookie_value_without_cookie_header() -> None:
    assert cookie_value({}, SESSION_COOKIE) is None


# --- BasicAuthenticator ----------------------------------------------------------------------------


ADMINS = BasicAuthenticator({"alice": "s3cret", "bob": "pa:ss", "zoë": "pässwörd", "disabled": ""})


@pytest.mark.parametrize(
    ("headers", "subject"),
    [
        (basic("alice:s3cret"), "alice"),
        (basic("alice:s3cret", scheme="basic"), "alice"),
        (basic("alice:s3cret", scheme="BASIC"), "alice"),
        (basic("bob:pa:ss"), "bob"),  # the password may contain a colon
        (basic("zoë:pässwörd"), "zoë"),
    ],
)
def test_basic_accepts_the_right_password(headers: dict[str, str], subject: str) -> None:
    assert ADMINS.verify(headers) == Principal(subject=subject, roles=frozenset({ADMIN}), via="basic")


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        (basic("alice:wrong"), "invalid credentials"),
        (basic("alice:S3CRET"), "invalid credentials"),
        (basic("alice:s3cret "), "invalid credentials"),
        (basic("alice:"), "invalid credentials"),
        (basic("mallory:s3cret"), "invalid credentials"),  # unknown user
        (basic("disabled:"), "invalid credentials"),  # a user with an empty password is not a user
        (basic(":s3cret"), "invalid credentials"),
        (basic("alices3cret"), "invalid credentials"),  # no colon
        (basic("alice"), "invalid credentials"),
        (basic(""), "invalid credentials"),
        ({"authorization": "Basic !!!not-base64!!!"}, "malformed"),
        ({"authorization": "Basic YWxpY2U6czNjcmV0"[:-1]}, "malformed"),  # bad padding
        ({"authorization": "Basic YWxp Y2U6czNjcmV0"}, "malformed"),
        (basic(b"alice:\xff\xfe"), "malformed"),  # not UTF-8
    ],
)
def test_basic_refuses(headers: dict[str, str], reason: str) -> None:
    with pytest.raises(AuthError, match=reason):
        ADMINS.verify(headers)


@pytest.mark.parametrize(
    "headers", [{}, {"authorization": ""}, {"authorization": "Bearer x"}, {"authorization": "Digest x"}]
)
def test_basic_ignores_other_schemes(headers: dict[str, str]) -> None:
    assert ADMINS.verify(headers) is None


@pytest.mark.parametrize("users", [{}, {"admin": ""}])
def test_basic_with_no_usable_users_never_authenticates(users: dict[str, str]) -> None:
    admins = BasicAuthenticator(users)
    assert admins.verify(basic("admin:")) is None
    assert admins.verify(basic("admin:anything")) is None


# --- Authenticator ---------------------------------------------------------------------------------


def test_authenticator_bearer() -> None:
    principal = authenticator().authenticate({"authorization": f"Bearer {hs256(claims(sub='dr'))}"}, method="GET")
    assert principal is not None and (principal.subject, principal.via) == ("dr", "jwt")


def test_authenticator_prefers_bearer_over_the_session_cookie() -> None:
    headers = {"authorization": f"Bearer {hs256(claims(sub='dr'))}", "cookie": f"{SESSION_COOKIE}={session_token()}"}
    principal = authenticator().authenticate(headers, method="GET")
    assert principal is not None and principal.subject == "dr" and not principal.is_admin


def test_authenticator_does_not_fall_back_when_the_bearer_token_is_bad() -> None:
    headers = {"authorization": "Bearer garbage", "cookie": f"{SESSION_COOKIE}={session_token()}"}
    with pytest.raises(AuthError):
        authenticator().authenticate(headers, method="GET")


def test_authenticator_basic() -> None:
    admin = Principal("alice", frozenset({ADMIN}), "basic")
    assert authenticator().authenticate(basic("alice:s3cret"), method="GET") == admin
    with pytest.raises(AuthError, match="invalid credentials"):
        authenticator().authenticate(basic("alice:nope"), method="GET")


def test_authenticator_session_cookie() -> None:
    headers = {"cookie": f"theme=dark; {SESSION_COOKIE}={session_token()}"}
    principal = authenticator().authenticate(headers, method="GET")
    assert principal is not None
    assert (principal.subject, principal.via, principal.is_admin) == ("alice", "session", True)
    assert principal.token_id == "sid-1"


@pytest.mark.parametrize(
    "bad_cookie",
    [
        "garbage",
        # A user token (other audience) is not a session, even if it carries the admin role ...
        hs256(claims(role=ADMIN), secret=SESSION_SECRET),
        # ... and a session must be signed with the session secret.
        session_token(secret=SECRET),
    ],
)
def test_authenticator_refuses_bad_session_cookies(bad_cookie: str) -> None:
    with pytest.raises(AuthError):
        authenticator().authenticate({"cookie": f"{SESSION_COOKIE}={bad_cookie}"}, method="GET")


def test_session_token_is_not_a_bearer_token() -> None:
    # Same secret for both verifiers: only the audience keeps them apart.
    auth_ = Authenticator(
        users=verifier(secret=SESSION_SECRET),
        admins=BasicAuthenticator({}),
        sessions=verifier(audience=SESSION_AUDIENCE, secret=SESSION_SECRET),
    )
    with pytest.raises(AuthError, match=r"(?i)audience"):
        auth_.authenticate({"authorization": f"Bearer {session_token()}"}, method="GET")


def test_authenticator_ignores_the_cookie_without_a_session_verifier() -> None:
    headers = {"cookie": f"{SESSION_COOKIE}={session_token()}"}
    assert authenticator(with_sessions=False).authenticate(headers, method="GET") is None


@pytest.mark.parametrize(
    "value", ["Digest username=alice", "Negotiate abc", "Bearer", "Token abc", "garbage"]
)
def test_authenticator_unsupported_scheme_raises(value: str) -> None:
    with pytest.raises(AuthError, match="unsupported authorization scheme"):
        authenticator().authenticate({"authorization": value}, method="GET")


def test_authenticator_basic_without_admin_users_is_unsupported() -> None:
    auth_ = Authenticator(users=verifier(), admins=BasicAuthenticator({}), sessions=None)
    with pytest.raises(AuthError, match="unsupported"):
        auth_.authenticate(basic("alice:s3cret"), method="GET")


@pytest.mark.parametrize("headers", [{}, {"authorization": ""}, {"cookie": "theme=dark"}, {"x-other": "1"}])
def test_authenticator_without_credentials_returns_none(headers: dict[str, str]) -> None:
    assert authenticator().authenticate(headers, method="GET") is None


# --- mint_token ------------------------------------------------------------------------------------


def _decoded(token: str, audience: str = AUDIENCE) -> dict[str, Any]:
    decoded: dict[str, Any] = jwt.decode(
        token, SECRET, algorithms=["HS256"], audience=audience, options={"verify_exp": False, "verify_nbf": False,
                                                                         "verify_iat": False}
    )
    return decoded


def test_mint_token_claims() -> None:
    token = mint_token(
        secret=SECRET, issuer=ISSUER, audience=AUDIENCE, subject="dr", roles=[DOCTOR], ttl_seconds=60, now=1000.9
    )
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    assert _decoded(token) == {
        "iss": ISSUER, "aud": AUDIENCE, "sub": "dr", "iat": 1000, "nbf": 1000, "exp": 1060, "role": DOCTOR
    }


def test_mint_token_several_roles_and_extra_claims() -> None:
    token = mint_token(
        secret=SECRET, issuer=ISSUER, audience=AUDIENCE, subject="dr", roles=(r for r in [NURSE, DOCTOR]),
        ttl_seconds=60, now=0, extra={"name": "Dr Who"},
    )
    decoded = _decoded(token)
    assert (decoded["role"], decoded["roles"], decoded["name"]) == (NURSE, [NURSE, DOCTOR], "Dr Who")


def test_mint_token_needs_a_role() -> None:
    with pytest.raises(ValueError, match="at least one role"):
        mint_token(secret=SECRET, issuer=ISSUER, audience=AUDIENCE, subject="x", roles=[], ttl_seconds=60)


def test_minted_token_round_trips_through_the_verifier() -> None:
    token = mint_token(secret=SECRET, issuer=ISSUER, audience=AUDIENCE, subject="dr", roles=[DOCTOR, RADIOLOGIST],
                       ttl_seconds=300)
    principal = verifier().verify(token)
    assert (principal.subject, principal.roles) == ("dr", frozenset({DOCTOR, RADIOLOGIST}))
    assert principal.expires_at is not None and 0 < principal.expires_at - time.time() <= 300


def test_minted_token_expired_is_refused() -> None:
    token = mint_token(secret=SECRET, issuer=ISSUER, audience=AUDIENCE, subject="dr", roles=[DOCTOR],
                       ttl_seconds=60, now=time.time() - 3600)
    assert refused(verifier(), token) == "token expired"

