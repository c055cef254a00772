"""Orders pushed by the EHR: upsert, validation, roles, listing, cancellation."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.conftest import Client
from tests.integration.helpers import order_fields

pytestmark = pytest.mark.integration


def new_order_id() -> str:
    return str(uuid.uuid4())


def test_put_creates_then_updates_idempotently(client: Client) -> None:
    order_id, fields = new_order_id(), order_fields()
    created = client.request("PUT", f"/api/v1/dicom/orders/{order_id}", "ehr-service", json=fields)
    assert created.status_code == 201, created.text
    again = client.request("PUT", f"/api/v1/dicom/orders/{order_id}", "ehr-service", json=fields)
    assert again.status_code == 200
    body = again.json()
    for key, value in fields.items():
        if key != "scheduled_start":
            assert body[key] == value, key
    assert body["scheduled_start"] == "2026-11-20T08:30:00+00:00"
    for key in ("study_instance_uid", "orthanc_study_id", "number_of_series", "number_of_images", "study_date",
                "study_time", "uploaded_at", "uploaded_by", "upload_source", "match_rule"):
        assert key in body and body[key] is None
    updated = client.request("PUT", f"/api/v1/dicom/orders/{order_id}", "admin",
                             json={**fields, "status": "in-progress"})
    assert updated.json()["status"] == "in-progress"
    assert client.get(f"/api/v1/dicom/orders/{order_id}", "nurse").json()["status"] == "in-progress"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"accession_number": None}, "accession_number"),
        ({"accession_number": "X" * 17}, "accession_number"),
        ({"mrn": "MRN 1"}, "mrn"),
        ({"birth_date": "1970-13-01"}, "birth_date"),
        ({"birth_date": "17/05/1970"}, "birth_date"),
        ({"sex": "X"}, "sex"),
        ({"modality": "XRAY"}, "modality"),
        ({"scheduled_start": "tomorrow"}, "scheduled_start"),
        ({"status": "done"}, "status"),
        ({"patient_family_name": "A^B"}, "patient_family_name"),
        ({"colour": "blue"}, "colour"),
        ({"station_aet": "CT-ROOM-NUMBER-17"}, "station_aet"),
        ({"station_aet": "CT\\1"}, "station_aet"),
    ],
)
def test_invalid_fields_answer_422_naming_the_field(client: Client, change: dict[str, Any], field: str) -> None:
    order_id = new_order_id()
    answer = client.request("PUT", f"/api/v1/dicom/orders/{order_id}", "ehr-service", json=order_fields(**change))
    assert answer.status_code == 422
    assert answer.json()["detail"].startswith(field)
    assert client.get(f"/api/v1/dicom/orders/{order_id}", "ehr-service").status_code == 404


def test_body_must_be_json(client: Client) -> None:
    path = f"/api/v1/dicom/orders/{new_order_id()}"
    answer = client.request("PUT", path, "ehr-service", data=b"{not json", headers={"Content-Type": "application/json"})
    assert answer.status_code == 400
    assert "JSON" in answer.json()["detail"]
    # JSON sent as anything but application/json (what a page on another site can send): 415 (issue 9).
    untyped = client.request("PUT", path, "ehr-service", data=b'{"patient_id": "x"}')
    assert untyped.status_code == 415
    assert "JSON" in untyped.json()["detail"]


@pytest.mark.parametrize("role", ["doctor", "nurse", "radiologist", "technician"])
def test_only_the_ehr_and_admins_write_orders(client: Client, role: str) -> None:
    order_id = new_order_id()
    assert client.request("PUT", f"/api/v1/dicom/orders/{order_id}", role, json=order_fields()).status_code == 403
    assert client.request("DELETE", f"/api/v1/dicom/orders/{order_id}", role).status_code == 403
    assert client.request("PUT", f"/api/v1/dicom/orders/{order_id}", json=order_fields()).status_code == 401


def test_list_filters_and_pages(client: Client) -> None:
    mrn = "MRN-L-" + uuid.uuid4().hex[:6].upper()
    ids = [new_order_id() for _ in range(3)]
    for index, order_id in enumerate(ids):
        fields = order_fields(mrn=mrn, scheduled_start=f"2026-11-0{index + 1}T08:00:00Z")
        assert client.request("PUT", f"/api/v1/dicom/orders/{order_id}", "ehr-service", json=fields).status_code == 201
    page = client.get("/api/v1/dicom/orders", "doctor", params={"mrn": mrn, "limit": 2}).json()
    assert page["total"] == 3
    assert [item["order_id"] for item in page["items"]] == [ids[2], ids[1]]  # newest scheduled first
    rest = client.get("/api/v1/dicom/orders", "doctor", params={"mrn": mrn, "limit": 2, "offset": 2}).json()
    assert [item["order_id"] for item in rest["items"]] == [ids[0]]
    unmatched = client.get("/api/v1/dicom/orders", "doctor", params={"mrn": mrn, "unmatched": "true"}).json()
    assert unmatched["total"] == 3
    accession = page["items"][0]["accession_number"]
    by_accession = client.get("/api/v1/dicom/orders", "doctor", params={"accession": accession}).json()
    assert [item["order_id"] for item in by_accession["items"]] == [ids[2]]
    assert client.get("/api/v1/dicom/orders", "doctor", params={"limit": 0}).status_code == 422
    assert client.get("/api/v1/dicom/orders", "doctor", params={"status": "nope"}).status_code == 422


def test_delete_cancels_and_keeps_the_order(client: Client) -> None:
    order_id = new_order_id()
    assert client.request("PUT", f"/api/v1/dicom/orders/{order_id}", "ehr-service",
                          json=order_fields()).status_code == 201
    cancelled = client.request("DELETE", f"/api/v1/dicom/orders/{order_id}", "ehr-service")
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    assert client.get(f"/api/v1/dicom/orders/{order_id}", "doctor").json()["status"] == "cancelled"
    assert client.request("DELETE", f"/api/v1/dicom/orders/{new_order_id()}", "ehr-service").status_code == 404


def test_an_order_names_its_station_and_a_put_without_it_clears_it(client: Client) -> None:
    order_id = new_order_id()
    answer = client.request("PUT", f"/api/v1/dicom/orders/{order_id}", "ehr-service",
                            json=order_fields(station_aet=" CT1 "))
    assert answer.status_code == 201 and answer.json()["station_aet"] == "CT1"
    assert client.get(f"/api/v1/dicom/orders/{order_id}", "ehr-service").json()["station_aet"] == "CT1"
    answer = client.request("PUT", f"/api/v1/dicom/orders/{order_id}", "ehr-service", json=order_fields())
    assert answer.status_code == 200 and answer.json()["station_aet"] is None
