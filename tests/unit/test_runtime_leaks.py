"""The correction of orthanc-python 4.0's leaked callback arguments (hooks/runtime_leaks.py), with real reference
counts: each argument object is given one extra reference, as that runtime leaves it, and after the wrapped
callback returns each is back where it started — on 4.0 only; on any other version nothing is touched; a callback
that changes the dicts it was given never makes the correction release an object that was not leaked."""

from __future__ import annotations

import ctypes
import importlib
import json
import sys
import types
from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest

_incref = ctypes.pythonapi.Py_IncRef
_incref.argtypes = (ctypes.py_object,)
_incref.restype = None


def fake_orthanc(version: str | None) -> types.ModuleType:
    fake = types.ModuleType("orthanc")

    def rest_api_get(uri: str) -> bytes:
        if version is None:
            raise RuntimeError("no such plugin")
        assert uri == "/plugins/python"
        return json.dumps({"ID": "python", "Version": version}).encode()

    fake.RestApiGet = rest_api_get  # type: ignore[attr-defined]
    return fake


@pytest.fixture
def leaks() -> Iterator[Any]:
    with mock.patch.dict(sys.modules, {"orthanc": fake_orthanc(None)}):
        sys.modules.pop("ehr_imaging.hooks.runtime_leaks", None)
        yield importlib.import_module("ehr_imaging.hooks.runtime_leaks")
    sys.modules.pop("ehr_imaging.hooks.runtime_leaks", None)


def leaked_filter_arguments() -> dict[str, Any]:
    """What the 4.0 runtime passes the filter: every object below holds one reference it will never drop."""
    kwargs: dict[str, Any] = {
        "method": 1, "ip": "127.0.0." + str(len("x" * 7)),
        "headers": {"authorization": "Bearer " + "t" * 40, "accept": "multipart/" + "related"},
        "get": {"PatientID": "MRN" + "-123"},
    }
    for name in ("ip",):
        _incref(kwargs[name])
    for name in ("headers", "get"):
        for value in kwargs[name].values():
            _incref(value)
        _incref(kwargs[name])
    return kwargs


def counts(kwargs: dict[str, Any]) -> list[int]:
    objects = [kwargs["ip"], kwargs["headers"], kwargs["get"], *kwargs["headers"].values(), *kwargs["get"].values()]
    return [sys.getrefcount(item) for item in objects]


def test_the_runtime_version_is_read_from_orthanc(leaks: Any) -> None:
    with mock.patch.object(leaks, "orthanc", fake_orthanc("4.0")):
        assert leaks.runtime_version() == "4.0"
    with mock.patch.object(leaks, "orthanc", fake_orthanc("4.2")):
        assert leaks.runtime_version() == "4.2"
    assert leaks.runtime_version() is None  # unreadable: no correction


def test_on_4_0_each_leaked_reference_is_given_back_after_the_filter(leaks: Any) -> None:
    kwargs = leaked_filter_arguments()
    before = counts(kwargs)
    seen: list[str] = []

    def inner(uri: str, **kw: Any) -> bool:
        seen.append(uri)
        return True

    assert leaks.LeakCorrection("4.0").http_filter(inner)("/dicom-web/studies", **kwargs) is True
    assert seen == ["/dicom-web/studies"]
    assert counts(kwargs) == [count - 1 for count in before]


def test_on_4_0_a_failing_filter_still_gives_the_references_back(leaks: Any) -> None:
    kwargs = leaked_filter_arguments()
    before = counts(kwargs)

    def failing(uri: str, **kw: Any) -> bool:
        raise ValueError("bug")

    with pytest.raises(ValueError):
        leaks.LeakCorrection("4.0").http_filter(failing)("/x", **kwargs)
    assert counts(kwargs) == [count - 1 for count in before]


