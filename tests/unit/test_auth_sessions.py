"""Admin sessions (ended on logout, CSRF checks), the basic-auth failure limiter, and token subjects."""

from __future__ import annotations

from typing import Any

import pytest

from ehr_imaging.core.auth import (
    ADMIN,
    SESSION_COOKIE,
    AuthError,
    BasicAuthenticator,
    CrossSiteError,
    check_same_site,
    valid_subject,
)
from ehr_imaging.core.lockout import FailureLimiter
from tests.unit.auth_helpers import Ended, authenticator, basic, claims, hs256, session_token, verifier


def cookie(session_id: str = "sid-1") -> dict[str, str]:
    return {"cookie": f"{SESSION_COOKIE}={session_token(session_id)}"}


# --- ended sessions ---------------------------------------------------------------------------------------

def test_an_ended_session_is_refused_at_once_even_from_the_token_cache() -> None:
    ended = Ended()
    auth = authenticator(ended=ended)
    assert auth.authenticate(cookie(), method="GET") is not None  # verified and cached
    ended.add("sid-1", 2e9)
    with pytest.raises(AuthError, match="session ended"):
        auth.authenticate(cookie(), method="GET")
    assert auth.authenticate(cookie("sid-2"), method="GET") is not None  # another session is not affected


def test_sessions_are_refused_until_the_list_of_ended_sessions_is_connected() -> None:
    auth = authenticator()
    auth.session_revocations = None
    with pytest.raises(AuthError):
        auth.authenticate(cookie(), method="GET")


def test_a_session_without_an_id_is_refused() -> None:
    from ehr_imaging.core.auth import mint_token
    from tests.unit.auth_helpers import ISSUER, SESSION_AUDIENCE, SESSION_SECRET

    old_style = mint_token(secret=SESSION_SECRET, issuer=ISSUER, audience=SESSION_AUDIENCE, subject="alice",
                           roles=[ADMIN], ttl_seconds=600)
    with pytest.raises(AuthError):
        authenticator().authenticate({"cookie": f"{SESSION_COOKIE}={old_style}"}, method="GET")


# --- CSRF: state changes authenticated by the cookie ----------------------------------------------------

SAME = {"host": "pacs.example:8042"}


@pytest.mark.parametrize("headers", [
    {"sec-fetch-site": "same-origin"}, {"sec-fetch-site": "none"},
    {"origin": "http://pacs.example:8042"}, {"origin": "https://PACS.example:8042"},
    {"origin": "https://ehr.example", "host": "10.0.0.5:8042"},  # the trusted public origin behind a proxy
])
def test_same_origin_state_changes_pass(headers: dict[str, str]) -> None:
    check_same_site("POST", {**SAME, **headers}, ["https://ehr.example/"])


@pytest.mark.parametrize("headers", [
    {}, {"sec-fetch-site": "cross-site"}, {"sec-fetch-site": "same-site"},
    {"sec-fetch-site": "cross-site", "origin": "http://pacs.example:8042"},  # Sec-Fetch-Site decides
    {"origin": "http://evil.example"}, {"origin": "null"}, {"origin": "http://pacs.example:8042.evil.example"},
    {"origin": "http://pacs.example"},  # another port is another origin
])
@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_cross_site_or_unknown_state_changes_are_refused(headers: dict[str, str], method: str) -> None:
    with pytest.raises(CrossSiteError):
        check_same_site(method, {**SAME, **headers}, ["https://ehr.example"])


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS", "get"])
def test_reads_need_no_origin(method: str) -> None:
    check_same_site(method, {"sec-fetch-site": "cross-site"})


def test_the_authenticator_checks_the_origin_for_the_cookie_only() -> None:
    auth = authenticator()
    evil = {"origin": "http://evil.example", "host": "pacs.example"}
    with pytest.raises(CrossSiteError):
        auth.authenticate({**cookie(), **evil}, method="POST")
    assert auth.authenticate({**cookie(), **evil}, method="GET") is not None
    # Bearer and basic credentials are not sent by a browser on its own: no origin check for them.
    assert auth.authenticate({**basic("alice:s3cret"), **evil}, method="POST") is not None
    assert auth.authenticate({"authorization": f"Bearer {hs256(claims())}", **evil}, method="DELETE") is not None


