"""OHIF's first image through the filter, cold (a fresh browser profile) and warm (the profile of an earlier
visit: its HTTP and code caches), in headless Chromium with the e2e harness (tests/e2e/ohif_viewer.js).

Five kinds of visit, in turn (median of ``count`` each) so machine noise hits all: cold, cold with the
browser's ``Accept-Encoding: identity`` (the files as they are, as the site was served before its gzip
variants: the side-by-side ratio), warm, and the two cold ones again with the downloads limited to
``LINK_MBPS`` (DevTools' network emulation: a hospital LAN, where the bytes saved count; on loopback the
browser's own work dominates). Printed: the seconds from navigation to the first rendered image,
and what the page fetched meanwhile (requests that went to the network, bytes over the wire, decoded bytes),
and Orthanc's own CPU time per visit (``/proc``: the server's share, less sensitive to a busy machine).
``make bench`` runs it on its plugin stack; alone, ``python -m benchmarks.viewer_cold`` starts one of its own.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import requests

from benchmarks import stacks
from benchmarks.gdcm import orthanc_cpu_seconds
from ehr_stack.dicom import storescu
from ehr_stack.stack import REPO, Stack
from ehr_stack.tokens import mint_dev_token
from samples.build_samples import build_samples

SAMPLES = REPO / "var" / "test-samples"
HARNESS = REPO / "tests" / "e2e"
TARGET_SECONDS = 3.0  # issue 12: OHIF first image < 3 s cold


def viewer_url(stack: Stack) -> str:
    """The MR sample (two series, the study tests/e2e/test_ohif.py opens) stored, and its viewer URL."""
    manifest = build_samples(SAMPLES)
    study = next(s for s in manifest["studies"] if s["modality"] == "MR" and len(s["series"]) == 2)
    files = [SAMPLES / f for series in study["series"] for f in series["files"]]
    result = storescu(files, host="127.0.0.1", port=stack.config.dicom_port,
                      calling_aet=stack.config.modality_aet, called_aet=stack.config.orthanc_aet)
    if result.returncode != 0:
        raise RuntimeError(result.stderr)
    doctor = mint_dev_token(stack, role="doctor", subject="bench-viewer", ttl_seconds=3600)
    answer = requests.get(f"{stack.url}/api/v1/dicom/viewer-url/{study['study_instance_uid']}",
                          headers={"Authorization": f"Bearer {doctor}"}, timeout=30)
    answer.raise_for_status()
    return str(answer.json()["url"])


LINK_MBPS = 100
SLOW = f" {LINK_MBPS} Mbit/s"
KINDS = ("cold", "cold identity", "warm", "cold" + SLOW, "cold identity" + SLOW)


def visit(url: str, profile: Path | None, screenshot: Path, accept_encoding: str = "",
          mbps: int = 0) -> dict[str, Any]:
    """One browser start and one navigation to the first image; the harness's JSON outcome."""
    command = ["node", str(HARNESS / "ohif_viewer.js"), url, str(screenshot), "render"]
    if profile is not None:
        command.append(str(profile))
    environment = {**os.environ, "OHIF_ACCEPT_ENCODING": accept_encoding, "OHIF_THROTTLE_MBPS": str(mbps or "")}
    result = subprocess.run(command, capture_output=True, text=True, timeout=180, cwd=HARNESS, env=environment)
    lines = result.stdout.strip().splitlines()
    outcome: dict[str, Any] = json.loads(lines[-1]) if lines else {"ok": False, "error": result.stderr[-2000:]}
    if result.returncode != 0 or not outcome.get("ok"):
        raise RuntimeError(f"the viewer did not render: {outcome.get('error')}")
    return outcome


def run(stack: Stack | None = None, count: int = 5) -> dict[str, list[dict[str, Any]]]:
    """Median of ``count`` first images of each kind on ``stack`` (a plugin stack of its own if None);
    prints them and returns every outcome by kind."""
    own = stack is None
    if stack is None:
        stack = stacks.start(True)
    work = Path(tempfile.mkdtemp(prefix="ehr-viewer-bench-"))
    outcomes: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
    try:
        url = viewer_url(stack)
        warm_profile = work / "warm-profile"
        visit(url, warm_profile, work / "prime.png")  # the earlier visit the warm ones find in the cache
        for number in range(count):
            first = number % len(KINDS)
            for kind in KINDS[first:] + KINDS[:first]:  # who goes first changes every round
                profile = warm_profile if kind == "warm" else work / f"cold-{number}-{KINDS.index(kind)}"
                cpu = orthanc_cpu_seconds(stack)
                outcome = visit(url, profile, work / f"{number}.png", "identity" if "identity" in kind else "",
                                LINK_MBPS if kind.endswith(SLOW) else 0)
                outcome["orthanc_cpu_s"] = orthanc_cpu_seconds(stack) - cpu
                outcomes[kind].append(outcome)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if own:
            stack.stop()
            shutil.rmtree(stack.config.var_dir, ignore_errors=True)
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"Viewer: OHIF first image through the filter, headless Chromium, median of {count} "
          f"(target < {TARGET_SECONDS:.0f} s cold; load average {load}):")
    medians = {kind: statistics.median(o["elapsed_ms"] for o in runs) / 1000 for kind, runs in outcomes.items()}
    for kind, runs in outcomes.items():
        seconds = medians[kind]
        resources = [o["resources"] for o in runs]
        network = statistics.median(r["network"] for r in resources)
        entries = statistics.median(r["entries"] for r in resources)
        wire = statistics.median(r["transfer_bytes"] for r in resources) / 1e6
        decoded = statistics.median(r["decoded_bytes"] for r in resources) / 1e6
        site_done = statistics.median(r["site_done_ms"] for r in resources) / 1000
        waiting = statistics.median(r["site_fetch_ms"] for r in resources) / 1000
        cpu = statistics.median(o["orthanc_cpu_s"] for o in runs)
        spread = ", ".join(f"{o['elapsed_ms'] / 1000:.2f}" for o in runs)
        print(f"  {kind:27} {seconds:.2f} s ({spread})   {network:.0f} of {entries:.0f} requests to the network, "
              f"{wire:.1f} MB over the wire, {decoded:.1f} MB decoded; the viewer's files all in at "
              f"{site_done:.2f} s, {waiting:.2f} s spent fetching them (summed); Orthanc CPU {cpu:.2f} s")
    print(f"  cold / cold identity {medians['cold'] / medians['cold identity']:.2f}   "
          f"at {LINK_MBPS} Mbit/s {medians['cold' + SLOW] / medians['cold identity' + SLOW]:.2f}   "
          f"warm / cold {medians['warm'] / medians['cold']:.2f}")
    return outcomes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=5, help="cold and warm visits each (default 5)")
    args = parser.parse_args()
    run(count=args.count)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
