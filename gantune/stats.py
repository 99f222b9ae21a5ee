"""Intervals for scores measured over several seeds, each on its own set of test questions.

A score is the mean over seeds of a per-seed statistic (a mean over questions, an AUC, a distance).
Its 95% interval comes from a percentile bootstrap that resamples (seed, question) pairs: each
seed's questions are drawn with replacement, the statistic is recomputed per seed and averaged.
Set-level scores that resampling with replacement biases (distinct-n: a repeated answer repeats its
n-grams) get a t-interval over the seeds instead. Every draw comes from a seeded generator, so a
report is reproducible.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from scipy import stats as _scipy_stats

LEVEL = 0.95
N_BOOT = 2000

Interval = tuple[float, float]
# statistic(group index, k × size question indices: k resamples of that group) -> k numbers
GroupStatistic = Callable[[int, np.ndarray], np.ndarray]


def _percentiles(replicates: np.ndarray, level: float) -> Interval:
    tail = (1.0 - level) / 2 * 100
    lo, hi = np.percentile(replicates, [tail, 100 - tail])
    return float(lo), float(hi)


def _indices(sizes: Sequence[int], n_boot: int, seed: int) -> list[np.ndarray]:
    """One (n_boot × size) matrix of question indices per group, drawn with replacement."""
    if not sizes or min(sizes) < 1:
        raise ValueError("every group needs at least one item to resample")
    rng = np.random.default_rng(seed)
    return [rng.integers(0, size, size=(n_boot, size)) for size in sizes]


def mean_interval(groups: Sequence[Sequence[float]], n_boot: int = N_BOOT, seed: int = 0,
                  level: float = LEVEL) -> tuple[float, Interval]:
    """Mean over groups of each group's mean, and its bootstrap interval (questions resampled within each group)."""
    arrays = [np.asarray(g, dtype=float) for g in groups]
    draws = _indices([len(a) for a in arrays], n_boot, seed)
    point = float(np.mean([a.mean() for a in arrays]))
    replicates = np.mean([a[idx].mean(axis=1) for a, idx in zip(arrays, draws)], axis=0)
    return point, _percentiles(replicates, level)


def statistic_interval(sizes: Sequence[int], statistic: GroupStatistic, n_boot: int = N_BOOT, seed: int = 0,
                       level: float = LEVEL) -> tuple[float, Interval]:
    """Like ``mean_interval`` for any per-group statistic of the group's items (an AUC, a distance).

    ``statistic`` is vectorised: it gets a matrix of question indices, one resample a row.
    """
    draws = _indices(sizes, n_boot, seed)
    point = float(np.mean([statistic(g, np.arange(size)[None, :])[0] for g, size in enumerate(sizes)]))
    replicates = np.mean([statistic(g, idx) for g, idx in enumerate(draws)], axis=0)
    return point, _percentiles(replicates, level)


def paired_difference(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]], n_boot: int = N_BOOT,
                      seed: int = 0, level: float = LEVEL) -> tuple[float, Interval]:
    """Mean per-question difference a − b (same questions, same seeds) and its bootstrap interval."""
    if [len(x) for x in a] != [len(y) for y in b]:
        raise ValueError("paired scores need the same questions in each group")
    diffs = [np.asarray(x, dtype=float) - np.asarray(y, dtype=float) for x, y in zip(a, b)]
    return mean_interval(diffs, n_boot, seed, level)


def seed_interval(values: Sequence[float], level: float = LEVEL) -> tuple[float, Interval | None]:
    """Mean of one value per seed and its t-interval (``None`` with a single seed)."""
    arr = np.asarray(values, dtype=float)
    point = float(arr.mean())
    if len(arr) < 2:
        return point, None
    half = float(_scipy_stats.t.ppf(0.5 + level / 2, len(arr) - 1) * arr.std(ddof=1) / np.sqrt(len(arr)))
    return point, (point - half, point + half)


def auc(positive: Sequence[float] | np.ndarray, negative: Sequence[float] | np.ndarray) -> float | np.ndarray:
    """ROC AUC: the chance a positive scores above a negative (ties count half).

    Over the last axis: 2-D inputs (one sample a row) give one AUC a row.
    """
    pos, neg = np.asarray(positive, dtype=float), np.asarray(negative, dtype=float)
    if not pos.shape[-1] or not neg.shape[-1]:
        raise ValueError("AUC needs at least one positive and one negative score")
    p, n = pos[..., :, None], neg[..., None, :]
    value = (p > n).mean(axis=(-2, -1)) + 0.5 * (p == n).mean(axis=(-2, -1))
    return float(value) if value.ndim == 0 else value


def w1_equal_size(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Wasserstein-1 distance between two samples of the same size, one pair of samples a row.

    For equal sizes the optimal coupling matches sorted values: the mean absolute difference.
    """
    return np.abs(np.sort(a, axis=-1) - np.sort(b, axis=-1)).mean(axis=-1)
