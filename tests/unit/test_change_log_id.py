"""Which change log a node follows (pacs.change_log_id), with a stand-in for the ``orthanc`` module: nodes sharing
Orthanc's index in PostgreSQL name the same log (that database, without credentials), a node with its own SQLite
index gets a random id made once and kept in that index (a global property), so two such nodes never share one."""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest


class FakeIndex:
    """One Orthanc index's global properties."""

    def __init__(self) -> None:
        self.properties: dict[int, str] = {}

    def module(self) -> types.ModuleType:
        fake = types.ModuleType("orthanc")
        fake.GetGlobalProperty = lambda key, default: self.properties.get(key, default)  # type: ignore[attr-defined]
        fake.SetGlobalProperty = self.properties.__setitem__  # type: ignore[attr-defined]
        return fake


@pytest.fixture
def pacs_on() -> Iterator[Any]:
    def load(index: FakeIndex) -> Any:
        sys.modules.pop("ehr_imaging.pacs", None)
        with mock.patch.dict(sys.modules, {"orthanc": index.module()}):
            module = importlib.import_module("ehr_imaging.pacs")
        return module

    yield load
    sys.modules.pop("ehr_imaging.pacs", None)


def test_nodes_sharing_a_postgresql_index_name_the_same_log(pacs_on: Any) -> None:
    first, second = pacs_on(FakeIndex()), pacs_on(FakeIndex())  # per-server properties: never consulted here
    by_fields = {"PostgreSQL": {"EnableIndex": True, "Host": "db", "Port": 5432, "Database": "orthanc",
                                "Username": "orthanc", "Password": "secret"}}
    by_uri = {"PostgreSQL": {"EnableIndex": True, "ConnectionUri": "postgresql://orthanc:secret@db:5432/orthanc"}}
    assert first.change_log_id(by_fields) == second.change_log_id(by_uri) == "orthanc-index-postgresql://db:5432/orthanc"
    assert "secret" not in first.change_log_id(by_uri)


def test_a_node_with_its_own_index_keeps_its_own_random_log_id(pacs_on: Any) -> None:
    own, other = FakeIndex(), FakeIndex()
    first = pacs_on(own).change_log_id({})
    assert first.startswith("orthanc-index-") and pacs_on(own).change_log_id({}) == first  # kept in the index
    assert pacs_on(other).change_log_id({"PostgreSQL": {"EnableIndex": False}}) != first
