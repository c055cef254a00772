"""Orthanc's change events reach the services that act on them (hooks/changes.py), with a stand-in for
the ``orthanc`` module: a stable or new study only wakes the ingest worker (which reads Orthanc's change log
itself), a deleted study leaves the viewer gate's hierarchy at once (never served from a stale cache) and goes
to the worker's deletion spool (Orthanc's change log never holds deletions)."""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Iterator
from enum import Enum
from typing import Any
from unittest import mock

import pytest


class ChangeType(Enum):
    NEW_STUDY = 1
    STABLE_STUDY = 2
    DELETED = 3
    ORTHANC_STARTED = 4
    ORTHANC_STOPPED = 5
    NEW_INSTANCE = 6


class ResourceType(Enum):
    STUDY = 1
    SERIES = 2


@pytest.fixture
def on_change() -> Iterator[tuple[Any, mock.MagicMock, mock.MagicMock, list[str]]]:
    fake = types.ModuleType("orthanc")
    fake.ChangeType = ChangeType  # type: ignore[attr-defined]
    fake.ResourceType = ResourceType  # type: ignore[attr-defined]
    with mock.patch.dict(sys.modules, {"orthanc": fake}):
        sys.modules.pop("ehr_imaging.hooks.changes", None)
        changes = importlib.import_module("ehr_imaging.hooks.changes")
        worker, gate = mock.MagicMock(), mock.MagicMock()
        errors: list[str] = []
        yield changes.make_change_callback(worker, gate, errors.append), worker, gate, errors
    sys.modules.pop("ehr_imaging.hooks.changes", None)


def test_a_stable_study_only_wakes_the_worker(on_change: Any) -> None:
    callback, worker, gate, _ = on_change
    callback(ChangeType.STABLE_STUDY, ResourceType.STUDY, "o1")
    worker.wake.assert_called_once_with()
    worker.submit.assert_not_called()
    gate.hierarchy.forget.assert_not_called()


def test_a_deleted_study_is_forgotten_by_the_gate_and_queued_for_its_audit(on_change: Any) -> None:
    callback, worker, gate, _ = on_change
    callback(ChangeType.DELETED, ResourceType.STUDY, "o1")
    gate.hierarchy.forget.assert_called_once_with("o1")
    worker.submit_deleted.assert_called_once_with("o1")
    callback(ChangeType.DELETED, ResourceType.SERIES, "s1")  # a series: the study's own change follows
    assert gate.hierarchy.forget.call_count == 1 and worker.submit_deleted.call_count == 1


def test_a_new_study_refreshes_studies_sharing_its_uid_and_the_start_starts_following(on_change: Any) -> None:
    callback, worker, gate, _ = on_change
    callback(ChangeType.NEW_STUDY, ResourceType.STUDY, "o2")
    gate.hierarchy.study_arrived.assert_called_once_with("o2")
    worker.wake.assert_called_once_with()
    callback(ChangeType.ORTHANC_STARTED, None, "")
    worker.orthanc_started.assert_called_once_with()
    callback(ChangeType.NEW_INSTANCE, None, "i1")  # nothing to do
    worker.submit.assert_not_called()
    assert worker.wake.call_count == 1


def test_the_last_access_counts_are_written_at_stop_and_a_failure_is_said(on_change: Any) -> None:
    callback, worker, gate, errors = on_change
    callback(ChangeType.ORTHANC_STOPPED, None, "")
    gate.access_log.flush.assert_called_once_with()
    worker.release.assert_called_once_with()  # the change log's lease: another node takes over at once
    gate.access_log.flush.side_effect = OSError("database gone")
    callback(ChangeType.ORTHANC_STOPPED, None, "")
    assert errors == ["ehr-imaging: viewer access counts not written at stop (OSError)"]
