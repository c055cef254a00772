"""Restart with N studies already in the index: seconds to healthy and to caught up with Orthanc's change log.

The ingest worker resumes from its cursor (README "Ingest: following Orthanc's change log"), so a restart should
cost about the same at 2,000 studies as at 100,000. It stores N single-instance studies by REST (small files, 4
clients), waits until every one is recorded and the cursor is at Orthanc's last change, restarts Orthanc with the
plugin, and prints the seconds to healthy and to caught up; for scale it also times ``/studies?expand`` in one
answer (what every start-up read before). ``python -m benchmarks.restart`` (N=2,000), ``--studies 100000``.
"""

from __future__ import annotations

import argparse
import io
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import requests
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from ehr_stack.procs import free_port
from ehr_stack.stack import Stack, StackConfig
from tests.conftest import Client, stack_dir
from tests.integration.helpers import query

SECONDARY_CAPTURE = UID("1.2.840.10008.5.1.4.1.1.7")


def small_study(number: int) -> bytes:
    """One single-instance study of its own patient, no pixel data: what the index holds, not the storage."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SECONDARY_CAPTURE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = SECONDARY_CAPTURE, meta.MediaStorageSOPInstanceUID
    ds.PatientID, ds.PatientName = f"BENCH-{number:06d}", f"BENCH^{number}"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.StudyDate, ds.Modality, ds.AccessionNumber = "20261120", "OT", f"B{number:08d}"
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def store(stack: Stack, count: int) -> None:
    session = requests.Session()
    session.auth = stack.admin_auth

    def one(number: int) -> None:
        answer = session.post(f"{stack.url}/instances", data=small_study(number), timeout=60,
                              headers={"Content-Type": "application/dicom"})
        answer.raise_for_status()

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, range(count)))


def caught_up(client: Client, count: int) -> bool:
    last = int(client.get("/changes?last", auth=client.stack.admin_auth).json()["Last"])
    [(recorded,)] = query(client, "SELECT count(*) FROM ehr_imaging.study_links")
    cursor = query(client, "SELECT seq FROM ehr_imaging.ingest_cursors")
    return recorded >= count and bool(cursor) and int(cursor[0][0]) >= last


def wait(check: Callable[[], bool], timeout: float) -> float:
    began = time.perf_counter()
    while not check():
        if time.perf_counter() - began > timeout:
            raise RuntimeError("timed out")
        time.sleep(0.1)
    return time.perf_counter() - began


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--studies", type=int, default=2000)
    args = parser.parse_args()
    config = StackConfig(var_dir=stack_dir(), http_port=free_port(), dicom_port=free_port(), api_port=free_port(),
                         pg_port=free_port(), stable_age=2)
    stack = Stack(config)
    stack.start()
    client = Client(stack)
    try:
        began = time.perf_counter()
        store(stack, args.studies)
        stored = time.perf_counter() - began
        recorded = wait(lambda: caught_up(client, args.studies), timeout=args.studies * 0.5 + 120)
        print(f"{args.studies} studies stored by REST in {stored:.1f} s, all recorded {recorded:.1f} s later")
        began = time.perf_counter()
        listed = len(client.get("/studies?expand", auth=stack.admin_auth).json())
        print(f"/studies?expand in one answer ({listed} studies, what every start-up read before): "
              f"{time.perf_counter() - began:.2f} s")
        stack.stop()
        began = time.perf_counter()
        stack.start()
        healthy = time.perf_counter() - began
        behind = wait(lambda: caught_up(client, args.studies), timeout=600)
        print(f"restart with {args.studies} studies in the index: healthy in {healthy:.2f} s,"
              f" caught up with the change log {behind:.2f} s later")
    finally:
        stack.stop()
        shutil.rmtree(config.var_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
