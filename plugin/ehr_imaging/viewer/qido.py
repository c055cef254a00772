"""The scoped QIDO-RS root for viewers (``/ehr-imaging/dicom-web/``): QIDO answers, narrowed.

Orthanc's HTTP filter can only allow or refuse a request, so a viewer's study query (OHIF also asks
for prior studies by PatientID) cannot be narrowed there. OHIF's ``qidoRoot`` points here instead:
every study query gets the token's studies as a StudyInstanceUID restriction and is answered from
Orthanc's find in process (core/qido.py); series and instance queries inside an allowed study are
answered by the DICOMweb plugin in process. Anything outside the scope is simply not in the answer.
WADO-RS goes straight to the DICOMweb plugin behind the filter.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping

from ..api.router import Response, error_response
from ..core import access, qido
from ..core.auth import Authenticator, AuthError, Principal, bearer_token
from ..services import Pacs
from .gate import ViewerGate

DICOM_JSON = "application/dicom+json"


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
        principal = self._authenticator.authenticate(headers)
        if principal is not None and not principal.is_admin:
            raise AuthError("a viewer token (or an administrator) is required")
        return principal

    def _studies(self, principal: Principal, query: Mapping[str, str]) -> Response:
        requested = next((v for k, v in query.items() if k.lower() in ("studyinstanceuid", "0020000d")), None)
        if principal.scope is None:  # an administrator: any study Orthanc holds
            studies = access.split_uid_list(requested) if requested else []
        else:
            studies = access.narrow_study_uids(requested, principal.scope)
            if not studies:
                return Response(body=b"[]", content_type=DICOM_JSON)
        try:
            find = qido.find_request(query, studies)
        except qido.QueryError as exc:
            return error_response(400, str(exc))
        if not studies:
            del find["Query"]["StudyInstanceUID"]
        results = []
        for study in self._pacs.post_json("/tools/find", find):
            series = self._pacs.get_json(f"/studies/{study['ID']}/series")
            modalities = [s.get("MainDicomTags", {}).get("Modality", "") for s in series]
            results.append(qido.study_json(study, [m for m in modalities if m], len(series),
                                           sum(len(s.get("Instances", [])) for s in series)))
        body = json.dumps(results).encode()
        if principal.scope is not None:
            found = [r["0020000D"]["Value"][0] for r in results if "Value" in r["0020000D"]]
            self._gate.record_query(principal, found, len(body))
        return Response(body=body, content_type=DICOM_JSON)

    def _within_study(self, principal: Principal, parts: list[str], query: Mapping[str, str]) -> Response:
        study, series = parts[1], (parts[3] if len(parts) == 5 else None)
        scope = principal.scope
        outside = scope is not None and (
            study not in scope or (series is not None and not self._gate.hierarchy.belongs(study, series, None)))
        if outside:
            self._gate.access_log.record(principal.token_id or "", principal.subject, study, allowed=False)
            return error_response(403, "study outside the token's scope")
        return self._forward("/".join(parts), principal, [study])

    def _forward(self, relative: str, principal: Principal, studies: list[str]) -> Response:
        # Path only: Orthanc 1.10 drops the query string of an in-process call (limit, includefield are lost:
        # a study's series and instances are answered whole).
        uri = access.DICOMWEB_ROOT + relative
        try:
            body = self._pacs.get_bytes(uri, after_plugins=True)
        except Exception as exc:  # noqa: BLE001 - Orthanc answered an error: the study or series is not there
            self._log_warning(f"ehr-imaging: scoped QIDO {uri}: {type(exc).__name__}: {exc}")
            return error_response(404, "not found")
        if principal.scope is not None:
            self._gate.record_query(principal, studies, len(body))
        return Response(body=body or b"[]", content_type=DICOM_JSON)
