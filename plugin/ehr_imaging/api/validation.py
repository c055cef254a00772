"""Query-string parsing shared by the routes: a bad value answers 422 naming the parameter."""

from __future__ import annotations

from ..core import errors


def query_int(query: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    value = query.get(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise errors.Invalid(f"{name}: must be an integer") from None
    if not low <= number <= high:
        raise errors.Invalid(f"{name}: must be between {low} and {high}")
    return number


def query_bool(query: dict[str, str], name: str) -> bool | None:
    value = query.get(name)
    if value is None or value == "":
        return None
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise errors.Invalid(f"{name}: must be true or false")
