"""``core.metrics``: the catalogue (names Prometheus and Orthanc accept, labels folded into names) and the
registry; the HTTP filter counts its refusals by kind; the publisher hands every value to Orthanc."""

from __future__ import annotations

import re
import threading
from unittest import mock

import pytest

from ehr_imaging.app.metrics_publisher import MetricsPublisher
from ehr_imaging.config import Settings
from ehr_imaging.core import metrics
from ehr_imaging.core.matching import REASON_PATIENT_MISMATCH

PROMETHEUS_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def test_every_name_is_a_prometheus_name_with_the_prefix_and_declared_once() -> None:
    names = [m.name for m in metrics.CATALOGUE]
    assert len(names) == len(set(names))
    for metric in metrics.CATALOGUE:
        assert PROMETHEUS_NAME.fullmatch(metric.name) and metric.name.startswith("ehr_imaging_"), metric.name
        assert metric.kind in ("counter", "gauge") and metric.help


def test_a_reason_becomes_part_of_the_name() -> None:
    assert metrics.unmatched_name(REASON_PATIENT_MISMATCH) == "ehr_imaging_studies_unmatched_patient_mismatch"
    assert metrics.unmatched_name("order already linked to another study") in metrics.NAMES
    assert metrics.refusal_name(metrics.REFUSAL_VIEWER_SCOPE) == "ehr_imaging_filter_refusals_viewer_scope_total"
    assert all(metrics.unmatched_name(reason) in metrics.NAMES for reason in metrics.UNMATCHED_REASONS)


def test_counters_start_at_zero_gauges_when_set_and_unknown_names_are_refused() -> None:
    registry = metrics.Metrics()
    snapshot = registry.snapshot()
    assert snapshot[metrics.UPLOAD_FAILURES] == 0 and metrics.DATABASE_UP not in snapshot
    registry.count(metrics.UPLOAD_FAILURES)
    registry.count(metrics.UPLOAD_FAILURES, 2)
    registry.set(metrics.DATABASE_UP, 1)
    assert registry.get(metrics.UPLOAD_FAILURES) == 3 and registry.get(metrics.DATABASE_UP) == 1
    with pytest.raises(KeyError, match="declare it"):
        registry.count("ehr_imaging_typo_total")


def test_refusals_count_in_total_and_by_kind() -> None:
    registry = metrics.Metrics()
    registry.refused(metrics.REFUSAL_CREDENTIALS)
    registry.refused(metrics.REFUSAL_CREDENTIALS)
    registry.refused("something new")  # an unknown kind is a body refusal, never a crash in the filter
    assert registry.get(metrics.FILTER_REFUSALS) == 3
    assert registry.get(metrics.refusal_name(metrics.REFUSAL_CREDENTIALS)) == 2
    assert registry.get(metrics.refusal_name(metrics.REFUSAL_BODY)) == 1


def test_match_latency_keeps_the_latest_and_a_sum_and_count() -> None:
    registry = metrics.Metrics()
    registry.matched(2.0)
    registry.matched(0.5)
    assert (registry.get(metrics.MATCH_LATENCY), registry.get(metrics.MATCH_LATENCY_SUM),
            registry.get(metrics.MATCHES)) == (0.5, 2.5, 2)


def test_counting_from_many_threads_loses_nothing() -> None:
    registry = metrics.Metrics()

    def work() -> None:
        for _ in range(1000):
            registry.count(metrics.VIEWER_REQUESTS)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert registry.get(metrics.VIEWER_REQUESTS) == 8000


def test_the_publisher_hands_every_value_to_orthanc_and_reports_a_database_that_does_not_answer() -> None:
    services = mock.MagicMock()
    services.metrics = metrics.Metrics()
    services.settings = Settings(MetricsIntervalSeconds=1)
    published: dict[str, float] = {}
    publisher = MetricsPublisher(services, published.__setitem__,
                                 sources=(lambda: {metrics.INGEST_QUEUE_DEPTH: 3},))
    with mock.patch("ehr_imaging.app.metrics_publisher.db.ping", side_effect=OSError("connection refused")):
        publisher.publish_once()
    assert published[metrics.DATABASE_UP] == 0 and published[metrics.INGEST_QUEUE_DEPTH] == 3
    assert published[metrics.UPLOAD_FAILURES] == 0
    assert set(published) <= metrics.NAMES


def test_a_failing_publish_is_logged_once_and_retried() -> None:
    services = mock.MagicMock()
    services.metrics = metrics.Metrics()
    logged: list[str] = []
    calls: list[str] = []

    def publish(name: str, value: float) -> None:
        calls.append(name)
        raise RuntimeError("Orthanc is stopping")

    publisher = MetricsPublisher(services, publish, log_error=logged.append)
    with mock.patch("ehr_imaging.app.metrics_publisher.db.ping", side_effect=OSError("down")):
        publisher.publish_once()
        publisher.publish_once()
    assert len(calls) == 2 and len(logged) == 1 and "Orthanc is stopping" in logged[0]
