"""The workbench's job manager, engine and runs folder (ui/jobs.py, ui/engine.py, ui/catalogue.py), without a
browser or a server.

Jobs run for real in the manager's background thread: fake bodies, and the real trainer on the tiny
random model (a step takes a fraction of a second). Every wait is bounded, so a broken Stop fails a
test instead of hanging it.
"""

from __future__ import annotations

import json
import random
import threading
import time
import zipfile
from dataclasses import fields, replace
from pathlib import Path

import pytest
from conftest import make_base

import ui.jobs as jobs_module
from gantune.config import preset_config
from gantune.errors import GantuneError
from gantune.runs import RunFolder
from gantune.trainer import train
from ui import catalogue
from ui import engine as engine_module
from ui.catalogue import RunRow, planned_steps
from ui.engine import Engine, Settings
from ui.jobs import JobBusy, JobManager, JobStatus
from ui.tabs.runs import COLUMNS
from ui.views import progress_html

WAIT = 60.0  # generous bound for anything the tiny model does


def wait_until(predicate, timeout: float = WAIT, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def finish(jobs: JobManager):
    """Wait for the current job to end (bounded) and return its final status."""
    status = jobs.wait(WAIT)
    assert not status.active, f"job still {status.state} after {WAIT:.0f} s"
    return status


def tiny_config(data, **overrides):
    # 12 pairs, half for training; batch 2 -> 3 steps an epoch
    values = dict(data=str(data), n=12, train_fraction=0.5, seed=3, device="cpu", epochs=1, batch_size=2,
                  max_new_tokens=8, max_prompt_tokens=32, noise_dim=8, d_hidden=[16, 8, 4], sample_every=1)
    values.update(overrides)
    return preset_config("gan", "improved", **values)


@pytest.fixture
def engine(tmp_path):
    eng = Engine(Settings(runs_dir=tmp_path / "runs"), load_model=lambda *a: make_base())
    yield eng
    eng.jobs.stop()  # never leave a training thread behind for the next test
    eng.jobs.wait(WAIT)


def completed_run(engine: Engine, data, **overrides) -> str:
    """Train a short run to its end; returns its id (folder name)."""
    engine.start_training(tiny_config(data, **overrides))
    status = finish(engine.jobs)
    assert status.state == "completed", status
    return Path(status.run).name


# --- the job manager with fake bodies -------------------------------------------------------------

def test_one_job_at_a_time_and_a_new_one_after_it_ends():
    jobs = JobManager()
    release = threading.Event()

    def body(report, should_stop):
        report(step=1, total=2, message="working")
        release.wait(WAIT)
        return "result"

    first = jobs.start("fake", "first job", body)
    assert first.state == "starting" and first.title == "first job"
    with pytest.raises(JobBusy, match=r"a job is running \(first job\)"):
        jobs.start("fake", "second job", lambda report, should_stop: None)
    assert jobs.status().title == "first job"  # the refused start changed nothing
    release.set()
    done = finish(jobs)
    assert (done.state, done.result, done.error) == ("completed", "result", None)
    assert done.finished is not None and done.message == "completed"

    second = jobs.start("fake", "second job", lambda report, should_stop: 42)
    assert second.title == "second job"
    assert finish(jobs).result == 42


@pytest.mark.parametrize("exc, error", [
    (ValueError("boom"), "ValueError: boom"),  # a bug: the type is shown too
    (GantuneError("bad setting"), "bad setting"),  # a user-facing error: its one line
])
def test_an_error_ends_the_job_as_failed_and_frees_the_manager(exc, error):
    jobs = JobManager()

    def body(report, should_stop):
        report(step=1, total=3, run="somewhere")
        raise exc

    jobs.start("fake", "doomed", body)
    status = finish(jobs)
    assert (status.state, status.error, status.message) == ("failed", error, error)
    assert status.run == "somewhere" and status.step == 1  # what it had reported stays readable
    assert status.eta_seconds() is None
    jobs.start("fake", "next", lambda report, should_stop: "ok")
    assert finish(jobs).state == "completed"


def test_each_kind_of_job_keeps_its_latest_status():
    jobs = JobManager()
    jobs.start("train", "training", lambda report, should_stop: "trained")
    finish(jobs)
    release = threading.Event()
    jobs.start("compare", "comparing", lambda report, should_stop: release.wait(WAIT))
    assert jobs.status().title == "comparing" and jobs.status("compare").title == "comparing"
    assert (jobs.status("train").title, jobs.status("train").state) == ("training", "completed")
    assert jobs.status("other").state == "idle"
    # a tab's Stop stops its own kind of job only
    assert jobs.stop("train").title == "training" and jobs.status().active and jobs.status().state != "stopping"
    assert jobs.stop("compare").state == "stopping"
    release.set()
    assert finish(jobs).state == "stopped" and jobs.status("train").state == "completed"


class FakeClock:
    """ui.jobs' clock, set by the test (jobs are driven through ``_report`` with it, as a job body would)."""

    def __init__(self, monkeypatch, now: float = 1000.0):
        self.now = now
        monkeypatch.setattr(jobs_module.time, "time", lambda: self.now)


def _held_job(jobs: JobManager, kind: str = "train") -> threading.Event:
    """A job whose body waits (the test reports its progress in its place); set the event to end it."""
    release = threading.Event()
    jobs.start(kind, "timed", lambda report, should_stop: release.wait(WAIT))
    return release


def _shown_etas(jobs: JobManager, clock: FakeClock, durations: list[float], phases: list[str] | None = None,
                period: int | None = None, every: float = 0.5) -> list[float | None]:
    """Run steps of ``durations`` through the manager; the time left a page reads every ``every`` seconds."""
    shown = []
    jobs._report(message="training", steps_begin=True)
    for step, took in enumerate(durations, start=1):
        status = jobs.status()
        t = 0.0
        while t < took:
            shown.append(status.eta_seconds(now=clock.now + t))
            t += every
        clock.now += took
        jobs._report(step=step, total=len(durations), phase=phases[step - 1] if phases else None, period=period)
    return shown


def _never_rises(values: list[float | None]) -> bool:
    known = [v for v in values if v is not None]
    return all(later <= earlier + 1e-9 for earlier, later in zip(known, known[1:]))


def test_the_time_left_never_rises_while_steps_come_at_a_steady_rate(monkeypatch):
    """Steps of 10 s ± 20% (seeded), and an epoch's first step 2.5 times longer (its rollout): the time left a
    page reads counts down one second a second and never climbs; it ends near the real end."""
    rng = random.Random(0)
    for durations, period in (([10 * rng.uniform(0.8, 1.2) for _ in range(40)], None),
                              ([(25.0 if i % 4 == 0 else 10.0) * rng.uniform(0.9, 1.1) for i in range(40)], 4)):
        clock = FakeClock(monkeypatch)
        jobs = JobManager()
        release = _held_job(jobs)
        try:
            shown = _shown_etas(jobs, clock, durations, period=period)
        finally:
            release.set()
            finish(jobs)
        assert _never_rises(shown), shown
        known = [v for v in shown if v is not None]
        assert len(known) > 0.8 * len(shown)  # it says something nearly all the time
        # honest: halfway through, the estimate is within a quarter of the time really left
        half = len(shown) // 2
        really_left = sum(durations) - half * 0.5
        assert shown[half] is not None and abs(shown[half] - really_left) <= 0.25 * really_left


def test_the_time_left_moves_when_the_rate_really_changes_and_reads_each_phase_apart(monkeypatch):
    """A warm-up of 1 s steps, then adversarial steps of 5 s: the estimate is revised once the slower phase shows,
    from that phase's own steps; a step that overruns the estimate says so instead of '0 s left'."""
    clock = FakeClock(monkeypatch)
    jobs = JobManager()
    release = _held_job(jobs)
    try:
        _shown_etas(jobs, clock, [1.0] * 10 + [5.0] * 2, ["mle"] * 10 + ["adversarial"] * 2)
        status = jobs.status()
        assert status.pace == pytest.approx(20 / 12)  # the mean of every step (an earlier-run hint for the next)
        # left: 0 steps … the manager reads 12 steps as the total: report a longer run instead
    finally:
        release.set()
        finish(jobs)
    clock = FakeClock(monkeypatch)
    jobs = JobManager()
    release = _held_job(jobs)
    try:
        jobs._report(steps_begin=True)
        for step in range(1, 11):
            clock.now += 1.0
            jobs._report(step=step, total=30, phase="mle")
        assert jobs.status().eta_seconds(now=clock.now) == pytest.approx(20.0)  # 20 steps at the warm-up's 1 s
        for step in (11, 12):
            clock.now += 5.0
            jobs._report(step=step, total=30, phase="adversarial")
        assert jobs.status().eta_seconds(now=clock.now) == pytest.approx(18 * 5.0)  # the adversarial steps' pace
        overrun = jobs.status()
        assert overrun.eta_seconds(now=clock.now + 200) is None and overrun.overdue(now=clock.now + 200)
        assert "taking longer than estimated" in progress_html(overrun, "en", now=clock.now + 200)
    finally:
        release.set()
        finish(jobs)


def test_a_plan_of_unequal_stages_is_estimated_up_front_and_each_kind_corrected_by_what_was_measured(monkeypatch):
    clock = FakeClock(monkeypatch)
    jobs = JobManager()
    release = _held_job(jobs, "compare")
    try:
        plan = (("evaluate", 50.0), ("train", 100.0), ("evaluate", 50.0), ("train", 100.0), ("evaluate", 50.0))
        jobs._report(step=0, plan=plan, steps_begin=True)
        first = jobs.status()
        assert first.total == 5 and first.eta_seconds(now=clock.now) == pytest.approx(350.0)
        assert "about 5 min 50 s left (estimated before it began)" in progress_html(first, "en", now=clock.now)
        # the first evaluation runs past its estimate: the time left rises a little each second, not at its end
        overrun = [first.eta_seconds(now=clock.now + t) for t in range(0, 101, 10)]
        assert all(b - a <= 20.0 for a, b in zip(overrun, overrun[1:])) and overrun[-1] > 300
        clock.now += 100.0  # it took twice its estimate: evaluations are read at (100 + 25) / (50 + 25)
        jobs._report(step=1)
        after = jobs.status().eta_seconds(now=clock.now)
        assert after == pytest.approx(100 + 50 * 5 / 3 + 100 + 50 * 5 / 3)
        assert after == pytest.approx(overrun[-1], abs=1.0)  # no jump when it ends
        clock.now += 100.0  # the training took its estimate
        jobs._report(step=2)
        assert jobs.status().eta_seconds(now=clock.now) == pytest.approx(2 * 50 * 5 / 3 + 100)
        jobs._report(fraction=0.5)  # halfway through the evaluation under way
        assert jobs.status().done_share() == pytest.approx((150 + 25) / 350)
        shown = progress_html(jobs.status(), "en", now=clock.now)
        assert "step" not in shown.split("</div></div>")[-1]  # one counter a line: the share, not a stage count
    finally:
        release.set()
        finish(jobs)


def test_a_comparisons_time_left_is_corrected_by_its_first_evaluated_batch_not_at_the_stages_end(monkeypatch, tmp_path):
    """The tiny model evaluated at three seeds (three stages planned at 8 s, 4 batches each) whose every batch really
    takes 12 s: after the first batch the time left prices every evaluation to come at the measured pace, having
    risen to it a little each second; the page reads it every half second."""
    from gantune import inference
    from gantune.compare import Split, compare_methods
    from gantune.data import QAPair
    from gantune.evaluate import EvalSettings, Scorers
    from ui.engine import progress_message

    clock = FakeClock(monkeypatch)
    jobs = JobManager()
    release = _held_job(jobs, "compare")
    real_decode, shown, first = inference.decode, [], []

    def slow_batch(*args, **kwargs):
        status = jobs.status()
        for _ in range(24):  # the page reads it while the batch runs
            shown.append(status.eta_seconds(now=clock.now))
            clock.now += 0.5
        return real_decode(*args, **kwargs)

    def told(progress):
        jobs._report(step=progress.done, **progress_message(progress))
        if progress.kind == "batch" and progress.share[0] > 0 and not first:
            first.append((jobs.status(), shown[-1], clock.now))

    monkeypatch.setattr(inference, "decode", slow_batch)
    monkeypatch.setattr(inference, "decode_rows", lambda *args: 2)
    test = [QAPair(f"who wrote {w} ?", "a writer .") for w in ("it", "that", "this", "those", "these", "them", "a",
                                                               "the")]
    try:
        jobs._report(step=0, plan=(("evaluate", 8.0),) * 3, steps_begin=True)
        compare_methods(make_base(), [], [Split(seed, [], test) for seed in range(3)], {}, tmp_path, Scorers.load(None),
                        EvalSettings(max_new_tokens=4), progress=told)
        (status, before, now), = first
        assert status.step == 0 and status.fraction == 0.25  # the first stage's first batch, of four
        pace = (12 + 4) / (2 + 4)  # 12 s measured for 2 planned, blended with half a stage of the plan's word
        assert status.eta_seconds(now=now) == pytest.approx(6 * pace + 16 * pace)
        assert 0 < status.eta_seconds(now=now) - before <= 2.0  # half a second after the last reading: no jump
        left = [x for x in shown if x is not None]  # none only in the last batch's last seconds: "taking longer"
        assert len(left) >= len(shown) - 4 and all(b - a <= 2.0 and b <= 1.25 * a + 1.0 for a, b in zip(left, left[1:]))
    finally:
        release.set()
        finish(jobs)


def test_a_resumed_runs_time_left_counts_from_the_steps_since_the_resume_and_the_last_step_says_what_it_does(
        monkeypatch):
    """Resumed at step 12 of 30: its first report jumps to 13 and counts as one step; steady 5 s steps never raise
    the time left; past the estimate at the last step, the status says it validates and saves."""
    clock = FakeClock(monkeypatch)
    jobs = JobManager()
    release = _held_job(jobs)
    try:
        jobs._report(steps_begin=True)
        shown = []
        for step in range(13, 31):
            status = jobs.status()
            shown += [status.eta_seconds(now=clock.now + t) for t in (0.0, 2.5)]
            clock.now += 5.0
            jobs._report(step=step, total=30, phase="adversarial")
            if step == 14:
                assert jobs.status().eta_seconds(now=clock.now) == pytest.approx(16 * 5.0)
        assert _never_rises(shown), shown
        last = replace(jobs.status(), step=29, finish_at=clock.now)
        assert "last step: validating and saving the adapter" in progress_html(last, "en", now=clock.now + 30)
        assert "taking longer" not in progress_html(jobs.status(), "en", now=clock.now + 30)
    finally:
        release.set()
        finish(jobs)


def test_planned_steps_and_the_first_estimate_from_an_earlier_run_alike(engine, tiny_data):
    earlier = completed_run(engine, tiny_data, epochs=2)
    run = engine.runs.folder(earlier)
    resolved = run.read_config()[1]
    assert planned_steps(run) == 2 * -(-resolved["n_train"] // 2) == 6
    assert planned_steps(RunFolder(engine.settings.runs_dir / "missing")) is None

    # a job that ran in this process is the best guess for the next one alike …
    alike = tiny_config(tiny_data, epochs=2)
    assert engine.runs.pace_hint(alike) == engine.runs._paces[catalogue._pace_key(alike)] > 0
    # … else (a restarted workbench) the saved summary of a run alike; runs with other settings give none
    restarted = Engine(Settings(runs_dir=engine.settings.runs_dir), load_model=lambda *a: make_base())
    summary = json.loads(run.summary_path.read_text())
    assert restarted.runs.pace_hint(alike) == pytest.approx(summary["seconds"] / summary["steps"])
    assert restarted.runs.pace_hint(alike, besides=run) is None  # not the run's own (a resume)
    other = tiny_config(tiny_data, epochs=2, batch_size=3)
    assert restarted.runs.pace_hint(other) is None


# --- training jobs through the engine -------------------------------------------------------------

def test_stop_ends_training_at_the_next_step_and_the_run_still_saves(tmp_path, tiny_data):
    gate = threading.Event()

    def slow_loader(*args):
        gate.wait(WAIT)  # "loading the model": the job runs, no step yet
        return make_base()

    engine = Engine(Settings(runs_dir=tmp_path / "runs"), load_model=slow_loader)
    config = tiny_config(tiny_data, epochs=200)  # 600 steps: far more than the test waits for
    try:
        started = engine.start_training(config)
        # the run folder is known at once, so a page can plot it from the first tick
        assert started.run == config.out and Path(config.out).parent == engine.settings.runs_dir
        loading = wait_until(lambda: (s := engine.jobs.status()).message == "loading_model" and s, what="loading")
        assert loading.state == "running" and loading.step == 0
        assert loading.eta_seconds() is None  # no pace before the first step

        gate.set()
        mid = wait_until(lambda: (s := engine.jobs.status()).step >= 2 and s, what="two steps")
        assert mid.total == 600 and mid.state == "running"
        eta = mid.eta_seconds()
        assert eta is not None and eta > 0

        stopping = engine.jobs.stop()
        assert stopping.state == "stopping" and stopping.message == "stopping"
        assert stopping.eta_seconds() is None  # it ends after this step: no time is "left"
        steps_at_stop = stopping.step
        done = finish(engine.jobs)
    finally:
        gate.set()
        engine.jobs.stop()
        engine.jobs.wait(WAIT)

    assert done.state == "stopped" and done.error is None
    assert done.eta_seconds() is None
    run = RunFolder(config.out)
    summary = json.loads(run.summary_path.read_text())
    assert summary["status"] == "stopped"
    assert steps_at_stop <= summary["steps"] <= steps_at_stop + 1  # the step under way finishes, no more
    assert summary["steps"] < 600 and len(run.read_metrics()) == summary["steps"]
    assert (run.adapter_dir / "adapter_model.safetensors").is_file()
    assert (run.adapter_dir / "adapter_config.json").is_file()
    assert done.result.status == "stopped"

    # a page that reloads after the job ended re-attaches through status(): run and state are still there
    again = engine.jobs.status()
    assert (again.state, again.run, again.step) == ("stopped", config.out, done.step)
    row = next(r for r in engine.runs.rows() if r.run == run.path.name)
    assert row.status == "stopped" and row.adapter is True


def test_a_finished_job_keeps_its_run_and_state_for_a_reloaded_page(engine, tiny_data):
    engine.start_training(tiny_config(tiny_data, epochs=2))
    finish(engine.jobs)
    status = engine.jobs.status()
    assert status.state == "completed" and status.kind == "train" and status.title == "gan (improved)"
    assert status.step == status.total == 6
    assert Path(status.run).is_dir() and status.result.status == "completed"
    assert json.loads(RunFolder(status.run).summary_path.read_text())["steps"] == 6


def test_bad_data_fails_the_job_with_its_message_and_earlier_runs_stay_readable(engine, tiny_data, tmp_path):
    earlier = completed_run(engine, tiny_data)

    engine.start_training(tiny_config(tmp_path / "no-such-file.jsonl"))
    failed = finish(engine.jobs)
    assert failed.state == "failed"
    assert "no data file or folder" in failed.error and "no-such-file.jsonl" in failed.error
    assert failed.message == failed.error

    # the earlier run is untouched and still readable; the manager takes a new job
    run = engine.runs.folder(earlier)
    assert run.read_config()[0].seed == 3 and len(run.read_metrics()) == 3
    assert [r.run for r in engine.runs.rows()] == [earlier]
    later = completed_run(engine, tiny_data)
    assert later != earlier


def test_an_exception_mid_training_fails_the_job_and_leaves_the_folder_readable(engine, tiny_data):
    config = tiny_config(tiny_data, epochs=3, out=str(engine.settings.runs_dir / "crashed"))

    def on_step(record):
        if record["step"] == 2:
            raise RuntimeError("disk on fire")

    engine.jobs.start("train", "crashing", lambda report, should_stop: train(config, base=make_base(), on_step=on_step))
    status = finish(engine.jobs)
    assert status.state == "failed" and status.error == "RuntimeError: disk on fire"

    run = engine.runs.folder("crashed")
    assert run.read_config()[0].epochs == 3
    assert [r["step"] for r in run.read_metrics()] == [1, 2]
    row = next(r for r in engine.runs.rows() if r.run == "crashed")
    assert (row.status, row.steps, row.adapter) == ("unfinished", 2, False)
    with pytest.raises(GantuneError, match="no adapter"):
        engine.runs.adapter_archive("crashed")
    assert completed_run(engine, tiny_data)  # and the next job runs


def test_two_runs_started_in_the_same_second_get_their_own_folders(engine, tiny_data, monkeypatch):
    monkeypatch.setattr(engine_module, "new_run_dir", lambda root, method, preset: Path(root) / f"{method}-same-second")
    first = completed_run(engine, tiny_data)
    second = completed_run(engine, tiny_data)
    assert (first, second) == ("gan-same-second", "gan-same-second-2")


# --- the runs folder ------------------------------------------------------------------------------

def _fake_run(folder: Path, data) -> Path:
    RunFolder(folder).create().write_config(tiny_config(data), {})
    return folder


def test_run_folder_refuses_ids_outside_the_runs_folder(engine, tiny_data, tmp_path):
    runs = engine.settings.runs_dir
    good = _fake_run(runs / "good", tiny_data)
    # runs that a sloppy check would reach: "../x" and "a/../../b" end in the names of real runs
    _fake_run(runs / "x", tiny_data)
    _fake_run(runs / "b", tiny_data)
    outside = _fake_run(tmp_path / "outside", tiny_data)
    (runs / "link").symlink_to(outside, target_is_directory=True)
    (runs / "notarun").mkdir()
    (runs / "file.txt").write_text("hi")

    assert engine.runs.folder("good").path == good.resolve()
    for bad in ["../x", "/etc", "a/../../b", "x/", "", None, "..", ".", "../outside", str(outside), "link",
                "notarun", "file.txt", "missing", "good\n"]:
        with pytest.raises(GantuneError, match="no such run"):
            engine.runs.folder(bad)
    with pytest.raises(GantuneError, match="no such run"):
        engine.runs.delete("../x")
    assert (runs / "x").is_dir() and outside.is_dir()


def test_delete_run_refuses_the_run_being_written(engine, tiny_data):
    config = tiny_config(tiny_data, epochs=200)
    engine.start_training(config)
    name = Path(config.out).name
    wait_until(lambda: engine.jobs.status().step >= 1, what="the first step")
    with pytest.raises(GantuneError, match="being written by the running job"):
        engine.runs.delete(name)
    assert next(r for r in engine.runs.rows() if r.run == name).status == "running"
    engine.jobs.stop()
    assert finish(engine.jobs).state == "stopped"
    engine.runs.delete(name)
    assert not Path(config.out).exists()
    assert name not in [r.run for r in engine.runs.rows()]


def test_adapter_archive_zips_the_adapter(engine, tiny_data):
    run_id = completed_run(engine, tiny_data)
    archive = engine.runs.adapter_archive(run_id)
    assert archive.suffix == ".zip" and archive.is_file()
    with zipfile.ZipFile(archive) as zf:
        names = set(zf.namelist())
        assert {"adapter_model.safetensors", "adapter_config.json"} <= names
        config = json.loads(zf.read("adapter_config.json"))
    assert config  # the JSON config inside is readable
    with pytest.raises(GantuneError, match="no such run"):
        engine.runs.adapter_archive("../" + run_id)


def test_list_runs_newest_first_with_the_runs_tab_columns(engine, tiny_data):
    older = completed_run(engine, tiny_data)
    newer = completed_run(engine, tiny_data, epochs=2)
    (engine.settings.runs_dir / "not-a-run").mkdir()

    rows = engine.runs.rows()
    assert [r.run for r in rows] == [newer, older]
    assert set(COLUMNS) <= {f.name for f in fields(RunRow)}
    assert {k: getattr(rows[0], k) for k in ("method", "preset", "status", "steps", "adapter", "evaluated")} == \
        {"method": "gan", "preset": "improved", "status": "completed", "steps": 6, "adapter": True, "evaluated": False}
    assert rows[1].steps == 3 and rows[0].trainable_params > 0 and rows[0].seconds > 0

    # a file landing in the older run (its adapter .zip, an eval.json) does not make it "newer"
    time.sleep(0.01)
    engine.runs.adapter_archive(older)
    (engine.settings.runs_dir / older / "eval.json").write_text("{}")
    rows = engine.runs.rows()
    assert [r.run for r in rows] == [newer, older]
    assert rows[1].evaluated is True


# --- hosted (Space) mode --------------------------------------------------------------------------

def test_space_mode_caps_jobs_and_turns_remote_code_off(tmp_path, tiny_data):
    calls = []

    def loader(name, gguf_file, trust_remote_code, precision="auto"):
        calls.append((name, gguf_file, trust_remote_code))
        return make_base()

    space = Engine(Settings(runs_dir=tmp_path / "space-runs", space=True), load_model=loader)
    for overrides, message in [
        ({"n": 41}, "at most 40 pairs"),
        ({"n": None}, "at most 40 pairs"),
        ({"epochs": 4}, "at most 3 epochs"),
        ({"max_new_tokens": 49}, "at most 48 new tokens"),
    ]:
        with pytest.raises(GantuneError, match=message):
            space.start_training(tiny_config(tiny_data, **overrides))
    assert space.jobs.status().state == "idle"  # nothing was started
    assert list(space.settings.runs_dir.iterdir()) == []

    space.model("some/model", None, trust_remote_code=True)
    assert calls == [("some/model", None, False)]

    # within the caps a job runs; and a local workbench keeps the user's choice
    space.start_training(tiny_config(tiny_data, n=12, epochs=1))
    assert finish(space.jobs).state == "completed"
    local = Engine(Settings(runs_dir=tmp_path / "local-runs"), load_model=loader)
    local.model("some/model", None, trust_remote_code=True)
    assert calls[-1] == ("some/model", None, True)
    local.start_training(tiny_config(tiny_data, n=12, epochs=4))  # over the Space caps: fine here
    local.jobs.stop()
    finish(local.jobs)


# --- comparison -----------------------------------------------------------------------------------

def test_comparison_over_two_seeds_trains_lora_beside_the_run_and_reports_intervals(engine, tiny_data):
    reference = completed_run(engine, tiny_data)
    with pytest.raises(GantuneError, match="unknown method"):
        engine.start_comparison(reference, ["lora", "magic"])
    with pytest.raises(GantuneError, match="no such run"):
        engine.start_comparison("../" + reference, ["lora"])
    with pytest.raises(GantuneError, match="seeds must be between 1 and 5"):
        engine.start_comparison(reference, ["lora"], seeds=0)

    started = engine.start_comparison(reference, ["lora"], seeds=2)
    assert started.kind == "compare" and Path(started.run).name == reference
    status = finish(engine.jobs)
    assert status.state == "completed", status.error
    report = status.result
    ref_path = engine.runs.folder(reference).path
    rows = {r["method"]: r for r in report["rows"]}
    assert list(rows) == ["base", reference, "lora"] and report["seeds"] == [3, 4]
    for row in rows.values():  # a mean over both seeds, with a 95% interval around it
        assert row["seeds"] == [3, 4]
        lo, hi = row["ci"]["rougeL"]
        assert lo <= row["rougeL"] <= hi
    assert report["reference"]["method"] == "reference" and report["reference"]["distinct2"] > 0

    # the run itself at its own seed, its settings again at the next seed, lora at both: all in the runs folder
    runs = [Path(r) for r in rows[reference]["runs"] + rows["lora"]["runs"]]
    assert runs[0].resolve() == ref_path and len(runs) == 4
    for run in runs:
        assert run.parent.resolve() == engine.settings.runs_dir.resolve() and (run / "eval.json").is_file()
    ref_saved = json.loads((ref_path / "config.json").read_text())
    again = json.loads((runs[1] / "config.json").read_text())
    assert again["config"] == {**ref_saved["config"], "seed": 4, "out": again["config"]["out"]}
    lora_saved = json.loads((runs[2] / "config.json").read_text())
    assert lora_saved["config"]["method"] == "lora"
    for key in ("data", "n", "seed", "train_fraction", "subset", "epochs", "batch_size", "max_new_tokens"):
        assert lora_saved["config"][key] == ref_saved["config"][key], key
    assert lora_saved["resolved"]["split"] == ref_saved["resolved"]["split"]

    # kept in the runs folder for the page, with each row's answer lengths in tokens (6 test questions a seed)
    saved = engine.runs.comparisons()
    assert len(saved) == 1 and saved[0]["rows"] == report["rows"] and "generations" not in saved[0]
    assert {k: len(v) for k, v in saved[0]["lengths"].items()} == {"base": 12, reference: 12, "lora": 12,
                                                                   "reference": 12}
    listed = {r.run: r for r in engine.runs.rows()}
    assert all(listed[run.name].evaluated for run in runs) and "comparisons" not in listed

    # the training tab's job is still the run's, whatever the comparison did
    assert engine.jobs.status("train").run == str(engine.settings.runs_dir / reference)
    assert engine.jobs.status("train").state == "completed" and engine.jobs.status().kind == "compare"



def test_the_next_comparisons_plan_prices_its_evaluations_at_the_pace_the_last_one_measured(engine, tiny_data):
    """Before a comparison, its evaluations are a timed decode's guess (the scorers and retention passes unseen);
    once one has run, every later plan for that model (here, or in a restarted workbench, from the saved report)
    prices them at the seconds per answer token it measured, and the evaluations it will reuse at nothing."""
    from ui.estimate import plan_comparison

    reference = completed_run(engine, tiny_data)
    run = engine.runs.folder(reference)
    config = run.read_config()[0]
    assert engine.runs.eval_pace_hint(config) is None
    planned = plan_comparison(run, ["lora"], 1, engine.settings.retention_n, None, engine.runs.pace_hint)
    evaluations = [i for i, stage in enumerate(planned.stages) if stage.kind == "evaluate"]
    assert [planned.stages[i].what for i in evaluations] == ["base", reference, "lora"]
    assert all(planned.stages[i].tokens > 0 and planned.stages[i].seconds > 0 for i in evaluations)
    began = time.monotonic()
    engine.start_comparison(reference, ["lora"])
    status = finish(engine.jobs)
    whole = time.monotonic() - began
    assert status.state == "completed", status.error

    # however busy the machine: the three evaluations took part of the whole job (the stage clock's arithmetic is
    # tests/test_estimate.py's)
    pace = engine.runs.eval_pace_hint(config)
    assert pace and 0 < pace <= whole / sum(planned.stages[i].tokens for i in evaluations)
    assert status.result["evaluation_pace"] == {"model": config.model, "gguf_file": config.gguf_file,
                                                "precision": config.precision, "seconds_per_token": pace}

    # the next comparison's plan: base's and the run's evaluations are kept (nothing to do), lora's at the pace
    again = plan_comparison(run, ["lora"], 1, engine.settings.retention_n, None, engine.runs.pace_hint, eval_pace=pace)
    assert [(again.stages[i].seconds, again.stages[i].tokens) for i in evaluations[:2]] == [(0.0, 0), (0.0, 0)]
    assert again.stages[evaluations[2]].seconds == pytest.approx(planned.stages[evaluations[2]].tokens * pace)
    assert "basis_eval_measured" in again.basis and "basis_eval_measured" not in planned.basis
    restarted = Engine(Settings(runs_dir=engine.settings.runs_dir), load_model=lambda *a: make_base())
    assert restarted.runs.eval_pace_hint(config) == pytest.approx(pace)  # from the saved comparison
    assert restarted.runs.eval_pace_hint(replace(config, model="another/model")) is None

# --- what the status says -------------------------------------------------------------------------

def test_the_status_line_says_time_left_a_first_estimate_or_stopping():
    running = JobStatus(state="running", kind="train", title="gan (improved)", step=2, total=10, message="training",
                        step_began=100.0, pace=40.0, finish_at=420.0)
    assert "about 5 min 20 s left" in progress_html(running, "en", now=100.0)  # 8 steps of 40 s
    assert "осталось около 5 мин 10 с" in progress_html(running, "ru", now=110.0)
    assert "step 2/10 (20%)" in progress_html(running, "en", now=100.0)
    assert "шаг 2/10 (20\xa0%)" in progress_html(running, "ru", now=100.0)  # Babel's percent for Russian
    # a step slower than SLOW_STEP_SECONDS: the status suggests smaller settings
    assert "For a quicker try" in progress_html(running, "en", now=100.0)
    # before the first step ends: an earlier run's pace, said to be a first estimate …
    first = replace(running, step=0, total=0, pace=None, pace_hint=5.0, finish_at=None)
    assert "first estimate: about 50 s" in progress_html(first, "en", planned=10, now=100.0)
    # … or, with no earlier run alike, only what the first step took so far: no total that would climb
    blind = replace(first, pace_hint=None)
    shown = progress_html(blind, "en", planned=10, now=112.0)
    assert "first step under way, 12 s so far; the time left follows once it ends" in shown
    assert "at least" not in shown and "step 0/10" in shown
    stopping = replace(running, state="stopping", message="stopping")
    shown = progress_html(stopping, "en", now=100.0)
    assert "stopping after this step" in shown and "left" not in shown


def test_a_comparison_stage_reads_in_the_pages_language():
    from gantune.compare import Progress
    from ui.engine import progress_message
    from ui.views import message_text

    stage = progress_message(Progress("step", "seed 3: training lora: step 2/6", 1, 4, 3, "lora", "runs/x", (2, 6)))
    status = JobStatus(state="running", kind="compare", message=stage["message"], message_args=stage["args"])
    assert message_text(status, "en") == "seed 3: training lora, step 2/6"
    assert message_text(status, "ru") == "зерно 3: обучение lora, шаг 2/6"
    stage = progress_message(Progress("evaluating", "seed 4: evaluating base …", 0, 4, 4, "base"))
    status = replace(status, message=stage["message"], message_args=stage["args"])
    assert message_text(status, "ru") == "зерно 4: оценка base …"
    batch = progress_message(Progress("batch", "seed 4: evaluating base: 25% answered …", 0, 4, 4, "base",
                                      share=(0.25, 0.5)))
    assert (batch["message"], batch["fraction"], batch["upto"]) == ("compare_evaluating", 0.25, 0.5)
    assert (stage["fraction"], stage["upto"]) == (0.0, 1.0)


def test_a_resumed_run_shows_its_checkpoints_step_from_the_start(tmp_path, tiny_data):
    """Resuming from step 2 of 6 shows 2/6 while the model loads and the first step runs, never 0/6."""
    runs = tmp_path / "runs"
    asked = iter(range(100))
    stopped = train(tiny_config(tiny_data, out=str(runs / "stopped"), epochs=2, checkpoint_every=1), base=make_base(),
                    should_stop=lambda: next(asked) >= 2)
    assert (stopped.status, stopped.steps, stopped.total_steps) == ("stopped", 2, 6)
    gate = threading.Event()

    def slow_loader(*args):
        gate.wait(WAIT)
        return make_base()

    engine = Engine(Settings(runs_dir=runs), load_model=slow_loader)
    try:
        engine.resume_training("stopped")
        loading = wait_until(lambda: (s := engine.jobs.status()).message == "loading_model" and s, what="loading")
        assert (loading.step, loading.total) == (2, 6)
        assert "2/6" in progress_html(loading, "en", None, [])
        gate.set()
        done = finish(engine.jobs)
    finally:
        gate.set()
        engine.jobs.stop()
        engine.jobs.wait(WAIT)
    assert (done.state, done.step, done.total) == ("completed", 6, 6)
