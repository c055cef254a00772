"""Viewer tokens against the real stack: minting, scoped DICOMweb, the scoped QIDO root, revocation, audit."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest

from ehr_imaging.core.study_identity import orthanc_study_id
from ehr_imaging.core.viewer_tokens import mint_viewer_token
from tests.conftest import Client
from tests.integration.helpers import query
from tests.integration.viewer_helpers import FRAME_ACCEPT, as_viewer, viewer_token
from tests.waiting import eventually

pytestmark = pytest.mark.integration


def test_a_viewer_token_opens_its_study_and_nothing_else(client: Client, two_studies: Any) -> None:
    a, b = two_studies
    issued = viewer_token(client, study_uids=[a.uid])
    assert issued["study_uids"] == [a.uid]
    token = issued["token"]
    metadata = as_viewer(client, token, f"/dicom-web/studies/{a.uid}/metadata")
    assert metadata.status_code == 200
    assert {item["00080018"]["Value"][0] for item in metadata.json()} == set(a.instances)
    instance = f"/dicom-web/studies/{a.uid}/series/{a.series}/instances/{a.instances[0]}"
    frame = as_viewer(client, token, f"{instance}/frames/1", headers={"Accept": FRAME_ACCEPT})
    assert frame.status_code == 200 and len(frame.content) > 10000
    assert as_viewer(client, token, f"/dicom-web/studies/{b.uid}/metadata").status_code == 403
    # B's series or instance under A's study UID: the hierarchy is checked, not the path's study alone.
    assert as_viewer(client, token, f"/dicom-web/studies/{a.uid}/series/{b.series}/metadata").status_code == 403
    assert as_viewer(client, token, f"/dicom-web/studies/{a.uid}/series/{a.series}/instances/{b.instances[0]}"
                                    "/frames/1").status_code == 403
    wado_uri = (f"/wado?requestType=WADO&studyUID={a.uid}&seriesUID={a.series}&objectUID={a.instances[0]}"
                "&contentType=application/dicom")
    answer = as_viewer(client, token, wado_uri)
    assert answer.status_code == 200 and answer.content[128:132] == b"DICM"
    assert as_viewer(client, token, wado_uri.replace(a.instances[0], b.instances[0])).status_code == 403


def test_queries_are_narrowed_to_the_token(client: Client, two_studies: Any) -> None:
    a, b = two_studies
    token = viewer_token(client, study_uids=[a.uid])["token"]

    def uids(path: str) -> set[str]:
        answer = as_viewer(client, token, path)
        assert answer.status_code == 200, answer.text
        return {item["0020000D"]["Value"][0] for item in answer.json()}

    root = "/ehr-imaging/dicom-web"
    assert uids(f"{root}/studies") == {a.uid}
    assert uids(f"{root}/studies?PatientID={a.patient_id}") == {a.uid}
    assert uids(f"{root}/studies?PatientID={b.patient_id}") == set()  # OHIF's prior-studies query
    assert uids(f"{root}/studies?StudyInstanceUID={a.uid},{b.uid}") == {a.uid}
    assert uids(f"{root}/studies?StudyInstanceUID={b.uid}%5C{a.uid}") == {a.uid}
    assert uids(f"{root}/studies?StudyInstanceUID={b.uid}") == set()
    assert uids(f"{root}/studies?PatientID=*") == {a.uid}  # wildcards reach the DICOMweb plugin as written
    assert uids(f"{root}/studies?PatientID={a.patient_id[:6]}*") == {a.uid}
    assert as_viewer(client, token, f"{root}/studies?PatientID=x%26StudyInstanceUID%3D{b.uid}").status_code == 400
    both = viewer_token(client, study_uids=[a.uid, b.uid])["token"]
    answer = as_viewer(client, both, f"{root}/studies")
    assert {item["0020000D"]["Value"][0] for item in answer.json()} == {a.uid, b.uid}
    series = as_viewer(client, token, f"{root}/studies/{a.uid}/series")
    assert [s["0020000E"]["Value"][0] for s in series.json()] == [a.series]
    assert as_viewer(client, token, f"{root}/studies/{b.uid}/series").status_code == 403
    # Orthanc's own QIDO is not for viewers: it could not be narrowed.
    assert as_viewer(client, token, f"/dicom-web/studies?StudyInstanceUID={a.uid}").status_code == 403
    assert as_viewer(client, token, "/dicom-web/studies").status_code == 403


def test_a_viewer_token_reaches_nothing_but_dicomweb_reads(client: Client, two_studies: Any) -> None:
    a, _ = two_studies
    token = viewer_token(client, study_uids=[a.uid])["token"]
    for path in ("/api/v1/dicom/stats", f"/api/v1/dicom/studies/{a.uid}/match", "/api/v1/dicom/orders"):
        assert as_viewer(client, token, path).status_code == 401, path
    for path in ("/system", "/studies", "/app/explorer.html", "/dicom-web/servers", "/tools/find"):
        assert as_viewer(client, token, path).status_code == 403, path
    assert as_viewer(client, token, "/dicom-web/studies", "POST", data=b"x",
                     headers={"Content-Type": "application/dicom"}).status_code == 403
    assert as_viewer(client, token, f"/dicom-web/studies/{a.uid}", "DELETE").status_code == 403


def test_order_and_patient_scopes_and_viewer_urls(client: Client, two_studies: Any) -> None:
    a, b = two_studies
    assert viewer_token(client, order_id=a.order_id)["study_uids"] == [a.uid]
    url = client.get(f"/api/v1/dicom/viewer-url/{a.uid}", "nurse").json()
    assert url["study_count"] == 1
    assert url["url"].endswith(f"/ohif/viewer?StudyInstanceUIDs={a.uid}&token={url['token']}")
    by_order = client.get(f"/api/v1/dicom/viewer-url/order/{b.order_id}", "radiologist").json()
    assert by_order["study_uids"] == [b.uid]
    patient_id = query(client, "SELECT patient_id FROM ehr_imaging.imaging_orders WHERE order_id = :o",
                       o=a.order_id)[0][0]
    by_patient = client.get(f"/api/v1/dicom/viewer-url/patient/{patient_id}", "ehr-service").json()
    assert a.uid in by_patient["study_uids"] and b.uid not in by_patient["study_uids"]
    assert as_viewer(client, by_order["token"], f"/dicom-web/studies/{b.uid}/metadata").status_code == 200
    assert as_viewer(client, by_order["token"], f"/dicom-web/studies/{a.uid}/metadata").status_code == 403


def test_minting_errors(client: Client, two_studies: Any) -> None:
    a, _ = two_studies
    post = "/api/v1/dicom/viewer-token"
    assert client.request("POST", post, None, json={"study_uids": [a.uid]}).status_code == 401
    assert client.request("POST", post, "technician", json={"study_uids": [a.uid]}).status_code == 403
    assert client.request("POST", post, "doctor", json={}).status_code == 422
    both = {"study_uids": [a.uid], "order_id": a.order_id}
    assert client.request("POST", post, "doctor", json=both).status_code == 422
    assert client.request("POST", post, "doctor", json={"study_uids": ["not a uid"]}).status_code == 422
    assert client.request("POST", post, "doctor", json={"study_uids": ["1.2.3.999999"]}).status_code == 404
    assert client.request("POST", post, "doctor", json={"order_id": "no-such-order"}).status_code == 404
    assert client.request("POST", post, "doctor", json={"study_uids": [a.uid], "ttl_seconds": 0}).status_code == 422
    capped = viewer_token(client, study_uids=[a.uid], ttl_seconds=10**7)
    expires = datetime.fromisoformat(capped["expires_at"].replace("Z", "+00:00"))
    assert (expires - datetime.now(UTC)).total_seconds() <= 3600 + 5


def test_revoked_and_expired_tokens_are_refused(client: Client, two_studies: Any) -> None:
    a, _ = two_studies
    path = f"/dicom-web/studies/{a.uid}/metadata"
    issued = viewer_token(client, subject="dr-who", study_uids=[a.uid])
    assert as_viewer(client, issued["token"], path).status_code == 200
    revoke = "/api/v1/dicom/viewer-token/revoke"
    someone_else = client.request("POST", revoke, json={"token_id": issued["token_id"]},
                                  headers={"Authorization": f"Bearer {client.token('doctor', 'dr-no')}"})
    assert someone_else.status_code == 403
    own = client.request("POST", revoke, json={"token": issued["token"], "reason": "sent to the wrong person"},
                         headers={"Authorization": f"Bearer {client.token('doctor', 'dr-who')}"})
    assert own.status_code == 200 and own.json()["status"] == "revoked"
    assert as_viewer(client, issued["token"], path).status_code == 403
    assert as_viewer(client, issued["token"], "/ehr-imaging/dicom-web/studies").status_code == 401
    rows = query(client, "SELECT revoked_by, revoke_reason FROM ehr_imaging.viewer_tokens WHERE token_id = :t",
                 t=issued["token_id"])
    assert rows == [("dr-who", "sent to the wrong person")]
    expired = mint_viewer_token(secret=client.stack.secrets.jwt_secret, issuer="ehr-imaging-dev", subject="x",
                                studies={a.uid: orthanc_study_id("x", a.uid)}, ttl_seconds=60,
                                now=time.time() - 600).token
    assert as_viewer(client, expired, path).status_code == 403


def test_an_admin_may_revoke_anyone_s_token_and_an_unknown_one_is_404(client: Client, two_studies: Any) -> None:
    """Who may revoke is core.ownership's rule (owner or admin); the store only records it, once."""
    a, _ = two_studies
    revoke = "/api/v1/dicom/viewer-token/revoke"
    issued = viewer_token(client, subject="dr-who", study_uids=[a.uid])
    by_admin = client.request("POST", revoke, json={"token_id": issued["token_id"], "reason": "left the practice"},
                              headers={"Authorization": f"Bearer {client.token('admin', 'head-of-it')}"})
    assert by_admin.status_code == 200 and by_admin.json()["status"] == "revoked"
    again = client.request("POST", revoke, json={"token_id": issued["token_id"], "reason": "twice"},
                           headers={"Authorization": f"Bearer {client.token('doctor', 'dr-who')}"})
    assert again.status_code == 200
    rows = query(client, "SELECT revoked_by, revoke_reason FROM ehr_imaging.viewer_tokens WHERE token_id = :t",
                 t=issued["token_id"])
    assert rows == [("head-of-it", "left the practice")]  # the first revocation stays
    unknown = client.request("POST", revoke, json={"token_id": "no-such-token"},
                             headers={"Authorization": f"Bearer {client.token('admin', 'head-of-it')}"})
    assert unknown.status_code == 404


