"""Bad input at volume (issue 12, item 5): a seeded, bounded fuzz run against a stack of its own.

- Mutated DICOM files (tests/fuzz/dicom_mutator.py: truncations, bit flips, bad lengths, bad VRs, huge values,
  garbage preambles, zero-length files, swapped elements, a wrong transfer syntax) through REST ``upload`` (both
  ports) and ``upload-multiple`` (batches), and their datasets through C-STORE (one association for many, sent
  as bytes, not re-encoded): every REST answer is a 2xx that stored the file whole and recorded it once, or a
  4xx with a JSON ``detail``; every C-STORE gets a DICOM status, success or a failure; Orthanc holds exactly
  the instances that were accepted, and the plugin's rows say the same.
- Mutated requests (tests/fuzz/http_mutator.py: paths and parameters from the route table, query strings,
  headers, JWTs, credentials, bodies) on Orthanc's port (the filter: DICOMweb, /ohif, Orthanc's API, our
  routes) and the API port: never a 5xx, never a hang, our routes' errors JSON with a ``detail``.
- Orthanc is the same process, alive and healthy, at the end of each.

Deterministic: ``EHR_FUZZ_SEED`` (default below) picks the mutants, ``EHR_FUZZ_COUNT`` how many of each kind
(10,000 files and 10,000 requests by default; more for a longer run, e.g. ``make fuzz FUZZ_COUNT=100000``).
The seed and counts are printed (``-s``); a failure names its channel, seed and index, and REGRESSIONS keeps
the ones found so far: each is replayed on every run.
"""

from __future__ import annotations

import os
import random
import socket
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

import pytest
import requests
from pydicom import dcmread
from pynetdicom import AE, _config

from ehr_imaging.api.routes import ROUTES
from ehr_stack.stack import Stack
from ehr_stack.tokens import mint_dev_token
from samples.build_samples import build_samples
from tests.conftest import SAMPLES_CACHE, Client, running_stack
from tests.dicom_factory import make_study
from tests.fuzz.dicom_mutator import Mutant, Source, default_sources, mutant
from tests.fuzz.http_mutator import FuzzRequest, Known, request
from tests.fuzz.verdicts import CSTORE_SUCCESS, TIMEOUT, Run, clean_cstore_failure, is_json_detail, judge, send
from tests.integration.helpers import accession, mrn, put_order, query
from tests.waiting import eventually

pytestmark = pytest.mark.integration

SEED = int(os.environ.get("EHR_FUZZ_SEED", "20261201"))
COUNT = int(os.environ.get("EHR_FUZZ_COUNT", "10000"))
REST_SHARE = 0.6  # of the files: REST (5 % of those one per request, the rest in batches); the others C-STORE
SINGLE_SHARE = 0.05
ASSOCIATIONS = 4  # C-STORE mutants are sent on this many associations at once
BATCH = 250
HTTP_WORKERS = 4

# Failures found by earlier runs, replayed on every run: (channel, seed, index). Channels: "rest" (the single
# upload and upload-multiple share the indices), "cstore", "http".
REGRESSIONS: list[tuple[str, int, int]] = [
    ("rest", 20261201, 31),  # an unknown VR ('DI', a bit flip) in a file pydicom reads: 500, now 400 (core/dicom_file)
    ("rest", 20261201, 133),  # a file meta naming a UID that is no transfer syntax: 500, now stored or refused
    ("rest", 20261201, 309),  # an unknown VR on StudyInstanceUID, converted only when read: a batch 500 after storing
    ("http", 20261201, 8287),  # GET /orders?mrn=%00 with a valid token: PostgreSQL refused the NUL, 500; now 400
]

@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    """A stack of its own: its counts are this module's alone, and what the fuzz does to it (locked-out
    addresses, revoked tokens, made-up orders) stays here."""
    with running_stack("fuzz") as started:
        yield started


