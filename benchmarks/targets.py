"""Issue 12's performance targets, defined once, and the table ``make bench`` ends with: target | measured | met?

Pure (no stack, no I/O): each part of ``make bench`` returns its figures by name (a ``Figure``: the value and
the conditions it was measured under); ``summary`` puts every target next to the figure measuring it. A target
whose part was not selected, failed, timed out or did not report the figure says so ("not run", "not measured"),
never "met".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

# The parts of ``make bench``, in the order they run (``BENCH_ONLY=`` picks among these names).
PARTS = ("basic", "ct300", "viewer", "gdcm", "studies", "uploads", "scale")

Comparison = Literal[">=", "<=", "<"]


@dataclass(frozen=True)
class Target:
    figure: str  # the name a part reports the figure under
    part: str  # the part of ``make bench`` that measures it
    measure: str  # what the table shows
    comparison: Comparison
    bound: float
    unit: str = ""  # "" for a ratio

    @property
    def goal(self) -> str:
        bound = f"{self.bound:.2f}" if self.bound < 1 else f"{self.bound:g}"  # as the issue writes them: 0.90, 8
        return f"{self.comparison} {bound}{' ' + self.unit if self.unit else ''}"

    def shown(self, value: float) -> str:
        """``value`` with two decimals, or as many more as it takes for the shown figure to say the verdict the
        real one does (0.8996 against ">= 0.90" is "0.8996", never "0.90")."""
        for decimals in (2, 3, 4, 6):
            text = f"{value:.{decimals}f}"
            if self.met(float(text)) == self.met(value):
                return text
        return repr(value)

    def met(self, value: float) -> bool:
        if self.comparison == ">=":
            return value >= self.bound
        if self.comparison == "<=":
            return value <= self.bound
        return value < self.bound


TARGETS: tuple[Target, ...] = (
    Target("cstore300_ratio", "ct300", "C-STORE 300-slice 512x512 CT, plugin / plain", ">=", 0.95),
    Target("cstore300_vs_debian", "ct300", "C-STORE 300-slice CT, plugin / Debian's default Orthanc", ">=", 8.0),
    Target("upload_multiple_ratio", "uploads", "REST upload-multiple of 100 vs plain POST /instances", ">=", 0.90),
    Target("frames16_ratio", "basic", "WADO-RS frames, viewer token, 16 clients, plugin / plain", ">=", 0.90),
    Target("frames16_ratio_at_scale", "scale", "WADO-RS frames, 16 clients, at scale, plugin / plain", ">=", 0.90),
    Target("link_after_stable_s", "ct300", "order linked after the study turns stable", "<=", 1.0, "s"),
    Target("ingest_ratio_at_scale", "scale", "C-STORE ingest at scale, plugin / plain", ">=", 0.90),
    Target("qido_p95_ratio_at_scale", "scale", "scoped QIDO p95 at scale, plugin / plain", "<=", 2.0),
    Target("studies_p95_ms", "studies", "GET /studies p95, worst filter (newest first, filters)", "<", 50.0, "ms"),
    Target("restart_caught_up_s", "scale", "restart: healthy and caught up with the change log", "<", 30.0, "s"),
    Target("memory_growth_mb", "scale", "Orthanc memory: the plugin's growth beyond plain's", "<=", 100.0, "MB"),
    Target("ohif_cold_s", "viewer", "OHIF first image, cold (median)", "<", 3.0, "s"),
)


@dataclass(frozen=True)
class Figure:
    value: float
    conditions: str = ""  # what it was measured on: "300 slices, 3 rounds", "at 5,000 studies" ...


@dataclass(frozen=True)
class PartOutcome:
    status: Literal["ran", "failed", "timed out", "not selected"]
    seconds: float = 0.0
    figures: dict[str, Figure] | None = None
    error: str = ""


def verdict(target: Target, outcome: PartOutcome | None) -> tuple[str, str]:
    """(measured, met?) for one target, given what its part did (None: the part was not selected)."""
    if outcome is None or outcome.status == "not selected":
        return "", "not run"
    if outcome.status != "ran":
        return "", f"not run ({outcome.status})"
    figure = (outcome.figures or {}).get(target.figure)
    if figure is None or not math.isfinite(figure.value):
        return "", "not measured"
    shown = f"{target.shown(figure.value)}{' ' + target.unit if target.unit else ''}"
    if figure.conditions:
        shown += f" ({figure.conditions})"
    return shown, "met" if target.met(figure.value) else "NOT MET"


def summary(outcomes: dict[str, PartOutcome], targets: tuple[Target, ...] = TARGETS) -> list[str]:
    """The closing table, one line per target, in the issue's order."""
    rows = [(t.measure, t.goal, *verdict(t, outcomes.get(t.part)), t.part) for t in targets]
    widths = [max(len(row[i]) for row in [("target", "goal", "measured", "met?", "part"), *rows]) for i in range(5)]
    lines = []
    for row in [("target", "goal", "measured", "met?", "part"), *rows]:
        lines.append("  " + " | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    lines.insert(1, "  " + "-+-".join("-" * width for width in widths))
    return lines


def selected(only: str | None) -> list[str]:
    """The parts to run, in ``PARTS`` order, from ``BENCH_ONLY``'s comma-separated names (None or "": all)."""
    if not only or not only.strip():
        return list(PARTS)
    names = {name.strip() for name in only.split(",") if name.strip()}
    unknown = sorted(names - set(PARTS))
    if unknown:
        raise ValueError(f"unknown benchmark part(s) {', '.join(unknown)}; the parts: {', '.join(PARTS)}")
    return [name for name in PARTS if name in names]
