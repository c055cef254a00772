"""C-STORE of a 300-slice 512×512 CT (issue 12 item 6), three servers side by side: the plugin stack, plain
Orthanc with the same settings (both with ``TCP_NODELAY=1``) and Debian's default Orthanc (the package's own
configuration, benchmarks/debian_default.py); then the order linked after the study turns stable.

The CT is the sample set's (``samples/build_samples.py --ct-slices 300``: pydicom-data's real 512×512 slice laid
out as 300 distinct slices, about 157 MB), built once into ``var/bench-samples/ct-300`` (never the tests' samples).
Each round stores it into each server in turn, one association from the same modality (storescu with
``TCP_NODELAY=1`` on its side, ehr_stack.dicom), into an emptied archive, the disk synced first (so a turn does
not pay for the previous one's writeback); who goes first rotates. Printed:
instances/s (medians), Orthanc's CPU ms per instance (``/proc``: steadier on a shared machine), and the ratios
as the median of the rounds' own ratios (a round's three stores run back to back).

Then ``link_rounds`` times on the plugin stack: an order is pushed (a patient and an accession of its own), the
CT stored for it with fresh UIDs, and both Orthanc's ``IsStable`` for the study and ``GET /orders/{id}`` polled
until the study is stable and linked: the seconds from the one to the other (target ≤ 1 s), and from the last
C-STORE answer to stable (StableAge and Orthanc's own check).
``python -m benchmarks.ct300 [--rounds N] [--link-rounds N]``; ``make bench`` runs it (part ``ct300``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import requests
from pydicom.uid import generate_uid

from benchmarks import stacks
from benchmarks.debian_default import DebianDefault
from benchmarks.gdcm import paired_ratio, process_cpu_seconds
from benchmarks.targets import Figure
from ehr_stack.dicom import storescu
from ehr_stack.stack import REPO, Stack
from ehr_stack.tokens import mint_dev_token
from samples.build_samples import build_samples
from tests.conftest import stack_dir
from tests.integration.helpers import order_fields

SLICES = 300
BENCH_SAMPLES = REPO / "var" / "bench-samples"
API = "/api/v1/dicom"
POLL = 0.05  # seconds between two looks at the study's stability and the order's link


@dataclass
class Server:
    name: str
    url: str
    dicom_port: int
    called_aet: str
    calling_aet: str
    pid: int
    session: requests.Session


RUNTIME = "python runtime only"  # orthanc-python loaded, a script that does nothing (benchmarks/stacks.py)


def ct_files(slices: int = SLICES) -> list[Path]:
    """The sample CT's files with ``slices`` slices (built on first use, then cached by its manifest)."""
    folder = BENCH_SAMPLES / f"ct-{slices}"
    manifest = build_samples(folder, ct_slices=slices)
    ct = next(s for s in manifest["studies"] if s["key"] == "ct_head")
    return [folder / f for f in ct["series"][0]["files"]]


def server(name: str, stack: Stack) -> Server:
    session = requests.Session()
    if stack.config.with_plugin:
        session.auth = stack.admin_auth  # deletes go through the filter as an AdminUsers account
    pid = stack.orthanc_pid()
    if pid is None:
        raise RuntimeError(f"{name}: Orthanc is not running")
    return Server(name, stack.url, stack.config.dicom_port, stack.config.orthanc_aet, stack.config.modality_aet, pid,
                  session)


def empty(target: Server) -> None:
    for study in target.session.get(f"{target.url}/studies", timeout=30).json():
        target.session.delete(f"{target.url}/studies/{study}", timeout=120).raise_for_status()
    left = target.session.get(f"{target.url}/studies", timeout=30).json()
    if left:
        raise RuntimeError(f"{target.name}: {len(left)} studies left after emptying")


def store(target: Server, files: list[Path]) -> tuple[float, float]:
    """Wall seconds of one association storing ``files``, and the CPU seconds the server spent meanwhile."""
    began, cpu = time.perf_counter(), process_cpu_seconds(target.pid)
    result = storescu(files, host="127.0.0.1", port=target.dicom_port, calling_aet=target.calling_aet,
                      called_aet=target.called_aet, timeout=900)
    elapsed, cpu = time.perf_counter() - began, process_cpu_seconds(target.pid) - cpu
    if result.returncode != 0:
        raise RuntimeError(f"{target.name}: storescu {result.returncode}: {result.stderr[-500:]}")
    return elapsed, cpu


