"""``core.rate_limit``: per-caller token buckets of requests and megabytes per minute, on an injected clock;
and the router's use of it (``rate_limited`` routes answer 429 + Retry-After, from the head when asked)."""

from __future__ import annotations

import json

import pytest

from ehr_imaging.api.router import Request, Router, json_response
from ehr_imaging.app.upload_limits import admit_upload
from ehr_imaging.core import errors, metrics
from ehr_imaging.core.auth import DOCTOR, NURSE, Authenticator, BasicAuthenticator, Principal, TokenVerifier, mint_token
from ehr_imaging.core.rate_limit import MB, RateLimiter, Refusal


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def clock() -> Clock:
    return Clock()


def test_requests_per_minute_then_a_refusal_that_says_when(clock: Clock) -> None:
    limiter = RateLimiter(3, 0, clock)
    assert [limiter.admit("dr-a", 10) for _ in range(3)] == [None, None, None]
    assert limiter.admit("dr-a", 10) == Refusal("requests", 20)  # one request back every 20 s
    clock.now += 19
    assert limiter.admit("dr-a", 10) == Refusal("requests", 1)
    clock.now += 1
    assert limiter.admit("dr-a", 10) is None
    assert limiter.admit("dr-a", 10) == Refusal("requests", 20)


def test_each_caller_has_its_own_allowance(clock: Clock) -> None:
    limiter = RateLimiter(1, 0, clock)
    assert limiter.admit("dr-a", 0) is None
    assert limiter.admit("dr-a", 0) is not None
    assert limiter.admit("dr-b", 0) is None


def test_megabytes_per_minute(clock: Clock) -> None:
    limiter = RateLimiter(0, 6, clock)  # 0.1 MB a second
    assert limiter.admit("t", 4 * MB) is None
    assert limiter.admit("t", 2 * MB) is None
    assert limiter.admit("t", MB) == Refusal("megabytes", 10)
    clock.now += 10
    assert limiter.admit("t", MB) is None


def test_a_request_larger_than_a_minute_waits_for_a_full_bucket_and_leaves_a_debt(clock: Clock) -> None:
    limiter = RateLimiter(0, 1, clock)
    assert limiter.admit("t", 3 * MB) is None  # a full bucket admits it: a big file is slowed, never refused forever
    assert limiter.admit("t", 1) == Refusal("megabytes", 121)  # 2 MB of debt, then the byte
    clock.now += 180
    assert limiter.admit("t", 3 * MB) is None


def test_a_look_does_not_count(clock: Clock) -> None:
    limiter = RateLimiter(1, 0, clock)
    assert limiter.admit("t", 0, consume=False) is None
    assert limiter.admit("t", 0, consume=False) is None
    assert limiter.admit("t", 0) is None
    assert limiter.admit("t", 0, consume=False) == Refusal("requests", 60)


def test_zero_switches_a_limit_off(clock: Clock) -> None:
    limiter = RateLimiter(0, 0, clock)
    assert not limiter.enabled
    assert all(limiter.admit("t", 10 * MB) is None for _ in range(1000))


def test_the_bucket_refills_only_up_to_one_minute(clock: Clock) -> None:
    limiter = RateLimiter(2, 0, clock)
    assert limiter.admit("t", 0) is None
    clock.now += 3600  # an hour idle gives a minute's allowance, not an hour's
    assert [limiter.admit("t", 0) is None for _ in range(3)] == [True, True, False]


def test_callers_are_forgotten_least_recent_first(clock: Clock) -> None:
    limiter = RateLimiter(1, 0, clock, max_callers=2)
    for caller in ("a", "b", "c"):  # "a" forgotten: a full allowance again
        assert limiter.admit(caller, 0) is None
    assert limiter.admit("c", 0) is not None
    assert limiter.admit("a", 0) is None


# --- the router and the use case ----------------------------------------------------------------------------

SECRET = "rate-limit-test-secret-0123456789abcdef"
UPLOAD = "/api/v1/dicom/upload"


class _Services:
    """What admit_upload reads of the services."""

    def __init__(self, limiter: RateLimiter) -> None:
        self.upload_limiter = limiter
        self.metrics = metrics.Metrics()


