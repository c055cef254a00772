"""The ingest worker in a flood, side by side: recording one stable study per transaction vs a batch of them.

Two plugin stacks, the same but for ``IngestBatchSize`` (1: one study per transaction, as before batching;
the default: up to that many per transaction), StableAge 2 s. Each round, in each stack in turn (who goes first
alternates), N single-instance CT studies (benchmarks/archive_scale.py's) are stored by 4 storescu associations:

- **flood**: with the worker following: the C-STORE rate (does the worker's work slow the storage path?), the
  most studies stored but not yet recorded (sampled every 0.2 s) and the seconds from the last store until
  every study is recorded and the cursor is at Orthanc's last change;
- **drain**: the worker paused (the benchmark holds its change log's lease, as another node would), N studies
  stored and left to turn stable, then the lease given back: the worker's own studies/s through that backlog
  (first to last recorded) and the Orthanc process's CPU ms per study meanwhile.

Medians over the rounds, with the machine's load average before and after.
``PYTHONPATH=scripts:plugin:. .venv/bin/python -m benchmarks.ingest_flood [--studies 1000] [--rounds 2]``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import threading
import time
from functools import partial
from pathlib import Path

from benchmarks import stacks
from benchmarks.archive_scale import Studies, pid_of, recorded, store
from benchmarks.restart import caught_up, wait
from ehr_stack.stack import Stack
from tests.conftest import Client
from tests.integration.helpers import execute, query

STABLE_AGE = 2
PAUSED_BY = "bench-paused"


def start(batch: int) -> Stack:
    return stacks.start(True, stable_age=STABLE_AGE, extra_settings={"IngestBatchSize": batch})


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in clock ticks (USER_HZ = 100)


def stable_count(client: Client, since: int) -> int:
    """StableStudy changes after change ``since``."""
    count, auth = 0, client.stack.admin_auth
    while True:
        page = client.get(f"/changes?since={since}&limit=1000", auth=auth).json()
        count += sum(1 for c in page["Changes"] if c["ChangeType"] == "StableStudy")
        since = int(page["Last"])
        if page["Done"]:
            return count


def followed(client: Client) -> bool:
    """The worker has its cursor (its first start is over)."""
    return bool(query(client, "SELECT seq FROM ehr_imaging.ingest_cursors"))


def last_change(client: Client) -> int:
    return int(client.get("/changes?last", auth=client.stack.admin_auth).json()["Last"])


def write(writer: Studies, first: int, count: int) -> tuple[Path, list[Path]]:
    folder = Path(tempfile.mkdtemp(prefix="ehr-flood-"))
    for number in range(first, first + count):
        writer.write(folder, number)
    return folder, sorted(folder.iterdir())


def flood(stack: Stack, client: Client, files: list[Path], before: int) -> tuple[float, int, float]:
    """Store with the worker following: (instances/s stored, the most studies waiting, seconds from the last
    store to caught up)."""
    done = threading.Event()
    most = [0]

    def sample() -> None:
        while not done.is_set():
            stored = int(client.get("/statistics", auth=stack.admin_auth).json()["CountStudies"])
            most[0] = max(most[0], stored - recorded(client))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        rate = len(files) / store(stack, files)
        stored_at = time.perf_counter()
        wait(lambda: caught_up(client, before + len(files)), timeout=600)
        return rate, most[0], time.perf_counter() - stored_at
    finally:
        done.set()
        sampler.join()


def drain(stack: Stack, client: Client, files: list[Path], before: int) -> tuple[float, float]:
    """The worker's own rate through a backlog of ``files``: (studies/s, Orthanc CPU ms per study)."""
    execute(stack, "UPDATE ehr_imaging.ingest_cursors SET holder = :h, lease_until = now() + interval '1 hour'",
            h=PAUSED_BY)
    mark = last_change(client)
    store(stack, files)
    wait(lambda: stable_count(client, mark) >= len(files), timeout=600)
    pid = pid_of(stack)
    cpu = cpu_seconds(pid)
    execute(stack, "UPDATE ehr_imaging.ingest_cursors SET holder = NULL, lease_until = NULL WHERE holder = :h",
            h=PAUSED_BY)
    wait(lambda: recorded(client) > before, timeout=120)
    first = time.perf_counter()
    wait(lambda: caught_up(client, before + len(files)), timeout=600)
    seconds = time.perf_counter() - first
    return len(files) / seconds, (cpu_seconds(pid) - cpu) * 1e3 / len(files)


def run(studies: int, rounds: int, batch: int) -> None:
    print(f"load average before: {loadavg()}", flush=True)
    servers = {"one-by-one": start(1), f"batches of {batch}": start(batch)}
    clients = {name: Client(stack) for name, stack in servers.items()}
    writer = Studies()
    measures = ("stored", "most", "lag", "rate", "cpu")
    figures: dict[str, dict[str, list[float]]] = {name: {m: [] for m in measures} for name in servers}
    number = 0
    try:
        for client in clients.values():
            wait(partial(followed, client), timeout=60)
        for round_no in range(rounds):
            order = list(servers) if round_no % 2 == 0 else list(servers)[::-1]
            for phase in ("flood", "drain"):
                folder, files = write(writer, number, studies)
                number += studies
                try:
                    for name in order:
                        client, before = clients[name], recorded(clients[name])
                        if phase == "flood":
                            stored, most, lag = flood(servers[name], client, files, before)
                            figures[name]["stored"].append(stored)
                            figures[name]["most"].append(most)
                            figures[name]["lag"].append(lag)
                            print(f"  round {round_no + 1} {name:16} flood: {stored:.0f} instances/s stored, most"
                                  f" waiting {most}, all recorded {lag:.2f} s after the last store"
                                  f" (load {loadavg()})", flush=True)
                        else:
                            rate, cpu = drain(servers[name], client, files, before)
                            figures[name]["rate"].append(rate)
                            figures[name]["cpu"].append(cpu)
                            print(f"  round {round_no + 1} {name:16} drain: {rate:.0f} studies/s,"
                                  f" {cpu:.2f} CPU ms per study (load {loadavg()})", flush=True)
                finally:
                    shutil.rmtree(folder, ignore_errors=True)
        med = {name: {k: statistics.median(v) for k, v in f.items()} for name, f in figures.items()}
        names = list(servers)
        base, new = med[names[0]], med[names[1]]
        print(f"Ingest worker in a flood: {studies} single-instance CT studies per phase, {rounds} rounds,"
              f" StableAge {STABLE_AGE} s, medians")
        print(f"  {'measure':44} {names[0]:>12} {names[1]:>16} {'ratio':>6}")
        for key, label, fmt in (("rate", "drain: worker studies/s", "{:.0f}"),
                                ("cpu", "drain: Orthanc CPU ms per study", "{:.2f}"),
                                ("stored", "flood: C-STORE instances/s (4 associations)", "{:.0f}"),
                                ("most", "flood: most studies waiting", "{:.0f}"),
                                ("lag", "flood: last store -> all recorded, s", "{:.2f}")):
            ratio = new[key] / base[key] if base[key] else float("nan")
            print(f"  {label:44} {fmt.format(base[key]):>12} {fmt.format(new[key]):>16} {ratio:6.2f}")
        print(f"load average after: {loadavg()}", flush=True)
    finally:
        stacks.stop_all()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies", type=int, default=1000, help="studies per phase per stack")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch", type=int, default=50, help="IngestBatchSize of the batched stack")
    args = parser.parse_args()
    run(args.studies, args.rounds, args.batch)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
