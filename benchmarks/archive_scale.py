"""A hospital's archive, side by side: the plugin stack and a plain Orthanc with the same settings, both filled
with N single-instance studies by C-STORE, then measured with N studies in both indexes (issue 12 item 6, the
100,000-study targets).

1. Ingest: N studies (CT_small.dcm from pydicom with fresh UIDs, a patient each), written a chunk at a time and
   stored into both stacks in turn (who goes first alternates), each chunk by ``ASSOCIATIONS`` storescu
   associations in parallel as modalities would. The instances/s of every chunk are kept: the median of each,
   the ratio, and the ratio in the first and the last tenth of the fill (does it fall as the index grows?). For
   the plugin also the ingest worker's backlog (studies stored but not yet recorded) and, at the end, the
   seconds until every study is recorded and its change-log cursor is at Orthanc's last change.
2. With N studies in both: scoped QIDO ``/ehr-imaging/dicom-web/studies?PatientID=`` with a viewer token vs
   plain Orthanc's ``/dicom-web/studies?PatientID=`` (p50 / p95), and WADO-RS frames with 1, 4 and 16 clients.
3. Restart of the plugin stack's Orthanc (PostgreSQL stays up): seconds to ``/health`` 200, to caught up with
   the change log, and until a study stored right after the restart is linked to its order (StableAge included).
4. Orthanc's resident memory (both) at the start and the end of the fill.

Printed as one table with the targets and ok / OVER. ``python -m benchmarks.archive_scale --studies N``
(default 100,000; a few minutes at 5,000); ``make bench`` runs it at 5,000 (benchmarks/__main__.py).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pydicom
import requests
from pydicom.data import get_testdata_file
from pydicom.uid import UID, generate_uid

from benchmarks.load import rss_mb
from benchmarks.restart import caught_up, wait
from benchmarks.stacks import start, stop_all
from ehr_stack.dicom import storescu
from ehr_stack.procs import stop_pid
from ehr_stack.stack import Stack
from ehr_stack.tokens import mint_dev_token
from tests.conftest import Client
from tests.integration.helpers import order_fields, query

ASSOCIATIONS = 4  # storescu processes in parallel per chunk: several modalities at once
SAMPLED = 50  # studies spread over the fill that the viewer token covers (QIDO patients, WADO-RS frames)
FRAME_ACCEPT = "multipart/related; type=application/octet-stream"
API = "/api/v1/dicom"


@dataclass(frozen=True)
class Sample:
    patient_id: str
    study: str
    series: str
    sop: str


@dataclass
class Fill:
    """What the ingest phase measured."""

    rates: dict[str, list[float]] = field(default_factory=lambda: {"plugin": [], "plain": []})  # per chunk
    rss: dict[str, list[float]] = field(default_factory=lambda: {"plugin": [], "plain": []})  # start, end
    samples: list[Sample] = field(default_factory=list)
    max_backlog: int = 0  # studies stored in the plugin stack but not recorded yet, the most seen after a chunk
    lag: float = 0.0  # from the plugin's last store until every study is recorded and the cursor caught up
    seconds: float = 0.0  # the fill's wall time (both stacks' chunks, in turn)
    backlog: int = 0  # not yet recorded when the fill ended


class Studies:
    """Writes single-instance CT studies from pydicom's CT_small.dcm, each with fresh UIDs and its own patient."""

    def __init__(self) -> None:
        source = get_testdata_file("CT_small.dcm", download=False)
        if not isinstance(source, str):
            raise RuntimeError("pydicom's CT_small.dcm is missing")
        self.template = pydicom.dcmread(source)

    def write(self, folder: Path, number: int, patient_id: str | None = None, accession: str | None = None) -> Sample:
        ds = self.template
        sample = Sample(patient_id or f"SCALE-{number:06d}", generate_uid(), generate_uid(), generate_uid())
        ds.PatientID, ds.PatientName = sample.patient_id, f"SCALE^{number}"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = sample.study, sample.series, sample.sop
        ds.file_meta.MediaStorageSOPInstanceUID = UID(sample.sop)
        ds.AccessionNumber, ds.StudyID, ds.StudyDate = accession or f"S{number:08d}", str(number % 10**6), "20261120"
        ds.save_as(folder / f"{number:06d}.dcm", enforce_file_format=True)
        return sample


