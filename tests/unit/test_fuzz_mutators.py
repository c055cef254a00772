"""The fuzz run's mutators (tests/fuzz/) are deterministic and cover what they claim: every mutation kind is
drawn, C-STORE mutants leave the file meta alone, requests are generated from the route table itself."""

from __future__ import annotations

import random
import re
from collections import Counter

import pytest

from ehr_imaging.api.routes import ROUTES
from tests.fuzz.dicom_mutator import FRAMED_WEIGHTS, MUTATIONS, WEIGHTS, Source, default_sources, mutant
from tests.fuzz.http_mutator import Known, mutate_jwt, request

SEED = 20261201


@pytest.fixture(scope="module")
def sources() -> list[Source]:
    return default_sources()


KNOWN = Known({"study_uid": "1.2.3", "sop_instance_uid": "1.2.3.4", "order_id": "o-1", "patient_id": "p-1",
               "accession": "A1", "upload_id": "u", "job_id": "j", "request_id": "1", "deletion_id": "1"},
              {role: "aaa.bbb.ccc" for role in ("admin", "doctor", "nurse", "technician", "viewer")})
ROUTE_PAIRS = [(spec.method, spec.path) for spec in ROUTES]


def test_a_mutant_is_a_function_of_its_seed_channel_and_index(sources: list[Source]) -> None:
    assert mutant(sources, SEED, "rest", 7).data == mutant(sources, SEED, "rest", 7).data
    assert mutant(sources, SEED, "rest", 7).data != mutant(sources, SEED, "rest", 8).data
    assert mutant(sources, SEED, "rest", 7).data != mutant(sources, SEED + 1, "rest", 7).data
    assert request(SEED, 5, ROUTE_PAIRS, KNOWN).wire() == request(SEED, 5, ROUTE_PAIRS, KNOWN).wire()


def test_every_mutation_is_drawn_and_changes_the_file(sources: list[Source]) -> None:
    assert len(sources) >= 10  # pydicom's test files of many syntaxes load as sources
    mutants = [mutant(sources, SEED, "rest", i) for i in range(1500)]
    drawn = Counter(kind for m in mutants for kind in m.kinds)
    assert set(drawn) == set(WEIGHTS) == set(MUTATIONS)
    by_name = {s.name: s for s in sources}
    assert all(m.data != by_name[m.source].data for m in mutants)
    assert any(len(m.data) == 0 for m in mutants) and any(len(m.data) > 1 << 20 for m in mutants)


def test_cstore_mutants_keep_the_file_meta_and_their_own_uids(sources: list[Source]) -> None:
    by_name = {s.name: s for s in sources}
    drawn: Counter[str] = Counter()
    for index in range(500):
        item = mutant(sources, SEED, "cstore", index, dataset_only=True)
        source = by_name[item.source]
        drawn.update(item.kinds)
        meta = item.data[:source.dataset_offset]
        assert len(meta) == source.dataset_offset and meta[128:132] == b"DICM"
        assert not any(uid in item.data for uid in source.uids)  # UIDs of its own: a new instance, a new study
    assert set(drawn) == set(FRAMED_WEIGHTS)


def test_requests_come_from_the_route_table() -> None:
    requests = [request(SEED, i, ROUTE_PAIRS, KNOWN) for i in range(4000)]
    paths = [r.target.split("?", 1)[0] for r in requests]
    for _method, template in ROUTE_PAIRS:  # every route's path is tried, a new route too
        pattern = re.compile(re.sub(r"\\{\w+\\}", "[^/]*", re.escape(template)) + "$")
        assert any(pattern.match(p) for p in paths), template
    assert {r.port for r in requests} == {"orthanc", "api"}
    assert any(not r.ours for r in requests) and any(r.ours for r in requests)
    for item in requests:
        line = item.wire().split(b"\r\n", 1)[0]
        assert len(line.split(b" ")) == 3, line  # method, target, version: the target itself is encoded


def test_jwt_mutants_differ_from_the_token() -> None:
    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
    rng = random.Random(SEED)
    kinds: Counter[str] = Counter()
    for _ in range(500):
        mutated, kind = mutate_jwt(rng, token)
        kinds[kind] += 1
        assert mutated != token or kind == "jwt-char"  # a flipped character may land on the same one
    assert len(kinds) == 12
