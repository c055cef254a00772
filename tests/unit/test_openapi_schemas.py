"""``api.schemas`` and the OpenAPI document: every schema names a real route, every ``$ref`` resolves, every
JSON route is described. Also the small validator the contract test checks real answers with."""

from __future__ import annotations

import dataclasses
import io
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, time
from typing import Any
from unittest import mock

import pytest

from ehr_imaging.api import (
    openapi,
    presenters,
)
from ehr_imaging.api.fhir_schemas import OPERATION_OUTCOME
from ehr_imaging.api.router import Router
from ehr_imaging.api.routes import ROUTES, register_all
from ehr_imaging.api.schemas import COMPONENTS, JSON
from ehr_imaging.app import uploading
from ehr_imaging.core import file_validation
from ehr_imaging.core.fhir import MEDIA_TYPE as FHIR_JSON
from ehr_imaging.core.study_tags import study_tags as study_tags_of
from ehr_imaging.store import studies as study_store
from ehr_imaging.store.orders import Order
from ehr_imaging.store.reconciliation import MatchStatus, QueueEntry
from ehr_imaging.store.summary import Counts
from ehr_imaging.store.upload_log import UploadJobRecord
from tests.openapi_validation import TYPES, problems

# Routes that answer no JSON body on success (a redirect, an empty 204): deliberately without a schema.
WITHOUT_SCHEMA = {
    ("GET", "/api/v1/dicom/admin/login"),  # 302 to Orthanc Explorer with a session cookie
    ("POST", "/api/v1/dicom/admin/logout"),  # 204, clears the cookie
    ("GET", "/IHEInvokeImageDisplay"),  # 302 to OHIF (errors: readable HTML pages, for the browser it is)
}


# --- the validator (tests/openapi_validation.py, used by tests/integration/test_openapi_contract.py too) ---

def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def test_the_validator() -> None:
    components = {"Thing": {"type": "object", "required": ["id"], "properties": {
        "id": {"type": "integer"}, "when": {"type": "string", "format": "date-time", "nullable": True},
        "kind": {"type": "string", "enum": ["a", "b"]}, "tags": {"type": "array", "items": {"type": "string"}}}}}
    thing = {"$ref": "#/components/schemas/Thing"}
    assert problems(thing, {"id": 1, "when": None, "kind": "a", "tags": ["x"]}, components) == []
    assert problems(thing, {"id": 1, "when": "2026-01-02T03:04:05Z"}, components) == []
    assert problems(thing, {"when": "yesterday", "kind": "c", "tags": [1], "id": True, "more": 1}, components) == [
        "$.when: 'yesterday' is not a date-time",
        "$.kind: 'c' not one of ['a', 'b']", "$.tags[0]: int 1, expected string", "$.id: bool True, expected integer",
        "$: undocumented field 'more'"]
    assert problems(thing, {}, components) == ["$: missing required 'id'"]
    assert problems({"type": "array", "items": thing}, [None], components) == ["$[0]: null but not nullable"]
    assert problems({"nullable": True, "allOf": [thing]}, None, components) == []
    assert problems({"nullable": True, "allOf": [thing]}, {}, components) == ["$: missing required 'id'"]
    assert problems({"type": "number"}, 1, components) == [] and problems({"type": "integer"}, 1.5, components)
    assert problems({"type": "object", "additionalProperties": True}, {"x": 1}, components) == []


# --- the schemas against the router --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def router() -> Router:
    """Every route, registered as plugin.py does (services mocked: registering reads settings only)."""
    router = Router(mock.MagicMock(), lambda message: None)
    services = mock.MagicMock()
    with mock.patch.object(uploading.JobRunner, "start"):  # no worker thread in a unit test
        register_all(router, services, mock.MagicMock())
    return router


@pytest.fixture(scope="module")
def document(router: Router) -> dict[str, Any]:
    return openapi.document(router)


def registered(router: Router) -> set[tuple[str, str]]:
    return {(route.method, route.template) for route in router.routes()}


