"""C-STORE with GDCM's decoder plugin loaded vs without it: two plugin stacks side by side, rounds alternating.

orthanc-gdcm registers a decoder and a transcoder; neither runs on a C-STORE (no ``IngestTranscoding``), so
the ratio (with / without) should be 1 within noise, for native and for JPEG 2000 files alike; Orthanc's own CPU
time per stored instance is printed too (less sensitive to a shared machine than the wall time). Run alone with
``python -m benchmarks.gdcm``; ``make bench`` runs it after the plugin-vs-plain figures.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import time
from pathlib import Path

import pydicom
import requests
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from benchmarks import stacks
from ehr_stack.dicom import storescu
from ehr_stack.stack import REPO, Stack
from samples.build_samples import build_samples
from tests.conftest import stack_dir

SAMPLES = REPO / "var" / "test-samples"


def start(with_gdcm: bool) -> Stack:
    return stacks.start(True, with_gdcm=with_gdcm)


def jpeg2000_series(out: Path, count: int) -> list[Path]:
    """``count`` slices of the real 512x512 JPEG 2000 (lossless) CT, one study, fresh UIDs."""
    source = get_testdata_file("693_J2KR.dcm", download=False)
    assert source is not None, "pydicom-data is not installed"
    out.mkdir(parents=True, exist_ok=True)
    study, series, files = generate_uid(), generate_uid(), []
    for number in range(1, count + 1):
        ds = pydicom.dcmread(source)
        ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID = "MRN-BENCH-J2K", study, series
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber = number
        files.append(out / f"{number:04d}.dcm")
        ds.save_as(files[-1])
    return files


def orthanc_cpu_seconds(stack: Stack) -> float:
    """User + system CPU time of the stack's Orthanc process so far (its threads, the Python plugin's too)."""
    pid = stack.orthanc_pid()
    assert pid is not None, "Orthanc is not running"
    return process_cpu_seconds(pid)


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far, all its threads (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ingest(stack: Stack, files: list[Path], syntax: str) -> tuple[float, float]:
    """Wall seconds for one association storing every file (the archive emptied first), and the CPU seconds
    Orthanc spent meanwhile (less sensitive to the other processes of a shared machine)."""
    session = requests.Session()
    session.auth = stack.admin_auth
    for study in session.get(f"{stack.url}/studies", timeout=30).json():
        session.delete(f"{stack.url}/studies/{study}", timeout=60).raise_for_status()
    began, cpu = time.perf_counter(), orthanc_cpu_seconds(stack)
    result = storescu(files, host="127.0.0.1", port=stack.config.dicom_port, transfer_syntax=syntax,
                      calling_aet=stack.config.modality_aet, called_aet=stack.config.orthanc_aet)
    elapsed, cpu = time.perf_counter() - began, orthanc_cpu_seconds(stack) - cpu
    if result.returncode != 0:
        raise RuntimeError(result.stderr)
    return elapsed, cpu


def paired_ratio(first: list[float], second: list[float]) -> tuple[float, float, float]:
    """Median, lowest and highest of each round's ``second / first`` (the two run back to back: the machine's
    swings hit both sides of a pair)."""
    ratios = sorted(b / a for a, b in zip(first, second, strict=True) if a > 0)
    return statistics.median(ratios), ratios[0], ratios[-1]


def run(rounds: int) -> dict[str, float]:
    """Prints C-STORE rates and Orthanc's CPU per instance, with and without GDCM, per syntax; returns the
    wall-time ratios (with / without, as instances/s)."""
    manifest = build_samples(SAMPLES)
    ct = next(s for s in manifest["studies"] if s["modality"] == "CT" and s["instance_count"] >= 100)
    native = [SAMPLES / f for f in ct["series"][0]["files"]]
    work = Path(stack_dir())
    loads = {"native": (native, str(ct["transfer_syntax"])),
             "JPEG 2000": (jpeg2000_series(work / "j2k", len(native)), "1.2.840.10008.1.2.4.90")}
    stacks = {"with gdcm": start(True), "without": start(False)}
    ratios: dict[str, float] = {}
    try:
        for label, (files, syntax) in loads.items():
            wall: dict[str, list[float]] = {name: [] for name in stacks}
            cpu: dict[str, list[float]] = {name: [] for name in stacks}
            for round_no in range(rounds):
                order = list(stacks.items()) if round_no % 2 == 0 else list(stacks.items())[::-1]
                for name, stack in order:
                    seconds, cpu_seconds = ingest(stack, files, syntax)
                    wall[name].append(seconds)
                    cpu[name].append(cpu_seconds)
            n = len(files)
            rate = {name: n / statistics.median(values) for name, values in wall.items()}
            per_instance = {name: statistics.median(values) / n * 1e3 for name, values in cpu.items()}
            ratio, low, high = paired_ratio(wall["with gdcm"], wall["without"])  # as rates: with / without
            cpu_ratio, cpu_low, cpu_high = paired_ratio(cpu["without"], cpu["with gdcm"])  # with / without
            ratios[label] = ratio
            print(f"C-STORE of {n} {label} CT slices, GDCM loaded vs not, median of {rounds} rounds:")
            print(f"  instances/s  with gdcm {rate['with gdcm']:.1f}   without {rate['without']:.1f}"
                  f"   ratio {ratio:.2f} (rounds {low:.2f} to {high:.2f})")
            print(f"  Orthanc CPU ms/instance  with gdcm {per_instance['with gdcm']:.2f}"
                  f"   without {per_instance['without']:.2f}   ratio {cpu_ratio:.2f} (rounds {cpu_low:.2f} to"
                  f" {cpu_high:.2f})")
    finally:
        for stack in stacks.values():
            stack.stop()
            shutil.rmtree(stack.config.var_dir, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    return ratios


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=7)
    run(parser.parse_args().rounds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
