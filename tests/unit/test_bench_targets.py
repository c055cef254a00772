"""``make bench``'s closing table (benchmarks/targets.py) and how a part is run (benchmarks/__main__.py): a target is
"met" only when its part ran and reported a figure within the bound; a part that fails or overruns its budget is
reported, and whatever it started is stopped. No stack is started here."""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import pytest

from benchmarks import __main__ as bench
from benchmarks import stacks
from benchmarks.targets import PARTS, TARGETS, Figure, PartOutcome, Target, selected, summary, verdict


def ran(**figures: float) -> PartOutcome:
    return PartOutcome("ran", 1.0, {name: Figure(value, "3 rounds") for name, value in figures.items()})


@pytest.mark.parametrize(("comparison", "bound", "value", "met"), [
    (">=", 0.95, 0.95, True), (">=", 0.95, 0.949, False), (">=", 8.0, 12.1, True),
    ("<=", 1.0, 1.0, True), ("<=", 1.0, 1.01, False),
    ("<", 50.0, 49.9, True), ("<", 50.0, 50.0, False),
])
def test_a_figure_is_met_only_within_its_bound(comparison: str, bound: float, value: float, met: bool) -> None:
    target = Target("x", "ct300", "a measure", comparison, bound)  # type: ignore[arg-type]
    shown, said = verdict(target, ran(x=value))
    assert said == ("met" if met else "NOT MET")
    figure, conditions = shown.split(" ", 1)
    assert conditions == "(3 rounds)"
    assert abs(float(figure) - value) < 0.005 and target.met(float(figure)) == met  # what is shown says the same


@pytest.mark.parametrize(("value", "shown", "said"), [
    (0.8996, "0.8996", "NOT MET"), (0.9004, "0.90", "met"), (0.89996, "0.899960", "NOT MET"), (0.93, "0.93", "met"),
])
def test_a_figure_is_shown_with_the_decimals_its_verdict_needs(value: float, shown: str, said: str) -> None:
    target = Target("x", "basic", "frames", ">=", 0.90)
    assert target.goal == ">= 0.90"
    assert verdict(target, PartOutcome("ran", 1.0, {"x": Figure(value)})) == (shown, said)


@pytest.mark.parametrize(("outcome", "said"), [
    (None, "not run"),
    (PartOutcome("not selected"), "not run"),
    (PartOutcome("failed", 3.0, error="RuntimeError: storescu 1"), "not run (failed)"),
    (PartOutcome("timed out", 900.0, error="over its 900 s budget"), "not run (timed out)"),
    (ran(), "not measured"),
    (ran(other=1.0), "not measured"),
    (ran(x=math.nan), "not measured"),
])
def test_a_figure_not_measured_is_never_met(outcome: PartOutcome | None, said: str) -> None:
    assert verdict(Target("x", "ct300", "a measure", ">=", 0.0), outcome) == ("", said)


def test_the_issues_targets_are_all_there_each_measured_by_a_part() -> None:
    bounds = {t.figure: (t.comparison, t.bound) for t in TARGETS}
    assert bounds == {
        "cstore300_ratio": (">=", 0.95), "cstore300_vs_debian": (">=", 8.0), "upload_multiple_ratio": (">=", 0.90),
        "frames16_ratio": (">=", 0.90), "frames16_ratio_at_scale": (">=", 0.90), "link_after_stable_s": ("<=", 1.0),
        "ingest_ratio_at_scale": (">=", 0.90), "qido_p95_ratio_at_scale": ("<=", 2.0), "studies_p95_ms": ("<", 50.0),
        "restart_caught_up_s": ("<", 30.0), "memory_growth_mb": ("<=", 100.0), "ohif_cold_s": ("<", 3.0),
    }
    assert {t.part for t in TARGETS} <= set(PARTS)
    assert tuple(bench.RUNNERS) == PARTS


