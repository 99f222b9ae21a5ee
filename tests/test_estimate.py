"""The comparison's time left while it runs (ui.estimate.plan_left), on synthetic stage times: no clock, no model."""

from __future__ import annotations

import pytest

from ui.estimate import plan_left

# the comparison: planned evaluations of 8 s and a training of 43 s; really 50 s each and 10 s
PLAN = (("evaluate", 8.0), ("evaluate", 8.0), ("train", 43.0), ("evaluate", 8.0))
REAL = (50.0, 50.0, 10.0, 50.0)


def read_every_second(plan, real) -> list[float]:
    """The time left a page reads each second of a run whose stages really take ``real`` seconds."""
    shown = []
    for step, seconds in enumerate(real):
        for t in range(int(seconds)):
            shown.append(plan_left(plan, real[:step], float(t)))
    return shown


def test_the_plan_alone_before_anything_is_measured():
    assert plan_left(PLAN, (), 0.0) == pytest.approx(67.0)
    assert plan_left(PLAN, (), 5.0) == pytest.approx(62.0)  # counts down while the stage keeps to its estimate
    assert plan_left(PLAN, REAL, 0.0) == 0.0


def test_a_stage_that_overruns_raises_the_time_left_gradually_never_severalfold():
    shown = read_every_second(PLAN, REAL)
    rises = [later - earlier for earlier, later in zip(shown, shown[1:])]
    assert max(rises) <= 1.5  # seconds per second: no jump, however far off the plan was
    assert all(later <= 1.5 * earlier + 1.0 for earlier, later in zip(shown, shown[1:]))
    assert shown[-1] <= 5.0  # and it ends near 0


def test_the_first_measured_stage_corrects_the_rest_of_its_kind_and_a_blend_keeps_the_plans_word():
    left = plan_left(PLAN, REAL[:1], 0.0)  # one evaluation took 50 s of 8 planned
    evaluate = (50 + 4) / (8 + 4)  # measured plus half a stage of the plan's word
    assert left == pytest.approx(8 * evaluate + 43 + 8 * evaluate)
    # after more stages, the measurement outweighs the plan: the last evaluation is expected near its real 50 s
    assert plan_left(PLAN, REAL[:3], 0.0) == pytest.approx(8 * (100 + 4) / (16 + 4))
    # a training's share done counts at once: 1 of 4 steps in 2.5 s of 43 planned
    assert plan_left(PLAN, REAL[:2], 2.5, fraction=0.25) < plan_left(PLAN, REAL[:2], 2.5)


def test_a_skipped_stage_is_no_measure():
    assert plan_left(PLAN, (8.0, None), 0.0) == pytest.approx(43 + 8)


def read_batches(plan, batches, every: float = 0.25) -> tuple[list[float], list[tuple[float, float]]]:
    """The time left a page reads every ``every`` seconds of a run whose stages come in batches (``batches``: each
    stage's seconds a batch, its batches' shares equal), told as each batch begins; also (before, after) each report."""
    shown, reports, took = [], [], []
    for stage in batches:
        n, elapsed, last = len(stage), 0.0, {}
        for i, seconds in enumerate(stage):
            told = dict(fraction=i / n, reached=elapsed, upto=(i + 1) / n)
            reports.append((plan_left(plan, took, elapsed, **last), plan_left(plan, took, elapsed, **told)))
            last = told
            for t in range(int(seconds / every)):
                shown.append(plan_left(plan, took, elapsed + t * every, **told))
            elapsed += seconds
        took.append(elapsed)
    return shown, reports


def test_the_first_evaluated_batch_corrects_every_evaluation_to_come_and_the_time_left_rises_gradually():
    """Three evaluations planned at 8 s, in 4 batches of 2 s each; each batch really takes 12 s (the issue's 6x)."""
    plan = (("evaluate", 8.0),) * 3
    shown, reports = read_batches(plan, [[12.0] * 4] * 3)
    # after the first batch, long before its stage ends, the rest is priced at the measured pace, blended
    pace = (12 + 4) / (2 + 4)
    assert reports[1][1] == pytest.approx(6 * pace + 16 * pace)
    assert reports[1][1] > 2 * plan_left(plan, (), 12.0)  # what the plan alone said at that moment (the old reading)
    # no report makes it jump, and between them it rises a little a second, never severalfold
    assert all(after <= before + 1e-6 for before, after in reports)
    rises = [later - earlier for earlier, later in zip(shown, shown[1:])]
    assert max(rises) <= 1.5  # seconds a quarter second
    assert all(later <= 1.25 * earlier + 1.0 for earlier, later in zip(shown, shown[1:]))
    assert reports[-1][1] == pytest.approx(12.0, rel=0.2)  # the last batch is expected near what the others took


def test_batches_that_keep_to_the_plan_count_down_one_second_a_second():
    plan = (("evaluate", 8.0), ("train", 4.0), ("evaluate", 8.0))
    shown, _ = read_batches(plan, [[2.0] * 4, [4.0], [2.0] * 4])
    assert shown[0] == pytest.approx(20.0)
    assert all(-0.26 <= later - earlier <= 1e-6 for earlier, later in zip(shown, shown[1:]))


def test_the_stage_clock_measures_the_evaluations_that_answered(monkeypatch):
    """Each stage runs until the next one told begins; an evaluation kept from before (it tells no batch), a skipped
    stage and training stay out of the pace: seconds per answer token of the evaluations that answered."""
    import ui.estimate as estimate

    now = [0.0]
    monkeypatch.setattr(estimate.time, "monotonic", lambda: now[0])
    plan = estimate.Plan([estimate.Stage("evaluate", "base", 5.0, 100), estimate.Stage("evaluate", "run", 0.0, 0),
                          estimate.Stage("train", "lora", 9.0), estimate.Stage("evaluate", "skipped", 5.0, 100),
                          estimate.Stage("evaluate", "lora", 5.0, 50)])
    clock = estimate.StageClock()
    for at, stage, kind in [(0, 0, "evaluating"), (1, 0, "batch"), (12, 1, "evaluating"), (13, 2, "training"),
                            (40, 4, "evaluating"), (41, 4, "batch")]:
        now[0] = at
        clock.tell(stage, kind)
    now[0] = 49.0
    assert clock.evaluation_pace(plan) == pytest.approx((12 + 9) / 150)
    assert estimate.StageClock().evaluation_pace(plan) is None  # nothing answered
