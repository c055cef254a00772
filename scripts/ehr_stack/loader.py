"""Loads the sample studies into a running stack, as a modality would (C-STORE)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from samples.build_samples import build_samples

from .dicom import group_by_transfer_syntax, storescu
from .stack import Stack


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


def load_samples(stack: Stack, say: Callable[[str], Any]) -> dict[str, Any]:
    """Build the samples (cached) and store every valid study; storing twice is harmless."""
    out = samples_dir(stack)
    manifest = build_samples(out)
    count = store_studies(stack, manifest, out)
    say(f"loaded {len(manifest['studies'])} sample studies ({count} instances) by C-STORE")
    return manifest