@pytest.fixture(scope="module")
def admin(stack: Stack) -> requests.Session:
    """Orthanc's own API as an administrator, by bearer token (the fuzz's basic credentials would lock an
    address out of basic authentication, never a token)."""
    session = requests.Session()
    session.headers["Authorization"] = "Bearer " + mint_dev_token(stack, role="admin", subject="fuzz-admin",
                                                                  ttl_seconds=7200)
    return session


@pytest.fixture(scope="module")
def sources() -> list[Source]:
    manifest = build_samples(SAMPLES_CACHE)
    small = [SAMPLES_CACHE / s["series"][0]["files"][0] for s in manifest["studies"]]
    return default_sources([path for path in small if path.stat().st_size < 64 * 1024])


def orthanc_pid(stack: Stack) -> int:
    pid = stack.orthanc_pid()
    assert pid is not None, "Orthanc is not running"
    return pid


def assert_alive(stack: Stack, pid: int) -> None:
    assert stack.orthanc_pid() == pid, "Orthanc is not the process it was: it crashed or was restarted"
    health = requests.get(stack.url + "/api/v1/dicom/health", timeout=10)
    assert health.status_code == 200 and health.json()["status"] == "healthy", health.text


def instance_ids(admin: requests.Session, stack: Stack) -> set[str]:
    answer = admin.get(stack.url + "/instances", timeout=60)
    assert answer.status_code == 200, answer.text
    return set(answer.json())


# --- REST uploads ---------------------------------------------------------------------------------------------

@dataclass
class Accepted:
    """What REST answers said was stored: Orthanc instance -> bytes sent; study -> files; upload rows."""

    files: dict[str, bytes] = field(default_factory=dict)
    studies: Counter[str] = field(default_factory=Counter)
    upload_ids: set[str] = field(default_factory=set)
    answers: dict[str, str] = field(default_factory=dict)  # each mutant's SOP Instance UID -> what was answered
    subject: str = "fuzz-rest"  # the token's subject: the upload rows' uploaded_by


def upload_one(stack: Stack, token: str, item: Mutant, run: Run, accepted: Accepted) -> None:
    """``upload``, the raw body, on Orthanc's port (even index) or the API port (odd)."""
    base = stack.url if item.index % 2 == 0 else stack.api_url
    answer = requests.post(base + "/api/v1/dicom/upload", data=item.data, timeout=TIMEOUT,
                           headers={"Authorization": f"Bearer {token}", "Content-Type": "application/dicom",
                                    "X-File-Name": item.name})
    accepted.answers[item.sop_instance_uid] = (f"index {item.index} {item.kinds}: "
                                               f"{answer.status_code} {answer.text[:200]}")
    if answer.status_code == 200:
        stored = answer.json()
        run.counts["upload 200 " + ("already stored" if stored["already_stored"] else "stored")] += 1
        if not stored["already_stored"]:
            accepted.files[stored["orthanc_instance_id"]] = item.data
            accepted.studies[stored["study_instance_uid"]] += 1
        accepted.upload_ids.add(str(stored["upload_id"]))
    elif 400 <= answer.status_code < 500 and is_json_detail(answer, answer.content):
        run.counts[f"upload {answer.status_code}"] += 1
    else:
        run.fail(item.index, f"upload of {item.source} {item.kinds}: {answer.status_code} {answer.text[:300]}")


