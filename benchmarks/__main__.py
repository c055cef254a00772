"""``make bench``: every benchmark in turn, then one table of issue 12's targets: target | measured | met?

The parts (``--only`` / ``BENCH_ONLY=`` picks some, by name, see benchmarks/targets.py ``PARTS``):
``basic`` (here: C-STORE of the 120-slice CT, QIDO and WADO-RS as an admin, then the viewer path with a viewer
token at 4 and 16 clients, plugin vs plain Orthanc 1.10.1), ``ct300`` (benchmarks/ct300.py: the 300-slice CT vs
plain and vs Debian's default Orthanc, the order linked after stable), ``viewer`` (OHIF's first image),
``gdcm``, ``studies`` (GET /studies at scale), ``uploads``, ``scale`` (the archive filled by C-STORE).
Servers run side by side and rounds alternate, so machine noise hits both sides; the figures that matter are
ratios. Each part has a time budget (``--part-timeout`` overrides it) and whatever it started is stopped after
it, budget or failure; a part that fails is reported and the next one runs. ``--quick``: one round each and
small archives, a smoke test of the whole run (its figures are not the targets' measurements). Exits 0 unless a
part failed or ran out of time.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from types import FrameType
from typing import Any

import requests

from benchmarks import archive_scale, ct300, gdcm, stacks, studies_at_scale, uploads, viewer_cold
from benchmarks.stacks import SAMPLES, start
from benchmarks.targets import PARTS, Figure, PartOutcome, selected, summary
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


def basic(args: argparse.Namespace) -> dict[str, Figure]:
    """C-STORE of the 120-slice CT, QIDO and sequential WADO-RS as an admin, then the viewer path."""
    manifest = build_samples(SAMPLES)
    ct = next(s for s in manifest["studies"] if s["modality"] == "CT" and s["instance_count"] >= 100)
    files = [SAMPLES / f for f in ct["series"][0]["files"]]
    series_uid = ct["series"][0]["series_instance_uid"]
    sop_uid = ct["series"][0]["sop_instance_uids"][0]
    servers = {"plugin": start(True), "plain": start(False)}
    sessions = {name: session_for(stack) for name, stack in servers.items()}
    ingest: dict[str, list[float]] = {name: [] for name in servers}
    for round_no in range(args.rounds):
        for name, stack in alternating(servers, round_no):
            ingest[name].append(ingest_seconds(stack, sessions[name], files))
    qido: dict[str, list[float]] = {name: [] for name in servers}
    wado: dict[str, list[float]] = {name: [] for name in servers}
    frame = f"/dicom-web/studies/{ct['study_instance_uid']}/series/{series_uid}/instances/{sop_uid}/frames/1"
    for round_no in range(args.rounds):
        for name, stack in alternating(servers, round_no):
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
    for name in servers:
        print(f"  {name:6} {p(qido[name], .5) * 1e3:.2f} / {p(qido[name], .95) * 1e3:.2f}")
    print(f"  p50 ratio {p(qido['plugin'], .5) / p(qido['plain'], .5):.2f}")
    print("WADO-RS single frame, sequential (frames/s from the median latency):")
    print(f"  plugin {fps['plugin']:.0f}   plain {fps['plain']:.0f}   ratio {fps['plugin'] / fps['plain']:.2f}")
    figures = {"ingest120_ratio": Figure(rate["plugin"] / rate["plain"], f"{n} slices")}
    figures.update(viewer_benchmark(servers, ct, args))
    return figures


FRAME_ACCEPT = "multipart/related; type=application/octet-stream"


def viewer_benchmark(stacks: dict[str, Stack], ct: dict[str, Any], args: argparse.Namespace) -> dict[str, Figure]:
    """What OHIF does, through the filter with a viewer token vs plain Orthanc with no filter at all:
    every frame of the CT (each a different instance, so the hierarchy check is exercised), 4 and 16 clients
    at once, and the study query through the scoped QIDO root vs Orthanc's own QIDO."""
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
    clients = (4, 16)
    throughput: dict[tuple[int, str], list[float]] = {(c, name): [] for c in clients for name in stacks}
    qido: dict[str, list[float]] = {name: [] for name in stacks}

    def fetch(session: requests.Session, url: str) -> int:
        answer = session.get(url, headers={"Accept": FRAME_ACCEPT}, timeout=30)
        answer.raise_for_status()
        return len(answer.content)

    for round_no in range(args.rounds):
        for name, stack in alternating(stacks, round_no):
            urls = [stack.url + frame for frame in frames] * args.frame_passes
            for count in clients:
                began = time.perf_counter()
                with ThreadPoolExecutor(count) as pool:
                    list(pool.map(partial(fetch, sessions[name]), urls))
                throughput[count, name].append(len(urls) / (time.perf_counter() - began))
            qido[name] += latencies(partial(
                sessions[name].get, stack.url + qido_paths[name], params={"PatientID": ct["patient_id_dicom"]},
                timeout=30), args.requests // args.rounds)
    figures = {}
    for count in clients:
        rate = {name: statistics.median(throughput[count, name]) for name in stacks}
        print(f"Viewer: WADO-RS frames of {len(frames)} instances, {count} clients (frames/s, median of"
              f" {args.rounds}):")
        print(f"  viewer token through the filter {rate['plugin']:.0f}   plain {rate['plain']:.0f}"
              f"   ratio {rate['plugin'] / rate['plain']:.2f} (target at 16 clients >= 0.90)")
        figures[f"frames{count}_ratio"] = Figure(rate["plugin"] / rate["plain"], f"{len(frames)}-slice CT")
    print("Viewer: studies?PatientID= latency, scoped QIDO root vs Orthanc's QIDO (ms, p50 / p95):")
    for name in stacks:
        print(f"  {name:6} {p(qido[name], .5) * 1e3:.2f} / {p(qido[name], .95) * 1e3:.2f}")
    print(f"  p50 ratio {p(qido['plugin'], .5) / p(qido['plain'], .5):.2f}")
    return figures


def viewer(args: argparse.Namespace) -> dict[str, Figure]:
    outcomes = viewer_cold.run(count=args.viewer_visits)
    cold = statistics.median(o["elapsed_ms"] for o in outcomes["cold"]) / 1000
    return {"ohif_cold_s": Figure(cold, f"median of {args.viewer_visits}")}


def gdcm_part(args: argparse.Namespace) -> dict[str, Figure]:
    return {f"gdcm_{label}_ratio": Figure(value) for label, value in gdcm.run(args.rounds).items()}


def studies(args: argparse.Namespace) -> dict[str, Figure]:
    results = studies_at_scale.run(args.recorded_studies, args.studies_requests)
    worst = max(results, key=lambda name: results[name][1])
    return {"studies_p95_ms": Figure(results[worst][1], f"{worst}, at {args.recorded_studies:,}")}


def uploads_part(args: argparse.Namespace) -> dict[str, Figure]:
    ratios = uploads.run(args.rounds, args.upload_files)
    return {"upload_multiple_ratio": Figure(ratios["upload-multiple / POST /instances"],
                                            f"{args.upload_files} files, wall, {args.rounds} rounds")}


def scale(args: argparse.Namespace) -> dict[str, Figure]:
    figures = archive_scale.run(args.studies, requests_each=args.requests, rounds=args.rounds)
    at = f"at {args.studies:,} studies"
    return {"ingest_ratio_at_scale": Figure(figures["ingest_ratio"], at),
            "qido_p95_ratio_at_scale": Figure(figures["qido_p95_ratio"], at),
            "frames16_ratio_at_scale": Figure(figures["frames16_ratio"], at),
            "restart_caught_up_s": Figure(figures["restart_caught_up_s"], at),
            "memory_growth_mb": Figure(figures["memory_growth_beyond_plain_mb"], at)}


RUNNERS: dict[str, Callable[[argparse.Namespace], dict[str, Figure]]] = {
    "basic": basic, "ct300": lambda a: ct300.run(a.rounds, a.link_rounds), "viewer": viewer, "gdcm": gdcm_part,
    "studies": studies, "uploads": uploads_part, "scale": scale,
}
assert tuple(RUNNERS) == PARTS, "every part of benchmarks/targets.py runs here, in its order"


def budget(part: str, args: argparse.Namespace) -> float:
    """Seconds a part may take before it is stopped (the scale part grows with its archive)."""
    if args.part_timeout:
        return float(args.part_timeout)
    fixed = {"basic": 900, "ct300": 900, "viewer": 1200, "gdcm": 900, "studies": 1800, "uploads": 1200}
    return float(fixed.get(part, 900 + 0.05 * args.studies))


class PartTimeout(BaseException):
    """Raised in the main thread when a part runs out of time (not an Exception: no handler swallows it)."""


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    def expire(signum: int, frame: FrameType | None) -> None:
        raise PartTimeout(f"over its {seconds:g} s budget")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_part(name: str, args: argparse.Namespace) -> PartOutcome:
    seconds = budget(name, args)
    print(f"\n=== {name} (budget {seconds:.0f} s; load average {load_average()})", flush=True)
    began = time.perf_counter()
    try:
        with deadline(seconds):
            figures = RUNNERS[name](args)
        return PartOutcome("ran", time.perf_counter() - began, figures)
    except PartTimeout as exc:
        print(f"{name}: stopped, {exc}", file=sys.stderr)
        return PartOutcome("timed out", time.perf_counter() - began, error=str(exc))
    except Exception as exc:  # noqa: BLE001 - one failed part is reported; the others still run
        traceback.print_exc()
        return PartOutcome("failed", time.perf_counter() - began, error=f"{type(exc).__name__}: {exc}")
    finally:
        stacks.stop_all()  # whatever the part left running, however it ended


def load_average() -> str:
    return ", ".join(f"{value:.1f}" for value in os.getloadavg())


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=os.environ.get("BENCH_ONLY", ""),
                        help=f"comma-separated parts (default all: {','.join(PARTS)})")
    parser.add_argument("--quick", action="store_true", help="one round each, small archives: a smoke test")
    parser.add_argument("--rounds", type=int, help="alternating rounds per measure (default 3; quick 1)")
    parser.add_argument("--requests", type=int, help="QIDO requests / frames per measure (default 300; quick 30)")
    parser.add_argument("--studies", type=int, help="the scale part's archive (default 5,000; quick 500)")
    parser.add_argument("--part-timeout", type=float, default=0, help="seconds per part (default: each its own)")
    args = parser.parse_args(argv)
    quick = args.quick
    args.rounds = args.rounds or (1 if quick else 3)
    args.requests = args.requests or (30 if quick else 300)
    args.studies = args.studies or (500 if quick else 5_000)
    args.link_rounds = 1 if quick else 3
    args.frame_passes = 1 if quick else 3
    args.viewer_visits = 1 if quick else 5
    args.recorded_studies = 10_000 if quick else 100_000
    args.studies_requests = 20 if quick else 100
    args.upload_files = 20 if quick else 100
    args.parts = selected(args.only)
    return args


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a SIGTERM stops the run as Ctrl-C does: cleaned up
    began = time.perf_counter()
    print(f"make bench: parts {', '.join(args.parts)}{' (quick)' if args.quick else ''};"
          f" load average {load_average()}", flush=True)
    outcomes: dict[str, PartOutcome] = {name: PartOutcome("not selected") for name in PARTS}
    try:
        for name in args.parts:
            outcomes[name] = run_part(name, args)
    finally:
        stacks.stop_all()
        print(f"\nParts (load average now {load_average()}; {time.perf_counter() - began:.0f} s in all):")
        for name, outcome in outcomes.items():
            took = f"{outcome.seconds:6.0f} s" if outcome.status != "not selected" else ""
            print(f"  {name:8} {outcome.status:12} {took}  {outcome.error}".rstrip())
        print("\nIssue 12's targets" + (" (QUICK: a smoke run, small archives and one round: not the targets'"
                                         " measurements)" if args.quick else "") + ":")
        print("\n".join(summary(outcomes)))
    return 0 if all(o.status in ("ran", "not selected") for o in outcomes.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
