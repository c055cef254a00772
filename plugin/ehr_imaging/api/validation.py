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


def query_page(query: dict[str, str], *, default_limit: int = 50, max_limit: int = 500) -> tuple[int, int]:
    """``limit`` and ``offset`` of a list route."""
    return (query_int(query, "limit", default_limit, 1, max_limit), query_int(query, "offset", 0, 0, 10**9))


def query_choice(query: dict[str, str], name: str, choices: tuple[str, ...]) -> str | None:
    """One of a fixed vocabulary, or None when absent."""
    value = query.get(name) or None
    if value is not None and value not in choices:
        raise errors.Invalid(f"{name}: must be one of {', '.join(choices)}")
    return value


def query_bool(query: dict[str, str], name: str) -> bool | None:
    value = query.get(name)
    if value is None or value == "":
        return None
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise errors.Invalid(f"{name}: must be true or false")
