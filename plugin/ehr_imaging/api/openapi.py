"""The OpenAPI document, generated from the router so it cannot drift from the routes it describes."""

from __future__ import annotations

from typing import Any

from .. import __version__
from .router import ANY_ROLE, PUBLIC, Request, Response, Route, Router, json_response

ERRORS = {"400": "bad input", "401": "missing or invalid token", "403": "role not allowed", "404": "unknown",
          "405": "method not allowed", "409": "conflict", "413": "too large", "415": "unsupported media type",
          "422": "validation error", "500": "internal error"}


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
                                  "properties": {"detail": {"type": "string"}}}},
        },
    }


def _operation(route: Route) -> dict[str, Any]:
    doc = (route.handler.__doc__ or "").strip().splitlines()
    operation: dict[str, Any] = {
        "operationId": route.handler.__name__,
        "summary": doc[0] if doc else route.handler.__name__.replace("_", " ").capitalize(),
        "parameters": [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                       for name in route.param_names],
        "responses": {"200": {"description": "success"},
                      **{code: {"description": text, "content": {"application/json": {
                          "schema": {"$ref": "#/components/schemas/Error"}}}} for code, text in ERRORS.items()}},
    }
    if route.roles == PUBLIC:
        operation["security"] = []
        operation["x-roles"] = ["public"]
    else:
        operation["security"] = [{"bearer": []}]
        operation["x-roles"] = ["any authenticated"] if route.roles == ANY_ROLE else sorted(route.roles)
    return operation


def register(router: Router) -> None:
    def openapi(request: Request) -> Response:
        """This document."""
        return json_response(document(router))

    router.add("GET", "/api/v1/dicom/openapi.json", openapi, roles=PUBLIC)
