"""``api.schemas`` and the OpenAPI document: every schema names a real route, every ``$ref`` resolves, every
JSON route is described. Also the small validator the contract test checks real answers with."""

from __future__ import annotations

import io
import re
import uuid
from collections.abc import Iterator
from datetime import date
from typing import Any
from unittest import mock

import pytest

from ehr_imaging.api import (
    openapi,
)
from ehr_imaging.api.router import Router
from ehr_imaging.api.routes import register_all
from ehr_imaging.api.schemas import COMPONENTS, CONTRACTS, JSON
from ehr_imaging.app import uploading
from ehr_imaging.core import tags as dicom_tags
from ehr_imaging.store import studies as study_store
from tests.openapi_validation import TYPES, problems

# Routes that answer no JSON body on success (a redirect, an empty 204): deliberately without a schema.
WITHOUT_SCHEMA = {
    ("GET", "/api/v1/dicom/admin/login"),  # 302 to Orthanc Explorer with a session cookie
    ("POST", "/api/v1/dicom/admin/logout"),  # 204, clears the cookie
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


def test_every_schema_names_a_registered_route(router: Router) -> None:
    assert set(CONTRACTS) - registered(router) == set()


def test_every_route_has_a_schema_but_the_deliberate_exceptions(router: Router) -> None:
    assert registered(router) - set(CONTRACTS) == WITHOUT_SCHEMA
    assert len(CONTRACTS) == len(registered(router)) - len(WITHOUT_SCHEMA)


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
            yield from walk(value, f"{where}.{key}")
    elif isinstance(schema, list):
        for index, value in enumerate(schema):
            yield from walk(value, f"{where}[{index}]")


def test_schemas_are_well_formed() -> None:
    everything = {**COMPONENTS, **{f"{m} {t}": [c.answers, c.body] for (m, t), c in CONTRACTS.items()}}
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
              "/api/v1/dicom/modify-tags": {"application/dicom"},
              "/api/v1/dicom/deidentify": {"application/dicom", "application/zip"}}
    for route in router.routes():
        operation = document["paths"][route.template][route.method.lower()]
        success = {code: answer for code, answer in operation["responses"].items() if code < "300"}
        if (route.method, route.template) in WITHOUT_SCHEMA:
            assert success == {"200": {"description": "success"}}  # today's shape
            continue
        assert success, route
        for answer in success.values():
            media_types = set(answer["content"])
            if route.template in binary:
                assert media_types == binary[route.template]
                assert all(c["schema"] == {"type": "string", "format": "binary"} for c in answer["content"].values())
            else:
                assert media_types == {JSON}, route
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


# --- what the pure helpers build fits the schemas (the integration test checks the routes' answers) -----------


def component(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def test_pure_builders_fit_their_schemas() -> None:
    stored = uploading.FileResult("a.dcm", "stored", 10, "1.2", "1.2.3", "1.2.3.4", "abc")
    failed = uploading.FileResult("b.dcm", "failed", 3, error="not DICOM", http_status=422)
    outcome = uploading.StudyOutcome("1.2", None, None, "no order", "partial", 1, uuid.uuid4())
    assert problems(component("FileResult"), stored.to_json(), COMPONENTS) == []
    assert problems(component("FileResult"), failed.to_json(), COMPONENTS) == []
    assert problems(component("UploadedStudy"), outcome.to_json(), COMPONENTS) == []
    item = study_store.study_item("1.2", None, patient_id=None, patient_name=None, study_date=date(2026, 1, 2),
                                  study_time_text=None, description=None, accession=None, modalities=["CT"],
                                  series=1, instances=2, order_id=None,
                                  match={"status": "pending", "rule": None, "reason": "still arriving"})
    assert problems(component("Study"), item, COMPONENTS) == []
    report = {**dicom_tags.validate(io.BytesIO(b"not a DICOM file")), "file_size_bytes": 16}
    assert problems(component("ValidationReport"), report, COMPONENTS) == []
    series = [{"ID": "s1", "MainDicomTags": {"SeriesInstanceUID": "1.2.3", "Modality": "CT"}, "Instances": ["i"]}]
    study_tags = dicom_tags.study_tags({"ID": "x", "MainDicomTags": {"StudyInstanceUID": "1.2"}}, series)
    assert problems(component("StudyTags"), study_tags, COMPONENTS) == []
