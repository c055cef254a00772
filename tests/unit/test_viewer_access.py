"""Viewer access without Orthanc: decisions, viewer tokens, scoped QIDO, revocations, audit counts, hierarchy."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest

from ehr_imaging.app.access_log import AccessLog
from ehr_imaging.app.study_hierarchy import StudyHierarchy
from ehr_imaging.app.token_revocations import RevocationList
from ehr_imaging.core import access
from ehr_imaging.core.auth import AuthError, TokenVerifier
from ehr_imaging.core.errors import NotFound
from ehr_imaging.core.study_identity import orthanc_study_id
from ehr_imaging.core.viewer_tokens import MAX_STUDIES, VIEWER_AUDIENCE, mint_viewer_token, viewer_principal
from ehr_imaging.store.viewer_tokens import AccessCount
from tests.unit.viewer_scope import IA, IB, SA, SB, SCOPE, A, B, belongs


def decide(path: str, query: dict[str, str] | None = None, method: str = "GET") -> bool:
    return access.decide_viewer(method, path, query or {}, SCOPE, belongs).allowed


@pytest.mark.parametrize("path", [
    f"/dicom-web/studies/{A}", f"/dicom-web/studies/{A}/metadata", f"/dicom-web/studies/{A}/rendered",
    f"/dicom-web/studies/{A}/series", f"/dicom-web/studies/{A}/instances", f"/dicom-web/studies/{A}/series/{SA}",
    f"/dicom-web/studies/{A}/series/{SA}/metadata", f"/dicom-web/studies/{A}/series/{SA}/instances",
    f"/dicom-web/studies/{A}/series/{SA}/instances/{IA}", f"/dicom-web/studies/{A}/series/{SA}/instances/{IA}/frames/1",
    f"/dicom-web/studies/{A}/series/{SA}/instances/{IA}/frames/1,2,3",
    f"/dicom-web/studies/{A}/series/{SA}/instances/{IA}/frames/2/rendered",
    f"/dicom-web/studies/{A}/series/{SA}/instances/{IA}/bulk/7fe00010",
    f"/dicom-web/studies/{A}/series/{SA}/instances/{IA}/thumbnail",
])
def test_reads_inside_the_scope(path: str) -> None:
    assert decide(path)


@pytest.mark.parametrize("path", [
    f"/dicom-web/studies/{B}/metadata", f"/dicom-web/studies/{A}/series/{SB}", f"/dicom-web/studies/{B}/series/{SA}",
    f"/dicom-web/studies/{A}/series/{SA}/instances/{IB}/frames/1", "/dicom-web/studies", "/dicom-web/series",
    "/dicom-web/instances", f"/dicom-web/studies/{A}/series/{SA}/instances/{IA}/frames/0",
    f"/dicom-web/studies/{A}/series/{SA}/instances/{IA}/frames/1/x", f"/dicom-web/studies/{A}/x",
    f"/dicom-web/studies/{A}/../{B}", f"/dicom-web//studies/{A}", f"/dicom-web/studies/{A}/series/{SA}/bulk/7fe00010",
    "/dicom-web/studies/abc/metadata", "/dicom-web/servers", "/wado", "/system", "/dicom-web/studies/1..2",
])
def test_everything_else_is_refused(path: str) -> None:
    assert not decide(path)


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_only_reads(method: str) -> None:
    assert not decide(f"/dicom-web/studies/{A}/metadata", method=method)


@pytest.mark.parametrize(("path", "query", "allowed"), [
    (f"/dicom-web/studies/{A}/series", {"includefield": "all", "limit": "5"}, True),
    (f"/dicom-web/studies/{A}/series", {"PatientID": "X"}, True),
    (f"/dicom-web/studies/{A}/series", {"StudyInstanceUID": B}, False),
    (f"/dicom-web/studies/{A}/series", {"0020000D": B}, False),
    (f"/dicom-web/studies/{A}/series", {"SeriesInstanceUID": SB}, False),
    (f"/dicom-web/studies/{A}/metadata", {"includefield": "all"}, False),  # not a WADO parameter
    (f"/dicom-web/studies/{A}/metadata", {"accept": "application/dicom+json"}, True),
    ("/wado", {"requestType": "WADO", "studyUID": A, "seriesUID": SA, "objectUID": IA}, True),
    ("/wado", {"requestType": "WADO", "studyUID": A, "seriesUID": SA, "objectUID": IB}, False),
    ("/wado", {"requestType": "WADO", "studyUID": B, "seriesUID": SB, "objectUID": IB}, False),
    ("/wado", {"requestType": "WADO", "objectUID": IA}, False),
    ("/wado", {"studyUID": A, "seriesUID": SA, "objectUID": IA}, False),
    ("/wado", {"requestType": "WADO", "studyUID": A, "seriesUID": SA, "objectUID": IA, "token": "x"}, False),
    ("/wado", {"requestType": "WADO", "studyUID": A, "seriesUID": SA, "objectUID": f"{IA}%2C{IB}"}, False),
    # Case variants: Orthanc's WADO-URI reads the exact names only, so a second spelling must not pass.
    ("/wado", {"requestType": "WADO", "objectUID": IB, "StudyUID": A, "SeriesUID": SA, "ObjectUID": IA}, False),
    ("/wado", {"requestType": "WADO", "RequestType": "WADO", "studyUID": A, "seriesUID": SA, "objectUID": IA}, False),
    ("/wado", {"requesttype": "WADO", "studyuid": A, "seriesuid": SA, "objectuid": IA}, False),
    ("/wado", {"requestType": "wado", "studyUID": A, "seriesUID": SA, "objectUID": IA}, False),
    (f"/dicom-web/studies/{A}/series", {"limit": "1", "LIMIT": "2"}, False),
])
def test_query_parameters(path: str, query: dict[str, str], allowed: bool) -> None:
    assert decide(path, query) is allowed


def test_uid_lists_are_narrowed_to_the_scope() -> None:
    assert access.narrow_study_uids(None, frozenset({A, B})) == [A, B]
    assert access.narrow_study_uids(f"{B},{A}", SCOPE) == [A]
    assert access.narrow_study_uids(f"{B}\\{A}\\{A}", SCOPE) == [A]
    assert access.narrow_study_uids(B, SCOPE) == []
    assert access.narrow_study_uids("*", SCOPE) == []


SECRET = "viewer-unit-secret-0123456789abcdef0123"


def verifier(**kwargs: Any) -> TokenVerifier:
    return TokenVerifier(issuer="iss", audience=VIEWER_AUDIENCE, secret=SECRET, leeway_seconds=0,
                         principal_from_claims=viewer_principal,
                         required_claims=("exp", "iss", "aud", "sub", "jti", "nbf"), **kwargs)


def oid(uid: str, patient: str = "P") -> str:
    return orthanc_study_id(patient, uid)


def test_a_viewer_token_carries_its_studies_and_is_not_a_user_token() -> None:
    minted = mint_viewer_token(secret=SECRET, issuer="iss", subject="dr", studies={A: oid(A), B: oid(B)},
                               ttl_seconds=60)
    assert minted.study_uids == (A, B)
    principal = verifier().verify(minted.token)
    assert (principal.scope, principal.token_id, principal.roles, principal.via) == (
        frozenset({A, B}), minted.token_id, frozenset(), "viewer")
    assert principal.scope_studies == {A: oid(A), B: oid(B)}
    users = TokenVerifier(issuer="iss", audience="ehr-imaging", secret=SECRET)
    with pytest.raises(AuthError):
        users.verify(minted.token)


@pytest.mark.parametrize("changes", [
    {"typ": "user"}, {"studies": []}, {"studies": ["x"]}, {"studies": "1.2"}, {"jti": None},
    # Without its Orthanc studies (a token of an earlier version), or with a list that does not pair up.
    {"orthanc_studies": None}, {"orthanc_studies": []}, {"orthanc_studies": ["not-an-id"]},
    {"orthanc_studies": [oid(A), oid(B)]},
])
def test_incomplete_viewer_tokens_are_refused(changes: dict[str, Any]) -> None:
    now = int(time.time())
    claims = {"iss": "iss", "aud": VIEWER_AUDIENCE, "sub": "s", "typ": "viewer", "jti": "j", "iat": now,
              "nbf": now, "exp": now + 60, "studies": [A], "orthanc_studies": [oid(A)], **changes}
    claims = {k: v for k, v in claims.items() if v is not None}
    with pytest.raises(AuthError):
        verifier().verify(jwt.encode(claims, SECRET, algorithm="HS256"))


def test_minting_limits() -> None:
    with pytest.raises(ValueError):
        mint_viewer_token(secret=SECRET, issuer="i", subject="s", studies={}, ttl_seconds=60)
    with pytest.raises(ValueError):
        mint_viewer_token(secret=SECRET, issuer="i", subject="s", studies={"1.2.x": oid("1.2.x")}, ttl_seconds=60)
    with pytest.raises(ValueError):
        mint_viewer_token(secret=SECRET, issuer="i", subject="s", studies={A: "../studies"}, ttl_seconds=60)
    with pytest.raises(ValueError):
        mint_viewer_token(secret=SECRET, issuer="i", subject="s",
                          studies={f"1.2.{n}": oid(f"1.2.{n}") for n in range(MAX_STUDIES + 1)}, ttl_seconds=60)


def test_revocations_fail_closed_until_loaded_and_keep_local_ones() -> None:
    now = [1000.0]
    loads: list[dict[str, float]] = [{"db": 2000.0}]
    revocations = RevocationList(lambda: loads[-1], clock=lambda: now[0])
    assert revocations.is_revoked("anything") and not revocations.ready
    revocations.refresh()
    assert revocations.is_revoked("db") and not revocations.is_revoked("other")
    revocations.add("local", 1500.0)
    loads.append({})
    revocations.refresh()
    assert revocations.is_revoked("local")  # not yet in the database's answer: kept
    now[0] = 1600.0
    revocations.refresh()
    assert not revocations.is_revoked("local")  # expired anyway


def test_access_counts_aggregate_and_survive_a_failed_write() -> None:
    written: list[list[AccessCount]] = []
    fail = [True]

    def write(counts: Any) -> None:
        if fail[0]:
            raise ConnectionError("database down")
        written.append(list(counts))

    log = AccessLog(write, clock=lambda: 100.0)
    for _ in range(3):
        log.record("t1", "dr", A, allowed=True, size=10)
    log.record("t1", "dr", B, allowed=False)
    with pytest.raises(ConnectionError):
        log.flush()
    log.record("t1", "dr", A, allowed=True, size=5)
    fail[0] = False
    assert log.flush() == 2
    by_study = {c.study_uid: c for c in written[0]}
    assert (by_study[A].requests, by_study[A].bytes, by_study[A].denied) == (4, 35, 0)
    assert (by_study[B].requests, by_study[B].denied) == (0, 1)
    assert log.flush() == 0


class FakePacs:
    """Orthanc holding study A twice: "o1" (patient P, series SA) and, once ``collide`` is set, "o2" (another
    patient's study under the same StudyInstanceUID, series SB)."""

    def __init__(self) -> None:
        self.loads = 0
        self.collide = False
        self.instances = [{"MainDicomTags": {"SOPInstanceUID": IA, "NumberOfFrames": "4"}, "ParentSeries": "s1",
                           "FileSize": 4000}]

    def find_study_ids(self, uid: str) -> list[str]:
        return (["o1", "o2"] if self.collide else ["o1"]) if uid == A else []

    def get_json(self, uri: str) -> Any:
        study = uri.split("/")[2]
        if study not in ("o1", "o2") or (study == "o2" and not self.collide):
            raise NotFound(uri)  # as the Orthanc adapter does for an unknown resource
        if uri.endswith("/series"):
            return [{"ID": "s1", "MainDicomTags": {"SeriesInstanceUID": SA}}] if study == "o1" else [
                {"ID": "s2", "MainDicomTags": {"SeriesInstanceUID": SB}}]
        if uri.endswith("/instances"):
            return self.instances if study == "o1" else [
                {"MainDicomTags": {"SOPInstanceUID": IB}, "ParentSeries": "s2", "FileSize": 1}]
        self.loads += 1
        return {"MainDicomTags": {"StudyInstanceUID": A},
                "PatientMainDicomTags": {"PatientID": "P" if study == "o1" else "X"}}


def test_the_hierarchy_is_cached_and_reloaded_on_a_miss_at_most_once_per_interval() -> None:
    pacs = FakePacs()
    now = [0.0]
    hierarchy = StudyHierarchy(pacs, miss_reload_seconds=2.0, clock=lambda: now[0])  # type: ignore[arg-type]
    assert hierarchy.belongs("o1", SA, IA) and hierarchy.belongs("o1", None, IA) and hierarchy.belongs("o1", SA, None)
    assert not hierarchy.belongs("o1", SB, None) and not hierarchy.belongs("o1", SA, IB)
    assert pacs.loads == 1  # misses within the interval do not reload
    pacs.instances.append({"MainDicomTags": {"SOPInstanceUID": IB}, "ParentSeries": "s1", "FileSize": 10})
    now[0] = 3.0
    assert hierarchy.belongs("o1", SA, IB) and pacs.loads == 2  # a late instance is found after the interval
    assert hierarchy.size_of("o1", IA) == 4000 and hierarchy.size_of("o1", IA, frames=1) == 1000
    assert not hierarchy.belongs("o9", None, None)  # not stored: not even the study itself


def test_the_hierarchy_never_mixes_in_another_patients_study_under_the_same_uid() -> None:
    pacs = FakePacs()
    hierarchy = StudyHierarchy(pacs)  # type: ignore[arg-type]
    assert hierarchy.belongs("o1", SA, IA) and not hierarchy.members("o1").uid_shared
    pacs.collide = True  # another patient's study arrives under A: its NEW_STUDY change drops A from the cache
    hierarchy.study_arrived("o2")
    members = hierarchy.members("o1")
    assert members.uid_shared and members.patient_id == "P"
    assert not hierarchy.belongs("o1", SB, None) and not hierarchy.belongs("o1", None, IB)
    assert hierarchy.belongs("o2", SB, IB) and hierarchy.members("o2").patient_id == "X"
    pacs.collide = False  # the intruder deleted: studies that shared their UID are read again
    hierarchy.forget("o2")
    assert not hierarchy.members("o1").uid_shared and not hierarchy.belongs("o2", None, None)
