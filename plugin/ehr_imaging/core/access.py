"""Which credentials a request to Orthanc's HTTP server needs, and what a viewer token may read.

Pure logic: the HTTP filter (hooks/http_filter.py) adapts Orthanc's arguments and supplies the facts
(the token's studies, which series and instances belong to a study). Deny by default: a path that is
not recognised, or that is not in canonical form (dot segments, double slashes, backslashes), needs an
administrator; a viewer request is allowed only when every UID it names is inside the token's studies.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from . import query_values
from .dicom_values import STUDY_UID_QUERY_KEYS, is_uid, split_uid_list
from .query_values import QIDO, WADO_RS, WADO_URI

API_PREFIX = "/api/v1/dicom/"
FHIR_PREFIX = "/fhir/"  # the plugin's FHIR R4 routes (api/fhir.py): our routes as well, on both ports
DICOMWEB_ROOT = "/dicom-web/"
WADO_URI_ROOT = "/wado"
# The plugin's own QIDO-RS root for viewers: answers are narrowed to the token's studies (api/scoped_qido.py).
SCOPED_QIDO_ROOT = "/ehr-imaging/dicom-web/"
VIEWER_APP_PREFIX = "/ohif/"  # the OHIF viewer's static site (api/ohif_site.py)
IID_PATH = "/IHEInvokeImageDisplay"  # IHE Invoke Image Display (core/iid.py): one of our routes, by the profile's name


class Area(enum.Enum):
    PLUGIN_API = "plugin-api"  # our routes: each one authenticates and answers 401/403 itself
    SCOPED_QIDO = "scoped-qido"  # our viewer QIDO root: the callback authenticates the viewer token
    DICOMWEB = "dicomweb"  # Orthanc's DICOMweb and WADO-URI: administrators, or a viewer token in scope
    VIEWER_APP = "viewer-app"  # the viewer's static files: public for reads; its data needs a token
    ADMIN_ONLY = "admin-only"  # Orthanc's REST API, Explorer, and anything not recognised


def is_canonical(path: str) -> bool:
    if not path.startswith("/") or "\\" in path or "//" in path or "\x00" in path:
        return False
    return all(segment not in {".", ".."} for segment in path.split("/"))


def is_api_path(path: str) -> bool:
    """One of our routes' paths (the API port serves these, and nothing else)."""
    return _under(path, API_PREFIX) or _under(path, FHIR_PREFIX) or path == IID_PATH


def _under(path: str, prefix: str) -> bool:
    return path.startswith(prefix) or path == prefix.rstrip("/")


def classify(uri: str) -> Area:
    path = uri.split("?", 1)[0]
    if not is_canonical(path):
        return Area.ADMIN_ONLY
    if is_api_path(path):
        return Area.PLUGIN_API
    if _under(path, VIEWER_APP_PREFIX):
        return Area.VIEWER_APP
    if _under(path, SCOPED_QIDO_ROOT):
        return Area.SCOPED_QIDO
    if _under(path, DICOMWEB_ROOT) or path == WADO_URI_ROOT:
        return Area.DICOMWEB
    return Area.ADMIN_ONLY


# --- request bodies (Orthanc reads and holds the whole declared body after the filter allowed it) -------

# A body up to this size reaches our routes without credentials checked in the filter, so that an expired token
# still gets the route's 401 JSON (the EHR refreshes its token on 401): as little memory as a request's headers.
# Anything larger needs valid credentials and a role of the route before Orthanc allocates it.
UNAUTHENTICATED_BODY_BYTES = 64 * 1024


@dataclass(frozen=True)
class DeclaredBody:
    """What a request's headers say of its body: ``Content-Length`` (0 when absent) and chunked encoding."""

    length: int
    chunked: bool
    valid: bool = True

    @property
    def present(self) -> bool:
        return self.chunked or self.length > 0