def upload_batch(stack: Stack, token: str, items: list[Mutant], run: Run, accepted: Accepted) -> None:
    parts = [("files", (item.name, item.data, "application/dicom")) for item in items]
    answer = requests.post(stack.api_url + "/api/v1/dicom/upload-multiple", files=parts, timeout=300,
                           headers={"Authorization": f"Bearer {token}"})
    if answer.status_code != 200:
        first = items[0].index
        for item in items:
            accepted.answers[item.sop_instance_uid] = f"batch from {first}: {answer.status_code} {answer.text[:300]}"
        if not (400 <= answer.status_code < 500 and is_json_detail(answer, answer.content)):
            run.fail(first, f"upload-multiple of {len(items)} from {first}: {answer.status_code} {answer.text[:300]}")
        run.counts[f"upload-multiple {answer.status_code}"] += len(items)
        return
    body = answer.json()
    by_name = {item.name: item for item in items}
    assert body["total_files"] == len(items) and len(body["results"]) == len(items), answer.text[:500]
    for result in body["results"]:
        item = by_name[result["file_name"]]
        accepted.answers[item.sop_instance_uid] = f"index {item.index} {item.kinds}: {result}"
        if result["status"] == "stored":
            run.counts["upload-multiple stored" + (" (already)" if result["already_stored"] else "")] += 1
            if not result["already_stored"]:
                accepted.files[result["orthanc_instance_id"]] = item.data
                accepted.studies[result["study_instance_uid"]] += 1
        elif result["status"] == "failed" and isinstance(result.get("error"), str) and result["error"]:
            run.counts["upload-multiple failed"] += 1
        else:
            run.fail(item.index, f"upload-multiple result of {item.source} {item.kinds}: {result}")
    assert body["successful"] + body["failed"] == len(items)
    accepted.upload_ids.update(str(s["upload_id"]) for s in body["studies"] if s.get("upload_id"))


def rest_channel(stack: Stack, sources: list[Source], indices: range | list[int], seed: int = SEED,
                 ) -> tuple[Run, Accepted]:
    accepted = Accepted(subject=f"fuzz-rest-{seed}-{indices[0]}" if indices else "fuzz-rest")
    token = mint_dev_token(stack, role="technician", subject=accepted.subject, ttl_seconds=7200)
    run = Run("rest", seed)
    singles = [i for i in indices if i < int(COUNT * REST_SHARE * SINGLE_SHARE) or len(indices) < 10]
    batched = [i for i in indices if i not in set(singles)]
    for index in singles:
        upload_one(stack, token, mutant(sources, seed, "rest", index), run, accepted)
    for start in range(0, len(batched), BATCH):
        upload_batch(stack, token, [mutant(sources, seed, "rest", i) for i in batched[start:start + BATCH]],
                     run, accepted)
    return run, accepted


def assert_rest_recorded(stack: Stack, admin: requests.Session, before: set[str], accepted: Accepted) -> None:
    """Orthanc holds exactly what was accepted, each file whole; each study recorded once, with its files."""
    new = instance_ids(admin, stack) - before
    unexplained = [admin.get(f"{stack.url}/instances/{orthanc_id}", timeout=30).json()["MainDicomTags"]
                   for orthanc_id in sorted(new - set(accepted.files))[:5]]  # what was answered for them
    assert new == set(accepted.files), (
        f"stored but refused: {[accepted.answers.get(tags.get('SOPInstanceUID', ''), tags) for tags in unexplained]}"
        f"; accepted but absent: {sorted(set(accepted.files) - new)[:5]}")
    for orthanc_id in random.Random(SEED).sample(sorted(accepted.files), min(150, len(accepted.files))):
        stored = admin.get(f"{stack.url}/instances/{orthanc_id}/file", timeout=30)
        assert stored.status_code == 200 and stored.content == accepted.files[orthanc_id], orthanc_id
    client = Client(stack)
    rows = query(client, "SELECT id::text, study_instance_uid, number_of_files, upload_status"
                         " FROM ehr_imaging.dicom_upload_logs WHERE uploaded_by = :subject", subject=accepted.subject)
    recorded = [row for row in rows if row[3] != "failed"]
    assert {row[0] for row in recorded} == accepted.upload_ids
    assert Counter(row[1] for row in recorded) == Counter(set(accepted.studies)), "a study recorded twice"
    assert {row[1]: row[2] for row in recorded} == dict(accepted.studies)
    linked = query(client, "SELECT study_instance_uid, number_of_instances FROM ehr_imaging.study_links"
                           " WHERE study_instance_uid = ANY(:uids)", uids=list(accepted.studies))
    assert dict(linked) == dict(accepted.studies)


