"""The audit of DICOM queries and retrievals (C-FIND, modality worklist, C-MOVE): one row per request."""

from __future__ import annotations

from dataclasses import asdict

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from ..core.dimse import DimseEvent
from .access_models import DimseAudit


def record(engine: Engine, event: DimseEvent, node: str = "") -> None:
    """Write the row now: the caller answers only once its request is on record."""
    with Session(engine) as session, session.begin():
        session.add(DimseAudit(**asdict(event), node=node or None))