def declared_body(headers: Mapping[str, str]) -> DeclaredBody:
    """From the headers alone (lower-case names); an unparseable or repeated Content-Length is invalid."""
    encoding = headers.get("transfer-encoding", "").strip().lower()
    chunked = encoding not in ("", "identity")
    raw = headers.get("content-length")
    if raw is None:
        return DeclaredBody(0, chunked)
    raw = raw.strip()
    if not raw.isdigit() or len(raw) > 18 or not raw.isascii():
        return DeclaredBody(0, chunked, valid=False)
    return DeclaredBody(int(raw), chunked)


# --- viewer requests -----------------------------------------------------------------------------

# UIDs in paths and WADO-URI are dicom_values.is_uid: syntax and length, leading zeros allowed (stored
# studies may have them; the token's scope is what decides).
_FRAMES = re.compile(r"[1-9][0-9]{0,5}(,[1-9][0-9]{0,5})*")
_BULK_TAG = re.compile(r"[0-9A-Fa-f]{8}")

# Query parameters a viewer may send with a WADO-RS retrieval or a scoped QIDO query. Anything else
# (above all a UID attribute, which could widen a query beyond its path) makes the request refused.
WADO_RS_PARAMETERS = frozenset({"accept", "quality", "viewport", "window", "annotation", "charset", "iccprofile"})
QIDO_PARAMETERS = frozenset({
    "limit", "offset", "includefield", "fuzzymatching",
    # Matching keys OHIF sends (keywords and their tags): they narrow, the study scope is added anyway.
    "patientid", "00100020", "patientname", "00100010", "studydate", "00080020", "studytime", "00080030",
    "accessionnumber", "00080050", "modalitiesinstudy", "00080061", "modality", "00080060",
    "studydescription", "00081030", "seriesnumber", "00200011", "instancenumber", "00200013",
    *STUDY_UID_QUERY_KEYS,
})
# WADO-URI names are case-sensitive (PS3.18 and Orthanc's plugin read the exact names): only these spellings.
WADO_URI_PARAMETERS = frozenset({
    "requestType", "studyUID", "seriesUID", "objectUID", "contentType", "charset", "anonymize", "annotation",
    "rows", "columns", "region", "windowCenter", "windowWidth", "frameNumber", "imageQuality", "transferSyntax",
})


@dataclass(frozen=True)
class ViewerTarget:
    """The DICOM resources one viewer request names (UIDs; None for a level it does not name)."""

    study: str
    series: str | None = None
    instance: str | None = None


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str
    target: ViewerTarget | None = None


# Facts the filter looks up (cached): does this series / instance belong to that study?
Membership = Callable[[str, str | None, str | None], bool]


def query_value_refusal(rules: Mapping[str, Callable[[str], bool]], query: Mapping[str, str]) -> str | None:
    """Why a viewer query's values are refused (sizes, qualities, pages out of bounds), or None."""
    return query_values.refusal(rules, query)


def _deny(reason: str) -> Decision:
    return Decision(False, reason)


def decide_viewer(method: str, path: str, query: Mapping[str, str], studies: frozenset[str],
                  belongs: Membership) -> Decision:
    """May a viewer token scoped to ``studies`` make this request on Orthanc's DICOMweb or WADO-URI?

    Only reads: WADO-RS retrievals (study, series, instance, metadata, frames, rendered, thumbnail,
    bulk data) and QIDO-RS inside one allowed study, plus WADO-URI of an allowed instance. Queries that
    are not bounded by the path (``/studies``, ``/series``, ``/instances``) go to the scoped QIDO root.
    """
    if method not in ("GET", "HEAD"):
        return _deny(f"{method} is not a read")
    if not is_canonical(path):
        return _deny("path not in canonical form")
    keys = {key.lower() for key in query}
    if len(keys) != len(query):
        # ``objectUID`` and ``ObjectUID``: the filter and the server behind it could each read another one.
        return _deny("query parameters that differ only in case")
    if path == WADO_URI_ROOT:
        return _decide_wado_uri(query, studies, belongs)
    if not path.startswith(DICOMWEB_ROOT):
        return _deny("not a DICOMweb path")
    parts = path[len(DICOMWEB_ROOT):].split("/")
    found = _wado_rs_target(parts)
    if found is None:
        return _deny("not a viewer read (queries go to the scoped QIDO root)")
    target, is_query = found
    unexpected = keys - (QIDO_PARAMETERS - STUDY_UID_QUERY_KEYS if is_query else WADO_RS_PARAMETERS)
    if unexpected:
        return _deny(f"query parameter not allowed: {sorted(unexpected)[0]}")
    bad_value = query_value_refusal(QIDO if is_query else WADO_RS, query)
    if bad_value is not None:
        return _deny(bad_value)
    return _in_scope(target, studies, belongs)