def test_the_summary_has_a_row_per_target_with_its_verdict() -> None:
    outcomes = {"ct300": ran(cstore300_ratio=0.97, cstore300_vs_debian=7.5), "uploads": PartOutcome("failed")}
    lines = summary(outcomes)
    assert len(lines) == 2 + len(TARGETS)  # a header, a rule, the rows
    rows = {t.figure: line for t, line in zip(TARGETS, lines[2:], strict=True)}
    assert "| >= 0.95" in rows["cstore300_ratio"] and "| 0.97 (3 rounds)" in rows["cstore300_ratio"]
    assert "| met " in rows["cstore300_ratio"]
    assert "| NOT MET " in rows["cstore300_vs_debian"]
    assert "| not run (failed) " in rows["upload_multiple_ratio"]
    assert "| not run " in rows["ohif_cold_s"]
    assert sum("| met " in line for line in lines) == 1


def test_bench_only_picks_parts_in_run_order() -> None:
    assert selected(None) == selected("") == selected(" ") == list(PARTS)
    assert selected("uploads, ct300") == ["ct300", "uploads"]
    with pytest.raises(ValueError, match="unknown benchmark part"):
        selected("ct300,nope")


def test_quick_mode_is_short_and_the_default_is_the_full_run() -> None:
    quick, full = bench.arguments(["--quick", "--only", "ct300"]), bench.arguments(["--only", ""])
    assert (quick.rounds, quick.studies, quick.link_rounds, quick.viewer_visits, quick.parts) == (1, 500, 1, 1,
                                                                                               ["ct300"])
    assert (full.rounds, full.studies, full.recorded_studies, full.upload_files, full.parts) == (3, 5_000, 100_000,
                                                                                               100, list(PARTS))
    assert bench.budget("scale", bench.arguments(["--studies", "100000"])) > bench.budget("scale", full)
    assert bench.budget("ct300", bench.arguments(["--part-timeout", "5"])) == 5.0


def part_args(timeout: float) -> argparse.Namespace:
    return bench.arguments(["--part-timeout", str(timeout)])


def test_a_part_over_its_budget_is_stopped_and_what_it_started_is_stopped(monkeypatch: pytest.MonkeyPatch,
                                                                          tmp_path: Path) -> None:
    stopped: list[str] = []

    def hangs(args: argparse.Namespace) -> dict[str, Figure]:
        stacks.remember(lambda: stopped.append("server"), tmp_path / "server")
        (tmp_path / "server").mkdir()
        time.sleep(30)  # a part that would hang: the budget of 0.3 s must interrupt it
        return {}

    monkeypatch.setitem(bench.RUNNERS, "ct300", hangs)
    began = time.perf_counter()
    outcome = bench.run_part("ct300", part_args(0.3))
    assert time.perf_counter() - began < 10
    assert (outcome.status, outcome.error, outcome.figures) == ("timed out", "over its 0.3 s budget", None)
    assert stopped == ["server"]
    assert not (tmp_path / "server").exists()  # its folder removed
    assert verdict(TARGETS[0], outcome) == ("", "not run (timed out)")


def test_a_failing_part_is_reported_and_its_servers_stopped(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    stopped: list[str] = []

    def fails(args: argparse.Namespace) -> dict[str, Figure]:
        stacks.remember(lambda: stopped.append("server"), tmp_path / "server")
        raise RuntimeError("storescu 1")

    monkeypatch.setitem(bench.RUNNERS, "ct300", fails)
    outcome = bench.run_part("ct300", part_args(60))
    assert (outcome.status, outcome.error) == ("failed", "RuntimeError: storescu 1")
    assert stopped == ["server"]


def test_a_part_that_runs_reports_its_figures(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(bench.RUNNERS, "ct300", lambda args: {"cstore300_ratio": Figure(0.97, "300 slices")})
    outcome = bench.run_part("ct300", part_args(60))
    assert outcome.status == "ran"
    assert outcome.figures == {"cstore300_ratio": Figure(0.97, "300 slices")}
