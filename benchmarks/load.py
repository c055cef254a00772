"""Load and soak: modalities storing, viewers reading, the EHR calling, all at once against one plugin stack.

A bounded run (loopback only, stops by itself after ``LoadPlan.seconds``):
- ``modalities`` threads, each a modality: the EHR pushes an order, the modality stores a study for it (C-STORE,
  storescu, one association per study);
- ``viewers`` threads, each an OHIF-like client with a viewer token for the prepared studies: scoped QIDO
  (``/ehr-imaging/dicom-web/studies?PatientID=``) and WADO-RS frames;
- ``ehr_clients`` threads, the EHR backend: reads orders, queries a patient's studies, uploads a file (REST).
Every answer is checked (status, and the C-STORE's exit code); every request's latency is kept per kind. After the
run, every stored or uploaded study must be linked to its order (the ingest worker's lag: from the last store to
the last link). Orthanc's resident memory is sampled from ``/proc`` throughout.

``make soak`` runs it for longer (``python -m benchmarks.load --seconds N``); tests/integration/test_load.py runs
a short version in ``make test`` and asserts the report.
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pydicom
import requests

from ehr_stack.dicom import storescu
from ehr_stack.stack import Stack
from ehr_stack.tokens import mint_dev_token
from tests.dicom_factory import make_study
from tests.integration.helpers import order_fields

API = "/api/v1/dicom"
FRAME_ACCEPT = "multipart/related; type=application/octet-stream"


@dataclass(frozen=True)
class LoadPlan:
    seconds: float = 60.0
    modalities: int = 8
    viewers: int = 20
    ehr_clients: int = 3
    instances_per_study: int = 5
    viewer_studies: int = 4
    link_timeout: float = 120.0  # after the run, how long every study may take to be linked


@dataclass
class LoadReport:
    plan: LoadPlan
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: list[str] = field(default_factory=list)
    stored: dict[str, tuple[str, int]] = field(default_factory=dict)  # order id -> (StudyInstanceUID, instances)
    unlinked: list[str] = field(default_factory=list)  # orders whose study was not linked in time
    ingest_lag: float | None = None  # seconds from the last store to the last link
    rss_mb: list[float] = field(default_factory=list)  # Orthanc's resident memory, sampled once a second
    orthanc_pid: tuple[int | None, int | None] = (None, None)  # at start, at end: the same process
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def timed(self, kind: str, call: Callable[[], bool | str]) -> None:
        """Run one request; keep its latency; record an error unless it answered as expected (True)."""
        began = time.perf_counter()
        try:
            outcome: bool | str = call()
        except Exception as exc:  # noqa: BLE001 - a refused connection, a timeout: an error of the run
            outcome = f"{type(exc).__name__}: {exc}"
        elapsed = time.perf_counter() - began
        with self._lock:
            self.latencies[kind].append(elapsed)
            if outcome is not True:
                self.errors.append(f"{kind}: {outcome}")

    def timed_http(self, kind: str, call: Callable[[], requests.Response], expected: int) -> requests.Response | None:
        """One HTTP request, timed; its answer when it had the expected status (else an error of the run)."""
        answers: list[requests.Response] = []

        def checked() -> bool | str:
            answer = call()
            if answer.status_code != expected:
                return f"{answer.status_code} {answer.text[:200]}"
            answers.append(answer)
            return True

        self.timed(kind, checked)
        return answers[0] if answers else None

    def percentile(self, kind: str, q: float) -> float:
        values = sorted(self.latencies[kind])
        return values[min(len(values) - 1, int(q * len(values)))]

    def lines(self) -> list[str]:
        out = [f"load: {self.plan.modalities} modalities, {self.plan.viewers} viewers, {self.plan.ehr_clients} EHR "
               f"clients for {self.plan.seconds:.0f} s",
               f"  {'request':22} {'count':>7} {'p50 ms':>8} {'p95 ms':>8}"]
        for kind in sorted(self.latencies):
            out.append(f"  {kind:22} {len(self.latencies[kind]):7} {self.percentile(kind, .5) * 1e3:8.1f} "
                       f"{self.percentile(kind, .95) * 1e3:8.1f}")
        lag = "n/a" if self.ingest_lag is None else f"{self.ingest_lag:.1f} s"
        out.append(f"  studies stored {len(self.stored)}, not linked {len(self.unlinked)}, ingest lag {lag}")
        if self.rss_mb:
            out.append(f"  Orthanc RSS MB: start {self.rss_mb[0]:.0f}, end {self.rss_mb[-1]:.0f}, "
                       f"peak {max(self.rss_mb):.0f}")
        out.append(f"  errors {len(self.errors)}" + "".join(f"\n    {e}" for e in self.errors[:20]))
        return out


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


class Load:
    """One run: the prepared viewer studies, the threads, and the report they fill."""

    def __init__(self, stack: Stack, plan: LoadPlan, workdir: Path) -> None:
        self.stack, self.plan, self.workdir = stack, plan, workdir
        self.report = LoadReport(plan)
        self.deadline = 0.0
        self.done = threading.Event()
        self.last_store: float | None = None  # the last store of the run (the prepared studies are not timed)
        self._tokens: dict[str, str] = {}

    def token(self, role: str) -> str:
        if role not in self._tokens:
            self._tokens[role] = mint_dev_token(self.stack, role=role, subject=f"load-{role}", ttl_seconds=3600)
        return self._tokens[role]

    def ehr(self, method: str, path: str, role: str = "ehr-service", **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token(role)}"}
        # The EHR calls the plugin's own listener (form uploads are taken there, not on Orthanc's port).
        return requests.request(method, self.stack.api_url + path, headers=headers, timeout=60, **kwargs)

    # --- preparation: what the viewers read, before the clock starts ------------------------------------------
    def prepare_viewer_studies(self) -> tuple[str, list[str], str]:
        """Studies of one patient, each for an order, stored; a viewer token for them; their frame paths."""
        patient, patient_uuid = "LOAD-VIEW-" + uuid.uuid4().hex[:6].upper(), str(uuid.uuid4())
        uids, frames = [], []
        for index in range(self.plan.viewer_studies):
            fields = order_fields(mrn=patient, patient_id=patient_uuid)
            order_id = str(uuid.uuid4())
            if self.ehr("PUT", f"{API}/orders/{order_id}", json=fields).status_code != 201:
                raise RuntimeError("order for a viewer study refused")
            uid, files = make_study(self.workdir / f"viewer-{index}", patient_id=patient,
                                    accession=fields["accession_number"], study_date="20260101",
                                    instances=self.plan.instances_per_study)
            stored = self.store(files, "prepare")
            if stored is not True:
                raise RuntimeError(stored)
            self.report.stored[order_id] = (uid, len(files))
            uids.append(uid)
            for path in files:
                ds = pydicom.dcmread(path, stop_before_pixels=True)
                frames.append(f"/dicom-web/studies/{uid}/series/{ds.SeriesInstanceUID}/instances/"
                              f"{ds.SOPInstanceUID}/frames/1")
        issued = self.ehr("POST", f"{API}/viewer-token", "doctor", json={"study_uids": uids})
        if issued.status_code != 200:
            raise RuntimeError(f"viewer token refused: {issued.status_code} {issued.text}")
        return patient, frames, issued.json()["token"]

    def store(self, files: list[Path], calling: str) -> bool | str:
        result = storescu(files, host="127.0.0.1", port=self.stack.config.dicom_port,
                          calling_aet=self.stack.config.modality_aet, called_aet=self.stack.config.orthanc_aet)
        if result.returncode == 0:
            return True
        said = (result.stderr or result.stdout)[-300:]  # DCMTK may log to either (one failure here said nothing)
        return f"{calling}: storescu {result.returncode}: {said}"

    # --- the three kinds of users --------------------------------------------------------------------------
    def modality(self, number: int) -> None:
        sent = 0
        while time.monotonic() < self.deadline:
            fields = order_fields(modality="CT")
            order_id = str(uuid.uuid4())
            self.report.timed_http("ehr.put_order", partial(self.ehr, "PUT", f"{API}/orders/{order_id}", json=fields),
                                   201)
            uid, files = make_study(self.workdir / f"modality-{number}-{sent}", patient_id=fields["mrn"],
                                    accession=fields["accession_number"], study_date="20261120",
                                    instances=self.plan.instances_per_study)
            self.report.timed("cstore.study", partial(self.store, files, f"modality {number}"))
            self.last_store = time.monotonic()
            with self.report._lock:
                self.report.stored[order_id] = (uid, len(files))
            sent += 1

    def viewer(self, patient: str, frames: list[str], token: str) -> None:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {token}"
        rng = random.Random()
        while time.monotonic() < self.deadline:
            self.report.timed_http("viewer.qido", lambda: session.get(
                f"{self.stack.url}/ehr-imaging/dicom-web/studies", params={"PatientID": patient}, timeout=60), 200)
            for path in rng.sample(frames, min(5, len(frames))):
                self.report.timed_http("viewer.frame", partial(
                    session.get, self.stack.url + path, headers={"Accept": FRAME_ACCEPT}, timeout=60), 200)

    def ehr_client(self, number: int) -> None:
        uploads = 0
        while time.monotonic() < self.deadline:
            with self.report._lock:
                known = list(self.report.stored.items())
            if known:
                order_id, _ = random.choice(known)
                found = self.report.timed_http("ehr.get_order", partial(self.ehr, "GET", f"{API}/orders/{order_id}"),
                                               200)
                if found is not None:
                    self.report.timed_http("ehr.patient_studies", partial(
                        self.ehr, "GET", f"{API}/studies", params={"patient_id": found.json()["patient_id"]}), 200)
            self.upload_one(number, uploads)
            uploads += 1

    def upload_one(self, number: int, index: int) -> None:
        """The EHR uploads one file for a new order (REST), as a scanned document or an outside study would come."""
        fields = order_fields(modality="CT")
        order_id = str(uuid.uuid4())
        self.report.timed_http("ehr.put_order", lambda: self.ehr("PUT", f"{API}/orders/{order_id}", json=fields), 201)
        uid, [path] = make_study(self.workdir / f"upload-{number}-{index}", patient_id=fields["mrn"],
                                 accession=fields["accession_number"], study_date="20261120", instances=1)
        self.report.timed_http("ehr.upload", lambda: self.ehr(
            "POST", f"{API}/upload", "technician", data={"order_id": order_id},
            files={"file": (path.name, path.read_bytes(), "application/dicom")}), 200)
        self.last_store = time.monotonic()
        with self.report._lock:
            self.report.stored[order_id] = (uid, 1)

    # --- the run -------------------------------------------------------------------------------------------
    def sample_memory(self, pid: int) -> None:
        while not self.done.is_set():
            try:
                self.report.rss_mb.append(rss_mb(pid))
            except (OSError, RuntimeError):
                self.report.errors.append(f"Orthanc (pid {pid}) gone during the run")
                return
            self.done.wait(1.0)

    def run(self) -> LoadReport:
        patient, frames, token = self.prepare_viewer_studies()
        pid = self.stack.orthanc_pid()
        if pid is None:
            raise RuntimeError("no running Orthanc")
        self.deadline = time.monotonic() + self.plan.seconds
        threads = [threading.Thread(target=self.sample_memory, args=(pid,), daemon=True)]
        threads += [threading.Thread(target=self.modality, args=(n,)) for n in range(self.plan.modalities)]
        threads += [threading.Thread(target=self.viewer, args=(patient, frames, token))
                    for _ in range(self.plan.viewers)]
        threads += [threading.Thread(target=self.ehr_client, args=(n,)) for n in range(self.plan.ehr_clients)]
        for thread in threads:
            thread.start()
        for thread in threads[1:]:
            thread.join()
        self.wait_for_links()
        self.done.set()
        threads[0].join()
        self.report.orthanc_pid = (pid, self.stack.orthanc_pid())
        return self.report

    def wait_for_links(self) -> None:
        """Until every order has its study linked with all its images (or the timeout): the ingest worker's lag
        behind the stores."""
        pending = dict(self.report.stored)
        give_up = time.monotonic() + self.plan.link_timeout
        while pending and time.monotonic() < give_up:
            for order_id, (uid, instances) in list(pending.items()):
                answer = self.ehr("GET", f"{API}/orders/{order_id}")
                linked = answer.json() if answer.status_code == 200 else {}
                if (linked.get("study_instance_uid"), linked.get("number_of_images")) == (uid, instances):
                    del pending[order_id]
            if pending:
                time.sleep(0.25)  # polling the EHR's view; the lag is measured to the poll that saw the last link
        self.report.unlinked = sorted(pending)
        if not pending and self.last_store is not None:
            self.report.ingest_lag = max(time.monotonic() - self.last_store, 0.0)


def run_load(stack: Stack, plan: LoadPlan) -> LoadReport:
    workdir = Path(tempfile.mkdtemp(prefix="ehr-load-"))
    try:
        return Load(stack, plan, workdir).run()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> int:
    from tests.conftest import running_stack  # the same stack the tests use (StableAge 2 s)

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--modalities", type=int, default=8)
    parser.add_argument("--viewers", type=int, default=20)
    parser.add_argument("--ehr-clients", type=int, default=3)
    args = parser.parse_args()
    plan = LoadPlan(seconds=args.seconds, modalities=args.modalities, viewers=args.viewers,
                    ehr_clients=args.ehr_clients, link_timeout=max(120.0, args.seconds / 5))
    with running_stack("soak") as stack:
        report = run_load(stack, plan)
    print("\n".join(report.lines()))
    return 0 if not report.errors and not report.unlinked else 1


if __name__ == "__main__":
    raise SystemExit(main())