def rotated(names: list[str], round_no: int) -> list[str]:
    first = round_no % len(names)
    return names[first:] + names[:first]


def cstore(servers: dict[str, Server], files: list[Path], rounds: int) -> dict[str, Figure]:
    wall: dict[str, list[float]] = {name: [] for name in servers}
    cpu: dict[str, list[float]] = {name: [] for name in servers}
    for round_no in range(rounds):
        for name in rotated(list(servers), round_no):
            empty(servers[name])
            os.sync()  # the previous store's 157 MB written out first: its writeback slows nobody's turn
            seconds, cpu_seconds = store(servers[name], files)
            wall[name].append(seconds)
            cpu[name].append(cpu_seconds)
    n = len(files)
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"C-STORE of the {n}-slice 512x512 CT (one association, {rounds} rounds; load average {load}):")
    for name in servers:
        print(f"  {name:24} {n / statistics.median(wall[name]):6.1f} instances/s"
              f"   Orthanc CPU {statistics.median(cpu[name]) / n * 1e3:.2f} ms/instance"
              f"   rounds {', '.join(f'{s:.2f}' for s in wall[name])} s")
    plain, plain_low, plain_high = paired_ratio(wall["plugin"], wall["plain"])  # as rates: plugin / plain
    debian, debian_low, debian_high = paired_ratio(wall["plugin"], wall["debian default"])
    cpu_ratio, _, _ = paired_ratio(cpu["plain"], cpu["plugin"])
    print(f"  plugin / plain {plain:.2f} (rounds {plain_low:.2f} to {plain_high:.2f}; target >= 0.95)"
          f"   Orthanc CPU plugin / plain {cpu_ratio:.2f}")
    print(f"  plugin / Debian's default Orthanc {debian:.2f} (rounds {debian_low:.2f} to {debian_high:.2f};"
          " target >= 8)")
    floor, floor_low, floor_high = paired_ratio(wall[RUNTIME], wall["plain"])
    floor_cpu, _, _ = paired_ratio(cpu["plain"], cpu[RUNTIME])
    print(f"  {RUNTIME} / plain {floor:.2f} (rounds {floor_low:.2f} to {floor_high:.2f})   Orthanc CPU"
          f" {floor_cpu:.2f}: the Python runtime's floor, nothing of the plugin's")
    conditions = f"{n} slices, median of {rounds}"
    return {"cstore300_ratio": Figure(plain, f"{conditions}, rounds {plain_low:.2f}-{plain_high:.2f}"),
            "cstore300_vs_debian": Figure(debian, f"{conditions}, rounds {debian_low:.1f}-{debian_high:.1f}"),
            "cstore300_cpu_ratio": Figure(cpu_ratio, conditions),
            "cstore300_runtime_floor": Figure(floor, f"{conditions}, rounds {floor_low:.2f}-{floor_high:.2f}")}


def fresh_copy(files: list[Path], folder: Path, fields: dict[str, Any]) -> tuple[list[Path], str]:
    """The CT rewritten for the order's patient and accession, with new study, series and instance UIDs."""
    folder.mkdir(parents=True, exist_ok=True)
    study, series, out = generate_uid(), generate_uid(), []
    for number, source in enumerate(files, start=1):
        ds = pydicom.dcmread(source)
        ds.PatientID, ds.AccessionNumber = fields["mrn"], fields["accession_number"]
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        out.append(folder / f"{number:04d}.dcm")
        ds.save_as(out[-1], enforce_file_format=True)
    return out, str(study)


