"""A viewer token's world for the unit tests of access decisions: study A (series SA, instance IA) in scope,
study B (SB, IB) outside it, and ``belongs`` answering from that tree as the study hierarchy does."""

from __future__ import annotations

A, SA, IA = "1.2.3", "1.2.3.1", "1.2.3.1.1"
B, SB, IB = "1.2.4", "1.2.4.1", "1.2.4.1.1"
SCOPE = frozenset({A})
TREE = {A: {SA: {IA}}, B: {SB: {IB}}}


def belongs(study: str, series: str | None, instance: str | None) -> bool:
    tree = TREE.get(study, {})
    if series is not None and series not in tree:
        return False
    if instance is None:
        return True
    return any(instance in instances for s, instances in tree.items() if series in (None, s))