def _wado_rs_target(parts: list[str]) -> tuple[ViewerTarget, bool] | None:
    """``studies/S[/series/SE[/instances/I]]`` plus what follows; (target, is_query) or None."""
    if len(parts) < 2 or parts[0] != "studies" or not is_uid(parts[1]):
        return None
    study, rest = parts[1], parts[2:]
    if rest in ([], ["metadata"], ["rendered"], ["thumbnail"]):
        return ViewerTarget(study), False
    if rest in (["series"], ["instances"]):
        return ViewerTarget(study), True
    if rest[0] != "series" or len(rest) < 2 or not is_uid(rest[1]):
        return None
    series, rest = rest[1], rest[2:]
    if rest in ([], ["metadata"], ["rendered"], ["thumbnail"]):
        return ViewerTarget(study, series), False
    if rest == ["instances"]:
        return ViewerTarget(study, series), True
    if rest[0] != "instances" or len(rest) < 2 or not is_uid(rest[1]):
        return None
    instance, rest = rest[1], rest[2:]
    target = ViewerTarget(study, series, instance)
    if rest in ([], ["metadata"], ["rendered"], ["thumbnail"]):
        return target, False
    if rest[0] == "frames" and len(rest) in (2, 3) and _FRAMES.fullmatch(rest[1]) and rest[2:] in ([], ["rendered"]):
        return target, False
    if rest[0] == "bulk" and len(rest) >= 2 and all(_BULK_TAG.fullmatch(p) or p.isdigit() for p in rest[1:]):
        return target, False
    return None


def _decide_wado_uri(query: Mapping[str, str], studies: frozenset[str], belongs: Membership) -> Decision:
    unexpected = set(query) - WADO_URI_PARAMETERS
    if unexpected:
        return _deny(f"query parameter not allowed: {sorted(unexpected)[0]}")
    bad_value = query_value_refusal(WADO_URI, query)
    if bad_value is not None:
        return _deny(bad_value)
    if query.get("requestType") != "WADO":
        return _deny("WADO-URI needs requestType=WADO")
    study, series, instance = query.get("studyUID", ""), query.get("seriesUID", ""), query.get("objectUID", "")
    if not all(is_uid(uid) for uid in (study, series, instance)):
        return _deny("WADO-URI needs studyUID, seriesUID and objectUID")
    return _in_scope(ViewerTarget(study, series, instance), studies, belongs)


def _in_scope(target: ViewerTarget, studies: frozenset[str], belongs: Membership) -> Decision:
    if target.study not in studies:
        return _deny("study outside the token's scope")
    if (target.series or target.instance) and not belongs(target.study, target.series, target.instance):
        return _deny("series or instance not in the study")
    return Decision(True, "in scope", target)


def narrow_study_uids(requested: str | None, studies: frozenset[str]) -> list[str]:
    """The studies a scoped QIDO query may see: the requested ones (if any) within the token's scope."""
    if requested is None:
        return sorted(studies)
    return [uid for uid in dict.fromkeys(split_uid_list(requested)) if uid in studies]


_STORED_RESOURCE = re.compile(r"/(patients|studies|series|instances)/[^/]+/?")


def deletes_stored_data(method: str, uri: str) -> bool:
    """A request of Orthanc's own REST API that deletes stored DICOM (a patient, study, series or instance)."""
    path = uri.split("?", 1)[0]
    return ((method == "DELETE" and _STORED_RESOURCE.fullmatch(path) is not None)
            or (method == "POST" and path.rstrip("/") == "/tools/bulk-delete"))
