"""Loads the sample studies into a running stack, as a modality would (C-STORE)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from samples.build_samples import build_samples

from .dicom import group_by_transfer_syntax, storescu
from .stack import Stack
from .tokens import mint_dev_token


def samples_dir(stack: Stack) -> Path:
    return stack.config.samples_dir or stack.config.var_dir / "samples"


def store_studies(stack: Stack, manifest: dict[str, Any], root: Path) -> int:
    """C-STORE every file of the manifest's studies; one association per transfer syntax."""
    groups = group_by_transfer_syntax(
        (series["transfer_syntax"], root / f)
        for study in manifest["studies"] for series in study["series"] for f in series["files"]
    )
    for syntax, files in groups.items():
        result = storescu(
            files, host="127.0.0.1", port=stack.config.dicom_port, transfer_syntax=syntax,
            calling_aet=stack.config.modality_aet, called_aet=stack.config.orthanc_aet,
        )
        if result.returncode != 0:
            raise RuntimeError(f"storescu failed ({result.returncode}): {result.stderr[-2000:]}")
    return sum(len(files) for files in groups.values())


def push_orders(stack: Stack, orders: list[dict[str, Any]]) -> None:
    """PUT each order as the EHR does (idempotent)."""
    token = mint_dev_token(stack, role="ehr-service", subject="sample-loader", ttl_seconds=600)
    with requests.Session() as http:
        http.headers["Authorization"] = f"Bearer {token}"
        http.verify, http.trust_env = stack.verify, False  # the stack's CA under EHR_TLS, not REQUESTS_CA_BUNDLE
        for order in orders:
            fields = {k: v for k, v in order.items() if k != "order_id"}
            answer = http.put(f"{stack.url}/api/v1/dicom/orders/{order['order_id']}", json=fields, timeout=30)
            if answer.status_code not in (200, 201):
                raise RuntimeError(f"order {order['order_id']}: {answer.status_code} {answer.text}")


def load_samples(stack: Stack, say: Callable[[str], Any]) -> dict[str, Any]:
    """Build the samples (cached), push their orders, then store every study; repeating is harmless."""
    out = samples_dir(stack)
    manifest = build_samples(out)
    push_orders(stack, manifest["orders"])
    count = store_studies(stack, manifest, out)
    say(f"loaded {len(manifest['orders'])} orders and {len(manifest['studies'])} sample studies"
        f" ({count} instances, by C-STORE)")
    return manifest
