"""The role matrix on the real stack: every route of the router, called with every role. A role outside the route's
group is refused with 403 JSON before anything is read (with the identifiers of a real order, study and upload, so a
refusal cannot be a 404 in disguise); a role inside it is never refused for its role. The routes come from the router
itself (tests/role_matrix.py), not from a hand-written list, so a new route is covered the day it is added."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest

from tests.conftest import Client
from tests.dicom_factory import make_study
from tests.integration.helpers import FHIR_JSON, accession, error_detail, mrn, outcome, put_order
from tests.role_matrix import ROLES, Entry, entries

pytestmark = pytest.mark.integration

API = "/api/v1/dicom"
ROUTES = entries()
DUMMY = {"study_uid": "1.2.826.0.1.3680043.10.999.1", "sop_instance_uid": "1.2.826.0.1.3680043.10.999.2",
         "order_id": "no-such-order", "patient_id": str(uuid.uuid4()), "accession": "NO-SUCH-ACC",
         "upload_id": str(uuid.uuid4()), "job_id": str(uuid.uuid4()), "request_id": str(uuid.uuid4()),
         "deletion_id": str(uuid.uuid4()), "event_id": str(uuid.uuid4())}


def route_id(entry: Entry) -> str:
    return f"{entry.method} {entry.template.removeprefix(API)}"


@pytest.fixture(scope="module")
def real(api: Client, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A real order and the study a technician uploaded against it: what a refused caller must not read."""
    patient_uuid, patient, acc = str(uuid.uuid4()), mrn(), accession()
    order_id = put_order(api, mrn=patient, accession_number=acc, patient_id=patient_uuid, modality="CT")
    uid, files = make_study(tmp_path_factory.mktemp("roles"), patient_id=patient, accession=acc,
                            study_date="20261120", instances=1)
    answer = api.request("POST", f"{API}/upload", "technician", data={"order_id": order_id},
                         files={"file": (files[0].name, files[0].read_bytes(), "application/dicom")})
    assert answer.status_code == 200, answer.text
    stored: dict[str, Any] = answer.json()
    assert stored["order_id"] == order_id  # the technician uploads against the order the EHR named
    return {"study_uid": uid, "sop_instance_uid": stored["sop_instance_uid"], "order_id": order_id,
            "patient_id": patient_uuid, "accession": acc, "upload_id": str(stored["upload_id"]),
            "job_id": str(uuid.uuid4()), "request_id": str(uuid.uuid4()), "deletion_id": str(uuid.uuid4()),
            "event_id": str(uuid.uuid4())}


def path_of(entry: Entry, values: dict[str, str]) -> str:
    return re.sub(r"{(\w+)}", lambda m: values[m.group(1)], entry.template)


def call(client: Client, entry: Entry, role: str, values: dict[str, str]) -> Any:
    # An empty JSON object as the body: enough to reach a handler, never enough to change anything (none to a
    # route that reads no body: the filter refuses it on Orthanc's port before any role is checked).
    body = b"{}" if entry.method in ("POST", "PUT") and entry.takes_body else None
    return client.request(entry.method, path_of(entry, values), role, data=body,
                          headers={"Content-Type": "application/json"} if body else {})


def assert_refused(answer: Any, entry: Entry) -> None:
    assert answer.status_code == 403, f"{entry.method} {entry.template}: {answer.status_code} {answer.text[:200]}"
    if entry.template.startswith("/fhir/"):  # a FHIR route answers an OperationOutcome with the same detail
        assert outcome(answer) == ("forbidden", f"role not allowed for {entry.method} {entry.template}")
        return
    assert answer.headers["Content-Type"].startswith("application/json")
    assert answer.json() == {"detail": f"role not allowed for {entry.method} {entry.template}"}


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("entry", ROUTES, ids=route_id)
def test_every_route_with_every_role(api: Client, real: dict[str, str], entry: Entry, role: str) -> None:
    if entry.roles is not None and role not in entry.roles:
        assert_refused(call(api, entry, role, real), entry)
        return
    # Allowed: reads with the real identifiers, writes with unknown ones (nothing real is changed).
    answer = call(api, entry, role, real if entry.method == "GET" else DUMMY)
    if entry.roles is not None:  # a public route may answer 401 itself (admin/login asks for basic credentials)
        assert answer.status_code != 401, f"{entry.method} {entry.template} as {role}: {answer.text[:200]}"
    if answer.headers.get("Content-Type", "").startswith(FHIR_JSON) and answer.status_code >= 400:
        detail = error_detail(answer)  # a FHIR route's OperationOutcome
    else:
        detail = answer.json().get("detail", "") if answer.headers.get("Content-Type", "").startswith(
            "application/json") and isinstance(answer.json(), dict) else ""
    assert not str(detail).startswith("role not allowed"), f"{entry.method} {entry.template} as {role}"


@pytest.mark.parametrize("entry", [e for e in ROUTES if e.roles is not None and "technician" not in e.roles],
                         ids=route_id)
def test_a_technician_is_refused_on_orthancs_port_too(client: Client, real: dict[str, str], entry: Entry) -> None:
    """The same router answers on Orthanc's own port (the Explorer extension and the viewer use it there)."""
    assert_refused(call(client, entry, "technician", real), entry)


def test_what_a_technician_is_refused_answers_the_others(api: Client, real: dict[str, str]) -> None:
    """The refusals above are about the role, not the data: the same identifiers answer a viewing role."""
    assert api.get(f"{API}/orders/{real['order_id']}", "doctor").json()["study_instance_uid"] == real["study_uid"]
    assert api.get(f"{API}/tags/{real['study_uid']}", "nurse").status_code == 200
    match = api.get(f"{API}/studies/{real['study_uid']}/match", "radiologist").json()
    assert match["status"] == "linked" and match["order_id"] == real["order_id"]
    assert api.get(f"{API}/uploads/{real['upload_id']}", "doctor").json()["study_instance_uid"] == real["study_uid"]
    listed = api.get(f"{API}/orders", "technician", params={"mrn": "x"})
    assert_refused(listed, next(e for e in ROUTES if (e.method, e.template) == ("GET", f"{API}/orders")))