# --- failed basic sign-ins ------------------------------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limited(clock: Clock, per_address: int = 3, per_user: int = 5) -> BasicAuthenticator:
    return BasicAuthenticator(
        {"alice": "s3cret"},
        by_address=FailureLimiter(max_failures=per_address, window_seconds=60, lockout_seconds=300, clock=clock),
        by_user=FailureLimiter(max_failures=per_user, window_seconds=60, lockout_seconds=300, clock=clock))


def test_an_address_is_locked_out_after_its_failures_even_with_the_right_password() -> None:
    clock = Clock()
    admins = limited(clock)
    for _ in range(3):
        with pytest.raises(AuthError, match="invalid credentials"):
            admins.verify(basic("alice:guess"), "10.0.0.9")
    with pytest.raises(AuthError, match="too many failed sign-ins"):
        admins.verify(basic("alice:s3cret"), "10.0.0.9")
    assert admins.verify(basic("alice:s3cret"), "10.0.0.10") is not None  # another address still signs in
    clock.now += 301
    assert admins.verify(basic("alice:s3cret"), "10.0.0.9") is not None  # the lockout window has passed


def test_a_user_name_is_locked_out_after_failures_from_many_addresses() -> None:
    clock = Clock()
    admins = limited(clock)
    for n in range(5):
        with pytest.raises(AuthError):
            admins.verify(basic("alice:guess"), f"10.0.1.{n}")
    with pytest.raises(AuthError, match="too many failed sign-ins"):
        admins.verify(basic("alice:s3cret"), "10.0.2.1")


def test_failures_outside_the_window_do_not_add_up_and_success_resets() -> None:
    clock = Clock()
    admins = limited(clock)
    for _ in range(2):
        with pytest.raises(AuthError, match="invalid credentials"):
            admins.verify(basic("alice:guess"), "10.0.0.9")
        clock.now += 61
    with pytest.raises(AuthError, match="invalid credentials"):
        admins.verify(basic("alice:guess"), "10.0.0.9")
    assert admins.verify(basic("alice:s3cret"), "10.0.0.9") is not None


def test_made_up_user_names_lock_no_one_and_the_table_is_bounded() -> None:
    clock = Clock()
    limiter = FailureLimiter(max_failures=2, window_seconds=60, lockout_seconds=60, max_keys=100, clock=clock)
    admins = BasicAuthenticator({"alice": "s3cret"}, by_user=limiter)
    for n in range(500):
        with pytest.raises(AuthError):
            admins.verify(basic(f"user{n}:x"))
    assert len(limiter._entries) == 0  # only existing names are counted per user
    for n in range(500):
        limiter.failed([f"k{n}"])
    assert len(limiter._entries) == 100


# --- subjects -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("subject", ["", " ", "dr\r\nW0101 forged log line", "a\x00b", "tab\there", " lead",
                                     "trail ", "x" * 257, "a\u2028b", "a\x85b", 42, ["dr"]])
def test_tokens_with_an_empty_or_control_character_subject_are_refused(subject: Any) -> None:
    assert not valid_subject(subject)
    with pytest.raises(AuthError, match=r"(?i)subject"):
        verifier().verify(hs256(claims(sub=subject)))


@pytest.mark.parametrize("subject", ["dr-house", "Zoë Müller", "ehr:service/1", "a@b.example"])
def test_ordinary_subjects_pass(subject: str) -> None:
    assert verifier().verify(hs256(claims(sub=subject))).subject == subject


# --- log lines ------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "line"), [
    ("refused /x\r\nW1201 12:00:00 fake", "refused /x\\r\\nW1201 12:00:00 fake"),
    ("a\x1b[31mred", "a\\x1b[31mred"), ("tab\tand\x00nul", "tab\\tand\\x00nul"), ("a\u2028b\x85c", "a\\u2028b\\x85c"),
    ("plain Zoë /dicom-web/studies/1.2", "plain Zoë /dicom-web/studies/1.2"),
])
def test_log_lines_never_carry_raw_control_characters(raw: str, line: str) -> None:
    from ehr_imaging.core.logsafe import loggable

    assert loggable(raw) == line
    assert "\n" not in loggable(raw) and "\r" not in loggable(raw)