def test_on_4_0_a_rest_callbacks_method_groups_body_query_and_headers_are_given_back(leaks: Any) -> None:
    kwargs: dict[str, Any] = {"method": "PO" + "ST", "groups": ("abc" + "d",), "body": b"x" * 100,
                              "headers": {"content-type": "application/" + "json"}}
    for name in ("method", "groups", "body"):
        _incref(kwargs[name])
    for value in kwargs["headers"].values():
        _incref(value)
    _incref(kwargs["headers"])
    objects = [kwargs["method"], kwargs["groups"], kwargs["body"], kwargs["headers"], *kwargs["headers"].values()]
    before = [sys.getrefcount(item) for item in objects]
    answered: list[str] = []
    leaks.LeakCorrection("4.0").rest_callback(lambda output, uri, **kw: answered.append(uri))(None, "/api", **kwargs)
    assert answered == ["/api"]
    assert [sys.getrefcount(item) for item in objects] == [count - 1 for count in before]


@pytest.mark.parametrize("version", ["4.1", "4.2", "6.0", None])
def test_on_any_other_runtime_no_reference_is_touched(leaks: Any, version: str | None) -> None:
    correction = leaks.LeakCorrection(read_version=lambda: version)
    kwargs = leaked_filter_arguments()
    before = counts(kwargs)
    assert correction.http_filter(lambda uri, **kw: True)("/x", **kwargs) is True
    assert not correction.active and correction.version == version
    assert counts(kwargs) == before


def test_the_version_is_read_once_at_the_first_call(leaks: Any) -> None:
    reads: list[int] = []

    def read() -> str:
        reads.append(1)
        return "4.0"

    correction = leaks.LeakCorrection(read_version=read)
    assert reads == []  # not while Orthanc initialises its plugins
    for _ in range(3):
        correction.http_filter(lambda uri, **kw: True)("/x", **leaked_filter_arguments())
    assert reads == [1] and correction.active


def test_a_callback_that_changes_the_dicts_gets_only_the_leaked_references_given_back(leaks: Any) -> None:
    kwargs = leaked_filter_arguments()
    accept, patient = kwargs["headers"]["accept"], kwargs["get"]["PatientID"]
    kept = [kwargs["ip"], kwargs["headers"], kwargs["get"], kwargs["headers"]["authorization"]]
    before = [sys.getrefcount(item) for item in (*kept, accept, patient)]
    added, replacement = "added-" + "value", "new-" + "value"
    added_count, replacement_count = sys.getrefcount(added), sys.getrefcount(replacement)

    def meddling(uri: str, **kw: Any) -> bool:
        kw["headers"]["x-added"] = added  # a value the runtime never leaked
        kw["headers"]["accept"] = replacement  # one leaked value replaced
        del kw["get"]["PatientID"]  # one leaked value dropped
        return True

    leaks.LeakCorrection("4.0").http_filter(meddling)("/x", **kwargs)
    # Each leaked object lost exactly its leaked reference; the two taken out of their dict lost that one too.
    assert [sys.getrefcount(item) for item in (*kept, accept, patient)] == [
        *(count - 1 for count in before[:4]), before[4] - 2, before[5] - 2]
    # Now held by the headers dict (and by this frame): never released by the correction.
    assert (sys.getrefcount(added), sys.getrefcount(replacement)) == (added_count + 1, replacement_count + 1)


def test_on_4_0_a_c_moves_arguments_are_given_back(leaks: Any) -> None:
    kwargs: dict[str, Any] = {name: name.lower() + "-" + "x" for name in leaks.MOVE_VALUES}
    kwargs["OriginatorID"] = 10**6 + len(kwargs)  # not a cached small int
    for value in kwargs.values():
        _incref(value)
    before = {name: sys.getrefcount(value) for name, value in kwargs.items()}
    moved: list[int] = []
    leaks.LeakCorrection("4.0").move_callback(lambda **kw: moved.append(len(kw)))(**kwargs)
    assert moved == [len(leaks.MOVE_VALUES)]
    assert {name: sys.getrefcount(value) for name, value in kwargs.items()} == {
        name: count - 1 for name, count in before.items()}
