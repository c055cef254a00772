"""The audit of DICOM queries and retrievals (C-FIND, modality worklist, C-MOVE): one row per request.

Written before the request is answered. While PostgreSQL is away the row goes to the node's local audit
spool instead (fsync'd before the answer; store/spool_replay.py inserts it, in order, once PostgreSQL is
back; rows arriving before that queue behind it in the spool, so the table keeps their order), so a
modality's query is answered and still on record; without a spool it is refused.
"""

from __future__ import annotations

import time
from dataclasses import asdict

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from ..core.audit_record import DIMSE
from ..core.dimse import DimseEvent
from ..core.errors import Unavailable
from .access_models import DimseAudit
from .audit_spool import AuditSpool
from .db import UNAVAILABLE
from .spool_replay import dimse_payload

# PostgreSQL refused or timed out, or the fast-fail's verdict (core.errors.Unavailable): spool, do not refuse.
_SPOOL_WHEN: tuple[type[Exception], ...] = (*UNAVAILABLE, Unavailable)


def record(engine: Engine, event: DimseEvent, node: str = "", spool: AuditSpool | None = None) -> None:
    """Write the row now: the caller answers only once its request is on record (in PostgreSQL, or durably
    in ``spool`` when PostgreSQL is unavailable)."""
    at = time.time()
    if spool is not None and spool.behind():  # rows spooled earlier are not in yet: keep the order, queue behind
        spool.append(DIMSE, dimse_payload(asdict(event), node, at), sync=True)
        return
    try:
        with Session(engine) as session, session.begin():
            session.add(DimseAudit(**asdict(event), node=node or None))
    except _SPOOL_WHEN:
        if spool is None:
            raise
        spool.append(DIMSE, dimse_payload(asdict(event), node, at), sync=True)