def test_mutated_files_through_rest_uploads(stack: Stack, admin: requests.Session, sources: list[Source]) -> None:
    pid, before = orthanc_pid(stack), instance_ids(admin, stack)
    started = time.monotonic()
    run, accepted = rest_channel(stack, sources, range(int(COUNT * REST_SHARE)))
    print(f"\nfuzz rest: {time.monotonic() - started:.1f} s")
    assert_alive(stack, pid)
    assert_rest_recorded(stack, admin, before, accepted)
    run.report()
    assert len(accepted.files) > 0 and run.counts["upload-multiple failed"] > 0  # both outcomes were exercised


# --- C-STORE --------------------------------------------------------------------------------------------------

def cstore_channel(stack: Stack, sources: list[Source], indices: range | list[int], run: Run) -> int:
    """Each mutant's dataset, as bytes, on one association (a new one after an abort); the successes."""
    _config.STORE_SEND_CHUNKED_DATASET = True  # the file's dataset bytes as they are, not decoded and re-encoded
    ae = AE(ae_title=stack.config.modality_aet)
    # A dataset Orthanc's DICOM layer cannot parse gets no answer until it aborts: 10 s, not a minute, each.
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    for sop_class, syntax in sorted({(s.sop_class, s.transfer_syntax) for s in sources}):
        ae.add_requested_context(sop_class, [syntax])
    successes = 0
    association = None
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "mutant.dcm"
        for index in indices:
            item = mutant(sources, run.seed, "cstore", index, dataset_only=True)
            path.write_bytes(item.data)
            if association is None or not association.is_established:
                association = ae.associate("127.0.0.1", stack.config.dicom_port, ae_title=stack.config.orthanc_aet)
                if not association.is_established:
                    run.fail(index, "association refused")
                    association = None
                    continue
                # As storescu with TCP_NODELAY=1 (ehr_stack/dicom.py): without it each store waits ~40 ms on a
                # delayed ACK. pynetdicom sets no socket option of its own.
                association.dul.socket.socket.setsockopt(  # type: ignore[union-attr]
                    socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                status = association.send_c_store(path)
            except (ValueError, AttributeError) as exc:  # not sendable from here: nothing reached Orthanc
                run.counts[f"not sendable ({type(exc).__name__})"] += 1
                continue
            code = getattr(status, "Status", None)
            if code is None:
                # Orthanc's DICOM layer (DCMTK) could not parse the dataset it received and aborted the
                # association before any plugin code saw the instance: counted, and a new association follows.
                # (Or, on a loaded machine, a store answered after the 10 s: the test looks each one up.)
                run.notes["aborted by Orthanc's DICOM layer"] += 1
                run.counts["no status (A-ABORT)"] += 1
                run.unanswered.append(item.data)
                association = None
            elif code in CSTORE_SUCCESS:
                run.counts[f"0x{code:04X}"] += 1
                successes += 1
            elif clean_cstore_failure(code):
                run.counts[f"0x{code:04X}"] += 1
            else:
                run.fail(index, f"C-STORE status 0x{code:04X} for {item.source} {item.kinds}")
        if association is not None and association.is_established:
            association.release()
    return successes


def cstore_channels(stack: Stack, sources: list[Source], indices: range, run: Run) -> int:
    """The mutants on ``ASSOCIATIONS`` associations at once, as modalities send: each store waits on Orthanc's
    answer, not the CPU (one association took 4-6x as long), and one association's abort does not stall the rest."""
    runs = [Run(run.channel, run.seed) for _ in range(ASSOCIATIONS)]
    with ThreadPoolExecutor(ASSOCIATIONS) as pool:
        successes = sum(pool.map(lambda k: cstore_channel(stack, sources, indices[k::ASSOCIATIONS], runs[k]),
                                 range(ASSOCIATIONS)))
    for part in runs:
        run.merge(part)
    return successes


def stored_without_answer(admin: requests.Session, stack: Stack, unanswered: list[bytes]) -> int:
    """How many of the datasets that got no answer Orthanc holds: stored, but answered after the client's timeout
    (a modality would send again and hear success). One that pydicom cannot read is counted as not stored."""
    late = 0
    for data in unanswered:
        try:
            uid = str(dcmread(BytesIO(data), force=True, stop_before_pixels=True).SOPInstanceUID)
        except Exception:  # noqa: BLE001 - unreadable here: Orthanc's DICOM layer could not have stored it either
            continue
        answer = admin.post(stack.url + "/tools/find", json={"Level": "Instance", "Query": {"SOPInstanceUID": uid}},
                            timeout=30)
        assert answer.status_code == 200, answer.text
        late += len(answer.json()) > 0
    if late:
        print(f"fuzz cstore: {late} stored whose answer came after the timeout")
    return late


def study_uids(admin: requests.Session, stack: Stack) -> dict[str, str]:
    answer = admin.get(stack.url + "/studies?expand", timeout=120)
    assert answer.status_code == 200
    return {study["ID"]: study["MainDicomTags"].get("StudyInstanceUID", "") for study in answer.json()}


def test_mutated_datasets_through_cstore(stack: Stack, admin: requests.Session, sources: list[Source]) -> None:
    pid, before, studies_before = orthanc_pid(stack), instance_ids(admin, stack), study_uids(admin, stack)
    run = Run("cstore", SEED)
    started = time.monotonic()
    successes = cstore_channels(stack, sources, range(COUNT - int(COUNT * REST_SHARE)), run)
    print(f"\nfuzz cstore: sent in {time.monotonic() - started:.1f} s")
    assert_alive(stack, pid)
    new = instance_ids(admin, stack) - before
    late = stored_without_answer(admin, stack, run.unanswered)
    assert len(new) == successes + late, f"{len(new)} instances stored, {successes} C-STORE successes, {late} " \
                                         "stored whose answer did not come within the timeout"
    uids = [uid for orthanc_id, uid in study_uids(admin, stack).items() if orthanc_id not in studies_before]

    def recorded() -> bool:  # the ingest worker records each study once it is stable (StableAge 2 s here)
        rows = query(Client(stack), "SELECT count(*), coalesce(sum(number_of_instances), 0)"
                                    " FROM ehr_imaging.study_links WHERE study_instance_uid = ANY(:uids)", uids=uids)
        return rows[0] == (len(set(uids)), len(new))

    eventually(recorded, timeout=180, what=f"{len(set(uids))} studies of {len(new)} instances recorded")
    print(f"fuzz cstore: all recorded after {time.monotonic() - started:.1f} s")
    run.report()
    assert successes > 0 and successes < sum(run.counts.values())  # both outcomes were exercised


# --- HTTP: the filter and the routes ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def known(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Known:
    """A real order and its study (uploaded), a viewer token for it, a valid token of every role."""
    client = Client(stack)
    patient, acc = mrn(), accession()
    order_id = put_order(client, mrn=patient, accession_number=acc)
    uid, files = make_study(tmp_path_factory.mktemp("fuzz-http"), patient_id=patient, accession=acc,
                            study_date="20261120", instances=1)
    stored = client.request("POST", "/api/v1/dicom/upload", "technician", data=files[0].read_bytes(),
                            headers={"Content-Type": "application/dicom", "X-Order-Id": order_id})
    assert stored.status_code == 200, stored.text
    body = stored.json()
    viewer = client.request("POST", "/api/v1/dicom/viewer-token", "doctor", json={"study_uids": [uid]})
    assert viewer.status_code == 200, viewer.text
    tokens = {role: mint_dev_token(stack, role=role, subject=f"fuzz-{role}", ttl_seconds=7200)
              for role in ("admin", "radiologist", "doctor", "nurse", "technician", "ehr-service")}
    tokens["patient"] = mint_dev_token(stack, role="patient", subject=patient, ttl_seconds=7200)
    tokens["viewer"] = viewer.json()["token"]
    values = {"study_uid": uid, "series_uid": body["series_instance_uid"], "sop_instance_uid": body["sop_instance_uid"],
              "order_id": order_id, "patient_id": patient, "accession": acc, "upload_id": str(body["upload_id"]),
              "job_id": "00000000-0000-4000-8000-000000000000", "request_id": "1", "deletion_id": "1",
              "x": "x"}
    return Known(values, tokens, stack.secrets.admin_user)


def http_channel(stack: Stack, known: Known, indices: range | list[int], run: Run) -> None:
    routes = [(spec.method, spec.path) for spec in ROUTES]

    def one(index: int) -> tuple[FuzzRequest, int | None, str]:
        item = request(run.seed, index, routes, known)
        status, answer, body, problem = send(stack, item)
        return item, status, judge(item, status, answer, body, problem, run)

    with ThreadPoolExecutor(HTTP_WORKERS) as pool:
        for item, status, verdict in pool.map(one, indices):
            run.counts[f"{item.port} {'ours' if item.ours else 'other'} {status // 100 if status else 'none'}xx"] += 1
            if verdict:
                run.fail(item.index, f"{item.port} {item.method} {item.target[:600]} {item.kinds}: {verdict}")


def test_mutated_requests_through_the_filter_and_the_routes(stack: Stack, known: Known) -> None:
    pid = orthanc_pid(stack)
    run = Run("http", SEED)
    started = time.monotonic()
    http_channel(stack, known, range(COUNT), run)
    print(f"\nfuzz http: {time.monotonic() - started:.1f} s")
    assert_alive(stack, pid)
    run.report()
    assert all(run.counts[f"{port} ours 4xx"] > 0 for port in ("orthanc", "api"))


# --- the failures found so far, replayed ------------------------------------------------------------------------

@pytest.mark.parametrize(("channel", "seed", "index"), REGRESSIONS, ids=lambda v: str(v))
def test_a_failure_found_before_holds_now(stack: Stack, admin: requests.Session, sources: list[Source],
                                          known: Known, channel: str, seed: int, index: int) -> None:
    """Each (channel, seed, index) of REGRESSIONS, sent again on its own."""
    pid, before = orthanc_pid(stack), instance_ids(admin, stack)
    if channel == "rest":
        run, accepted = rest_channel(stack, sources, [index], seed)
        assert_rest_recorded(stack, admin, before, accepted)
    elif channel == "cstore":
        run = Run("cstore", seed)
        assert len(instance_ids(admin, stack) - before) == cstore_channel(stack, sources, [index], run)
    else:
        run = Run("http", seed)
        http_channel(stack, known, [index], run)
    assert_alive(stack, pid)
    run.report()


@pytest.mark.parametrize("path", ["render/{}", "images/{}/url", "tags/{}", "studies/{}", "download/{}",
                                  "thumbnail/{}", "studies/{}/images"])
@pytest.mark.parametrize("wildcard", ["*", "%3F", "1.2.*"])
def test_a_wildcard_names_nothing(stack: Stack, known: Known, path: str, wildcard: str) -> None:
    """Found by the fuzz (GET /render/* was a 500: Orthanc's /tools/lookup refuses a wildcard, "Parameter out
    of range"): a DICOM wildcard where a UID goes finds nothing (404, or 400 not a UID), on both ports."""
    for base in (stack.url, stack.api_url):
        answer = requests.get(f"{base}/api/v1/dicom/{path.format(wildcard)}", timeout=30,
                              headers={"Authorization": f"Bearer {known.tokens['doctor']}"})
        expected = 400 if path in ("tags/{}", "images/{}/url") else 404  # these check the UID first: 400
        assert answer.status_code == expected, (base, answer.status_code, answer.text[:300])
        assert is_json_detail(answer, answer.content), answer.text[:300]
