"""The scoped QIDO-RS root for viewers (``/ehr-imaging/dicom-web/``): QIDO answers, narrowed.

Orthanc's HTTP filter can only allow or refuse a request, so a viewer's study query (OHIF also asks
for prior studies by PatientID) cannot be narrowed there. OHIF's ``qidoRoot`` points here instead:
every study query gets the token's studies as a StudyInstanceUID restriction, series and instance
queries must name an allowed study, and the DICOMweb plugin answers in process with a query string
rebuilt here from allowed keys only (core.access.QIDO_PARAMETERS). Anything outside the scope is
simply not in the answer.
WADO-RS goes straight to the DICOMweb plugin behind the filter.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from ..app.dicomweb_gate import ViewerGate
from ..core import access, errors, query_values
from ..core.auth import Authenticator, AuthError, Principal, bearer_token
from ..core.dicom_values import STUDY_UID_KEYWORD, STUDY_UID_QUERY_KEYS, STUDY_UID_TAG
from ..core.study_identity import orthanc_study_id
from ..services import Pacs
from .router import Response, error_response

DICOM_JSON = "application/dicom+json"
_UNSAFE_VALUE = re.compile(r"[&=#%?\x00-\x1f]")


class ScopedQido:
    def __init__(self, gate: ViewerGate, authenticator: Authenticator, pacs: Pacs,
                 log_warning: Callable[[str], None]) -> None:
        self._gate = gate
        self._authenticator = authenticator
        self._pacs = pacs
        self._log_warning = log_warning

    def answer(self, method: str, path: str, query: Mapping[str, str], headers: Mapping[str, str]) -> Response:
        if method != "GET":
            return error_response(405, "QIDO-RS is GET only", {"Allow": "GET"})
        try:
            principal = self._caller(headers)
        except AuthError as exc:
            return error_response(401, str(exc))
        if principal is None:
            return error_response(401, "a viewer token is required")
        relative = path[len(access.SCOPED_QIDO_ROOT):] if path.startswith(access.SCOPED_QIDO_ROOT) else ""
        parts = relative.split("/")
        keys = {key.lower() for key in query}
        unexpected = sorted(keys - access.QIDO_PARAMETERS)
        if unexpected:
            return error_response(400, f"query parameter not supported here: {unexpected[0]}")
        bad_value = access.query_value_refusal(query_values.QIDO, query)
        if bad_value is not None:
            return error_response(400, bad_value)
        if parts == ["studies"]:
            return self._studies(principal, query)
        if len(parts) >= 3 and parts[0] == "studies" and (parts[2:] in (["series"], ["instances"])
                                                           or (len(parts) == 5 and parts[2] == "series"
                                                               and parts[4] == "instances")):
            return self._within_study(principal, parts, query)
        return error_response(404, "the scoped QIDO root answers studies, studies/{uid}/series,"
                                   " studies/{uid}/instances and studies/{uid}/series/{uid}/instances")

    def _caller(self, headers: Mapping[str, str]) -> Principal | None:
        token = bearer_token(headers)
        if token is not None:
            try:
                return self._gate.principal(token)
            except AuthError:
                pass  # perhaps a user token: administrators may use this root too
        principal = self._authenticator.authenticate(headers, method="GET")
        if principal is not None and not principal.is_admin:
            raise AuthError("a viewer token (or an administrator) is required")
        return principal

    def _studies(self, principal: Principal, query: Mapping[str, str]) -> Response:
        requested = next((v for k, v in query.items() if k.lower() in STUDY_UID_QUERY_KEYS), None)
        rest = {k: v for k, v in query.items() if k.lower() not in STUDY_UID_QUERY_KEYS}
        if principal.scope is None:  # an administrator: any study Orthanc holds
            return self._forward("studies", query, principal, None)
        studies = access.narrow_study_uids(requested, principal.scope)
        if not studies:
            return Response(body=b"[]", content_type=DICOM_JSON)
        return self._forward("studies", {**rest, STUDY_UID_KEYWORD: ",".join(studies)}, principal, None,
                             keep=lambda item: self._token_study(principal, item))

    def _within_study(self, principal: Principal, parts: list[str], query: Mapping[str, str]) -> Response:
        study, series = parts[1], (parts[3] if len(parts) == 5 else None)
        if principal.scope is not None:
            orthanc_id = (principal.scope_studies or {}).get(study)
            if study not in principal.scope or orthanc_id is None or not self._gate.belongs(principal, study, series):
                self._gate.access_log.record(principal.token_id or "", principal.subject, study, allowed=False)
                return error_response(403, "study outside the token's scope")
            if self._gate.hierarchy.shared_now(orthanc_id):
                # Another patient's study under this StudyInstanceUID (until it is quarantined and moved): its
                # series and instances may reuse these UIDs, so nothing is answered rather than a mix.
                self._gate.access_log.record(principal.token_id or "", principal.subject, study, allowed=False)
                return error_response(403, "StudyInstanceUID shared with another patient's study; try again shortly")
        rest = {k: v for k, v in query.items() if k.lower() not in STUDY_UID_QUERY_KEYS}  # the path names the study
        return self._forward("/".join(parts), rest, principal, [study])

    def _token_study(self, principal: Principal, item: dict[str, Any]) -> bool:
        """Is this study of a QIDO answer the token's own Orthanc study (not another patient's study that
        shares its StudyInstanceUID)? Told by Orthanc's own study ID hash, else by the cached facts."""
        uid = _value(item, STUDY_UID_TAG)
        orthanc_id = (principal.scope_studies or {}).get(uid or "")
        if uid is None or orthanc_id is None:
            return False
        patient_id = _value(item, "00100020") or ""
        if orthanc_study_id(patient_id, uid) == orthanc_id:
            return True
        members = self._gate.hierarchy.members(orthanc_id)
        return members.stored and members.patient_id == (patient_id or None) and not members.uid_shared

    def _forward(self, relative: str, query: Mapping[str, str], principal: Principal,
                 studies: list[str] | None, keep: Callable[[dict[str, Any]], bool] | None = None) -> Response:
        """Ask the DICOMweb plugin in process, with a query string built here from allowed keys only."""
        uri = access.DICOMWEB_ROOT + relative
        if query:
            # Orthanc hands an in-process query string to the DICOMweb plugin without percent-decoding it, so
            # values go raw (wildcards, backslash lists); a value that could split or end the query is refused.
            unsafe = next((k for k, v in query.items() if _UNSAFE_VALUE.search(v)), None)
            if unsafe is not None:
                return error_response(400, f"{unsafe}: characters & = # % ? are not supported in query values")
            uri += "?" + "&".join(f"{k}={v}" for k, v in query.items())
        try:
            body = self._pacs.get_bytes(uri, after_plugins=True)
        except (errors.NotFound, errors.ArchiveError) as exc:  # the study or series is not there
            self._log_warning(f"ehr-imaging: scoped QIDO {uri}: {type(exc).__name__}: {exc}")
            return error_response(404, "not found")
        if principal.scope is not None and keep is not None:
            body = _filtered(body, keep)
        if principal.scope is not None:
            self._gate.record_query(principal, studies if studies is not None else _study_uids(body), len(body))
        return Response(body=body or b"[]", content_type=DICOM_JSON)


def _filtered(body: bytes, keep: Callable[[dict[str, Any]], bool]) -> bytes:
    """The answer's items that ``keep`` accepts (an answer that does not parse answers nothing)."""
    try:
        items = json.loads(body or b"[]")
    except ValueError:
        return b"[]"
    if not isinstance(items, list):
        return b"[]"
    return json.dumps([item for item in items if isinstance(item, dict) and keep(item)]).encode()


def _value(item: dict[str, Any], tag: str) -> str | None:
    """The first value of a DICOM JSON attribute (a UID or an ID), if it has one."""
    values = item.get(tag, {}).get("Value") if isinstance(item.get(tag), dict) else None
    return str(values[0]) if isinstance(values, list) and values and isinstance(values[0], (str, int)) else None


def _study_uids(body: bytes) -> list[str]:
    """The studies a QIDO answer lists (for the access audit)."""
    try:
        items = json.loads(body or b"[]")
        return [str(item[STUDY_UID_TAG]["Value"][0]) for item in items if item.get(STUDY_UID_TAG, {}).get("Value")]
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        return []
