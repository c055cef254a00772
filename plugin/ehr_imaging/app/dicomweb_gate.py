"""The viewer side of the HTTP filter: verify a viewer token, decide, and record the access.

Runs for every DICOMweb request a viewer makes, frames included: a cached signature check, an
in-memory revocation lookup, the pure decision (core.access) with cached hierarchy facts, and the audit
count (one record appended to the local spool, then in memory; a read it cannot record is refused). No
database or network call on this path.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..core import access
from ..core.auth import AuthError, Principal, TokenVerifier
from .access_log import AccessLog
from .study_hierarchy import StudyHierarchy, StudyMembers
from .token_revocations import RevocationList


class ViewerGate:
    def __init__(self, verifier: TokenVerifier, revocations: RevocationList, hierarchy: StudyHierarchy,
                 access_log: AccessLog) -> None:
        self.verifier = verifier
        self.revocations = revocations
        self.hierarchy = hierarchy
        self.access_log = access_log

    def principal(self, token: str) -> Principal:
        """The viewer token's principal; AuthError when it is not a valid, unrevoked viewer token."""
        principal = self.verifier.verify(token)
        if self.revocations.is_revoked(principal.token_id):
            raise AuthError("viewer token revoked" if self.revocations.ready else "revocations not loaded yet")
        return principal

    def belongs(self, principal: Principal, study_uid: str, series_uid: str | None = None,
                instance_uid: str | None = None) -> bool:
        """Is the token's own Orthanc study for ``study_uid`` stored, and the series / instance in it?"""
        orthanc_id = (principal.scope_studies or {}).get(study_uid)
        return orthanc_id is not None and self.hierarchy.belongs(orthanc_id, series_uid, instance_uid)

    def members(self, principal: Principal, study_uid: str) -> StudyMembers | None:
        orthanc_id = (principal.scope_studies or {}).get(study_uid)
        return self.hierarchy.members(orthanc_id) if orthanc_id is not None else None

    def decide(self, principal: Principal, method: str, path: str, query: Mapping[str, str]) -> access.Decision:
        assert principal.scope is not None and principal.token_id is not None

        def belongs(study: str, series: str | None, instance: str | None) -> bool:
            return self.belongs(principal, study, series, instance)

        decision = access.decide_viewer(method, path, query, principal.scope, belongs)
        target = decision.target
        if target is not None and target.series is None and target.instance is None:
            decision = self._study_level(principal, target)
            target = decision.target
        if target is not None and path.rsplit("/", 1)[-1] in ("series", "instances"):
            # A query: Orthanc's DICOMweb answers it by UIDs alone, so a study of another patient under the
            # same UIDs would be in the answer. Checked live (another node's arrival is not in the cache).
            orthanc_id = (principal.scope_studies or {}).get(target.study)
            if orthanc_id is None or self.hierarchy.shared_now(orthanc_id):
                decision = access.Decision(False, "StudyInstanceUID shared with another patient's study")
                target = None
        if target is not None:
            if not self.access_log.record(principal.token_id, principal.subject, target.study, allowed=True,
                                          size=self._size(principal, path, target)):
                return access.Decision(False, "the read could not be put on the access audit's record")
        else:
            study = _named_study(path, query)
            if study is not None:
                self.access_log.record(principal.token_id, principal.subject, study, allowed=False)
        return decision

    def _study_level(self, principal: Principal, target: access.ViewerTarget) -> access.Decision:
        """A read or query naming the study alone: Orthanc's DICOMweb finds it by StudyInstanceUID, so the
        token's own Orthanc study must be stored, and be the only one with that UID."""
        members = self.members(principal, target.study)
        if members is None or not self.belongs(principal, target.study):
            return access.Decision(False, "study not stored")
        if members.uid_shared:
            return access.Decision(False, "StudyInstanceUID shared with another patient's study: read by series")
        return access.Decision(True, "in scope", target)

    def record_query(self, principal: Principal, study_uids: list[str], size: int) -> None:
        """A scoped QIDO answer: one request for each study it covered, its bytes on the first."""
        assert principal.token_id is not None
        for index, study in enumerate(study_uids):
            self.access_log.record(principal.token_id, principal.subject, study, allowed=True,
                                   size=size if index == 0 else 0)

    def _size(self, principal: Principal, path: str, target: access.ViewerTarget) -> int:
        orthanc_id = (principal.scope_studies or {}).get(target.study)
        if orthanc_id is None or target.instance is None or path.endswith(("/metadata", "/thumbnail", "/rendered")):
            return 0
        if "/frames/" in path:
            frames = path.split("/frames/", 1)[1].split("/", 1)[0].count(",") + 1
            return self.hierarchy.size_of(orthanc_id, target.instance, frames)
        return self.hierarchy.size_of(orthanc_id, target.instance)


def _named_study(path: str, query: Mapping[str, str]) -> str | None:
    """The study a refused request asked for, when it names one (for the audit's denied count)."""
    parts = path.split("/")
    if len(parts) > 3 and parts[2] == "studies" and len(parts[3]) <= 64:
        return parts[3]
    study = {k.lower(): v for k, v in query.items()}.get("studyuid")
    return study if study and len(study) <= 64 else None
