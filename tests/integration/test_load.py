"""The short version of ``make soak`` (benchmarks/load.py): 8 modalities storing, 20 viewers reading frames and
scoped QIDO, and the EHR pushing orders, reading them, querying a patient's studies and uploading, all at once
for 20 s against one plugin stack. Nothing fails, every study ends linked to its order with all its images,
exactly once, and Orthanc is the same process with bounded memory. Latencies are printed, not asserted (the
machine is shared; speed is judged side by side in ``make bench``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from benchmarks.load import LoadPlan, LoadReport, run_load
from ehr_stack.stack import Stack
from tests.conftest import Client, running_stack
from tests.integration.helpers import query

pytestmark = pytest.mark.integration

PLAN = LoadPlan(seconds=20, modalities=8, viewers=20, ehr_clients=2, instances_per_study=3, link_timeout=120)
# Orthanc's resident memory may grow while its caches and the plugin's warm up (hierarchy, tokens, pooled
# connections); a leak per request would grow it far more over the run's ~3,000 requests (README "Load and soak").
RSS_GROWTH_BOUND_MB = 150.0


@pytest.fixture(scope="module")
def loaded() -> Iterator[tuple[Stack, LoadReport]]:
    with running_stack("load") as stack:
        report = run_load(stack, PLAN)
        print("\n".join(report.lines()))
        yield stack, report


def test_every_request_of_every_user_succeeds(loaded: tuple[Stack, LoadReport]) -> None:
    _, report = loaded
    assert report.errors == []
    for kind in ("cstore.study", "viewer.frame", "viewer.qido", "ehr.put_order", "ehr.get_order",
                 "ehr.patient_studies", "ehr.upload"):
        assert report.latencies[kind], f"no {kind} request was made"


def test_every_study_is_linked_once_with_all_its_images(loaded: tuple[Stack, LoadReport]) -> None:
    stack, report = loaded
    assert report.unlinked == [] and report.ingest_lag is not None
    assert len(report.stored) >= PLAN.modalities  # each modality stored at least one study
    rows = query(Client(stack), "SELECT order_id, study_instance_uid, number_of_instances FROM ehr_imaging.study_links"
                                " WHERE order_id = ANY(:orders)", orders=list(report.stored))
    assert sorted(rows) == sorted((order_id, uid, count) for order_id, (uid, count) in report.stored.items())
    assert query(Client(stack), "SELECT count(*) FROM ehr_imaging.study_links WHERE order_id IS NULL") == [(0,)]


def test_orthanc_stays_up_with_bounded_memory(loaded: tuple[Stack, LoadReport]) -> None:
    _, report = loaded
    start, end = report.orthanc_pid
    assert start is not None and start == end
    assert len(report.rss_mb) >= PLAN.seconds / 2
    assert report.rss_mb[-1] - report.rss_mb[0] < RSS_GROWTH_BOUND_MB, report.rss_mb
