"""A correction for a known leak of Debian bookworm's Python runtime for Orthanc (orthanc-python 4.0).

That version keeps one reference too many to each object it builds for the keyword arguments of the HTTP
filter, of the REST callbacks and of the C-MOVE callback: it hands ``PyDict_SetItemString`` a reference it has
released, and that call does not steal it (fixed upstream in 4.1, 2023: "Fix memory leaks ... in
IncomingHttpRequestFilter and in the CMove callback"). So every request through Orthanc's port leaked its client
address, its headers, its query and (REST callbacks) its method, path groups and body: under load Orthanc's
memory grew without bound, about 3 MB per 1,000 viewer requests here (README "Load and soak").

On exactly the leaking versions, the wrappers below take those objects before the callback runs and give each
reference back once it has returned (so a callback that changes a dict cannot make us release what was never
leaked); on any other version, or one that cannot be read, they change nothing. What the runtime overwrote before
we saw it stays leaked: the earlier values of a query key given several times (``?a=1&a=2``), README "Load and
soak" says how to cap that in front of Orthanc.
"""

from __future__ import annotations

import ctypes
import json
from collections.abc import Callable, Mapping
from typing import Any

import orthanc

LEAKING_VERSIONS = frozenset({"4.0"})

_decref = ctypes.pythonapi.Py_DecRef  # called with the GIL held (ctypes.pythonapi is a PyDLL)
_decref.argtypes = (ctypes.py_object,)
_decref.restype = None

# The keyword arguments each callback receives that the leaking runtime holds one reference too many to: plain
# values, and dicts whose values are leaked too. (The filter's ``method`` is a cached small int: left alone.)
FILTER_VALUES, FILTER_MAPPINGS = ("ip",), ("headers", "get")
REST_VALUES, REST_MAPPINGS = ("method", "groups", "body"), ("headers", "get")
MOVE_VALUES = ("Level", "PatientID", "AccessionNumber", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID",
               "OriginatorAET", "SourceAET", "TargetAET", "OriginatorID")


def runtime_version() -> str | None:
    """The Python plugin's version as Orthanc reports it (``/plugins/python``); None when it cannot be read."""
    try:
        answer = orthanc.RestApiGet("/plugins/python")
        version = json.loads(answer).get("Version")
    except Exception:  # noqa: BLE001 - unknown: no correction (the safe side: a leak, never a double free)
        return None
    return str(version) if version is not None else None


def leaked_objects(kwargs: Mapping[str, Any], values: tuple[str, ...], mappings: tuple[str, ...]) -> list[Any]:
    """The objects the runtime leaked one reference to, taken before the callback can change any of them."""
    leaked = [kwargs[name] for name in values if name in kwargs]
    for name in mappings:
        mapping = kwargs.get(name)
        if type(mapping) is dict:
            leaked.extend(mapping.values())
            leaked.append(mapping)
    return leaked


def give_back(leaked: list[Any]) -> None:
    """Return the runtime's extra reference to each (once; the list's own reference keeps each alive meanwhile)."""
    for item in leaked:
        _decref(item)


class LeakCorrection:
    """Wraps the filter and the callbacks. Whether the runtime leaks is read at the first call (Orthanc's REST API
    does not answer while plugins initialise); ``version`` may be given instead (tests)."""

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

    def _wrapped(self, inner: Callable[..., Any], values: tuple[str, ...], mappings: tuple[str, ...]
                 ) -> Callable[..., Any]:
        def corrected(*args: Any, **kwargs: Any) -> Any:
            leaked = leaked_objects(kwargs, values, mappings) if self.active else []
            try:
                return inner(*args, **kwargs)
            finally:
                give_back(leaked)

        return corrected

    def http_filter(self, inner: Callable[..., bool]) -> Callable[..., bool]:
        return self._wrapped(inner, FILTER_VALUES, FILTER_MAPPINGS)

    def rest_callback(self, inner: Callable[..., None]) -> Callable[..., None]:
        return self._wrapped(inner, REST_VALUES, REST_MAPPINGS)

    def move_callback(self, inner: Callable[..., Any]) -> Callable[..., Any]:
        return self._wrapped(inner, MOVE_VALUES, ())