def store(stack: Stack, files: list[Path], associations: int = ASSOCIATIONS) -> float:
    """C-STORE ``files`` in ``associations`` parallel associations; the seconds it took."""
    parts = [files[i::associations] for i in range(associations) if files[i::associations]]

    def one(part: list[Path]) -> None:
        result = storescu(part, host="127.0.0.1", port=stack.config.dicom_port,
                          calling_aet=stack.config.modality_aet, called_aet=stack.config.orthanc_aet)
        if result.returncode != 0:
            raise RuntimeError(f"storescu {result.returncode}: {result.stderr[-500:]}")

    began = time.perf_counter()
    with ThreadPoolExecutor(len(parts)) as pool:
        list(pool.map(one, parts))
    return time.perf_counter() - began


def recorded(client: Client) -> int:
    [(count,)] = query(client, "SELECT count(*) FROM ehr_imaging.study_links")
    return int(count)


def fill(stacks: dict[str, Stack], client: Client, studies: int, chunk: int, progress: bool) -> Fill:
    out = Fill()
    writer = Studies()
    chunks = list(range(0, studies, chunk))
    every = max(1, studies // SAMPLED)
    for name, stack in stacks.items():
        out.rss[name].append(rss_mb(pid_of(stack)))
    began = last_plugin_store = time.perf_counter()
    for chunk_no, first in enumerate(chunks):
        folder = Path(tempfile.mkdtemp(prefix="ehr-scale-"))
        try:
            files = []
            for number in range(first, min(first + chunk, studies)):
                sample = writer.write(folder, number)
                files.append(folder / f"{number:06d}.dcm")
                if number % every == every // 2 and len(out.samples) < SAMPLED:
                    out.samples.append(sample)
            order = list(stacks.items()) if chunk_no % 2 == 0 else list(stacks.items())[::-1]
            if chunk_no == len(chunks) - 1 and order[-1][0] != "plugin":
                order.reverse()  # the plugin stores last, so its worker's lag is measured from its own last store
            for name, stack in order:
                out.rates[name].append(len(files) / store(stack, files))
                if name == "plugin":
                    last_plugin_store = time.perf_counter()
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        backlog = min(first + chunk, studies) - recorded(client)
        out.max_backlog = max(out.max_backlog, backlog)
        if progress:  # a run stopped early still tells the figures up to its N
            print(f"  {time.perf_counter() - began:5.0f} s chunk {chunk_no + 1}/{len(chunks)}: "
                  f"{min(first + chunk, studies):,} studies, instances/s plugin "
                  f"{out.rates['plugin'][-1]:.0f} plain {out.rates['plain'][-1]:.0f}, backlog {backlog}, RSS MB "
                  + " ".join(f"{name} {rss_mb(pid_of(stack)):.0f}" for name, stack in stacks.items()), flush=True)
    out.seconds, out.backlog = time.perf_counter() - began, studies - recorded(client)
    for name, stack in stacks.items():
        out.rss[name].append(rss_mb(pid_of(stack)))
    wait(lambda: caught_up(client, studies), timeout=600 + studies * 0.05)
    out.lag = time.perf_counter() - last_plugin_store
    return out


def pid_of(stack: Stack) -> int:
    pid = stack.orthanc_pid()
    if pid is None:
        raise RuntimeError(f"no running Orthanc in {stack.config.var_dir}")
    return pid


def p(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


def viewer_sessions(stacks: dict[str, Stack], samples: list[Sample]) -> dict[str, requests.Session]:
    """A viewer token for the sampled studies (through the filter) vs plain Orthanc with no filter at all."""
    plugin = stacks["plugin"]
    admin = mint_dev_token(plugin, role="admin", subject="bench-scale", ttl_seconds=3600)
    issued = requests.post(f"{plugin.url}{API}/viewer-token", json={"study_uids": [s.study for s in samples]},
                           headers={"Authorization": f"Bearer {admin}"}, timeout=60)
    issued.raise_for_status()
    viewer = requests.Session()
    viewer.headers["Authorization"] = f"Bearer {issued.json()['token']}"
    return {"plugin": viewer, "plain": requests.Session()}


def qido(stacks: dict[str, Stack], sessions: dict[str, requests.Session], samples: list[Sample],
         count: int, rounds: int) -> dict[str, list[float]]:
    roots = {"plugin": "/ehr-imaging/dicom-web/studies", "plain": "/dicom-web/studies"}
    out: dict[str, list[float]] = {name: [] for name in stacks}

    def one(name: str, sample: Sample) -> float:
        began = time.perf_counter()
        answer = sessions[name].get(stacks[name].url + roots[name], params={"PatientID": sample.patient_id},
                                    timeout=60)
        elapsed = time.perf_counter() - began
        answer.raise_for_status()
        if [s["0020000D"]["Value"][0] for s in answer.json()] != [sample.study]:
            raise RuntimeError(f"{name}: QIDO for {sample.patient_id} answered {answer.text[:300]}")
        return elapsed

    for name in stacks:
        one(name, samples[0])  # warm the connection and the plan
    for round_no in range(rounds):
        for name in alternate(list(stacks), round_no):
            out[name] += [one(name, samples[i % len(samples)]) for i in range(count // rounds)]
    return out


def frames(stacks: dict[str, Stack], sessions: dict[str, requests.Session], samples: list[Sample],
           clients: int, total: int, rounds: int) -> dict[str, float]:
    """Frames/s of ``total`` WADO-RS frame requests over the sampled instances by ``clients`` at once (median)."""
    paths = [f"/dicom-web/studies/{s.study}/series/{s.series}/instances/{s.sop}/frames/1" for s in samples]
    out: dict[str, list[float]] = {name: [] for name in stacks}

    def fetch(session: requests.Session, url: str) -> None:
        session.get(url, headers={"Accept": FRAME_ACCEPT}, timeout=60).raise_for_status()

    for round_no in range(rounds):
        for name in alternate(list(stacks), round_no):
            urls = [stacks[name].url + paths[i % len(paths)] for i in range(total)]
            began = time.perf_counter()
            with ThreadPoolExecutor(clients) as pool:
                list(pool.map(partial(fetch, sessions[name]), urls))
            out[name].append(total / (time.perf_counter() - began))
    return {name: statistics.median(v) for name, v in out.items()}


def alternate(names: list[str], round_no: int) -> list[str]:
    return names if round_no % 2 == 0 else names[::-1]


def restart(plugin: Stack, client: Client, studies: int) -> tuple[float, float, float]:
    """Stop the plugin stack's Orthanc and start it again: seconds to healthy, to caught up with the change log,
    and until a study stored right after (for an order pushed before) is linked, each from the stop."""
    fields = order_fields(modality="CT")
    order_id = str(uuid.uuid4())
    put = client.request("PUT", f"{API}/orders/{order_id}", "ehr-service", json=fields)
    if put.status_code != 201:
        raise RuntimeError(f"order refused: {put.status_code} {put.text[:300]}")
    folder = Path(tempfile.mkdtemp(prefix="ehr-scale-"))
    try:
        sample = Studies().write(folder, studies, patient_id=fields["mrn"], accession=fields["accession_number"])
        stop_pid(pid_of(plugin))
        plugin.pid_file.unlink(missing_ok=True)
        began = time.perf_counter()
        plugin.start(timeout=300)
        healthy = time.perf_counter() - began
        wait(lambda: caught_up(client, studies), timeout=600)
        behind = time.perf_counter() - began
        store(plugin, sorted(folder.iterdir()), associations=1)

        def linked() -> bool:
            answer = client.request("GET", f"{API}/orders/{order_id}", "ehr-service")
            return answer.status_code == 200 and answer.json().get("study_instance_uid") == sample.study

        wait(linked, timeout=600)
        return healthy, behind, time.perf_counter() - began
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def verdict(ok: bool) -> str:
    return "ok" if ok else "OVER"


def report(studies: int, chunk: int, out: Fill, latency: dict[str, list[float]], fps: dict[int, dict[str, float]],
           restarted: tuple[float, float, float], stable_age: str) -> list[str]:
    rates = out.rates
    tenth = max(1, len(rates["plugin"]) // 10)

    def ratio(part: slice) -> float:
        return statistics.median(rates["plugin"][part]) / statistics.median(rates["plain"][part])

    median = {name: statistics.median(v) for name, v in rates.items()}
    q = {name: (p(v, .5) * 1e3, p(v, .95) * 1e3) for name, v in latency.items()}
    healthy, behind, linked = restarted
    growth = {name: v[-1] - v[0] for name, v in out.rss.items()}
    rows: list[tuple[str, str, str, str, bool | None]] = [
        ("C-STORE instances/s, median of chunks", f"{median['plugin']:.0f} vs {median['plain']:.0f}",
         f"{median['plugin'] / median['plain']:.2f}", ">= 0.90", median["plugin"] / median["plain"] >= 0.90),
        (f"  ratio, first tenth ({tenth} chunks)", "", f"{ratio(slice(0, tenth)):.2f}", ">= 0.90",
         ratio(slice(0, tenth)) >= 0.90),
        (f"  ratio, last tenth ({tenth} chunks)", "", f"{ratio(slice(-tenth, None)):.2f}", ">= 0.90",
         ratio(slice(-tenth, None)) >= 0.90),
        ("  worker backlog after a chunk, most", f"{out.max_backlog} studies", "", "", None),
        ("  plugin: studies stored / recorded per s", f"{studies / out.seconds:.0f} / "
         f"{(studies - out.backlog) / out.seconds:.0f}", "", "of the fill", None),
        ("  all recorded after the last store", f"{out.lag:.1f} s", "", f"StableAge {stable_age} s", None),
        ("scoped QIDO ?PatientID= p50 ms", f"{q['plugin'][0]:.1f} vs {q['plain'][0]:.1f}",
         f"{q['plugin'][0] / q['plain'][0]:.2f}", "", None),
        ("scoped QIDO ?PatientID= p95 ms", f"{q['plugin'][1]:.1f} vs {q['plain'][1]:.1f}",
         f"{q['plugin'][1] / q['plain'][1]:.2f}", "<= 2.00", q["plugin"][1] <= 2 * q["plain"][1]),
    ]
    for clients, rate in fps.items():
        share = rate["plugin"] / rate["plain"]
        rows.append((f"WADO-RS frames/s, {clients} clients", f"{rate['plugin']:.0f} vs {rate['plain']:.0f}",
                     f"{share:.2f}", ">= 0.90" if clients == 16 else "", share >= 0.90 if clients == 16 else None))
    rows += [
        ("restart: /health 200", f"{healthy:.1f} s", "", "", None),
        ("restart: caught up with the change log", f"{behind:.1f} s", "", "< 30 s", behind < 30),
        ("restart: a study stored after it linked", f"{linked:.1f} s", "", "< 30 s", linked < 30),
    ]
    for name, v in out.rss.items():
        rows.append((f"Orthanc RSS MB, {name}: start -> end", f"{v[0]:.0f} -> {v[-1]:.0f}", "", "", None))
    rows.append(("  plugin's growth beyond plain's", f"{growth['plugin'] - growth['plain']:+.0f} MB", "",
                 "<= 100 MB", growth["plugin"] - growth["plain"] <= 100))
    lines = [f"Archive at scale: {studies:,} single-instance CT studies in each stack, chunks of {chunk} "
             f"({ASSOCIATIONS} associations), plugin vs plain Orthanc",
             f"  {'measure':42} {'plugin vs plain':>18} {'ratio':>6} {'target':>16}  verdict"]
    for measure, figures, shown, target, good in rows:
        mark = "" if good is None else verdict(good)
        lines.append(f"  {measure:42} {figures:>18} {shown:>6} {target:>16}  {mark}")
    return lines


def run(studies: int = 100_000, chunk: int = 1000, requests_each: int = 300, rounds: int = 3,
        progress: bool = False) -> dict[str, float]:
    """Prints the table; returns the targets' figures (benchmarks/targets.py names them)."""
    chunk = min(chunk, max(100, studies // 20))  # at least ~20 chunks, so medians and tenths mean something
    stacks = {"plugin": start(True), "plain": start(False)}
    try:
        client = Client(stacks["plugin"])
        began = time.perf_counter()
        out = fill(stacks, client, studies, chunk, progress)
        print(f"filled both with {studies:,} studies in {time.perf_counter() - began:.0f} s", flush=True)
        sessions = viewer_sessions(stacks, out.samples)
        latency = qido(stacks, sessions, out.samples, requests_each, rounds)
        fps = {clients: frames(stacks, sessions, out.samples, clients, requests_each, rounds)
               for clients in (1, 4, 16)}
        restarted = restart(stacks["plugin"], client, studies)
        stable_age = str(stacks["plugin"].orthanc_config().get("StableAge", "?"))
        print("\n".join(report(studies, chunk, out, latency, fps, restarted, stable_age)), flush=True)
        growth = {name: v[-1] - v[0] for name, v in out.rss.items()}
        return {"ingest_ratio": statistics.median(out.rates["plugin"]) / statistics.median(out.rates["plain"]),
                "qido_p95_ratio": p(latency["plugin"], .95) / p(latency["plain"], .95),
                "frames16_ratio": fps[16]["plugin"] / fps[16]["plain"], "restart_caught_up_s": restarted[1],
                "memory_growth_beyond_plain_mb": growth["plugin"] - growth["plain"]}
    finally:
        stop_all()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=100_000)
    parser.add_argument("--chunk", type=int, default=1000, help="studies per chunk per stack")
    parser.add_argument("--requests", type=int, default=300, help="QIDO requests and frames per measure, each")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--progress", action="store_true", help="a line per chunk (rates, backlog, memory)")
    args = parser.parse_args()
    run(args.studies, args.chunk, args.requests, args.rounds, args.progress)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
