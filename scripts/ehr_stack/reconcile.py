"""``make reconcile``: the paged repair of a running stack (``POST /api/v1/dicom/reconcile`` as an admin).

The plugin compares every study Orthanc holds with what it recorded, page by page, and hands the differences to
its ingest worker (README "Matching studies to orders"); this prints what it found.
"""

from __future__ import annotations

from typing import Any

import requests

from .stack import Stack
from .tokens import mint_dev_token


def reconcile(stack: Stack, *, timeout: float = 3600) -> dict[str, Any]:
    token = mint_dev_token(stack, role="admin", subject="make-reconcile", ttl_seconds=600)
    answer = requests.post(f"{stack.url}/api/v1/dicom/reconcile", headers={"Authorization": f"Bearer {token}"},
                           timeout=timeout)
    answer.raise_for_status()
    result: dict[str, Any] = answer.json()
    return result
