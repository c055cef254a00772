"""The pure rules of events to the EHR (core/events.py): endpoints, signature, backoff, in-order decision."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta

import pytest

from ehr_imaging.config import ConfigError, load_settings
from ehr_imaging.core import events

SECRET = "a-receiver-secret-of-some-length"
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def test_the_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    body = b'{"event_id":"e1"}'
    header = events.signature(SECRET, 1_700_000_000, body)
    expected = hmac.new(SECRET.encode(), b"1700000000." + body, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"
    assert events.verify(SECRET, header, body, now=1_700_000_100)


@pytest.mark.parametrize("change", ["body", "secret", "stale", "future", "no-timestamp", "garbage"])
def test_a_signature_is_refused_when_anything_differs(change: str) -> None:
    body, t = b'{"a":1}', 1_700_000_000
    header = events.signature(SECRET, t, body)
    now = t
    if change == "body":
        body = b'{"a":2}'
    elif change == "secret":
        header = events.signature("another-secret-entirely!", t, body)
    elif change == "stale":
        now = t + 301  # a replay after the tolerance
    elif change == "future":
        now = t - 301
    elif change == "no-timestamp":
        header = header.split(",", 1)[1]
    else:
        header = "t=abc,v1=00"
    assert not events.verify(SECRET, header, body, now=now)


def test_the_body_is_the_same_bytes_at_every_attempt() -> None:
    event = events.Event("e1", events.STUDY_LINKED, NOW, "1.2.3", "ORD-1", "P-1", {"rule": "R1", "b": [1]})
    first = events.body(event)
    assert first == events.body(event)
    document = json.loads(first)
    assert document == {"event_id": "e1", "type": "study.linked", "occurred_at": NOW.isoformat(),
                        "study_instance_uid": "1.2.3", "order_id": "ORD-1", "patient_id": "P-1",
                        "data": {"rule": "R1", "b": [1]}}


def test_the_backoff_doubles_up_to_an_hour() -> None:
    assert [events.retry_delay(n, 30) for n in (1, 2, 3, 4)] == [30, 60, 120, 240]
    assert events.retry_delay(20, 30) == 3600
    assert events.retry_delay(1, 5000) == 5000  # a base above the cap is kept, not cut
    assert [events.retry_delay(n, 1, 2) for n in (1, 2, 3, 500)] == [1, 2, 2, 2]  # a shorter cap (tests)


def test_retries_go_on_for_the_whole_window_then_stop() -> None:
    first, window = NOW, timedelta(hours=48)
    attempts, now = 0, first
    while True:
        attempts += 1
        at = events.next_attempt(attempts, first, now, base_seconds=30, retry_for=window)
        if at is None:
            break
        assert at > now
        now = at
    assert now - first > timedelta(hours=47)  # retried for (nearly) the whole window, at least 24 h
    assert now - first <= window
    assert attempts > 40  # hourly once the backoff has grown


def d(seq: int, key: str, status: str = events.PENDING, endpoint: str = "http://ehr/a",
      due: datetime = NOW) -> events.Delivery:
    return events.Delivery(seq, endpoint, key, status, due)


def test_only_the_earliest_undelivered_event_of_a_study_is_sent() -> None:
    rows = [d(3, "study:A"), d(1, "study:A"), d(2, "study:B"), d(4, "study:B")]
    assert [x.seq for x in events.sendable(rows, NOW)] == [1, 2]


def test_an_earlier_event_not_due_yet_holds_the_later_ones() -> None:
    rows = [d(1, "study:A", due=NOW + timedelta(seconds=30)), d(2, "study:A"), d(3, "study:B")]
    assert [x.seq for x in events.sendable(rows, NOW)] == [3]


def test_delivered_or_given_up_events_hold_nothing_and_endpoints_are_apart() -> None:
    rows = [d(1, "study:A", events.DELIVERED), d(2, "study:A", events.FAILED), d(3, "study:A"),
            d(4, "study:A", endpoint="http://ehr/b", due=NOW + timedelta(hours=1)), d(5, "study:A", endpoint="http://x/")]
    assert [x.seq for x in events.sendable(rows, NOW)] == [3, 5]  # http://ehr/b waits, http://x/ does not


def test_the_ordering_key_is_the_study_else_the_order() -> None:
    assert events.ordering_key("1.2.3", "ORD") == "study:1.2.3"
    assert events.ordering_key(None, "ORD") == "order:ORD"


def test_endpoints_are_checked_and_types_default_to_all() -> None:
    parsed = events.parse_endpoints([{"url": "https://ehr.example/hook", "secret": SECRET},
                                     {"url": "http://10.0.0.1:9000/e", "secret": SECRET, "types": ["study.linked"]}])
    assert parsed[0].types == frozenset(events.EVENT_TYPES)
    assert parsed[1].types == frozenset({"study.linked"})
    assert SECRET not in repr(parsed)


@pytest.mark.parametrize(("raw", "message"), [
    ([{"url": "ftp://x/", "secret": SECRET}], "url"),
    ([{"url": "https://x/", "secret": "short"}], "secret"),
    ([{"url": "https://x/", "secret": SECRET, "types": ["study.nope"]}], "types"),
    ([{"url": "https://x/", "secret": SECRET, "extra": 1}], "unknown"),
    ([{"url": "https://x/", "secret": SECRET}, {"url": "https://x/", "secret": SECRET}], "twice"),
    (["https://x/"], "object"),
])
def test_bad_endpoints_are_refused_without_their_secret(raw: list[object], message: str) -> None:
    with pytest.raises(ValueError, match=message) as refused:
        events.parse_endpoints(raw)
    assert SECRET not in str(refused.value)


def test_a_displayed_url_has_no_credentials_or_query() -> None:
    assert events.display_url("https://user:pw@ehr.example:8443/hook?token=s3cret#x") == "https://ehr.example:8443/hook"


def test_the_setting_comes_from_json_or_the_environment_and_is_logged_without_secrets() -> None:
    raw = [{"url": "https://u:pw@ehr.example/hook", "secret": SECRET, "types": ["study.arrived"]}]
    from_env = load_settings({}, {"EHR_IMAGING_EVENT_ENDPOINTS": json.dumps(raw)})
    assert from_env.EventEndpoints == raw
    assert load_settings({"EhrImaging": {"EventEndpoints": raw}}, {}).EventEndpoints == raw
    logged = json.dumps(from_env.redacted())
    assert SECRET not in logged and "pw@" not in logged
    with pytest.raises(ConfigError, match="list of objects"):
        load_settings({"EhrImaging": {"EventEndpoints": ["https://x/"]}}, {})
    with pytest.raises(ConfigError, match="at least 1"):
        load_settings({"EhrImaging": {"EventRetryBaseSeconds": 0}}, {})


def test_a_bad_endpoint_stops_start_up_without_naming_its_secret() -> None:
    from ehr_imaging.bootstrap import build_services
    from ehr_imaging.config import Settings

    settings = Settings(DatabaseUrl="postgresql://plugin@127.0.0.1:1/ehr", JwtSecret="unit-secret-0123456789abcdef",
                        EventEndpoints=[{"url": "https://ehr.example/hook", "secret": "too-short"}])
    with pytest.raises(ConfigError, match=r"EventEndpoints\[0\]\.secret") as refused:
        build_services(settings, pacs=None)  # type: ignore[arg-type]  # refused before anything is built
    assert "too-short" not in str(refused.value)
