"""A correction for a known leak of Debian bookworm's Python runtime for Orthanc (orthanc-python 4.0).

That version keeps one reference too many to each object it builds for the keyword arguments of the HTTP
filter and of the REST callbacks: it hands ``PyDict_SetItemString`` a reference it has released, and that call
does not steal it (fixed upstream in 4.1, 2023: "Fix memory leaks ... in IncomingHttpRequestFilter"). So every
request through Orthanc's port leaked its client address, its headers, its query and (REST callbacks) its
method, path groups and body: under load Orthanc's memory grew without bound, about 3 MB per 1,000 viewer
requests here (README "Load and soak").

On exactly the leaking versions, the wrappers below give each of those references back once the callback has
returned, so the objects are freed with the call's arguments; on any other version (or one that cannot be read)
they change nothing. A value
that shared a header name with an earlier one (a repeated header) is no longer reachable and stays leaked.
"""

from __future__ import annotations

import ctypes
import json
from collections.abc import Callable, Mapping
from typing import Any

import orthanc

LEAKING_VERSIONS = frozenset({"4.0"})

_decref = ctypes.pythonapi.Py_DecRef
_decref.argtypes = (ctypes.py_object,)
_decref.restype = None

# The keyword arguments each kind of callback receives that the leaking runtime holds one reference too many to:
# plain values, and mappings whose values are leaked too.
FILTER_VALUES, FILTER_MAPPINGS = ("ip",), ("headers", "get")
REST_VALUES, REST_MAPPINGS = ("method", "groups", "body"), ("headers", "get")


def runtime_version() -> str | None:
    """The Python plugin's version as Orthanc reports it (``/plugins/python``); None when it cannot be read."""
    try:
        answer = orthanc.RestApiGet("/plugins/python")
        version = json.loads(answer).get("Version")
    except Exception:  # noqa: BLE001 - unknown: no correction (the safe side: a leak, never a double free)
        return None
    return str(version) if version is not None else None


def give_back(kwargs: Mapping[str, Any], values: tuple[str, ...], mappings: tuple[str, ...]) -> None:
    """Return the runtime's extra reference to each of these arguments (call once, after the callback)."""
    for name in values:
        if name in kwargs:
            _decref(kwargs[name])
    for name in mappings:
        mapping = kwargs.get(name)
        if isinstance(mapping, dict):
            for value in mapping.values():
                _decref(value)
            _decref(mapping)


class LeakCorrection:
    """Wraps the filter and the REST callbacks. Whether the runtime leaks is read at the first call (Orthanc's REST
    API does not answer while plugins initialise); ``version`` may be given instead (tests)."""

    def __init__(self, version: str | None = None, *, read_version: Callable[[], str | None] = runtime_version
                 ) -> None:
        self._read_version = read_version
        self.version = version
        self._active: bool | None = None if version is None else version in LEAKING_VERSIONS

    @property
    def active(self) -> bool:
        if self._active is None:
            self.version = self._read_version()
            self._active = self.version in LEAKING_VERSIONS
        return self._active

    def http_filter(self, inner: Callable[..., bool]) -> Callable[..., bool]:
        def corrected(*args: Any, **kwargs: Any) -> bool:
            leaking = self.active  # decided before the call, kept for it
            try:
                return inner(*args, **kwargs)
            finally:
                if leaking:
                    give_back(kwargs, FILTER_VALUES, FILTER_MAPPINGS)

        return corrected

    def rest_callback(self, inner: Callable[..., None]) -> Callable[..., None]:
        def corrected(output: Any, uri: str, **kwargs: Any) -> None:
            leaking = self.active
            try:
                inner(output, uri, **kwargs)
            finally:
                if leaking:
                    give_back(kwargs, REST_VALUES, REST_MAPPINGS)

        return corrected
