"""``GET /api/v1/dicom/studies`` with a hospital's archive recorded: p50 / p95 of each filter the EHR uses, through
the running plugin (HTTP, JWT, router, PostgreSQL), against the target p95 < 50 ms at 100,000 studies (issue 12).

The route reads only the plugin's own tables (``study_links`` joined to ``imaging_orders``, never Orthanc), so
the archive is recorded there directly with one ``generate_series`` INSERT: 100,000 studies of 30,000 patients,
90 % linked to orders, the rest unmatched. Orthanc does not hold those studies; ingest at that scale is measured
by the C-STORE benchmarks. Run alone with ``python -m benchmarks.studies_at_scale [--studies N]``.
"""

from __future__ import annotations

import argparse
import shutil
import time

import requests
from sqlalchemy import create_engine, text

from benchmarks import stacks
from ehr_imaging.store import db
from ehr_stack.stack import Stack
from ehr_stack.tokens import mint_dev_token

PATIENTS = 30_000
TARGET_P95_MS = 50.0

SEED = """
INSERT INTO imaging_orders (order_id, accession_number, patient_id, mrn, status, modality, study_instance_uid)
SELECT 'BENCH-ORD-' || g, 'BENCH-ACC-' || g, 'bench-patient-' || (g % :patients), 'BENCH-MRN-' || (g % :patients),
       'completed', 'CT', '2.25.990' || g
FROM generate_series(1, :linked) g;
INSERT INTO study_links (study_instance_uid, orthanc_study_id, patient_id, patient_name, accession_number,
                         study_date, study_time, modalities, number_of_series, number_of_instances, order_id,
                         match_rule)
SELECT '2.25.990' || g, md5(g::text), 'BENCH-MRN-' || (g % :patients), 'DOE^JOHN' || (g % :patients),
       'BENCH-ACC-' || g, date '2012-01-01' + (g % 5000), time '07:00' + (g % 700) * interval '1 minute',
       CASE WHEN g % 7 = 0 THEN ARRAY['MR'] ELSE ARRAY['CT'] END, 1, 100,
       CASE WHEN g <= :linked THEN 'BENCH-ORD-' || g END, CASE WHEN g <= :linked THEN 'accession' END
FROM generate_series(1, :studies) g
"""


def seed(stack: Stack, studies: int) -> float:
    engine = create_engine(db.normalize_url(stack.postgres.url))
    began = time.perf_counter()
    try:
        with engine.begin() as conn:
            conn.execute(text('SET LOCAL search_path TO "ehr_imaging"'))
            for statement in filter(str.strip, SEED.split(";")):
                conn.execute(text(statement), {"patients": PATIENTS, "linked": studies * 9 // 10, "studies": studies})
        # What autovacuum does to a settled archive: statistics, and the visibility map for index-only counts.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text('VACUUM ANALYZE "ehr_imaging".imaging_orders, "ehr_imaging".study_links'))
    finally:
        engine.dispose()
    return time.perf_counter() - began


def filters(studies: int) -> dict[str, dict[str, str]]:
    return {
        "newest first, limit 50": {"limit": "50"},
        "patient_id (an EHR patient)": {"patient_id": "bench-patient-123"},
        "mrn": {"mrn": "BENCH-MRN-123"},
        "accession": {"accession": f"BENCH-ACC-{studies // 2}"},
        "modality=MR": {"modality": "MR"},
        "study date, one month": {"study_date_from": "2020-03-01", "study_date_to": "2020-03-31"},
        "a deep page (offset 10,000)": {"offset": "10000"},
        "patient_name (trigram index)": {"patient_name": "doe john1234"},
        "patient_name, broad (john12)": {"patient_name": "john12"},
        "patient_name, two letters": {"patient_name": "jo"},
        # Three letters that every name holds: a typeahead's third key. Its count tests every match's name.
        "patient_name, three letters (joh)": {"patient_name": "joh"},
        "patient_name, two letters, no match": {"patient_name": "zq"},
    }


def p(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


def run(studies: int = 100_000, requests_each: int = 100) -> dict[str, tuple[float, float]]:
    """Prints each filter's p50 / p95 (ms) and returns them by filter."""
    stack = stacks.start(True)
    results: dict[str, tuple[float, float]] = {}
    try:
        seconds = seed(stack, studies)
        print(f"GET /studies with {studies:,} studies recorded (seeded in {seconds:.1f} s), p50 / p95 of "
              f"{requests_each} requests each (target p95 < {TARGET_P95_MS:.0f} ms):")
        session = requests.Session()
        session.headers["Authorization"] = "Bearer " + mint_dev_token(stack, role="admin", subject="bench",
                                                                      ttl_seconds=3600)
        url = f"{stack.url}/api/v1/dicom/studies"
        for name, params in filters(studies).items():
            session.get(url, params=params, timeout=60).raise_for_status()  # warm the plan and the cache
            timings = []
            total = 0
            for _ in range(requests_each):
                began = time.perf_counter()
                answer = session.get(url, params=params, timeout=60)
                timings.append((time.perf_counter() - began) * 1e3)
                answer.raise_for_status()
                total = answer.json()["total"]
            results[name] = (p(timings, .5), p(timings, .95))
            verdict = "ok" if p(timings, .95) < TARGET_P95_MS else "OVER"
            print(f"  {name:34} total {total:6}   {p(timings, .5):6.1f} / {p(timings, .95):6.1f} ms   {verdict}")
    finally:
        stack.stop()
        shutil.rmtree(stack.config.var_dir, ignore_errors=True)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--studies", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=100)
    args = parser.parse_args()
    run(args.studies, args.requests)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