def linked_after_stable(plugin: Stack, files: list[Path], work: Path, rounds: int) -> dict[str, Figure]:
    """Each round: an order, its study stored; polled every ``POLL`` s until both Orthanc says the study is stable
    (``IsStable``) and ``GET /orders/{id}`` shows it linked. The seconds from one to the other (within a poll)."""
    target = server("plugin", plugin)
    stable_age = float(plugin.orthanc_config().get("StableAge", 60))
    ehr = requests.Session()
    ehr.headers["Authorization"] = "Bearer " + mint_dev_token(plugin, role="ehr-service", subject="bench-ct300",
                                                             ttl_seconds=3600)
    after, stable = [], []
    for round_no in range(rounds):
        empty(target)
        fields, order_id = order_fields(modality="CT"), str(uuid.uuid4())
        copy, study = fresh_copy(files, work / f"link-{round_no}", fields)
        put = ehr.put(f"{plugin.api_url}{API}/orders/{order_id}", json=fields, timeout=60)
        if put.status_code != 201:
            raise RuntimeError(f"order refused: {put.status_code} {put.text[:300]}")
        store(target, copy)
        stored = time.perf_counter()
        [orthanc_id] = target.session.get(f"{target.url}/studies", timeout=30).json()
        stable_at = linked_at = None
        while stable_at is None or linked_at is None:
            if stable_at is None and target.session.get(f"{target.url}/studies/{orthanc_id}",
                                                        timeout=30).json()["IsStable"]:
                stable_at = time.perf_counter()
            if linked_at is None:
                answer = ehr.get(f"{plugin.api_url}{API}/orders/{order_id}", timeout=60)
                if answer.status_code == 200 and answer.json().get("study_instance_uid") == study:
                    linked_at = time.perf_counter()
            if time.perf_counter() > stored + stable_age + 120:
                raise RuntimeError(f"order {order_id}: stable at {stable_at}, linked at {linked_at}; given up")
            time.sleep(POLL)
        after.append(linked_at - stable_at)
        stable.append(stable_at - stored)
        shutil.rmtree(copy[0].parent, ignore_errors=True)
    median = statistics.median(after)
    print(f"Order linked after its {len(files)}-slice study turned stable (Orthanc's IsStable; StableAge"
          f" {stable_age:.0f} s), {rounds} rounds, polled every {POLL} s: median {median:.2f} s (rounds"
          f" {', '.join(f'{s:.2f}' for s in after)}; target <= 1 s); stable"
          f" {', '.join(f'{s:.2f}' for s in stable)} s after the last C-STORE answer, so linked"
          f" {', '.join(f'{s + a:.2f}' for s, a in zip(stable, after, strict=True))} s after it")
    return {"link_after_stable_s": Figure(median, f"median of {rounds}"),
            "stable_after_store_s": Figure(statistics.median(stable), f"StableAge {stable_age:.0f} s")}


def run(rounds: int = 3, link_rounds: int = 3, slices: int = SLICES, debian_nodelay: bool = False) -> dict[str, Figure]:
    """Prints the C-STORE rates and ratios and the link time; returns them as figures (benchmarks/targets.py)."""
    files = ct_files(slices)
    work = stack_dir()
    debian = DebianDefault(work / "debian", nodelay=debian_nodelay)
    stacks.remember(debian.stop, work)
    try:
        plugin, plain, runtime = stacks.start(True), stacks.start(False), stacks.start_runtime_only()
        debian.start()
        assert debian.pid is not None
        servers = {"plugin": server("plugin", plugin), "plain": server("plain", plain),
                   RUNTIME: server(RUNTIME, runtime),
                   "debian default": Server("debian default", debian.url, debian.dicom_port, debian.orthanc_aet,
                                            plugin.config.modality_aet, debian.pid, requests.Session())}
        figures = cstore(servers, files, rounds)
        for name in ("plain", RUNTIME, "debian default"):
            empty(servers[name])  # their disk back before the link rounds
        debian.stop()
        plain.stop()
        runtime.stop()
        if link_rounds:
            figures.update(linked_after_stable(plugin, files, work, link_rounds))
        return figures
    finally:
        stacks.stop_all()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--link-rounds", type=int, default=3, help="orders linked after stable (0: none)")
    parser.add_argument("--slices", type=int, default=SLICES)
    parser.add_argument("--debian-nodelay", action="store_true",
                        help="Debian's default Orthanc with TCP_NODELAY=1 after all (how much of the gap that is)")
    args = parser.parse_args()
    run(args.rounds, args.link_rounds, args.slices, args.debian_nodelay)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
