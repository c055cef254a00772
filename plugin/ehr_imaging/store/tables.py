"""Every table of the schema on one ``Base.metadata``: the model modules register their tables when imported,
so what compares the schema with the models imports them all here (a model module added tomorrow included)."""

from __future__ import annotations

import importlib
import pkgutil

from sqlalchemy import MetaData

from . import model_base


def import_every_model() -> MetaData:
    package = __name__.rsplit(".", 1)[0]
    for module in pkgutil.iter_modules(importlib.import_module(package).__path__):
        importlib.import_module(f"{package}.{module.name}")
    return model_base.Base.metadata
