"""REST uploads through the plugin's API port vs plain Orthanc's ``POST /instances``, side by side.

A plugin stack and a plain Orthanc with the same settings run at once; every measure starts from an empty
archive. Measured, the same 100 CT slices (about 0.5 MB each) each time
(request bodies built before the clock starts, so the client's multipart encoding is not counted):

- ``upload`` one file per request (multipart field ``file``, a technician's token) vs ``POST /instances`` × 100;
- ``upload-multiple`` of the 100 in one request vs ``POST /instances`` × 100, one client, and with 4 clients.

Each comparison is a pair run back to back, who goes first alternating; printed: the medians (ms per file) and
the median of the rounds' ratios (plain time / plugin time: 1.0 is as fast as Orthanc), by wall time and by
Orthanc's CPU time (its process, the plugin's Python included).
Run alone with ``python -m benchmarks.uploads [--rounds N] [--files N]``; ``make bench`` runs it last.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from urllib3 import encode_multipart_formdata

from benchmarks.gdcm import orthanc_cpu_seconds, paired_ratio
from benchmarks.stacks import SAMPLES, start
from ehr_stack.stack import Stack
from ehr_stack.tokens import mint_dev_token
from samples.build_samples import build_samples
from tests.waiting import eventually

UPLOAD = "/api/v1/dicom/upload"
Files = list[tuple[str, bytes]]


def ct_files(count: int) -> Files:
    manifest = build_samples(SAMPLES)
    ct = next(s for s in manifest["studies"] if s["modality"] == "CT" and s["instance_count"] >= count)
    paths = [SAMPLES / f for f in ct["series"][0]["files"]][:count]
    return [(Path(p).name, Path(p).read_bytes()) for p in paths]


def empty(stack: Stack, session: requests.Session) -> None:
    """No study left in Orthanc (the plugin stack: deleted through its filter as an AdminUsers account)."""
    for study in session.get(f"{stack.url}/studies", timeout=30).json():
        session.delete(f"{stack.url}/studies/{study}", timeout=120).raise_for_status()
    eventually(lambda: session.get(f"{stack.url}/studies", timeout=30).json() == [], timeout=60,
               what="an empty archive")


def post_instances(stack: Stack, session: requests.Session, files: Files, clients: int = 1) -> None:
    def post(item: tuple[str, bytes]) -> None:
        answer = session.post(f"{stack.url}/instances", data=item[1], timeout=60,
                              headers={"Content-Type": "application/dicom"})
        answer.raise_for_status()

    if clients == 1:
        for item in files:
            post(item)
    else:
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(post, files))


def form(field: str, files: Files) -> tuple[bytes, str]:
    """A multipart/form-data body and its Content-Type, built before the clock starts (the client's work)."""
    body, content_type = encode_multipart_formdata([(field, (name, data, "application/dicom"))
                                                    for name, data in files])
    return body, content_type


def upload_each(stack: Stack, session: requests.Session, forms: list[tuple[bytes, str]]) -> None:
    for body, content_type in forms:
        answer = session.post(f"{stack.api_url}{UPLOAD}", data=body, headers={"Content-Type": content_type},
                              timeout=60)
        if answer.status_code != 200:
            raise RuntimeError(f"upload: {answer.status_code} {answer.text[:300]}")


def upload_multiple(stack: Stack, session: requests.Session, body: tuple[bytes, str], count: int) -> None:
    answer = session.post(f"{stack.api_url}{UPLOAD}-multiple", data=body[0], headers={"Content-Type": body[1]},
                          timeout=600)
    if answer.status_code != 200 or answer.json()["successful"] != count:
        raise RuntimeError(f"upload-multiple: {answer.status_code} {answer.text[:300]}")


def measured(stack: Stack, session: requests.Session, call: Callable[[], None]) -> tuple[float, float]:
    """Wall seconds of ``call`` into an emptied archive, and the CPU seconds Orthanc (the plugin's Python
    included) spent meanwhile: less sensitive than wall time to the other processes of a shared machine."""
    empty(stack, session)
    began, cpu = time.perf_counter(), orthanc_cpu_seconds(stack)
    call()
    return time.perf_counter() - began, orthanc_cpu_seconds(stack) - cpu


def run(rounds: int = 5, count: int = 100) -> dict[str, float]:
    """Prints each pair's medians and ratios; returns the wall-time ratios (plain / plugin seconds)."""
    files = ct_files(count)
    singles, several = [form("file", [item]) for item in files], form("files", files)
    plugin, plain = start(True), start(False)
    try:
        admin, open_session, ehr = requests.Session(), requests.Session(), requests.Session()
        admin.auth = plugin.admin_auth
        token = mint_dev_token(plugin, role="technician", subject="bench-uploads", ttl_seconds=3600)
        ehr.headers["Authorization"] = f"Bearer {token}"
        sides: dict[str, tuple[Stack, requests.Session, Callable[[], None]]] = {
            "upload": (plugin, admin, lambda: upload_each(plugin, ehr, singles)),
            "upload-multiple": (plugin, admin, lambda: upload_multiple(plugin, ehr, several, count)),
            "POST /instances": (plain, open_session, lambda: post_instances(plain, open_session, files)),
            "POST /instances, 4 clients": (plain, open_session,
                                           lambda: post_instances(plain, open_session, files, clients=4)),
        }
        # Each comparison is a pair run back to back (who goes first alternates), so a swing of the machine
        # hits both sides of it; the ratios are medians of the rounds' own ratios.
        pairs = [("upload", "POST /instances"), ("upload-multiple", "POST /instances"),
                 ("upload-multiple", "POST /instances, 4 clients")]
        for _, _, call in sides.values():  # warm-up, not counted
            call()
        wall: dict[tuple[str, str], list[tuple[float, float]]] = {pair: [] for pair in pairs}
        cpu: dict[tuple[str, str], list[tuple[float, float]]] = {pair: [] for pair in pairs}
        for round_no in range(rounds):
            for pair in pairs:
                order = pair if round_no % 2 == 0 else pair[::-1]
                got = {name: measured(*sides[name]) for name in order}
                wall[pair].append((got[pair[0]][0], got[pair[1]][0]))
                cpu[pair].append((got[pair[0]][1], got[pair[1]][1]))
    finally:
        for stack in (plugin, plain):
            stack.stop()
            shutil.rmtree(stack.config.var_dir, ignore_errors=True)
    print(f"REST uploads of {count} CT slices (0.5 MB each) into an empty archive, {rounds} rounds, each pair back"
          " to back:")
    ratios = {}
    for pair in pairs:
        ours, theirs = (statistics.median(side) for side in zip(*wall[pair], strict=True))
        ratio, low, high = paired_ratio([p for p, _ in wall[pair]], [q for _, q in wall[pair]])
        cpu_ratio, cpu_low, cpu_high = paired_ratio([p for p, _ in cpu[pair]], [q for _, q in cpu[pair]])
        ours_cpu, theirs_cpu = (statistics.median(side) for side in zip(*cpu[pair], strict=True))
        ratios[f"{pair[0]} / {pair[1]}"] = ratio
        print(f"  {pair[0]} vs {pair[1]}: {ours / count * 1e3:.1f} vs {theirs / count * 1e3:.1f} ms/file"
              f"   ratio {ratio:.2f} (rounds {low:.2f} to {high:.2f})")
        print(f"    Orthanc CPU {ours_cpu / count * 1e3:.2f} vs {theirs_cpu / count * 1e3:.2f} ms/file"
              f"   ratio {cpu_ratio:.2f} (rounds {cpu_low:.2f} to {cpu_high:.2f})")
    print("  (ratio: plain seconds / plugin seconds, 1.00 = as fast as plain Orthanc; target for upload-multiple"
          " vs POST /instances: >= 0.90)")
    return ratios


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--files", type=int, default=100)
    args = parser.parse_args()
    run(args.rounds, args.files)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