def test_viewer_access_is_audited_per_token_and_study(client: Client, two_studies: Any) -> None:
    a, b = two_studies
    issued = viewer_token(client, subject="dr-audit", study_uids=[a.uid])
    frame = f"/dicom-web/studies/{a.uid}/series/{a.series}/instances/{a.instances[0]}/frames/1"
    for _ in range(5):
        assert as_viewer(client, issued["token"], frame).status_code == 200
    assert as_viewer(client, issued["token"], f"/dicom-web/studies/{b.uid}/metadata").status_code == 403

    def both_studies_logged() -> list[tuple[Any, ...]] | None:
        rows = query(client, "SELECT study_instance_uid, subject, request_count, denied_count, bytes"
                     " FROM ehr_imaging.viewer_access_log WHERE token_id = :t ORDER BY study_instance_uid",
                     t=issued["token_id"])
        return rows if len(rows) == 2 else None

    rows = eventually(both_studies_logged, timeout=20, what="the access log's rows of both studies", interval=0.5)
    counts = {row[0]: row[1:] for row in rows}
    assert counts[a.uid][:3] == ("dr-audit", 5, 0) and counts[a.uid][3] > 5 * 10000
    assert counts[b.uid][:4] == ("dr-audit", 0, 1, 0)


def test_a_huge_study_list_is_refused_before_any_lookup(client: Client) -> None:
    """20,000 UIDs used to be checked and looked up one by one before the 200-study cap (6.5 s): now the size
    comes first, before any per-UID work (the bad UID at the end is never even looked at)."""
    uids = [f"1.2.826.0.1.3680043.8.498.{n}" for n in range(20_000)] + ["not-a-uid"]
    answer = client.request("POST", "/api/v1/dicom/viewer-token", "doctor", json={"study_uids": uids})
    assert answer.status_code == 422 and "at most 200 studies" in answer.json()["detail"], answer.text
