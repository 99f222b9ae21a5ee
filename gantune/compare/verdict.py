"""Who won, from the report's paired intervals: for each pair of rows, the one whose answers are closer to the
references when the interval of their per-question difference lies wholly on one side of 0, else a tie.

Language-free: a finding names rows, a metric and numbers; the page (or the CLI) says it in words.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

METRICS = ("rougeL", "semantic")  # the first a pair has is the one it is judged on


@dataclass(frozen=True)
class Finding:
    """One pair of rows: ``better`` minus ``worse`` on ``metric`` (``difference`` and its 95% ``interval``).

    ``told_apart``: the interval excludes 0 (``difference`` is then positive); otherwise the two are a tie, in the
    report's order. ``questions``: the (seed, question) pairs the difference is the mean of.
    """

    better: str
    worse: str
    metric: str
    difference: float
    interval: tuple[float, float]
    told_apart: bool
    questions: int


def verdict(paired: Sequence[dict[str, Any]], n_test: int) -> list[Finding]:
    """The greedy rows' paired differences as findings: those told apart first (largest difference first), then
    the ties; each unordered pair once. ``n_test``: test questions a seed."""
    found: dict[frozenset[str], Finding] = {}
    for entry in paired:
        if entry.get("temperature") or frozenset((entry["method"], entry["versus"])) in found:
            continue
        metric = next((m for m in METRICS if isinstance(entry.get(m), dict)), None)
        if metric is None:
            continue
        mean, (lo, hi) = entry[metric]["mean"], entry[metric]["ci"]
        apart = lo > 0 or hi < 0
        better, worse = (entry["versus"], entry["method"]) if apart and hi < 0 else (entry["method"], entry["versus"])
        if apart and hi < 0:
            mean, lo, hi = -mean, -hi, -lo
        found[frozenset((better, worse))] = Finding(better, worse, metric, mean, (lo, hi), apart,
                                                    n_test * len(entry.get("seeds") or [0]))
    return sorted(found.values(), key=lambda f: (not f.told_apart, -f.difference if f.told_apart else 0.0))
