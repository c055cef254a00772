"""A small OpenAPI 3.0 schema validator: what the contract tests check the plugin's real answers (and the
document's own examples) with. Strict where drift hides: an object that lists its properties takes no others."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from datetime import date, datetime
from typing import Any

TYPES: dict[str, tuple[type, ...]] = {"object": (dict,), "array": (list,), "string": (str,), "integer": (int,),
                                       "number": (int, float), "boolean": (bool,)}


def resolve(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        match = re.fullmatch(r"#/components/schemas/(\w+)", schema["$ref"])
        assert match is not None, f"not a component reference: {schema['$ref']}"
        schema = components[match.group(1)]
    return schema


def problems(schema: dict[str, Any], value: Any, components: dict[str, Any], path: str = "$") -> list[str]:
    """What is wrong with ``value`` under an OpenAPI 3.0 schema: type, required, properties (an object that
    lists its properties takes no others unless ``additionalProperties`` says so: an undocumented field is
    drift), items, nullable, enum, format (date, date-time, uuid), allOf and ``$ref``. Empty when it fits."""
    schema = resolve(schema, components)
    if value is None:
        return [] if schema.get("nullable") else [f"{path}: null but not nullable"]
    found = [p for sub in schema.get("allOf", []) for p in problems(sub, value, components, path)]
    kind = schema.get("type")
    wrong_type = kind is not None and ((isinstance(value, bool) and kind != "boolean")
                                       or not isinstance(value, TYPES[kind]))
    if wrong_type:
        return [*found, f"{path}: {type(value).__name__} {value!r:.60}, expected {kind}"]
    if "enum" in schema and value not in schema["enum"]:
        found.append(f"{path}: {value!r} not one of {schema['enum']}")
    if isinstance(value, str) and "format" in schema:
        found.extend(_format_problem(schema["format"], value, path))
    if isinstance(value, dict):
        properties: dict[str, Any] = schema.get("properties", {})
        found.extend(f"{path}: missing required {name!r}" for name in schema.get("required", []) if name not in value)
        extra = schema.get("additionalProperties", "properties" not in schema)
        for name, item in value.items():
            if name in properties:
                found.extend(problems(properties[name], item, components, f"{path}.{name}"))
            elif extra is False:
                found.append(f"{path}: undocumented field {name!r}")
            elif isinstance(extra, dict):
                found.extend(problems(extra, item, components, f"{path}.{name}"))
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            found.extend(problems(schema["items"], item, components, f"{path}[{index}]"))
    return found


def _format_problem(fmt: str, value: str, path: str) -> list[str]:
    parsers: dict[str, Callable[[str], object]] = {"date": date.fromisoformat, "date-time": datetime.fromisoformat,
                                                   "uuid": uuid.UUID}
    parse = parsers.get(fmt)
    if parse is None:
        return []
    try:
        parse(value)
    except ValueError:
        return [f"{path}: {value!r} is not a {fmt}"]
    return []


def fits(doc: dict[str, Any], method: str, template: str, answer: Any, status: int = 200) -> Any:
    """The answer's JSON, once it has the status expected, is JSON (or FHIR JSON) as documented, and fits the schema
    the OpenAPI document gives for ``method template`` and that status (``template`` as the document names it: the
    full path)."""
    assert answer.status_code == status, f"{method} {template}: {answer.status_code} {answer.text[:300]}"
    media_type = answer.headers["Content-Type"].split(";")[0].strip()
    assert media_type in ("application/json", "application/fhir+json"), media_type  # FHIR routes: the latter
    content = doc["paths"][template][method.lower()]["responses"][str(status)]["content"]
    assert media_type in content, f"{method} {template} {status}: {media_type} is not documented"
    body = answer.json()
    found = problems(content[media_type]["schema"], body, doc["components"]["schemas"])
    assert found == [], f"{method} {template} {status} does not fit its schema: {found}"
    return body
