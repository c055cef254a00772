"""Deletion with manager approval and a way back, against the real stack (issue 11, item 1).

Two stacks of their own: one with ``DeletionApproval`` 'required' (the production configuration) for the
approval flow, rejection and restore; one with a request TTL and a file retention of a few seconds for
expiry and purge. The session stack (approval off, the development default) shows that an immediate
deletion is restorable too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from ehr_stack.stack import Stack
from ehr_stack.tokens import mint_dev_token
from tests.conftest import Client, running_stack
from tests.dicom_factory import make_study, send
from tests.integration.helpers import accession, mrn, order, put_order, query, wait_for_ingest
from tests.openapi_validation import fits as fits_schema
from tests.waiting import eventually

pytestmark = pytest.mark.integration

API = "/api/v1/dicom"
SITE = {"Timezone": "America/Chicago"}


@pytest.fixture(scope="module")
def approving() -> Iterator[Client]:
    with running_stack("deletion-approval", extra_settings={**SITE, "DeletionApproval": "required"}) as started:
        yield Client(started, started.api_url)


@pytest.fixture(scope="module")
def short_lived() -> Iterator[Client]:
    # A request expires after 7.2 s; a deleted study's files are kept 8.64 s.
    settings = {**SITE, "DeletionApproval": "required", "DeletionRequestTtlHours": 0.002,
                "DeletedStudyRetentionDays": 0.0001}
    with running_stack("deletion-short-lived", extra_settings=settings) as started:
        yield Client(started, started.api_url)


@pytest.fixture(scope="module")
def doc(approving: Client) -> dict[str, Any]:
    answer = approving.get(f"{API}/openapi.json", "admin")
    assert answer.status_code == 200
    result: dict[str, Any] = answer.json()
    return result


def fits(doc: dict[str, Any], method: str, template: str, answer: requests.Response, status: int = 200) -> Any:
    """The answer fits its schema (``template`` below the API's prefix)."""
    return fits_schema(doc, method, f"{API}{template}", answer, status)


def as_user(client: Client, method: str, path: str, role: str, subject: str,
            headers_extra: dict[str, str] | None = None, **kwargs: Any) -> requests.Response:
    """A request by a named person (the approval rule compares people, not roles)."""
    token = mint_dev_token(client.stack, role=role, subject=subject, ttl_seconds=600)
    return client.request(method, path, headers={"Authorization": f"Bearer {token}", **(headers_extra or {})},
                          **kwargs)


def linked_study(client: Client, tmp_path: Path, instances: int = 3) -> tuple[str, str]:
    """A study sent by C-STORE and linked to its order by accession; (StudyInstanceUID, order id)."""
    patient, acc = mrn(), accession()
    order_id = put_order(client, mrn=patient, accession_number=acc)
    uid, files = make_study(tmp_path, patient_id=patient, accession=acc, study_date="20261120", instances=instances)
    send(client.stack, files)
    wait_for_ingest(client, uid, instances)
    assert order(client, order_id)["study_instance_uid"] == uid
    return uid, order_id


def stored_files(stack: Stack, orthanc_study_id: str) -> dict[str, str]:
    """SOPInstanceUID -> MD5 of the file Orthanc stores, read through Orthanc's REST API."""
    instances = requests.get(f"{stack.url}/studies/{orthanc_study_id}/instances", auth=stack.admin_auth, timeout=30)
    assert instances.status_code == 200, instances.text
    md5s = {}
    for instance in instances.json():
        data = requests.get(f"{stack.url}/instances/{instance['ID']}/file", auth=stack.admin_auth, timeout=30)
        assert data.status_code == 200
        md5s[instance["MainDicomTags"]["SOPInstanceUID"]] = hashlib.md5(data.content).hexdigest()
    return md5s


def ask_deletion(client: Client, uid: str, subject: str, role: str = "radiologist",
                 reason: str = "wrong patient") -> dict[str, Any]:
    answer = as_user(client, "DELETE", f"{API}/studies/{uid}", role, subject, json={"reason": reason})
    assert answer.status_code == 202, answer.text
    body: dict[str, Any] = answer.json()
    assert (body["status"], body["study_instance_uid"], body["requested_by"], body["reason"]) == (
        "pending_approval", uid, subject, reason)
    return body


def requests_with(client: Client, status: str) -> dict[str, dict[str, Any]]:
    answer = as_user(client, "GET", f"{API}/deletion-requests", "admin", "auditor", params={"status": status})
    assert answer.status_code == 200, answer.text
    return {item["deletion_request_id"]: item for item in answer.json()["items"]}


def deletion_row(client: Client, uid: str) -> dict[str, Any]:
    answer = as_user(client, "GET", f"{API}/deletions", "admin", "auditor", params={"study_uid": uid})
    assert answer.status_code == 200, answer.text
    items = answer.json()["items"]
    assert len(items) == 1
    row: dict[str, Any] = items[0]
    return row


def test_approval_by_another_admin_deletes_and_a_restore_brings_it_back_bit_for_bit(
        approving: Client, doc: dict[str, Any], tmp_path: Path) -> None:
    client = approving
    uid, order_id = linked_study(client, tmp_path)
    orthanc_id = order(client, order_id)["orthanc_study_id"]
    before = stored_files(client.stack, orthanc_id)
    assert len(before) == 3

    # Asked for by an admin: 202, nothing deleted, one pending request per study.
    assert as_user(client, "DELETE", f"{API}/studies/{uid}", "admin", "alice").status_code == 422  # no reason
    asked = fits(doc, "DELETE", "/studies/{study_uid}", as_user(
        client, "DELETE", f"{API}/studies/{uid}", "admin", "alice", json={"reason": "sent under the wrong order"}), 202)
    assert (asked["status"], asked["requested_by"], asked["decided_by"]) == ("pending_approval", "alice", None)
    request_id = asked["deletion_request_id"]
    assert client.get(f"{API}/studies/{uid}", "doctor").status_code == 200
    again = as_user(client, "DELETE", f"{API}/studies/{uid}", "radiologist", "rita", json={"reason": "dup"})
    assert again.status_code == 409
    assert request_id in again.json()["detail"]
    fits(doc, "GET", "/deletion-requests", as_user(client, "GET", f"{API}/deletion-requests", "admin", "bob"))
    pending = requests_with(client, "pending")[request_id]
    assert (pending["requested_by"], pending["reason"], pending["order_id"]) == (
        "alice", "sent under the wrong order", order_id)
    assert as_user(client, "GET", f"{API}/deletion-requests", "radiologist", "rita").status_code == 403

    # Never approved by the person who asked; a radiologist may not approve at all.
    own = as_user(client, "POST", f"{API}/deletion-requests/{request_id}/approve", "admin", "alice")
    assert own.status_code == 403
    assert "another admin must approve" in own.json()["detail"]
    assert as_user(client, "POST", f"{API}/deletion-requests/{request_id}/approve", "radiologist",
                   "rita").status_code == 403
    assert client.get(f"{API}/studies/{uid}", "doctor").status_code == 200

    body = fits(doc, "POST", "/deletion-requests/{request_id}/approve",
                as_user(client, "POST", f"{API}/deletion-requests/{request_id}/approve", "admin", "bob"))
    assert (body["status"], body["deleted_by"], body["approved_by"], body["deletion_request_id"]) == (
        "deleted", "alice", "bob", request_id)
    assert (body["deleted_instances"], body["order_id"], body["restorable"]) == (3, order_id, True)
    deletion_id = body["deletion_id"]
    assert client.get(f"{API}/studies/{uid}", "doctor").status_code == 404
    assert order(client, order_id)["study_instance_uid"] is None
    decided = requests_with(client, "approved")[request_id]
    assert (decided["decided_by"], decided["deletion_id"]) == ("bob", deletion_id)
    assert as_user(client, "POST", f"{API}/deletion-requests/{request_id}/approve", "admin",
                   "carol").status_code == 409  # decided once
    fits(doc, "GET", "/deletions", as_user(client, "GET", f"{API}/deletions", "admin", "bob",
                                           params={"restorable": "true"}))
    row = deletion_row(client, uid)
    assert (row["deletion_id"], row["restorable"], row["kept_files"], row["approved_by"]) == (
        deletion_id, True, 3, "bob")
    assert query(client, "SELECT deleted_by, approved_by, reason, restorable FROM ehr_imaging.dicom_deletion_logs"
                 " WHERE study_instance_uid = :u", u=uid) == [("alice", "bob", "sent under the wrong order", True)]
    assert (client.stack.deleted_study_dir / deletion_id / "manifest.json").is_file()

    # Restore: admins only; the same files, the same UIDs, linked to its (still open) order again.
    path = f"{API}/deletions/{deletion_id}/restore"
    assert as_user(client, "POST", path, "radiologist", "rita").status_code == 403
    answer = fits(doc, "POST", "/deletions/{deletion_id}/restore", as_user(client, "POST", path, "admin", "carol"))
    assert (answer["status"], answer["restored_instances"], answer["order_id"], answer["restored_by"]) == (
        "restored", 3, order_id, "carol")
    assert answer["match"] == {"status": "linked", "reason": None}
    assert client.get(f"{API}/studies/{uid}", "doctor").status_code == 200
    assert stored_files(client.stack, answer["orthanc_study_id"]) == before
    linked = order(client, order_id)
    assert (linked["study_instance_uid"], linked["number_of_images"]) == (uid, 3)
    row = deletion_row(client, uid)
    assert (row["restorable"], row["restored_by"]) == (False, "carol")
    assert row["restored_at"] is not None
    assert as_user(client, "POST", path, "admin", "carol").status_code == 409  # restored once
    assert not (client.stack.deleted_study_dir / deletion_id).exists()
    assert query(client, "SELECT uploaded_by, number_of_files, order_id FROM ehr_imaging.dicom_upload_logs"
                 " WHERE study_instance_uid = :u AND upload_source = 'restore'", u=uid) == [("carol", 3, order_id)]
    assert query(client, "SELECT action, order_id FROM ehr_imaging.link_audit WHERE study_instance_uid = :u"
                 " ORDER BY id", u=uid) == [("auto-link", order_id), ("unlink", order_id), ("auto-link", order_id)]
    # Every step in the audit timeline, by whom (newest first).
    audit = client.get(f"{API}/audit", "admin", params={
        "study_uid": uid, "action": "deletion-requested,deletion-approved,delete,restore"}).json()
    assert [(e["action"], e["actor"]) for e in audit["items"]] == [
        ("restore", "carol"), ("delete", "alice"), ("deletion-approved", "bob"), ("deletion-requested", "alice")]
    assert audit["items"][1]["details"]["approved_by"] == "bob"
    assert all(e["order_id"] == order_id for e in audit["items"])


def test_a_rejected_request_deletes_nothing(approving: Client, doc: dict[str, Any], tmp_path: Path) -> None:
    client = approving
    uid, order_id = linked_study(client, tmp_path, instances=1)
    # Asked through Orthanc's own port (the reason in the X-Reason header there): the same 202.
    orthanc_port = Client(client.stack)
    asked = as_user(orthanc_port, "DELETE", f"{API}/studies/{uid}", "radiologist", "rita",
                    headers_extra={"X-Reason": "wrong patient"})
    body = fits(doc, "DELETE", "/studies/{study_uid}", asked, 202)
    assert (body["status"], body["requested_by"], body["reason"]) == ("pending_approval", "rita", "wrong patient")
    request_id = body["deletion_request_id"]
    path = f"{API}/deletion-requests/{request_id}/reject"
    assert as_user(client, "POST", path, "admin", "bob", json={}).status_code == 422  # a reason is required
    assert as_user(client, "POST", path, "radiologist", "rita", json={"reason": "no"}).status_code == 403
    body = fits(doc, "POST", "/deletion-requests/{request_id}/reject",
                as_user(client, "POST", path, "admin", "bob", json={"reason": "the study is the right patient's"}))
    assert (body["status"], body["decided_by"], body["decision_reason"], body["deletion_id"]) == (
        "rejected", "bob", "the study is the right patient's", None)
    assert body["decided_at"] is not None
    assert as_user(client, "POST", f"{API}/deletion-requests/{request_id}/approve", "admin",
                   "carol").status_code == 409
    assert as_user(client, "POST", path, "admin", "carol", json={"reason": "again"}).status_code == 409
    assert request_id in requests_with(client, "rejected")
    purged = fits(doc, "POST", "/deletions/purge", as_user(client, "POST", f"{API}/deletions/purge", "admin", "bob"))
    assert purged == {"purged": 0, "deletion_ids": []}  # nothing is past a retention of 30 days
    assert client.get(f"{API}/studies/{uid}", "doctor").status_code == 200
    assert order(client, order_id)["study_instance_uid"] == uid
    assert query(client, "SELECT count(*) FROM ehr_imaging.dicom_deletion_logs WHERE study_instance_uid = :u",
                 u=uid) == [(0,)]
    audit = client.get(f"{API}/audit", "admin", params={"study_uid": uid, "action": "deletion-requested,"
                                                        "deletion-rejected,delete"}).json()
    assert [(e["action"], e["actor"]) for e in audit["items"]] == [("deletion-rejected", "bob"),
                                                                    ("deletion-requested", "rita")]
    assert audit["items"][0]["details"]["reason"] == "the study is the right patient's"
    missing = as_user(client, "POST", f"{API}/deletion-requests/00000000-0000-0000-0000-000000000000/approve",
                      "admin", "bob")
    assert missing.status_code == 404
    assert as_user(client, "GET", f"{API}/deletion-requests", "admin", "bob",
                   params={"status": "maybe"}).status_code == 422


def test_an_unanswered_request_expires(short_lived: Client, tmp_path: Path) -> None:
    client = short_lived
    uid, _ = linked_study(client, tmp_path, instances=1)
    request_id = ask_deletion(client, uid, "rita")["deletion_request_id"]
    expired = eventually(lambda: requests_with(client, "expired").get(request_id), timeout=30,
                         what="the deletion request to expire")
    assert (expired["decided_by"], expired["decided_at"]) == ("ehr-imaging", expired["expires_at"])
    refused = as_user(client, "POST", f"{API}/deletion-requests/{request_id}/approve", "admin", "bob")
    assert refused.status_code == 409
    assert "expired" in refused.json()["detail"]
    assert client.get(f"{API}/studies/{uid}", "doctor").status_code == 200
    # An expired request does not block a new one.
    assert ask_deletion(client, uid, "rita")["deletion_request_id"] != request_id


def test_purge_removes_the_files_past_their_retention(short_lived: Client, tmp_path: Path) -> None:
    client = short_lived
    uid, _ = linked_study(client, tmp_path, instances=2)
    request_id = ask_deletion(client, uid, "alice", role="admin")["deletion_request_id"]
    approved = as_user(client, "POST", f"{API}/deletion-requests/{request_id}/approve", "admin", "bob")
    assert approved.status_code == 200, approved.text
    deletion_id = approved.json()["deletion_id"]
    kept = client.stack.deleted_study_dir / deletion_id
    assert approved.json()["restorable"] is True
    assert len(list(kept.glob("*.dcm"))) == 2
    purge = f"{API}/deletions/purge"
    assert as_user(client, "POST", purge, "radiologist", "rita").status_code == 403

    def purged() -> bool:
        answer = as_user(client, "POST", purge, "admin", "bob")
        assert answer.status_code == 200, answer.text
        return deletion_id in answer.json()["deletion_ids"]

    assert not purged()  # still within its retention (8.64 s): kept
    assert kept.is_dir()
    eventually(purged, timeout=30, what="the deleted study's files to be purged")
    assert not kept.exists()
    row = deletion_row(client, uid)
    assert (row["restorable"], row["kept_files"]) == (False, 2)
    assert row["purged_at"] is not None
    refused = as_user(client, "POST", f"{API}/deletions/{deletion_id}/restore", "admin", "carol")
    assert refused.status_code == 409
    assert "purged" in refused.json()["detail"]


def test_without_approval_a_deletion_is_immediate_and_restorable(api: Client, tmp_path: Path) -> None:
    uid, order_id = linked_study(api, tmp_path, instances=2)
    deleted = api.request("DELETE", f"{API}/studies/{uid}", "radiologist", params={"reason": "duplicate"})
    assert deleted.status_code == 200, deleted.text
    body = deleted.json()
    assert (body["status"], body["approved_by"], body["deletion_request_id"], body["restorable"]) == (
        "deleted", None, None, True)
    assert body["files_kept_until"] is not None
    assert (api.stack.deleted_study_dir / body["deletion_id"] / "manifest.json").is_file()
    restored = api.request("POST", f"{API}/deletions/{body['deletion_id']}/restore", "admin")
    assert restored.status_code == 200, restored.text
    assert restored.json()["order_id"] == order_id
    assert api.get(f"{API}/studies/{uid}", "doctor").status_code == 200


def test_while_approval_is_required_orthancs_own_api_deletes_only_for_an_admin_account(
        approving: Client, tmp_path: Path) -> None:
    """An admin's token (or Explorer session) cannot skip the second admin on Orthanc's port; an AdminUsers
    account (break-glass, basic auth) still can, audited as a deletion outside the EHR API."""
    client = approving
    uid, order_id = linked_study(client, tmp_path, instances=1)
    orthanc_id = order(client, order_id)["orthanc_study_id"]
    token = mint_dev_token(client.stack, role="admin", subject="alice", ttl_seconds=600)
    refused = requests.delete(f"{client.stack.url}/studies/{orthanc_id}", timeout=30,
                              headers={"Authorization": f"Bearer {token}"})
    assert refused.status_code == 403
    assert client.get(f"{API}/studies/{uid}", "doctor").status_code == 200
    done = requests.delete(f"{client.stack.url}/studies/{orthanc_id}", auth=client.stack.admin_auth, timeout=30)
    assert done.status_code == 200
    eventually(lambda: client.get(f"{API}/studies/{uid}", "doctor").status_code == 404, timeout=30,
               what="the break-glass deletion to be seen")


def test_an_approval_never_deletes_another_study_stored_since_under_the_uid(
        approving: Client, tmp_path: Path) -> None:
    client = approving
    uid, order_id = linked_study(client, tmp_path, instances=1)
    asked = as_user(client, "DELETE", f"{API}/studies/{uid}", "radiologist", "rita", json={"reason": "duplicate"})
    assert asked.status_code == 202, asked.text
    request_id = asked.json()["deletion_request_id"]
    # Deleted outside the EHR API meanwhile, and the UID stored again for another patient.
    orthanc_id = order(client, order_id)["orthanc_study_id"]
    assert requests.delete(f"{client.stack.url}/studies/{orthanc_id}", auth=client.stack.admin_auth,
                           timeout=30).status_code == 200
    _, files = make_study(tmp_path / "again", patient_id=mrn(), accession=None, study_date="20261120",
                          instances=1, study_uid=uid)
    send(client.stack, files)
    # Recorded again: the link names the new Orthanc study (the old row also had 1 instance until the deletion
    # outside the API was audited, so waiting for the instance count alone could pass before either happened).
    eventually(lambda: query(client, "SELECT orthanc_study_id FROM ehr_imaging.study_links"
                                     " WHERE study_instance_uid = :u", u=uid) not in ([], [(orthanc_id,)]),
               timeout=30, what="the study stored again to be recorded")
    wait_for_ingest(client, uid, 1)
    approved = as_user(client, "POST", f"{API}/deletion-requests/{request_id}/approve", "admin", "bob")
    assert approved.status_code == 409, approved.text
    assert "no longer the one this request asked to delete" in approved.json()["detail"]
    assert client.get(f"{API}/studies/{uid}", "doctor").status_code == 200  # the other patient's study stays


def test_approvals_need_a_persons_own_identity(approving: Client, tmp_path: Path) -> None:
    client = approving
    uid, _ = linked_study(client, tmp_path, instances=1)
    asked = as_user(client, "DELETE", f"{API}/studies/{uid}", "admin", "alice", json={"reason": "duplicate"})
    request_id = asked.json()["deletion_request_id"]
    basic = client.request("POST", f"{API}/deletion-requests/{request_id}/approve", None,
                           auth=client.stack.admin_auth)
    assert basic.status_code == 403
    assert basic.json()["detail"].startswith("approve with your own EHR identity")
    assert client.get(f"{API}/studies/{uid}", "doctor").status_code == 200
