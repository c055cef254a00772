"""The paged repair, for admins: ``POST /reconcile`` (``make reconcile``) compares every study Orthanc holds with
what the plugin recorded and hands the differences to the ingest worker (app/ingest_repair.py)."""

from __future__ import annotations

from ..app import ingest_repair
from .context import Api
from .router import Request, Response, json_response


def reconcile(api: Api, request: Request) -> Response:
    return json_response(ingest_repair.reconcile(api.services).as_json())
