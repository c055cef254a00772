"""Small pure helpers: the admin sign-in redirect target, database URLs, schema names."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import ArgumentError

from ehr_imaging.api.admin_session import DEFAULT_LANDING, safe_next
from ehr_imaging.store.db import normalize_url
from ehr_imaging.store.migrations import check_schema_name


@pytest.mark.parametrize(
    "target",
    ["/app/explorer.html", "/", "/ui/app/#/studies?x=1", "/a/b?next=//evil.example", "/%2F%2Fevil.example"],
)
def test_safe_next_keeps_same_origin_paths(target: str) -> None:
    assert safe_next(target) == target


@pytest.mark.parametrize(
    "target",
    [
        None,
        "",
        "https://evil.example/",
        "http://evil.example",
        "//evil.example",
        "//evil.example/app/explorer.html",
        "///evil.example",
        "/\\evil.example",
        "\\\\evil.example",
        "\\/evil.example",
        "/app\\..\\x",
        "javascript:alert(1)",
        "evil.example",
        " /app/explorer.html",
        # Browsers drop tabs and newlines inside URLs: each of these becomes "//evil.example".
        "/\t/evil.example",
        "/\n/evil.example",
        "/\r\n/evil.example",
        # Control characters could also split the Location header.
        "/app\r\nSet-Cookie: x=1",
        "/app\x00",
        "/app\x7f",
    ],
)
def test_safe_next_refuses_anything_else(target: str | None) -> None:
    assert safe_next(target) == DEFAULT_LANDING


def test_default_landing_is_itself_safe() -> None:
    assert safe_next(DEFAULT_LANDING) == DEFAULT_LANDING


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u:pw@h:5432/db", "postgresql+psycopg://u:pw@h:5432/db"),
        ("postgres://u:pw@h/db", "postgresql+psycopg://u:pw@h/db"),
        ("postgresql://h/db", "postgresql+psycopg://h/db"),
        ("postgresql://u:pw@h/db?sslmode=require", "postgresql+psycopg://u:pw@h/db?sslmode=require"),
        # An explicit driver is kept.
        ("postgresql+psycopg://u:pw@h/db", "postgresql+psycopg://u:pw@h/db"),
        ("postgresql+psycopg2://u:pw@h/db", "postgresql+psycopg2://u:pw@h/db"),
        ("sqlite:///x.db", "sqlite:///x.db"),
        # The password is kept (not "***"), with its special characters still escaped.
        ("postgresql://u:p%40ss%2Fw%3A@h/db", "postgresql+psycopg://u:p%40ss%2Fw%3A@h/db"),
    ],
)
def test_normalize_url(url: str, expected: str) -> None:
    assert normalize_url(url) == expected


def test_normalize_url_refuses_garbage() -> None:
    with pytest.raises(ArgumentError, match="parse"):
        normalize_url("not a url")


@pytest.mark.parametrize("schema", ["ehr_imaging", "public", "_x", "a", "a1_b2", "a" * 63])
def test_valid_schema_names(schema: str) -> None:
    check_schema_name(schema)  # no exception


@pytest.mark.parametrize(
    "schema",
    [
        "",
        "a" * 64,
        "Ehr",
        "1abc",
        "ehr-imaging",
        "ehr imaging",
        "ehr.imaging",
        'ehr"; DROP SCHEMA public CASCADE; --',
        "ehr\n",
        "ehr\x00",
        "é",
        "ehr_imaging ",
    ],
)
def test_invalid_schema_names(schema: str) -> None:
    with pytest.raises(ValueError, match="invalid schema name"):
        check_schema_name(schema)