def _router(services: _Services, reached: list[str]) -> Router:
    authenticator = Authenticator(users=TokenVerifier(issuer="i", audience="a", secret=SECRET),
                                  admins=BasicAuthenticator({}), sessions=None)
    router = Router(authenticator, lambda message: None,
                    throttle=lambda caller, size, consume: admit_upload(services, caller, size, consume))  # type: ignore[arg-type]

    def handler(request: Request) -> object:
        reached.append(request.path)
        return json_response({"status": "uploaded"})

    router.add("POST", UPLOAD, handler, roles=[DOCTOR], rate_limited=True)  # type: ignore[arg-type]
    router.add("POST", "/api/v1/dicom/validate", handler, roles=[DOCTOR])  # type: ignore[arg-type]
    return router


def _headers(subject: str = "dr-1", role: str = DOCTOR, length: int = 100) -> dict[str, str]:
    token = mint_token(secret=SECRET, issuer="i", audience="a", subject=subject, roles=[role], ttl_seconds=600)
    return {"authorization": f"Bearer {token}", "content-length": str(length)}


def test_a_rate_limited_route_answers_429_with_retry_after_and_the_handler_is_never_reached(clock: Clock) -> None:
    services, reached = _Services(RateLimiter(2, 0, clock)), list[str]()
    router = _router(services, reached)
    statuses = [router.dispatch(UPLOAD, Request("POST", UPLOAD, headers=_headers(), body=b"x" * 100)).status
                for _ in range(3)]
    assert statuses == [200, 200, 429]
    assert reached == [UPLOAD, UPLOAD]
    refused = router.dispatch(UPLOAD, Request("POST", UPLOAD, headers=_headers(), body=b"x"))
    assert refused.status == 429 and refused.headers["Retry-After"] == "30"
    assert "2 upload requests per minute per caller on this node" in json.loads(refused.body)["detail"]
    assert services.metrics.get(metrics.UPLOADS_RATE_LIMITED) == 2
    # Another caller, and a route that is not limited, are not affected.
    assert router.dispatch(UPLOAD, Request("POST", UPLOAD, headers=_headers("dr-2"), body=b"x")).status == 200
    other = "/api/v1/dicom/validate"
    assert router.dispatch(other, Request("POST", other, headers=_headers(), body=b"x")).status == 200


def test_megabytes_count_the_declared_length(clock: Clock) -> None:
    services, reached = _Services(RateLimiter(0, 1, clock)), list[str]()
    router = _router(services, reached)
    assert router.dispatch(UPLOAD, Request("POST", UPLOAD, headers=_headers(length=MB), body=b"")).status == 200
    refused = router.dispatch(UPLOAD, Request("POST", UPLOAD, headers=_headers(length=10), body=b""))
    assert refused.status == 429 and "1 MB of uploads per minute" in json.loads(refused.body)["detail"]


def test_the_early_refusal_looks_without_counting_and_only_for_a_valid_token_of_the_route(clock: Clock) -> None:
    services, reached = _Services(RateLimiter(1, 0, clock)), list[str]()
    router = _router(services, reached)
    assert router.early_refusal("POST", UPLOAD, _headers()) is None  # a look: the allowance is still there
    assert router.dispatch(UPLOAD, Request("POST", UPLOAD, headers=_headers(), body=b"x")).status == 200
    early = router.early_refusal("POST", UPLOAD, _headers())
    assert early is not None and early.status == 429 and early.headers["Retry-After"] == "60"
    assert router.early_refusal("POST", UPLOAD, {"authorization": "Bearer nonsense"}) is None  # dispatch: 401
    assert router.early_refusal("POST", UPLOAD, _headers(role=NURSE)) is None  # dispatch: 403
    assert router.early_refusal("POST", "/api/v1/dicom/validate", _headers()) is None
    assert router.early_refusal("GET", "/nowhere", _headers()) is None


def test_the_use_case_raises_the_error_kind_mapped_to_429(clock: Clock) -> None:
    services = _Services(RateLimiter(1, 0, clock))
    caller = Principal(subject="dr-1", roles=frozenset({DOCTOR}), via="jwt")
    admit_upload(services, caller, 0, True)  # type: ignore[arg-type]
    with pytest.raises(errors.RateLimited) as refused:
        admit_upload(services, caller, 0, True)  # type: ignore[arg-type]
    assert refused.value.retry_after_seconds == 60 and "nothing was stored" in refused.value.detail
