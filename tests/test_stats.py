"""Bootstrap intervals over (seed, question) pairs, paired differences, seed intervals and the AUC."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import wasserstein_distance

from gantune.stats import auc, mean_interval, paired_difference, seed_interval, statistic_interval, w1_equal_size


def test_mean_interval_covers_a_known_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(1)
    covered, widths = 0, []
    for _ in range(200):
        groups = [rng.normal(1.0, 1.0, size=60) for _ in range(3)]  # 3 seeds of 60 questions
        point, (lo, hi) = mean_interval(groups, n_boot=1000)
        assert lo <= point <= hi
        covered += lo <= 1.0 <= hi
        widths.append(hi - lo)
    assert 0.90 <= covered / 200 <= 0.99
    # 180 draws of sd 1: the half-width is about 1.96 / sqrt(180) = 0.146
    assert np.mean(widths) / 2 == pytest.approx(1.96 / np.sqrt(180), rel=0.1)


def test_mean_interval_is_the_mean_of_seed_means_and_reproducible():
    groups = [[0.0, 1.0, 0.2, 0.3], [1.0, 0.5, 0.25, 1.0, 0.75, 0.5]]
    point, interval = mean_interval(groups)
    assert point == pytest.approx((0.375 + 0.666667) / 2)
    assert mean_interval(groups) == (point, interval)  # seeded: the same report twice
    assert mean_interval(groups, seed=1)[1] != interval


def test_constant_scores_have_a_zero_width_interval():
    assert mean_interval([[0.3] * 10, [0.3] * 7]) == (pytest.approx(0.3), (pytest.approx(0.3), pytest.approx(0.3)))


def test_paired_difference_of_identical_lists_is_exactly_zero():
    a = [[0.1, 0.5, 0.9], [0.2, 0.4]]
    assert paired_difference(a, a) == (0.0, (0.0, 0.0))


def test_paired_difference_sees_a_shift_the_unpaired_intervals_hide():
    rng = np.random.default_rng(0)
    b = [rng.uniform(0, 1, size=40) for _ in range(2)]
    a = [x + 0.05 for x in b]  # every question a little better
    diff, (lo, hi) = paired_difference(a, b)
    assert diff == pytest.approx(0.05) and lo == pytest.approx(0.05) and hi == pytest.approx(0.05)
    _, (a_lo, _) = mean_interval(a)
    _, (_, b_hi) = mean_interval(b)
    assert a_lo < b_hi  # unpaired, the two intervals overlap


def test_paired_difference_needs_the_same_questions():
    with pytest.raises(ValueError):
        paired_difference([[1.0, 2.0]], [[1.0]])


def test_statistic_interval_of_a_mean_matches_mean_interval():
    groups = [np.arange(10.0), np.arange(5.0) * 2]
    point, interval = statistic_interval([10, 5], lambda g, i: groups[g][i].mean(axis=1), n_boot=500)
    expected_point, expected_interval = mean_interval(groups, n_boot=500)
    assert point == pytest.approx(expected_point) and interval == pytest.approx(expected_interval)


def test_seed_interval_is_a_t_interval_and_none_for_one_seed():
    point, (lo, hi) = seed_interval([0.4, 0.5, 0.6])
    assert point == pytest.approx(0.5)
    assert (hi - lo) / 2 == pytest.approx(4.302653 * 0.1 / np.sqrt(3), rel=1e-5)  # t(0.975, 2) · sd / √3
    assert seed_interval([0.7]) == (0.7, None)


def test_auc_known_values():
    assert auc([3, 4], [1, 2]) == 1.0
    assert auc([1, 2], [3, 4]) == 0.0
    assert auc([1, 2], [1, 2]) == 0.5  # ties count half
    assert auc([2, 0], [1]) == 0.5
    with pytest.raises(ValueError):
        auc([], [1])


def test_auc_over_rows_matches_one_at_a_time():
    rng = np.random.default_rng(0)
    pos, neg = rng.integers(0, 5, size=(20, 7)), rng.integers(0, 5, size=(20, 9))  # with ties
    assert auc(pos, neg) == pytest.approx([auc(p, n) for p, n in zip(pos, neg)])


def test_w1_of_equal_sizes_matches_scipy():
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 48, size=(30, 40)), rng.integers(0, 60, size=(30, 40))
    assert w1_equal_size(a, b) == pytest.approx([wasserstein_distance(x, y) for x, y in zip(a, b)])
    assert w1_equal_size(a, a).max() == 0.0


def test_resampling_needs_items():
    with pytest.raises(ValueError):
        mean_interval([[1.0], []])
