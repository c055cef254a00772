"""The declarative base of the plugin's SQLAlchemy models and the server defaults they share.

Its own module so that the models can be split by area (store/models.py, store/deletion_models.py) without
an import cycle; every model shares this ``Base.metadata`` (store/models.py imports them all).
"""

from __future__ import annotations

from typing import Any, ClassVar

from sqlalchemy import Text, text
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {str: Text()}


# Server defaults (the DEFAULT clauses of the migrations); the Python defaults next to them fill new objects.
ZERO, FALSE, TRUE = text("0"), text("false"), text("true")
EMPTY_JSON_LIST, EMPTY_JSON_OBJECT, EMPTY_TEXT_ARRAY = text("'[]'::jsonb"), text("'{}'::jsonb"), text("'{}'::text[]")
