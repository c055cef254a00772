"""The viewer access audit's cost per request: ``AccessLog.record`` in memory only (before the spool) vs
spooled (one framed record written with os.write, the group-commit fsync thread running), side by side.

``python -m benchmarks.access_spool [--calls 20000] [--rounds 3]``: alternating rounds, medians, the ratio.
Short by default (well under a second of work); prints microseconds per call.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from ehr_imaging.app.access_log import AccessLog
from ehr_imaging.store.audit_spool import AuditSpool
from ehr_imaging.store.viewer_tokens import AccessCount

TOKEN, SUBJECT = "0f1e2d3c4b5a69788796a5b4c3d2e1f0", "dr.house@example.org"
STUDY = "1.2.826.0.1.3680043.8.498.12345678901234567890123456789012"


def _round(log: AccessLog, calls: int) -> float:
    started = time.perf_counter()
    for n in range(calls):
        log.record(TOKEN, SUBJECT, STUDY, allowed=True, size=524288 + n)
    return (time.perf_counter() - started) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        spool = AuditSpool(Path(folder) / "access", "access", "bench", sync_millis=200)
        spool.start()

        def nothing(counts: list[AccessCount], first: int, snapshot: object) -> int:
            return 0

        before, after = [], []
        for _ in range(args.rounds):
            before.append(_round(AccessLog(lambda counts: None), args.calls))
            after.append(_round(AccessLog(lambda counts: None, spool=spool, apply_spooled=nothing), args.calls))
        spool.close()
    b, a = statistics.median(before), statistics.median(after)
    print(f"AccessLog.record, {args.calls} calls x {args.rounds} alternating rounds (median us per call)")
    print(f"  memory only (before): {b:6.2f} us   rounds {', '.join(f'{x:.2f}' for x in before)}")
    print(f"  spooled (after):      {a:6.2f} us   rounds {', '.join(f'{x:.2f}' for x in after)}")
    print(f"  after / before: {a / b:.2f}x, +{a - b:.2f} us per viewer request")


if __name__ == "__main__":
    main()