def test_every_route_has_a_schema_but_the_deliberate_exceptions(router: Router) -> None:
    documented = {(route.method, route.template) for route in router.routes()
                  if route.contract is not None and any(route.contract.answers.values())}
    assert registered(router) - documented == WITHOUT_SCHEMA


def test_every_ref_resolves(document: dict[str, Any]) -> None:
    components = document["components"]["schemas"]
    found = set(refs(document))
    assert found, "the document references no schema"
    for reference in found:
        assert re.fullmatch(r"#/components/schemas/\w+", reference), reference
        assert reference.rsplit("/", 1)[1] in components, f"{reference} does not resolve"


def test_every_component_is_used(document: dict[str, Any]) -> None:
    used = {reference.rsplit("/", 1)[1] for reference in refs(document)}
    assert set(document["components"]["schemas"]) - used == set()


def walk(schema: Any, where: str) -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(schema, dict):
        yield where, schema
        for key, value in schema.items():
            if key == "properties" and isinstance(value, dict):  # names -> schemas (a property may be "type")
                for name, prop in value.items():
                    yield from walk(prop, f"{where}.properties.{name}")
            else:
                yield from walk(value, f"{where}.{key}")
    elif isinstance(schema, list):
        for index, value in enumerate(schema):
            yield from walk(value, f"{where}[{index}]")


def test_schemas_are_well_formed() -> None:
    everything = {**COMPONENTS, **{f"{s.method} {s.path}": [s.contract.answers, s.contract.body] for s in ROUTES}}
    for where, schema in walk(everything, "schemas"):
        if schema.get("type") == "object" and "properties" in schema:
            missing = set(schema.get("required", [])) - set(schema["properties"])
            assert not missing, f"{where}: required but not a property: {missing}"
        if "type" in schema:
            assert schema["type"] in TYPES, where
        if "$ref" in schema:
            assert set(schema) == {"$ref"}, f"{where}: siblings of $ref are ignored in OpenAPI 3.0"


def test_json_routes_document_their_answer_and_binary_routes_their_media_type(
        router: Router, document: dict[str, Any]) -> None:
    binary = {"/api/v1/dicom/download/{study_uid}": {"application/zip"},
              "/api/v1/dicom/thumbnail/{study_uid}": {"image/png"},
              "/api/v1/dicom/render/{sop_instance_uid}": {"image/png", "image/jpeg"},
              "/api/v1/dicom/images/{sop_instance_uid}/rendered": {"image/png", "image/jpeg"},
              "/api/v1/dicom/modify-tags": {"application/dicom"},
              "/api/v1/dicom/deidentify": {"application/dicom", "application/zip"}}
    json_or_csv = {"/api/v1/dicom/audit"}  # a page of JSON, or the same rows as CSV (format=csv)
    fhir = {"/fhir/ImagingStudy", "/fhir/ImagingStudy/{study_uid}", "/fhir/ServiceRequest/{order_id}"}
    for route in router.routes():
        operation = document["paths"][route.template][route.method.lower()]
        success = {code: answer for code, answer in operation["responses"].items() if code < "300"}
        if (route.method, route.template) in WITHOUT_SCHEMA:
            redirect_or_empty = {code: answer for code, answer in operation["responses"].items() if code < "400"}
            assert redirect_or_empty in ({"302": {"description": "redirected"}},
                                         {"204": {"description": "done, no body"}}), route
            continue
        assert success, route
        for answer in success.values():
            media_types = set(answer["content"])
            if route.template in binary:
                assert media_types == binary[route.template]
                assert all(c["schema"] == {"type": "string", "format": "binary"} for c in answer["content"].values())
            elif route.template in json_or_csv:
                assert media_types == {JSON, "text/csv"}, route
                assert answer["content"]["text/csv"]["schema"] == {"type": "string"}
            elif route.template in fhir:  # FHIR resources; errors are OperationOutcome resources
                assert media_types == {FHIR_JSON}, route
            else:
                assert media_types == {JSON}, route
        if route.template in fhir:
            assert operation["responses"]["401"]["content"] == {FHIR_JSON: {"schema": OPERATION_OUTCOME}}
            continue
        assert operation["responses"]["401"]["content"][JSON]["schema"] == {"$ref": "#/components/schemas/Error"}


