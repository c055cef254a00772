"""Ingest, QIDO and WADO-RS with the plugin loaded vs plain Orthanc 1.10.1, side by side; then C-STORE with
GDCM's decoder plugin loaded vs not (benchmarks/gdcm.py).

Both servers run at once on this machine and the rounds alternate, so machine noise hits both;
the figures that matter are the ratios (plugin / plain). Prints medians; exits 0 unless a server fails.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

import requests

from benchmarks import archive_scale, gdcm, studies_at_scale, uploads, viewer_cold
from benchmarks.stacks import SAMPLES, start
from ehr_stack.dicom import storescu
from ehr_stack.stack import Stack
from ehr_stack.tokens import mint_dev_token
from samples.build_samples import build_samples


def session_for(stack: Stack) -> requests.Session:
    """The plugin stack is reached as an admin (basic auth through the filter); plain Orthanc is open."""
    session = requests.Session()
    if stack.config.with_plugin:
        session.auth = stack.admin_auth
    return session


def ingest_seconds(stack: Stack, session: requests.Session, files: list[Any]) -> float:
    for study in session.get(f"{stack.url}/studies", timeout=30).json():
        session.delete(f"{stack.url}/studies/{study}", timeout=60)
    began = time.perf_counter()
    result = storescu(files, host="127.0.0.1", port=stack.config.dicom_port,
                      calling_aet=stack.config.modality_aet, called_aet=stack.config.orthanc_aet)
    elapsed = time.perf_counter() - began
    if result.returncode != 0:
        raise RuntimeError(result.stderr)
    return elapsed


def latencies(call: Callable[[], requests.Response], count: int) -> list[float]:
    out = []
    for _ in range(count):
        began = time.perf_counter()
        answer = call()
        out.append(time.perf_counter() - began)
        answer.raise_for_status()
    return out


def alternating(stacks: dict[str, Stack], round_no: int) -> list[tuple[str, Stack]]:
    """Who goes first changes every round, so warm caches and drift favour neither side."""
    items = list(stacks.items())
    return items if round_no % 2 == 0 else items[::-1]


def p(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    manifest = build_samples(SAMPLES)
    ct = next(s for s in manifest["studies"] if s["modality"] == "CT" and s["instance_count"] >= 100)
    files = [SAMPLES / f for f in ct["series"][0]["files"]]
    series_uid = ct["series"][0]["series_instance_uid"]
    sop_uid = ct["series"][0]["sop_instance_uids"][0]
    stacks = {"plugin": start(True), "plain": start(False)}
    try:
        sessions = {name: session_for(stack) for name, stack in stacks.items()}
        ingest: dict[str, list[float]] = {name: [] for name in stacks}
        for round_no in range(args.rounds):
            for name, stack in alternating(stacks, round_no):
                ingest[name].append(ingest_seconds(stack, sessions[name], files))
        qido: dict[str, list[float]] = {name: [] for name in stacks}
        wado: dict[str, list[float]] = {name: [] for name in stacks}
        frame = f"/dicom-web/studies/{ct['study_instance_uid']}/series/{series_uid}/instances/{sop_uid}/frames/1"
        for round_no in range(args.rounds):
            for name, stack in alternating(stacks, round_no):
                qido[name] += latencies(partial(
                    sessions[name].get, f"{stack.url}/dicom-web/studies",
                    params={"PatientID": ct["patient_id_dicom"]}, timeout=30), args.requests // args.rounds)
                wado[name] += latencies(partial(
                    sessions[name].get, stack.url + frame,
                    headers={"Accept": "multipart/related; type=application/octet-stream"}, timeout=30),
                    args.requests // args.rounds)
        n = len(files)
        rate = {name: n / statistics.median(v) for name, v in ingest.items()}
        fps = {name: 1 / statistics.median(v) for name, v in wado.items()}
        print(f"C-STORE ingest of {n} CT slices, median of {args.rounds} rounds (instances/s):")
        print(f"  plugin {rate['plugin']:.1f}   plain {rate['plain']:.1f}   ratio {rate['plugin'] / rate['plain']:.2f}")
        print("QIDO-RS studies?PatientID= latency (ms, p50 / p95):")
        for name in stacks:
            print(f"  {name:6} {p(qido[name], .5) * 1e3:.2f} / {p(qido[name], .95) * 1e3:.2f}")
        print(f"  p50 ratio {p(qido['plugin'], .5) / p(qido['plain'], .5):.2f}")
        print("WADO-RS single frame, sequential (frames/s from the median latency):")
        print(f"  plugin {fps['plugin']:.0f}   plain {fps['plain']:.0f}   ratio {fps['plugin'] / fps['plain']:.2f}")
        viewer_benchmark(stacks, ct, args)
        viewer_cold.run(stacks["plugin"])  # OHIF's first image, cold and warm (median of 5)
    finally:
        for stack in stacks.values():
            stack.stop()
            shutil.rmtree(stack.config.var_dir, ignore_errors=True)
    gdcm.run(args.rounds)  # C-STORE with and without GDCM's decoder, two more stacks once these are stopped
    studies_at_scale.run()  # GET /studies with 100,000 studies recorded
    uploads.run(args.rounds)  # REST upload / upload-multiple vs POST /instances (benchmarks/uploads.py)
    archive_scale.run(5_000)  # both stacks filled by C-STORE (alone: python -m benchmarks.archive_scale)
    return 0


FRAME_ACCEPT = "multipart/related; type=application/octet-stream"


def viewer_benchmark(stacks: dict[str, Stack], ct: dict[str, Any], args: argparse.Namespace) -> None:
    """What OHIF does, through the filter with a viewer token vs plain Orthanc with no filter at all:
    every frame of the CT (each a different instance, so the hierarchy check is exercised), 4 clients at
    once, and the study query through the scoped QIDO root vs Orthanc's own QIDO."""
    plugin = stacks["plugin"]
    admin = mint_dev_token(plugin, role="admin", subject="bench", ttl_seconds=600)
    issued = requests.post(f"{plugin.url}/api/v1/dicom/viewer-token", json={"study_uids": [ct["study_instance_uid"]]},
                           headers={"Authorization": f"Bearer {admin}"}, timeout=30)
    issued.raise_for_status()
    viewer = requests.Session()
    viewer.headers["Authorization"] = f"Bearer {issued.json()['token']}"
    sessions = {"plugin": viewer, "plain": requests.Session()}
    series = ct["series"][0]
    frames = [f"/dicom-web/studies/{ct['study_instance_uid']}/series/{series['series_instance_uid']}/instances/{sop}"
              "/frames/1" for sop in series["sop_instance_uids"]]
    qido_paths = {"plugin": "/ehr-imaging/dicom-web/studies", "plain": "/dicom-web/studies"}
    throughput: dict[str, list[float]] = {name: [] for name in stacks}
    qido: dict[str, list[float]] = {name: [] for name in stacks}

    def fetch(session: requests.Session, url: str) -> int:
        answer = session.get(url, headers={"Accept": FRAME_ACCEPT}, timeout=30)
        answer.raise_for_status()
        return len(answer.content)

    for round_no in range(args.rounds):
        for name, stack in alternating(stacks, round_no):
            urls = [stack.url + frame for frame in frames] * 3
            began = time.perf_counter()
            with ThreadPoolExecutor(4) as pool:
                list(pool.map(partial(fetch, sessions[name]), urls))
            throughput[name].append(len(urls) / (time.perf_counter() - began))
            qido[name] += latencies(partial(
                sessions[name].get, stack.url + qido_paths[name], params={"PatientID": ct["patient_id_dicom"]},
                timeout=30), args.requests // args.rounds)
    rate = {name: statistics.median(v) for name, v in throughput.items()}
    print(f"Viewer: WADO-RS frames of {len(frames)} instances, 4 clients (frames/s, median of {args.rounds}):")
    print(f"  viewer token through the filter {rate['plugin']:.0f}   plain {rate['plain']:.0f}"
          f"   ratio {rate['plugin'] / rate['plain']:.2f} (target >= 0.95)")
    print("Viewer: studies?PatientID= latency, scoped QIDO root vs Orthanc's QIDO (ms, p50 / p95):")
    for name in stacks:
        print(f"  {name:6} {p(qido[name], .5) * 1e3:.2f} / {p(qido[name], .95) * 1e3:.2f}")
    print(f"  p50 ratio {p(qido['plugin'], .5) / p(qido['plain'], .5):.2f}")


if __name__ == "__main__":
    raise SystemExit(main())
