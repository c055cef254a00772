"""The OpenAPI document, generated from the route table (through the router) so it cannot drift from the routes."""

from __future__ import annotations

from typing import Any

from .. import __version__
from ..core.fhir import MEDIA_TYPE as FHIR_JSON
from .context import Api
from .fhir_schemas import OPERATION_OUTCOME
from .router import ANY_ROLE, PUBLIC, SIGNED_URL, Request, Response, Route, Router, is_fhir, json_response
from .schemas import COMPONENTS

ERRORS = {"400": "bad input", "401": "missing or invalid token", "403": "role not allowed", "404": "unknown",
          "405": "method not allowed", "409": "conflict", "413": "too large", "415": "unsupported media type",
          "422": "validation error", "500": "internal error", "503": "database unavailable (retry)"}
ERROR = {"$ref": "#/components/schemas/Error"}
_DESCRIPTIONS = {"200": "success", "201": "created", "202": "accepted", "204": "done, no body",
                 "302": "redirected"}


def document(router: Router) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in router.routes():
        paths.setdefault(route.template, {})[route.method.lower()] = _operation(route)
    return {
        "openapi": "3.0.3",
        "info": {"title": "ehr-imaging", "version": __version__,
                 "description": "The EHR's DICOM API, served inside Orthanc. Errors are {\"detail\": \"...\"}."},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            "schemas": {"Error": {"type": "object", "required": ["detail"],
                                  "properties": {"detail": {"type": "string"}}}, **COMPONENTS},
        },
    }


def _operation(route: Route) -> dict[str, Any]:
    doc = (route.handler.__doc__ or "").strip().splitlines()
    contract = route.contract
    success: dict[str, Any] = {"200": {"description": "success"}}
    if contract is not None:
        success = {status: {"description": _DESCRIPTIONS.get(status, "answered with this body"),
                            **({"content": _content(answer)} if answer else {})}
                   for status, answer in contract.answers.items()}
    operation: dict[str, Any] = {
        "operationId": route.handler.__name__,
        "summary": doc[0] if doc else route.handler.__name__.replace("_", " ").capitalize(),
        "parameters": [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                       for name in route.param_names],
        "responses": {**success, **{code: {"description": text, "content": _error_content(route)}
                                    for code, text in _errors(route).items() if code not in success}},
    }
    if contract is not None and contract.body:
        operation["requestBody"] = {"required": contract.body_required, "content": _content(contract.body)}
    if route.roles == PUBLIC:
        operation["security"] = []
        operation["x-roles"] = ["public"]
    elif route.roles == SIGNED_URL:  # the credential is the URL's signed token (no header: an <img src>)
        operation["security"] = []
        operation["x-roles"] = ["signed URL"]
        operation["parameters"] += [{"name": name, "in": "query", "required": True, "schema": {"type": "string"}}
                                    for name in ("format", "image_token")]
    else:
        operation["security"] = [{"bearer": []}]
        operation["x-roles"] = ["any authenticated"] if route.roles == ANY_ROLE else sorted(route.roles)
    return operation


def _errors(route: Route) -> dict[str, str]:
    """The error answers, in the words of the route's contract where it says what a status means there."""
    errors = {**ERRORS, **(route.contract.errors if route.contract is not None else {})}
    if route.rate_limited:
        errors["429"] = "over the caller's upload rate limit on this node (retry after Retry-After seconds)"
    return errors


def _error_content(route: Route) -> dict[str, Any]:
    """``{"detail"}`` JSON; an OperationOutcome (its diagnostics: the same detail) on the FHIR routes."""
    if is_fhir(route.template):
        return {FHIR_JSON: {"schema": OPERATION_OUTCOME}}
    return {"application/json": {"schema": ERROR}}


def _content(schemas: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {media_type: {"schema": schema} for media_type, schema in schemas.items()}


def openapi(api: Api, request: Request) -> Response:
    """This document."""
    return json_response(document(api.router))