def test_request_bodies(document: dict[str, Any]) -> None:
    paths = document["paths"]
    put = paths["/api/v1/dicom/orders/{order_id}"]["put"]["requestBody"]
    assert put["required"] and put["content"][JSON]["schema"] == {"$ref": "#/components/schemas/OrderInput"}
    token = paths["/api/v1/dicom/viewer-token"]["post"]["requestBody"]["content"][JSON]["schema"]
    assert set(token["properties"]) == {"study_uids", "order_id", "patient_id", "ttl_seconds"}
    summary = paths["/api/v1/dicom/clinical-summary/{study_uid}"]["post"]["requestBody"]
    assert not summary["required"]  # no body: every section
    upload = paths["/api/v1/dicom/upload"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/dicom"} <= set(upload)
    assert "requestBody" not in paths["/api/v1/dicom/studies"]["get"]


def test_health_documents_its_503_and_upload_zip_its_202(document: dict[str, Any]) -> None:
    health = document["paths"]["/api/v1/dicom/health"]["get"]["responses"]
    assert health["503"]["content"][JSON]["schema"] == {"$ref": "#/components/schemas/Health"}
    zipped = document["paths"]["/api/v1/dicom/upload-zip"]["post"]["responses"]
    assert zipped["202"]["content"][JSON]["schema"] == {"$ref": "#/components/schemas/UploadJobQueued"}
    assert zipped["200"]["content"][JSON]["schema"] == {"$ref": "#/components/schemas/UploadSummary"}


def test_file_routes_say_an_invalid_dicom_file_is_a_400_and_bad_values_a_422(document: dict[str, Any]) -> None:
    """Issue 11's contract change, in the document: 400 for a file that is not (readable) DICOM, 422 for values."""
    for path in ("upload", "read-tags", "modify-tags", "deidentify", "offline/binary"):
        responses = document["paths"][f"/api/v1/dicom/{path}"]["post"]["responses"]
        assert "invalid DICOM file" in responses["400"]["description"], path
        assert "invalid DICOM" not in responses["422"]["description"], path
    for path in ("upload-multiple", "upload-zip"):
        assert "per file" in document["paths"][f"/api/v1/dicom/{path}"]["post"]["responses"]["400"]["description"]
    assert document["paths"]["/api/v1/dicom/stats"]["get"]["responses"]["400"]["description"] == "bad input"


# --- what the pure helpers build fits the schemas (the integration test checks the routes' answers) -----------


def component(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def test_pure_builders_fit_their_schemas() -> None:
    stored = uploading.FileResult("a.dcm", "stored", 10, "1.2", "1.2.3", "1.2.3.4", "abc")
    failed = uploading.FileResult("b.dcm", "failed", 3, error="not DICOM")
    outcome = uploading.StudyOutcome("1.2", None, None, "no order", "partial", 1, uuid.uuid4())
    assert problems(component("FileResult"), stored.to_json(), COMPONENTS) == []
    assert problems(component("FileResult"), failed.to_json(), COMPONENTS) == []
    assert problems(component("UploadedStudy"), outcome.to_json(), COMPONENTS) == []
    item = presenters.study("1.2", None, patient_id=None, patient_name=None, study_date=date(2026, 1, 2),
                            study_time=None, description=None, accession=None, modalities=["CT"],
                            series=1, instances=2, order_id=None,
                            match={"status": "pending", "rule": None, "reason": "still arriving"})
    assert problems(component("Study"), item, COMPONENTS) == []
    report = {**file_validation.validate(io.BytesIO(b"not a DICOM file")), "file_size_bytes": 16}
    assert problems(component("ValidationReport"), report, COMPONENTS) == []
    series = [{"ID": "s1", "MainDicomTags": {"SeriesInstanceUID": "1.2.3", "Modality": "CT"}, "Instances": ["i"]}]
    study_tags = study_tags_of({"ID": "x", "MainDicomTags": {"StudyInstanceUID": "1.2"}}, series)
    assert problems(component("StudyTags"), study_tags, COMPONENTS) == []


# --- the presenters turn the store's values into exactly the documented shapes (fields in order) -------------


AT = datetime(2026, 11, 20, 9, 30, 15, tzinfo=UTC)


def recorded_order(**changes: Any) -> Order:
    values: dict[str, Any] = dict.fromkeys(presenters.ORDER_FIELDS)
    values.update(order_id="ORD-1", accession_number="ACC-1", mrn="MRN-1", modality="CT", status="scheduled",
                  birth_date=date(1815, 12, 10), scheduled_start=AT, created_at=AT, updated_at=AT)
    values.update(changes)
    return Order(**values)


def fits(name: str, value: Any) -> None:
    assert problems(component(name), value, COMPONENTS) == []
    assert list(value) == [key for key in COMPONENTS[name]["properties"] if key in value], name


def test_presenters_build_the_documented_shapes() -> None:
    linked = recorded_order(study_instance_uid="1.2", orthanc_study_id="o", number_of_series=1, number_of_images=2,
                            study_date=date(2026, 11, 20), study_time=time(9, 30), uploaded_at=AT,
                            uploaded_by="tech", upload_source="dicom", match_rule="accession")
    for order in (recorded_order(), linked):
        fits("Order", presenters.order(order))
    assert presenters.order(linked)["study_time"] == "09:30:00"
    assert presenters.order(linked)["birth_date"] == "1815-12-10"
    record = study_store.StudyRecord("1.2", "o", "MRN-1", "DOE^J", date(2026, 1, 2), time(8, 5, 9), None, "ACC-1",
                                     ("CT", "SR"), 2, 3, "ORD-1", "accession", None)
    study = presenters.recorded_study(record)
    fits("Study", study)
    assert (study["StudyDate"], study["StudyTime"], study["ModalitiesInStudy"]) == ("20260102", "080509", ["CT", "SR"])
    assert study["match"] == {"status": "linked", "rule": "accession", "reason": None}
    upload_id = uuid.uuid4()
    row = study_store.UploadRecord(upload_id, None, None, "tech", "1.2", "o", 1, 10, ["a.dcm"], "MRN-1", None, None,
                                   "20260102", "CT", None, None, None, False, "success", None, AT, "api", 0.5, False)
    upload = presenters.upload(row)
    fits("UploadRow", upload)
    assert (upload["id"], upload["uploaded_at"]) == (str(upload_id), AT.isoformat())
    entry = QueueEntry("1.2", "o", None, None, None, date(2026, 1, 2), ("CT",), 1, 1, "no matching order",
                       ("ORD-1",), "dicom", None, AT, None, None)
    fits("UnmatchedStudy", presenters.queue_entry(entry))
    assert presenters.queue_entry(entry)["study_date"] == "2026-01-02"
    for status in (MatchStatus("1.2", "linked", "ORD-1", "accession", None, ("ORD-1",), linked, ("q",)),
                   MatchStatus("1.3", "unknown", None, None, None, (), None, ())):
        fits("Match", presenters.match_status(status))
    job = UploadJobRecord(uuid.uuid4(), "completed", "tech", "node", "cd_import", None, None, None, 1, 1, 1, 0,
                          [], None, AT, AT, AT, AT)
    fits("UploadJob", presenters.upload_job(job))
    assert "results" not in presenters.upload_job(dataclasses.replace(job, status="running", finished_at=None))
    assert presenters.counts(Counts(3, 2, 1)) == {"total_orders": 3, "matched_orders": 2, "total_uploads": 1}
