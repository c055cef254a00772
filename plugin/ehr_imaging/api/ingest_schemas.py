"""The contracts (api/schemas.Contract) of the ingest routes (api/repair.py)."""

from __future__ import annotations

from .schemas import Contract, integer, obj, ok

RECONCILE = Contract(ok(obj({"studies_in_orthanc": integer(), "pages": integer(), "queued_for_ingest": integer(),
                             "queued_as_deleted": integer()})))
