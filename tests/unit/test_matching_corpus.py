"""The labelled matching corpus: every case gets its expected outcome, and no link is ever wrong."""

from __future__ import annotations

import json
import random

import pytest

from ehr_imaging.core.matching import REASONS, RULES, Decision, decide, normalize_identifier
from samples.matching_corpus import MatchingCase, corpus, to_facts

CASES = corpus()


def _precision_recall(results: list[tuple[MatchingCase, Decision]]) -> tuple[float, float, int, int]:
    """Precision = correct links / links made; recall = correct links / cases whose expected outcome is a link."""
    links = [(c, d) for c, d in results if d.linked]
    correct = sum(1 for c, d in links if d.order_id == c.expected_order_id)
    expected_links = sum(1 for c, _ in results if c.expected_order_id is not None)
    precision = correct / len(links) if links else 1.0
    recall = correct / expected_links if expected_links else 1.0
    return precision, recall, len(links), expected_links


def test_corpus_is_large_well_formed_and_json_able() -> None:
    assert len(CASES) >= 36
    names = [c.name for c in CASES]
    assert len(names) == len(set(names))
    for case in CASES:
        json.dumps(case.as_dict())
        if case.expected_order_id is None:
            assert case.expected_reason in REASONS and case.expected_rule is None, case.name
        else:
            assert case.expected_reason is None and case.expected_rule in RULES, case.name
            assert case.expected_order_id in {o["order_id"] for o in case.orders}, case.name
    # every reason and every rule is exercised
    assert {c.expected_reason for c in CASES if c.expected_reason} == REASONS
    assert {c.expected_rule for c in CASES if c.expected_rule} == RULES


def test_corpus_precision_and_recall() -> None:
    results = [(case, decide(*to_facts(case))) for case in CASES]
    precision, recall, links, expected = _precision_recall(results)
    print(f"\nmatching corpus: precision={precision:.3f} recall={recall:.3f} n={len(CASES)} "
          f"links={links} expected_links={expected}")
    assert links > 0
    assert precision == 1.0
    wrong = [
        f"{c.name}: got {d.order_id or d.reason!r}/{d.rule}, expected {c.expected_order_id or c.expected_reason!r}"
        for c, d in results
        if (d.order_id, d.rule, d.reason) != (c.expected_order_id, c.expected_rule, c.expected_reason)
    ]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case(case: MatchingCase) -> None:
    study, orders = to_facts(case)
    decision = decide(study, orders)
    assert (decision.order_id, decision.rule, decision.reason) == (
        case.expected_order_id, case.expected_rule, case.expected_reason,
    )
    if decision.linked:
        # the safety property: a link never crosses patients
        linked = next(o for o in orders if o.order_id == decision.order_id)
        assert normalize_identifier(linked.mrn) == normalize_identifier(study.patient_id) is not None
    # the answer does not depend on the order the caller found the orders in
    rng = random.Random(case.name)
    for _ in range(5):
        shuffled = list(orders)
        rng.shuffle(shuffled)
        assert decide(study, shuffled) == decision
