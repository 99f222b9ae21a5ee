"""Hardening III (issue 21): one writer per run, a Space nobody can lock up, every file checked; and Hardening IV
(issue 27, the ``test_27_*`` tests at the end): a refusal harms nothing, a Space keeps its visitors apart, every
reader reads only what is safe.

One test per case of the issue, at the CLI (in-process, or a process of its own where the case is
another process or a limit on it) and, where the case has a page door, over HTTP with gradio_client
(hosted mode where the case is a Space's):

 1. a Space cannot be locked up: every setting has a bound a Space enforces, a step's cost is
    estimated against its budget, and Stop ends a step inside its long loops (the step unrecorded,
    the method as it was before it, so a resume matches a run never stopped)
 2. a run being trained cannot be replaced (--overwrite) or deleted: one line naming its holder
 3. a second resume of a run being resumed is refused the same way
 4. a resume continues the same run: what defines it may not change; more epochs are recorded; a
    resume that crashes leaves an unfinished run, not a stale "completed"
 5. bench never replaces a file, its own or a user's
 6. a run a comparison uses cannot be deleted, and a comparison keeps the rows it finished when a
    later one fails
 7. a full disk (a file-size limit, ENOSPC from safetensors) is one line; the previous copy stays
 8. a hand-edited comparison report is listed as damaged; the Compare tab works on
 9. a checkpoint with a misshapen optimiser state, a vector ``step`` or NaN weights is refused in one line
10. an adapter linked outside the run is never zipped nor loaded; a FIFO never blocks the page or the CLI
11. a claim that never wrote a run, a folder with a model's config.json, run names in any script or
    with spaces, Stop pressed in the last step, and server paths on a hosted page
"""

from __future__ import annotations

import json
import math
import os
import resource
import selectors
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import WORDS, make_base
from gradio_client import Client, handle_file
from safetensors.torch import load_file, save_file
from test_catalogue import _save_model, assert_one_line, page_refusal, run_cli, served
from test_run_safety import ROWS, TINY, _config, copy_run, edit_json, snapshot
from test_ui_app import SETUP_ORDER, WAIT, setup_args, start_args, state_of, warnings_of

import gantune.compare.evaluation as compare_evaluation
import gantune.compare.protocol as compare_module
import gantune.methods.gan.method as gan_method
from gantune.errors import GantuneError
from gantune.methods.gan.implicit import Round
from gantune.methods.gan.method import GanMethod
from gantune.methods.gan.rollout import Rollout
from gantune.runs import RunFolder
from gantune.runs.lock import RunLock
from gantune.trainer import train
from ui.engine import Engine, Settings

ROOT = Path(__file__).resolve().parents[1]
LOCK = "gantune-run.lock"
SIZE_LIMIT = 20_000  # bytes a process under ``ulimit -f`` may write to one file: JSON fits, a checkpoint does not


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Two tiny models, two data files, and one finished run (3 steps, a checkpoint after each)."""
    root = tmp_path_factory.mktemp("hardening")
    w = SimpleNamespace(root=root, model=_save_model(root / "tiny-model"), other_model=_save_model(root / "other-model"),
                        data=root / "pairs.jsonl", other_data=root / "other.jsonl")
    w.data.write_text("\n".join(json.dumps(r) for r in ROWS) + "\n")
    w.other_data.write_text("\n".join(json.dumps({"question": f"what did {w} write ?", "answer": f"{w} wrote a novel ."})
                                      for w in WORDS[:12]) + "\n")
    w.finished = root / "finished"
    train(_config(w, w.finished), base=make_base())
    return w


@pytest.fixture(scope="module")
def page(world, tmp_path_factory):
    """The workbench (models load by path) over a runs folder of its own, served on a free port."""
    with served(Engine(Settings(runs_dir=tmp_path_factory.mktemp("hardening-runs")))) as served_page:
        yield served_page


def refresh(page) -> None:
    """What the page's timer and Refresh do: every run picker gets the runs as they are now."""
    page.client.predict(api_name="/list_runs")
    page.client.predict(api_name="/refresh_lists")


def cli_args(world, out: Path, *extra: str) -> list[str]:
    return ["train", "--model", str(world.model), "--data", str(world.data), *TINY, "--out", str(out), *extra]


def cli_process(args: list[str], limit: int | None = None) -> subprocess.Popen:
    """``python -m gantune ARGS`` in a process of its own (with ``limit``: the bytes it may write to one file)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.Popen([sys.executable, "-m", "gantune", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, preexec_fn=(lambda: _file_size_limit(limit)) if limit else None)


def _file_size_limit(limit: int) -> None:
    """``ulimit -f``: a write past ``limit`` bytes fails with EFBIG (its signal ignored, as a shell's user sees it)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def wait_for_steps(run: RunFolder, n: int, proc: subprocess.Popen) -> None:
    """Until the run has recorded ``n`` steps past what it had (a process that ends first fails the test)."""
    import time

    start, deadline = len(run.read_metrics()), time.monotonic() + WAIT * 2
    while len(run.read_metrics()) < start + n:
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, f"fewer than {n} steps"
        time.sleep(0.05)


def stop_process(proc: subprocess.Popen) -> tuple[str, str]:
    proc.send_signal(signal.SIGINT)  # stops after its step and saves
    try:
        return proc.communicate(timeout=WAIT * 2)
    finally:
        proc.kill()


def long_run(world, out: Path) -> subprocess.Popen:
    """A CLI training of 600 steps at ``out``, seen training (2 steps done)."""
    proc = cli_process(cli_args(world, out, "--epochs", "200", "--checkpoint-every", "1"))
    wait_for_steps(RunFolder(out), 2, proc)
    return proc


def resumable(world, dest: Path, epochs: int = 2) -> Path:
    """A copy of the finished run, planned for ``epochs`` epochs and never finished: it resumes at step 3."""
    copy_run(world, dest, unfinished=True)
    edit_json(dest / "config.json", lambda d: d["config"].update(epochs=epochs))
    return dest


# --- 1. a Space nobody can lock up --------------------------------------------------------------------

HOSTED_ROWS = [{"question": f"who is the author of {a} {b} ?", "answer": f"the author was born in a city and wrote {b} ."}
               for a in WORDS[:6] for b in WORDS[6:14]]  # 48 pairs: a Space's 40 fit


@pytest.fixture
def space(tmp_path):
    """A hosted workbench (the tiny model as 'org/model') over a data folder of 48 pairs, served."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "forget10.jsonl").write_text("\n".join(json.dumps(r) for r in HOSTED_ROWS) + "\n")
    engine = Engine(Settings(runs_dir=tmp_path / "runs", data=str(data), space=True, max_upload_mb=1.0),
                    load_model=lambda *a: make_base())
    with served(engine) as served_page:
        yield SimpleNamespace(**vars(served_page), data=data)


def hosted_start(space, **settings) -> list:
    """/start's arguments on a Space: the hub model, the Space's own data, 12 pairs and the tiny settings."""
    return start_args(space.data, setup={"model": "org/model", "data_path": ""}, **settings)


def test_1_a_space_refuses_d_steps_past_their_bounds_and_starts_nothing(space):
    """The issue's request (10**12 D steps) is past every workbench's bound; 50 is past a Space's cap."""
    shown = page_refusal(space, hosted_start(space, d_steps=10**12, warmup_epochs=0, epochs=1))
    assert "--d-steps must be at most 100 (got 1000000000000)" in shown
    shown = page_refusal(space, hosted_start(space, d_steps=50, warmup_epochs=0, epochs=1))
    assert "this hosted workbench allows at most 5 for “d steps”" in shown
    shown = page_refusal(space, hosted_start(space, ppo_epochs=50))
    assert "this hosted workbench allows at most 4 for “ppo epochs”" in shown
    assert space.engine.jobs.status().state == "idle" and not any(space.engine.settings.runs_dir.iterdir())


@pytest.mark.slow
def test_1_a_space_refuses_a_step_over_its_budget_naming_the_largest_part(space):
    """Each lever at its cap fits; four samples a question and four PPO epochs at once do not."""
    sizes = {"epochs": 3, "batch_size": 8, "max_new_tokens": 48, "max_prompt_tokens": 128}
    args = hosted_start(space, samples_per_question=4, baseline="loo", ppo_epochs=4, **sizes)
    args[1 + SETUP_ORDER.index("n")] = 40  # the Space's most pairs
    shown = page_refusal(space, args)
    assert "these settings make a training step of about 106,112 token passes through the model, more than the " \
           "91,200 this hosted workbench allows; lower “ppo epochs” (the largest part)" in shown
    assert space.engine.jobs.status().state == "idle"


def test_1_samples_past_their_bound_are_one_line_at_the_cli(capsys, world, tmp_path):
    line = assert_one_line(*run_cli(capsys, cli_args(world, tmp_path / "run", "--samples-per-question", "1000",
                                                     "--baseline", "loo")))
    assert line == "gantune: error: --samples-per-question must be at most 64 (got 1000)"
    assert not (tmp_path / "run").exists()


def test_1_ctrl_c_inside_the_d_steps_ends_the_step_unrecorded_and_the_resume_matches(capsys, world, tmp_path,
                                                                                    monkeypatch):
    settings = ["--d-steps", "20", "--checkpoint-every", "1"]
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    assert run_cli(capsys, cli_args(world, straight, *settings))[0] == 0
    calls, real = [], gan_method.d_loss

    def d_loss(*args, **kwargs):
        calls.append(1)
        if len(calls) == 25:  # the fifth D step of step 2: Ctrl-C
            os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kwargs)

    monkeypatch.setattr(gan_method, "d_loss", d_loss)
    code, err = run_cli(capsys, cli_args(world, stopped, *settings))
    assert code == 130, err
    assert len(calls) < 40  # step 2's twenty D steps did not all run
    run = RunFolder(stopped)
    summary = run.read_summary()
    assert (summary.status, summary.steps) == ("stopped", 1) and [r["step"] for r in run.read_metrics()] == [1]
    assert run.load_checkpoint()[1]["step"] == 1
    monkeypatch.undo()
    assert run_cli(capsys, ["train", "--resume", str(stopped), "--quiet"])[0] == 0
    a, b = (load_file(RunFolder(r).adapter_dir / "adapter_model.safetensors") for r in (straight, stopped))
    assert all(torch.equal(a[k], b[k]) for k in a)  # no half step was kept


@pytest.mark.slow
def test_1_stop_on_a_space_ends_the_step_inside_its_d_steps(space, monkeypatch):
    calls, real = [], gan_method.d_loss

    def d_loss(*args, **kwargs):
        calls.append(1)
        if len(calls) == 7:  # step 2's second D step (5 a step): the Stop button
            space.client.predict(api_name="/stop")
        return real(*args, **kwargs)

    monkeypatch.setattr(gan_method, "d_loss", d_loss)
    space.client.predict(*hosted_start(space, d_steps=5, warmup_epochs=0), api_name="/start")
    status = space.engine.jobs.wait(WAIT)
    assert status.state == "stopped" and len(calls) < 10
    run = RunFolder(status.run)
    assert run.read_summary().steps == 1 and [r["step"] for r in run.read_metrics()] == [1]
    assert "stopped" in state_of(space.client.predict(api_name="/status")[0])


# --- 2. and 3. one writer per run ---------------------------------------------------------------------

@pytest.mark.slow
def test_2_overwriting_a_run_while_it_trains_is_refused_naming_the_holder(capsys, world, tmp_path):
    out = tmp_path / "run"
    first = long_run(world, out)
    try:
        line = assert_one_line(*run_cli(capsys, cli_args(world, out, "--seed", "4", "--overwrite")))
        assert line.startswith(f"gantune: error: {out} is in use by another gantune job (process {first.pid}, "
                               "training since ")
    finally:
        _, err = stop_process(first)
    assert first.returncode == 130, err
    run = RunFolder(out)
    steps = [r["step"] for r in run.read_metrics()]
    assert steps == list(range(1, len(steps) + 1)) and run.read_summary().steps == len(steps)
    assert run.read_config()[0].seed == 3  # all of it the first run's


@pytest.mark.slow
def test_2_the_page_refuses_to_delete_a_run_another_process_trains(world, page):
    out = page.engine.settings.runs_dir / "trained-elsewhere"
    first = long_run(world, out)
    try:
        refresh(page)
        says = page.client.predict(out.name, api_name="/delete_run")[0]
        assert f"is in use by another gantune job (process {first.pid}, training since " in says
        assert (out / "config.json").is_file()
    finally:
        stop_process(first)
    assert first.returncode == 130


@pytest.mark.slow
def test_3_a_second_resume_is_refused_at_the_cli_and_in_the_page(capsys, world, page):
    run = resumable(world, page.engine.settings.runs_dir / "resumed-twice", epochs=200)
    first = cli_process(["train", "--resume", str(run), "--quiet"])
    try:
        wait_for_steps(RunFolder(run), 2, first)
        line = assert_one_line(*run_cli(capsys, ["train", "--resume", str(run), "--quiet"]))
        assert f"is in use by another gantune job (process {first.pid}, resuming the run since " in line
        refresh(page)
        says = page.client.predict(run.name, api_name="/resume")
        assert f"is in use by another gantune job (process {first.pid}, resuming the run since " in says
        assert not page.engine.jobs.status().active
    finally:
        stop_process(first)
    steps = [r["step"] for r in RunFolder(run).read_metrics()]
    assert steps == list(range(1, len(steps) + 1))  # one writer: no step twice, none out of order
    samples = [s["step"] for s in RunFolder(run).read_samples()]
    assert samples == sorted(samples) and max(Counter(samples).values()) == 2  # two answers a step, never doubled


# --- 4. a resume continues the same run ------------------------------------------------------------------

@pytest.mark.parametrize(("flags", "says"), [
    (["--seed", "4"], "--seed (3 → 4)"),
    (["--model", "OTHER_MODEL"], "--model ("),
    (["--data", "OTHER_DATA"], "--data ("),
    (["--subset", "forget05"], "--subset (forget10 → forget05)"),
    (["--n", "10"], "--n (12 → 10)"),
    (["--preset", "thesis"], "--preset (improved → thesis)"),
    (["--lr", "0.01"], "--lr (0.001 → 0.01)"),
], ids=["seed", "model", "data", "subset", "n", "preset", "lr"])
def test_4_a_resume_that_changes_what_defines_the_run_is_refused_and_changes_nothing(capsys, world, tmp_path, flags,
                                                                                     says):
    run = copy_run(world, tmp_path / "run")
    flags = [{"OTHER_MODEL": str(world.other_model), "OTHER_DATA": str(world.other_data)}.get(f, f) for f in flags]
    before = snapshot(run)
    line = assert_one_line(*run_cli(capsys, ["train", "--resume", str(run), "--epochs", "2", *flags, "--quiet"]))
    assert line.startswith("gantune: error: a resume continues the same run, so it cannot change ") and says in line
    assert snapshot(run) == before


def test_4_a_resume_may_add_epochs_and_config_json_records_it(capsys, world, tmp_path):
    run = copy_run(world, tmp_path / "run")  # completed: 1 epoch, 3 steps, all of them adversarial
    code, err = run_cli(capsys, ["train", "--resume", str(run), "--epochs", "2", "--quiet"])
    assert code == 0, err
    resolved = json.loads((run / "config.json").read_text())["resolved"]
    [entry] = resolved["resumes"]
    # the warm-up the run had (none: one epoch) stays, so the epoch it did keeps its phase
    assert entry["step"] == 3 and entry["changed"] == {"epochs": [1, 2], "warmup_epochs": [2, 0]}
    summary = RunFolder(run).read_summary()
    assert (summary.status, summary.steps, summary.total_steps) == ("completed", 6, 6)
    assert {r["phase"] for r in RunFolder(run).read_metrics()} == {"adversarial"}


def test_4_a_resume_that_crashes_leaves_an_unfinished_run_not_a_stale_summary(capsys, world, tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    run = copy_run(world, runs / "run")

    def crash(self, batch):
        raise RuntimeError("the machine fell over")

    monkeypatch.setattr(GanMethod, "train_step", crash)
    code, err = run_cli(capsys, ["train", "--resume", str(run), "--epochs", "2", "--quiet"])
    assert code == 1 and "the machine fell over" in err
    folder = RunFolder(run)
    assert folder.read_config()[0].epochs == 2 and folder.read_summary() is None  # no "completed 1/1" beside it
    engine = Engine(Settings(runs_dir=runs), load_model=lambda *a: make_base())
    assert [(r.run, r.status) for r in engine.runs.rows()] == [("run", "unfinished")]


# --- 5. bench never replaces a file ----------------------------------------------------------------------

def bench_args(world, out: Path) -> list[str]:
    return ["bench", "--model", str(world.model), "--data", str(world.data), "--bleurt", "none", "--methods",
            "adapter-mle", "--n", "6", "--epochs", "1", "--out", str(out)]


def test_5_bench_refuses_an_out_beside_a_users_files_and_touches_nothing(capsys, world, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "results.md").write_text("my notes")
    (folder / "generations.jsonl").write_text("my generations")
    line = assert_one_line(*run_cli(capsys, bench_args(world, folder / "results.json")))
    assert line == (f"gantune: error: {folder / 'results.md'} already exists, and bench never replaces a file; choose "
                    "another --out (or move it aside)")
    assert snapshot(folder) == {"results.md": b"my notes", "generations.jsonl": b"my generations"}


def test_5_a_second_bench_into_one_folder_is_refused_and_the_first_one_s_files_stay(capsys, world, tmp_path):
    assert run_cli(capsys, bench_args(world, tmp_path / "a.json"))[0] == 0
    first = snapshot(tmp_path)
    line = assert_one_line(*run_cli(capsys, bench_args(world, tmp_path / "b.json")))
    assert f"{tmp_path / 'generations.jsonl'} already exists, and bench never replaces a file" in line
    assert snapshot(tmp_path) == first


# --- 6. what a comparison uses, and what it finished ---------------------------------------------------

def test_6_a_run_a_comparison_uses_cannot_be_deleted_meanwhile(world, page, monkeypatch):
    reference = copy_run(world, page.engine.settings.runs_dir / "compared")
    refresh(page)
    answers, real = [], compare_module.train

    def training(config, **kwargs):  # while the comparison trains its row, another page deletes its run
        other = Client(page.url, verbose=False)
        other.predict(api_name="/list_runs")
        answers.append(other.predict(reference.name, api_name="/delete_run")[0])
        return real(config, **kwargs)

    monkeypatch.setattr(compare_module, "train", training)
    page.client.predict(reference.name, ["adapter-mle"], 1, api_name="/compare")
    status = page.engine.jobs.wait(WAIT)
    assert status.state == "completed", status.error
    assert answers == ["**Error:** this run is being written by the running job; stop it first"]
    assert (reference / "config.json").is_file() and (reference / "eval.json").is_file()


def test_6_a_comparison_keeps_the_rows_it_finished_when_a_later_row_fails(world, page, monkeypatch):
    reference = copy_run(world, page.engine.settings.runs_dir / "compared-then-failed")
    refresh(page)
    real = compare_module.train

    def training(config, **kwargs):
        if config.method == "lora":
            raise GantuneError(f"could not save the step's metrics in {config.out}: the folder was deleted or moved")
        return real(config, **kwargs)

    monkeypatch.setattr(compare_module, "train", training)
    before = set((page.engine.settings.runs_dir / "comparisons").glob("*.json"))
    page.client.predict(reference.name, ["adapter-mle", "lora"], 1, api_name="/compare")
    status = page.engine.jobs.wait(WAIT)
    assert status.state == "failed" and "the folder was deleted or moved" in status.error
    [saved] = set((page.engine.settings.runs_dir / "comparisons").glob("*.json")) - before
    report = json.loads(saved.read_text())
    assert report["status"] == "failed" and "the folder was deleted or moved" in report["error"]
    assert [r["method"] for r in report["rows"]] == ["base", reference.name, "adapter-mle"]


def test_6_a_bench_keeps_the_rows_it_finished_when_a_later_row_fails(capsys, world, tmp_path, monkeypatch):
    real = compare_module.train

    def training(config, **kwargs):
        if config.method == "lora":
            raise GantuneError("out of memory; lower the batch size (--batch-size)")
        return real(config, **kwargs)

    monkeypatch.setattr(compare_module, "train", training)
    args = bench_args(world, tmp_path / "report.json")
    args.insert(args.index("adapter-mle") + 1, "lora")
    code, err = run_cli(capsys, args)  # (the bench draws its progress bars on stderr too)
    assert code == 2 and "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith("gantune: error: out of memory") and "the report keeps the rows finished before it" in line
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["status"] == "failed" and [r["method"] for r in report["rows"]] == ["base", "adapter-mle"]
    assert (tmp_path / "report.md").is_file() and (tmp_path / "generations.jsonl").is_file()


# --- 7. a full disk --------------------------------------------------------------------------------------

@pytest.mark.slow
def test_7_a_file_size_limit_at_the_cli_is_one_line_and_keeps_the_previous_checkpoint(world, tmp_path):
    run = copy_run(world, tmp_path / "run")
    proc = cli_process(["train", "--resume", str(run), "--epochs", "2", "--quiet"], limit=SIZE_LIMIT)
    _, err = proc.communicate(timeout=WAIT * 5)
    line = assert_one_line(proc.returncode, err)
    assert line.startswith(f"gantune: error: could not save a checkpoint in {run}: a file grew past the size this "
                           "process may write (ulimit -f, a quota); the previous copy is kept")
    assert RunFolder(run).load_checkpoint()[1]["step"] == 3


@pytest.mark.slow
def test_7_a_file_size_limit_in_the_page_is_its_readable_message(tmp_path):
    server = served_process(tmp_path / "runs", limit=SIZE_LIMIT)
    try:
        client = Client(server.url, verbose=False)
        client.predict(*start_args(server.data), api_name="/start")
        status_html = wait_for_state(client, "failed")
        assert "could not save a checkpoint in" in status_html and "a file grew past the size this process may " \
               "write" in status_html and "SafetensorError" not in status_html
    finally:
        server.close()


def test_7_no_space_left_from_safetensors_is_the_disk_is_full_at_both_doors(capsys, world, page, tmp_path,
                                                                            monkeypatch):
    """safetensors' own error for ENOSPC (as it words it), on the second checkpoint: the first one stays."""
    from safetensors import SafetensorError

    module = sys.modules[RunFolder.__module__]
    saves, real = [], module.save_file

    def save(tensors, path):
        saves.append(path)
        if len(saves) == 2:
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
        real(tensors, path)

    monkeypatch.setattr(module, "save_file", save)
    out = tmp_path / "run"
    line = assert_one_line(*run_cli(capsys, cli_args(world, out, "--checkpoint-every", "1")))
    assert line == f"gantune: error: could not save a checkpoint in {out}: the disk is full; the previous copy is " \
                   "kept — free some space, then resume"
    assert RunFolder(out).load_checkpoint()[1]["step"] == 1
    saves.clear()
    page.client.predict(*start_args(world.data, setup={"model": str(world.model)}, checkpoint_every=1),
                        api_name="/start")
    status = page.engine.jobs.wait(WAIT)
    assert status.state == "failed" and "the disk is full; the previous copy is kept" in status.error
    assert RunFolder(status.run).load_checkpoint()[1]["step"] == 1


# --- 8. a damaged comparison report ----------------------------------------------------------------------

DAMAGED_REPORTS = {
    "rows-of-numbers": ({"rows": [1]}, "'rows[0]' must be an object (got 1)"),
    "a-row-without-method": ({"rows": [{"runs": ["good"]}]}, "'rows[0].method' must be text (got null)"),
    "runs-a-number": ({"rows": [], "runs": 5}, "'runs' must be a list of run folders (got 5)"),
    "rows-missing": ({"created": "x"}, "'rows' must be a list (got null)"),
    "not-json": (b"{rows", "is not valid JSON"),
}


def test_8_a_hand_edited_comparison_is_listed_as_damaged_and_the_compare_tab_works(world, page):
    copy_run(world, page.engine.settings.runs_dir / "good")
    folder = page.engine.settings.runs_dir / "comparisons"
    folder.mkdir(exist_ok=True)
    for name, (content, _) in DAMAGED_REPORTS.items():
        (folder / f"{name}.json").write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    try:
        refresh(page)
        for selected in ([], ["good"]):
            notes = page.client.predict(selected, "rougeL", "mle_loss", api_name="/compare_view")[0]
            for name, (_, says) in DAMAGED_REPORTS.items():
                assert f"saved comparison {name} is damaged, so it is not shown:" in notes and says in notes
    finally:
        for name in DAMAGED_REPORTS:
            (folder / f"{name}.json").unlink()


# --- 9. a damaged checkpoint ---------------------------------------------------------------------------

def _damage(kind: str):
    def change(tensors: dict[str, torch.Tensor]) -> None:
        if kind == "optimiser-moment-of-another-shape":
            key = next(k for k in tensors if k.startswith("opt_g.") and k.endswith(".exp_avg"))
            tensors[key] = torch.zeros(3)
        elif kind == "step-a-vector":
            key = next(k for k in tensors if k.startswith("opt_d.") and k.endswith(".step"))
            tensors[key] = torch.tensor([1.0, 2.0])
        else:
            key = next(k for k in tensors if k.startswith("adapter."))
            tensors[key] = torch.full_like(tensors[key], math.nan)
    return change


CHECKPOINTS = [("optimiser-moment-of-another-shape", "the checkpoint does not fit this optimiser ('opt_g.0.exp_avg' "
                "is of shape [3], its parameter's ["),
               ("step-a-vector", "the checkpoint does not fit this optimiser ('opt_d.0.step' is of shape [2]"),
               ("nan-weights", "the checkpoint's weights hold NaN or infinite values (it is damaged)")]


@pytest.mark.parametrize(("kind", "says"), CHECKPOINTS, ids=[c[0] for c in CHECKPOINTS])
def test_9_a_damaged_checkpoint_is_one_line_at_the_cli_and_in_the_page(capsys, world, page, kind, says):
    run = resumable(world, page.engine.settings.runs_dir / f"checkpoint-{kind}")
    path = run / "checkpoint" / "state.safetensors"
    tensors = load_file(path)
    _damage(kind)(tensors)
    save_file(tensors, path)
    line = assert_one_line(*run_cli(capsys, ["train", "--resume", str(run), "--quiet"]))
    assert line.startswith(f"gantune: error: {run / 'checkpoint'}: ") and says in line
    refresh(page)
    assert "resuming" in page.client.predict(run.name, api_name="/resume")
    status = page.engine.jobs.wait(WAIT)
    assert status.state == "failed" and says in status.error and "RuntimeError" not in status.error
    assert [r["step"] for r in RunFolder(run).read_metrics()] == [1, 2, 3]  # nothing was redone


def _saved_round() -> dict[str, torch.Tensor]:
    ids, mask = torch.ones(3, 4, dtype=torch.long), torch.ones(3, 4, dtype=torch.long)
    parts = Round(ids, mask, ids + 1, mask, ids + 2, mask, torch.zeros(3, 5), torch.zeros(3), torch.zeros(3),
                  torch.tensor([0]))
    return parts.tensors("round")


@pytest.mark.parametrize(("part", "value", "says"), [
    ("round.fake_mask", torch.ones(3, 2, dtype=torch.long), "round's fake_ids, fake_mask do not fit together"),
    ("round.ref_fake", torch.zeros(2), "round's ref_real, ref_fake do not fit together"),
    ("round.noise", torch.zeros(2, 5), "round's parts have different numbers of rows .*noise 2"),
    ("round.answer_ids", torch.ones(3, 4), "round.answer_ids holds no token ids of this model"),
    ("round.fake_ids", torch.full((3, 4), 10), r"round.fake_ids holds no token ids of this model \(ids 0 to 9\)"),
])
def test_9_a_saved_round_or_rollout_whose_parts_do_not_fit_is_refused_before_training(part, value, says):
    tensors = _saved_round()
    Round.from_tensors("round", tensors, torch.device("cpu"), 10)  # as saved: it fits
    tensors[part] = value
    with pytest.raises(ValueError, match=says):  # the trainer says it in one line (the test above)
        Round.from_tensors("round", tensors, torch.device("cpu"), 10)
    ids = torch.ones(2, 3, dtype=torch.long)
    rollout = Rollout(ids, ids, ids, ids, torch.zeros(2, 3), torch.zeros(2, 5)).tensors("rollout.0")
    Rollout.from_tensors("rollout.0", rollout, torch.device("cpu"), 10)
    rollout["rollout.0.logp"] = torch.zeros(2, 4)
    with pytest.raises(ValueError, match="answer_ids, answer_mask, logp do not fit together"):
        Rollout.from_tensors("rollout.0", rollout, torch.device("cpu"), 10)


# --- 10. symbolic links and FIFOs ------------------------------------------------------------------------

def test_10_an_adapter_linked_outside_the_run_is_never_zipped_nor_loaded(capsys, world, page, tmp_path):
    run = copy_run(world, page.engine.settings.runs_dir / "linked")
    outside = tmp_path / "outside"
    shutil.copytree(run / "adapter", outside)
    (outside / "secret.txt").write_text("not for download")
    shutil.rmtree(run / "adapter")
    (run / "adapter").symlink_to(outside, target_is_directory=True)
    refresh(page)
    download = page.client.predict(run.name, api_name="/on_select")
    assert download is None or "zip" not in str(download)
    assert not list(run.glob("*.zip"))
    line = assert_one_line(*run_cli(capsys, ["generate", "--run", str(run), "--question", "who ?"]))
    assert f"{run / 'adapter'} is a symbolic link or lies outside {run}" in line


@pytest.mark.slow
def test_10_a_fifo_as_metrics_never_blocks_the_page_and_lists_the_run_as_damaged(world, tmp_path):
    runs = tmp_path / "runs"
    run = copy_run(world, runs / "fifo", unfinished=True)  # no summary.json: its row reads metrics.jsonl
    (run / "metrics.jsonl").unlink()
    os.mkfifo(run / "metrics.jsonl")
    server = served_process(runs)
    try:
        table, _ = Client(server.url, verbose=False).predict(api_name="/list_runs")
        [row] = table["data"]
        assert row[0] == "fifo" and "metrics.jsonl is not a regular file" in row[3]
    finally:
        server.close()


@pytest.mark.slow
def test_10_a_fifo_as_metrics_is_one_line_at_the_cli(world, tmp_path):
    run = resumable(world, tmp_path / "run")
    (run / "metrics.jsonl").unlink()
    os.mkfifo(run / "metrics.jsonl")
    proc = cli_process(["train", "--resume", str(run), "--quiet"])
    try:
        _, err = proc.communicate(timeout=WAIT * 2)
    finally:
        proc.kill()
    assert f"{run / 'metrics.jsonl'} is not a regular file" in assert_one_line(proc.returncode, err)
    assert (run / "summary.json").exists() is False and RunFolder(run).load_checkpoint()[1]["step"] == 3


# --- 11. smaller things --------------------------------------------------------------------------------

def test_11_a_folder_holding_only_the_marker_is_used_by_out_and_explained_by_resume(capsys, world, tmp_path):
    out = tmp_path / "killed-early"
    out.mkdir()
    shutil.copy(world.finished / "gantune-run.json", out)  # a run killed before it wrote its settings
    line = assert_one_line(*run_cli(capsys, ["train", "--resume", str(out), "--quiet"]))
    assert line == (f"gantune: error: {out} holds no run yet: it was stopped before its settings were written; "
                    f"start it again with --out {out}")
    assert run_cli(capsys, cli_args(world, out))[0] == 0
    assert RunFolder(out).read_summary().status == "completed"


def test_11_out_on_a_folder_holding_a_model_s_config_json_says_it_is_not_a_run_folder(capsys, world, tmp_path):
    folder = shutil.copytree(world.model, tmp_path / "a-model")
    line = assert_one_line(*run_cli(capsys, cli_args(world, folder)))
    assert line == (f"gantune: error: {folder} is not a gantune run folder; gantune replaces only run folders it made "
                    "— choose another --out")


@pytest.mark.parametrize("name", ["ü-run", "has space", "запуск 2"])
def test_11_a_run_named_in_any_script_or_with_spaces_opens_resumes_and_deletes(world, page, name):
    run = resumable(world, page.engine.settings.runs_dir / name)
    refresh(page)
    assert name in [row[0] for row in page.client.predict(api_name="/list_runs")[0]["data"]]
    assert page.client.predict(name, api_name="/resume") == f"resuming {name} from its last checkpoint: watch it in " \
                                                            "GAN tuning"
    status = page.engine.jobs.wait(WAIT)
    assert status.state == "completed" and RunFolder(run).read_summary().steps == 6
    assert page.client.predict(name, api_name="/delete_run")[0] == f"deleted {name}"
    assert not run.exists()


def test_11_stop_pressed_in_the_last_step_reads_completed_as_the_summary_says(world, page, monkeypatch):
    real = RunFolder.append_metrics

    def append(self, record):
        real(self, record)
        if record["step"] == record["total_steps"]:  # the last step is done: nothing is left to stop
            page.client.predict(api_name="/stop")

    monkeypatch.setattr(RunFolder, "append_metrics", append)
    page.client.predict(*start_args(world.data, setup={"model": str(world.model)}), api_name="/start")
    status = page.engine.jobs.wait(WAIT)
    assert RunFolder(status.run).read_summary().status == "completed"
    assert status.state == "completed" and state_of(page.client.predict(api_name="/status")[0]) == "completed"


def test_11_a_hosted_page_shows_no_server_path(space, tmp_path):
    import httpx

    text = httpx.get(space.url + "config", timeout=WAIT).text
    for folder in (space.data, space.engine.settings.runs_dir, Path.cwd()):
        assert str(folder.resolve()) not in text
    status, _, _ = space.client.predict(*setup_args(space.data, model="org/model", data_path=""), api_name="/preview")
    assert status.startswith("6 pairs for training / 6 pairs for testing from data/forget10.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text("this is not json\n")
    status, _, _ = space.client.predict(*setup_args(space.data, model="org/model", data_kind="upload",
                                                    upload=handle_file(str(bad))), api_name="/preview")
    assert "bad.jsonl:1 is not valid JSON" in status and "uploads/" in status
    assert "/tmp" not in status and str(tmp_path) not in status


# --- a workbench in a process of its own ---------------------------------------------------------------

def served_process(runs: Path, limit: int | None = None) -> SimpleNamespace:
    """tests/load_server.py over ``runs`` (with ``limit``: the bytes it may write to one file), once it serves."""
    runs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "load_server.py"), str(runs)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
                            preexec_fn=(lambda: _file_size_limit(limit)) if limit else None)

    def close() -> None:
        proc.kill()
        proc.wait(WAIT)

    with selectors.DefaultSelector() as selector:  # its first line says where it serves; a blocked start never does
        selector.register(proc.stdout, selectors.EVENT_READ)
        if not selector.select(timeout=WAIT * 2):
            close()
            pytest.fail("the workbench did not start serving")
    words = proc.stdout.readline().split()
    return SimpleNamespace(url=words[1], data=Path(words[3]), close=close)


def wait_for_state(client: Client, state: str) -> str:
    import time

    deadline = time.monotonic() + WAIT * 2
    while time.monotonic() < deadline:
        status_html = client.predict(api_name="/status")[0]
        if state_of(status_html) == state:
            return status_html
        time.sleep(0.2)
    pytest.fail(f"the job never became {state}")


# === Hardening IV (issue 27) ==============================================================================

def _gan_chat(page, run: str) -> tuple[object, list[str]]:
    """Chat's answers with ``run`` as its GAN run (the page's generate), and its warnings."""
    chat = page.client.submit("who is the author ?", run, None, 8, "default", [], [], [], api_name="/chat")
    result = chat.result(timeout=WAIT)
    return result, warnings_of(chat)


def test_27_1_refused_and_reading_commands_never_touch_a_writer_s_half_written_checkpoint(capsys, world, page,
                                                                                       monkeypatch):
    """A writer holds the lock and is filling ``.checkpoint.*.tmp`` (its tensors written, its state not yet); meanwhile
    a refused --resume, a refused page resume (after /refresh_lists), generate, the page's Chat and --init-from from
    the run: each only reads; the temporary folder is still there, and the writer's save completes."""
    from gantune.runs import folder as folder_module
    from gantune.runs.files import last_complete

    run = RunFolder(resumable(world, page.engine.settings.runs_dir / "being-saved"))
    tensors, state = run.load_checkpoint()
    seen: dict[str, object] = {}
    real_save = folder_module.save_file

    def save_then_interlope(values, path):
        real_save(values, path)
        tmp = Path(path).parent
        if tmp.parent != run.path:  # a save of the run started from it
            return
        assert tmp.name.startswith(".checkpoint.") and tmp.name.endswith(".tmp")
        (run.path / ".adapter.0000.tmp").mkdir()  # an adapter being saved too
        seen["resume"] = assert_one_line(*run_cli(capsys, ["train", "--resume", str(run.path), "--quiet"]))
        refresh(page)
        seen["page"] = page.client.predict(run.path.name, api_name="/resume")
        seen["generate"] = run_cli(capsys, ["generate", "--run", str(run.path), "--question", "who is the author ?"])
        seen["chat"] = _gan_chat(page, run.path.name)
        seen["init"] = run_cli(capsys, cli_args(world, run.path.parent / "started-from-it", "--init-from",
                                                str(run.path)))
        seen["left"] = sorted(p.name for p in run.path.iterdir() if p.name.endswith(".tmp"))
        assert tmp.is_dir() and Path(path).is_file()

    monkeypatch.setattr(folder_module, "save_file", save_then_interlope)
    run.lock("training")
    try:
        run.save_checkpoint(tensors, {**state, "step": 2})  # the writer's save: it must succeed
    finally:
        run.unlock()
    assert "is in use by another gantune job" in seen["resume"] and "training since" in seen["resume"]
    assert "is in use by another gantune job" in seen["page"]
    assert seen["generate"][0] == 0, seen["generate"][1]
    assert not seen["chat"][1], seen["chat"][1]
    assert seen["init"][0] == 0, seen["init"][1]
    assert len(seen["left"]) == 2 and ".adapter.0000.tmp" in seen["left"]
    assert RunFolder(run.path).load_checkpoint()[1]["step"] == 2  # the writer's checkpoint, whole
    assert last_complete(run.checkpoint_dir) == run.checkpoint_dir and not page.engine.jobs.status().active


def test_27_1_a_reader_reads_the_last_complete_copy_a_crash_set_aside_and_repairs_nothing(capsys, world, tmp_path):
    """A swap cut short (only ``.adapter.old`` and ``.checkpoint.old`` left): generate and --init-from read the set-
    aside copies and change nothing; the next writer (a resume, holding the lock) repairs the folder."""
    run = resumable(world, tmp_path / "cut-short")
    for name in ("adapter", "checkpoint"):
        os.rename(run / name, run / f".{name}.old")
    before = sorted(p.name for p in run.iterdir())
    assert RunFolder(run).has_checkpoint() and RunFolder(run).load_checkpoint()[1]["step"] == 3
    code, err = run_cli(capsys, ["generate", "--run", str(run), "--question", "who is the author ?"])
    assert code == 0, err
    assert run_cli(capsys, cli_args(world, tmp_path / "from-it", "--init-from", str(run)))[0] == 0
    assert sorted(p.name for p in run.iterdir()) == before
    assert run_cli(capsys, ["train", "--resume", str(run), "--quiet"])[0] == 0
    assert (run / "checkpoint").is_dir() and not (run / ".checkpoint.old").exists()
    assert RunFolder(run).read_summary().steps == 6


# --- 2. --init-from reads through the validating readers ---------------------------------------------------

def _fifo_adapter(run: Path) -> None:
    weights = next((run / "adapter").glob("*.safetensors"))
    weights.unlink()
    os.mkfifo(weights)


def _linked_adapter(run: Path) -> None:
    outside = run.parent / f"{run.name}-outside"
    shutil.move(run / "adapter", outside)
    (run / "adapter").symlink_to(outside, target_is_directory=True)


def _nan_adapter(run: Path) -> None:
    weights = next((run / "adapter").glob("*.safetensors"))
    tensors = load_file(weights)
    name = next(iter(tensors))
    tensors[name] = torch.full_like(tensors[name], float("nan"))
    save_file(tensors, weights)


INIT_FROM = [("fifo", _fifo_adapter, "is not a regular file (a symbolic link, FIFO or device)"),
             ("symlink-out", _linked_adapter, "is a symbolic link or lies outside"),
             ("nan", _nan_adapter, "holds NaN or infinite values (the adapter is damaged)")]


@pytest.mark.parametrize(("kind", "damage", "says"), INIT_FROM, ids=[c[0] for c in INIT_FROM])
def test_27_2_init_from_a_damaged_adapter_is_one_line_and_claims_nothing(world, tmp_path, kind, damage, says):
    """In a process of its own (a FIFO that blocked would hang it: the test would time out, not pass)."""
    source = copy_run(world, tmp_path / "source")
    damage(source)
    out = tmp_path / "new"
    proc = cli_process(cli_args(world, out, "--init-from", str(source)))
    try:
        _, err = proc.communicate(timeout=WAIT * 2)
    finally:
        proc.kill()
    line = assert_one_line(proc.returncode, err)
    assert line.startswith(f"gantune: error: --init-from {source}: ") and says in line, line
    assert not out.exists()  # the new run was never claimed


def test_27_2_generate_refuses_nan_adapter_weights_in_one_line(capsys, world, tmp_path):
    run = copy_run(world, tmp_path / "nan")
    _nan_adapter(run)
    line = assert_one_line(*run_cli(capsys, ["generate", "--run", str(run), "--question", "who is the author ?"]))
    assert "holds NaN or infinite values (the adapter is damaged)" in line


def test_27_2_the_page_s_chat_refuses_nan_adapter_weights_with_a_warning(world, page):
    run = copy_run(world, page.engine.settings.runs_dir / "nan-chat")
    _nan_adapter(run)
    refresh(page)
    _, warnings = _gan_chat(page, run.name)
    assert any("holds NaN or infinite values (the adapter is damaged)" in w for w in warnings), warnings


# --- 3. a hosted page serves no run file but the adapter's .zip ---------------------------------------------

def test_27_3_a_hosted_page_serves_no_run_file_only_the_adapter_zip(world, space):
    import httpx

    runs = space.engine.settings.runs_dir
    run = copy_run(world, runs / "served")
    for name in ("config.json", "summary.json", "metrics.jsonl", "adapter/adapter_config.json"):
        for path in (f"runs/{run.name}/{name}", str(run / name)):
            got = httpx.get(f"{space.url}gradio_api/file={path}", timeout=WAIT)
            assert got.status_code in (403, 404), (path, got.status_code)
            assert str(world.model) not in got.text
    refresh(space)
    download = space.client.predict(run.name, api_name="/on_select")
    import zipfile

    assert download["value"].endswith("served-adapter.zip"), download
    with zipfile.ZipFile(download["value"]) as archive:  # what the client fetched over HTTP
        assert sorted(archive.namelist()) == sorted(p.name for p in (run / "adapter").iterdir())
    assert not list(run.glob("*.zip")) and not list(run.glob("tmp*"))  # nothing written in the run folder


# --- 4. the GAN's prompt and prefix adapters count their virtual tokens --------------------------------------

@pytest.mark.parametrize("adapter", ["prompt-tuning", "prefix-tuning"])
def test_27_4_gan_with_a_prompt_or_prefix_adapter_counts_its_virtual_tokens_in_the_context(capsys, world, tmp_path,
                                                                                           adapter):
    for virtual in ("300", "1000000000"):
        out = tmp_path / f"run-{virtual}"
        line = assert_one_line(*run_cli(capsys, cli_args(world, out, "--method", "gan", "--adapter", adapter,
                                                         "--virtual-tokens", virtual)))
        assert line == (f"gantune: error: --max-prompt-tokens 32 + --max-new-tokens 8 + --virtual-tokens {virtual} "
                        f"make {40 + int(virtual):,} tokens, more than the model's context of 256; lower them")
        assert not out.exists()


def test_27_4_the_memory_estimate_and_a_step_s_cost_count_the_gan_adapter_s_virtual_tokens():
    from gantune.budget import training_memory
    from gantune.config import preset_config, step_cost

    sizes = dict(batch_size=2, max_new_tokens=8, max_prompt_tokens=32, n=12, virtual_tokens=64)
    plain, prompt = (preset_config("gan", "improved", adapter=a, **sizes) for a in ("m-tunable", "prompt-tuning"))
    assert sum(p for p, _ in step_cost(prompt, 6)) > sum(p for p, _ in step_cost(plain, 6))
    need = training_memory(prompt, make_base(), 6)
    assert any("the virtual tokens' 2,048 parameters" in what for _, what, _ in need)
    assert any("× 104 tokens" in what for _, what, _ in need)  # 32 + 8 + 64 a row


def test_27_4_a_space_counts_the_gan_adapter_s_virtual_tokens_in_a_step_s_cost(tmp_path):
    from gantune.config import preset_config, step_cost

    data = tmp_path / "data"
    data.mkdir()
    (data / "forget10.jsonl").write_text("\n".join(json.dumps(r) for r in HOSTED_ROWS) + "\n")
    plain = preset_config("gan", "improved", batch_size=2, max_new_tokens=8, max_prompt_tokens=32, n=12)
    budget = sum(p for p, _ in step_cost(plain, 6))  # the plain GAN step fits exactly
    engine = Engine(Settings(runs_dir=tmp_path / "runs", data=str(data), space=True, max_step_passes=budget),
                    load_model=lambda *a: make_base())
    with served(engine) as space:
        space = SimpleNamespace(**vars(space), data=data)
        shown = page_refusal(space, hosted_start(space, adapter="prompt-tuning", virtual_tokens=64))
    assert f"more than the {budget:,} this hosted workbench allows" in shown
    assert engine.jobs.status().state == "idle" and not any(engine.settings.runs_dir.iterdir())


# --- 5. evaluating a run holds its lock ------------------------------------------------------------------------

def test_27_5_overwriting_a_run_a_bench_evaluates_is_refused_and_its_eval_is_its_own(capsys, world, tmp_path,
                                                                                     monkeypatch):
    refused, real = [], compare_evaluation._evaluated

    def evaluated(base, method, *args, **kwargs):
        if method is not None:  # a run's evaluation is under way: another job tries to replace the run
            out = Path(method.config.out)
            code, err = run_cli(capsys, cli_args(world, out, "--seed", "4", "--overwrite"))
            assert code == 2 and "Traceback" not in err  # (stderr holds the bench's progress bars too)
            refused.append((out, err.strip().splitlines()[-1]))
        return real(base, method, *args, **kwargs)

    monkeypatch.setattr(compare_evaluation, "_evaluated", evaluated)
    code, err = run_cli(capsys, bench_args(world, tmp_path / "report.json"))
    assert code == 0, err[-2000:]
    [(out, line)] = refused
    assert line.startswith(f"gantune: error: {out} is in use by another gantune job (process {os.getpid()}, "
                           "evaluating the run since ")
    assert RunFolder(out).read_config()[0].seed != 4 and RunFolder(out).read_eval() is not None


# --- 6. Ctrl-C in a bench keeps the finished rows -------------------------------------------------------------

def test_27_6_ctrl_c_in_a_bench_keeps_the_finished_rows_report_stopped(capsys, world, tmp_path, monkeypatch):
    real = compare_evaluation._evaluated

    def evaluated(base, method, *args, **kwargs):
        result = real(base, method, *args, **kwargs)
        if method is not None and method.config.method == "adapter-mle":
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C once the first method's row is finished
        return result

    monkeypatch.setattr(compare_evaluation, "_evaluated", evaluated)
    args = bench_args(world, tmp_path / "report.json")
    args.insert(args.index("adapter-mle") + 1, "lora")
    code, err = run_cli(capsys, args)
    assert code == 130 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == (f"gantune: stopped: {tmp_path / 'report.json'} keeps the 2 rows finished "
                                            "(status \"stopped\"); the same bench command again continues it")
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["status"] == "stopped" and [r["method"] for r in report["rows"]] == ["base", "adapter-mle"]
    assert (tmp_path / "report.md").is_file() and (tmp_path / "generations.jsonl").is_file()
    assert not list((tmp_path / "report_runs").glob("lora*"))


def test_27_6_the_same_bench_again_continues_a_stopped_one_and_trains_nothing_twice(capsys, world, tmp_path,
                                                                                    monkeypatch):
    out = tmp_path / "report.json"
    args = bench_args(world, out)
    args.insert(args.index("adapter-mle") + 1, "lora")
    real_evaluated, real_train = compare_evaluation._evaluated, compare_module.train
    evaluated, trained = [], []

    def evaluating(base, method, *rest, **kwargs):
        evaluated.append("base" if method is None else method.config.method)
        result = real_evaluated(base, method, *rest, **kwargs)
        if evaluated == ["base", "adapter-mle"]:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C once the first method's row is finished
        return result

    def training(config, **kwargs):
        trained.append(config.method)
        return real_train(config, **kwargs)

    monkeypatch.setattr(compare_evaluation, "_evaluated", evaluating)
    monkeypatch.setattr(compare_module, "train", training)
    assert run_cli(capsys, args)[0] == 130
    stopped, finished = snapshot(tmp_path), snapshot(tmp_path / "report_runs" / "adapter-mle-seed0")
    other = [*args[:args.index("--epochs") + 1], "2", *args[args.index("--epochs") + 2:]]
    assert assert_one_line(*run_cli(capsys, other)) == (
        f"gantune: error: {out} is a stopped bench of other settings (epochs differs); run the same bench again to "
        "continue it, or choose another --out")
    assert snapshot(tmp_path) == stopped
    evaluated.clear(), trained.clear()
    code, err = run_cli(capsys, args)
    assert code == 0, err
    assert trained == ["lora"] and evaluated == ["lora"]  # base's and adapter-mle's row kept, not made again
    report = json.loads(out.read_text())
    assert report["status"] == "completed" and [r["method"] for r in report["rows"]] == ["base", "adapter-mle", "lora"]
    assert snapshot(tmp_path / "report_runs" / "adapter-mle-seed0") == finished
    assert all(set(json.loads(line)["answers"]) == {"base", "adapter-mle", "lora"}
               for line in (tmp_path / "generations.jsonl").read_text().splitlines())
    completed = snapshot(tmp_path)
    assert assert_one_line(*run_cli(capsys, args)) == (
        f"gantune: error: {out} is a completed bench's report, and bench never replaces it; choose another --out (or "
        "move it aside)")
    assert snapshot(tmp_path) == completed


def test_27_6_the_same_bench_again_continues_a_failed_one_one_bench_at_a_time(capsys, world, tmp_path, monkeypatch):
    real, trained = compare_module.train, []

    def training(config, **kwargs):
        trained.append(config.method)
        if config.method == "lora" and trained.count("lora") == 1:
            raise GantuneError("out of memory; lower the batch size (--batch-size)")
        return real(config, **kwargs)

    monkeypatch.setattr(compare_module, "train", training)
    args = bench_args(world, tmp_path / "report.json")
    args.insert(args.index("adapter-mle") + 1, "lora")
    code, err = run_cli(capsys, args)
    assert code == 2 and err.strip().splitlines()[-1].endswith("; the same bench again continues it)")
    failed = snapshot(tmp_path)
    held = RunLock.take(tmp_path / "report_runs", "benchmarking")
    try:
        line = assert_one_line(*run_cli(capsys, args))
    finally:
        held.release()
    assert line.startswith(f"gantune: error: {tmp_path / 'report_runs'} is in use by another gantune job (process "
                           f"{os.getpid()}, benchmarking since")
    assert snapshot(tmp_path) == failed
    code, err = run_cli(capsys, args)
    assert code == 0, err
    assert trained == ["adapter-mle", "lora", "lora"]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["status"] == "completed" and [r["method"] for r in report["rows"]] == ["base", "adapter-mle", "lora"]


# --- 7. every setting the page shows round-trips through it --------------------------------------------------

# a value of its kind for every setting of the form, none of them the preset's: numbers, choices, booleans, widths and
# module names
EVERY_SETTING = dict(
    precision="fp32", epochs=1, batch_size=2, lr=0.002, max_grad_norm=0.5, max_new_tokens=8, max_prompt_tokens=32,
    checkpoint_every=1, sample_every=1, val_pairs=1, val_tolerance=0.03, patience=1, val_metric="nll", noise_dim=8,
    adapter_hidden="16 8", adapter_init="default", eval_noise="sample", adapter="lora", warmup_epochs=0, adv_lr=0.0004,
    rollout="batch", rollout_temperature=0.7, samples_per_question=2, discriminator="embedding", d_loss="bce",
    implicit_loss="spin", implicit_beta=0.2, round_epochs=2, d_lr=0.002, d_hidden="16 8 4", d_dropout=0.2,
    d_weight_decay=0.02, d_steps=2, label_smoothing=0.1, reward="sequence", kl_coef=0.1, baseline="loo",
    normalize_advantage=False, clip=0.3, ppo_epochs=2, pg_estimator="trajectory", mle_weight=0.5, resample_for_g=True,
    lora_r=4, lora_alpha=8, lora_targets="q_proj v_proj", virtual_tokens=8)


def test_27_7_every_setting_the_page_shows_round_trips_through_it(world, page, tmp_path):
    from ui.tabs.tuning import FIELDS, _form_values, _preset_values, build_config

    assert set(EVERY_SETTING) == set(FIELDS)
    preset = dict(zip(FIELDS, _preset_values("improved")))
    # the preset's only where another value needs others changed back: the choices that take them, further down
    assert [name for name, value in EVERY_SETTING.items() if preset[name] == value] == ["reward", "pg_estimator"]
    values = [EVERY_SETTING[name] for name in FIELDS]
    assert _form_values(build_config("gan", "improved", {}, values).validate()) == values
    others = {**EVERY_SETTING, "reward": "dense", "discriminator": "hidden", "d_loss": "relativistic",
              "baseline": "mean", "ppo_epochs": 1, "pg_estimator": "thesis"}
    assert _form_values(build_config("gan", "improved", {}, [others[n] for n in FIELDS]).validate()) == \
        [others[n] for n in FIELDS]
    data = tmp_path / "pairs.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in HOSTED_ROWS) + "\n")
    args = start_args(data, setup={"model": str(world.model), "n": 24}, **EVERY_SETTING)
    page.client.predict(*args, api_name="/start")
    status = page.engine.jobs.wait(WAIT)
    config, _ = RunFolder(status.run).read_config()
    assert status.state == "completed", status.error
    assert _form_values(config) == values and config.lora_targets == ["q_proj", "v_proj"]


def test_27_7_the_page_takes_lora_target_names(world, page):
    shown = page_refusal(page, start_args(world.data, setup={"model": str(world.model)}, adapter="lora",
                                          lora_targets="q_proj, v_proj"))
    assert shown == ""
    assert RunFolder(page.engine.jobs.status().run).read_config()[0].lora_targets == ["q_proj", "v_proj"]


# --- 8. a Space caps a comparison's whole length ----------------------------------------------------------------

def test_27_8_a_space_refuses_a_comparison_longer_than_its_job_time_by_the_page_s_plan(world, space):
    import math

    from gantune.compare import ROWS
    from ui.estimate import plan_comparison

    run = copy_run(world, space.engine.settings.runs_dir / "reference")
    edit_json(run / "config.json", lambda d: d["config"].update(model="org/model"))
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    (run / "metrics.jsonl").write_text("".join(json.dumps({**r, "step_seconds": 40.0}) + "\n" for r in records))
    refresh(space)
    every = [row for row in ROWS if row != "gan"]  # the page offers every row but the reference's own
    plan = plan_comparison(RunFolder(run), every, 2, space.engine.settings.retention_n, None,
                           space.engine.runs.pace_hint)
    assert plan.seconds > 45 * 60
    job = space.client.submit(run.name, every, 2, api_name="/compare")
    job.result(timeout=WAIT)
    assert f"this comparison would take about {math.ceil(plan.seconds / 60):,} min by its plan, more than the 45 min " \
           "this hosted workbench allows a job; take fewer methods or seeds" in " | ".join(warnings_of(job))
    assert space.engine.jobs.status().state == "idle"
    assert sorted(p.name for p in space.engine.settings.runs_dir.iterdir()) == ["reference"]


# --- Low: 9. a float setting stays meaningful in float32 --------------------------------------------------------

def test_27_9_a_coefficient_that_is_0_in_float32_is_refused_at_the_cli_and_in_the_page(capsys, world, page, tmp_path):
    line = assert_one_line(*run_cli(capsys, cli_args(world, tmp_path / "run", "--discriminator", "implicit",
                                                     "--implicit-beta", "1e-320")))
    assert line == ("gantune: error: --implicit-beta must be 0 or at least 1.175e-38 in size, the smallest normal "
                    "float32 (got 1e-320)")
    assert not (tmp_path / "run").exists()
    shown = page_refusal(page, start_args(world.data, setup={"model": str(world.model)}, kl_coef=1e-320))
    assert "must be at least 1.175e-38 (got 1e-320)" in shown
    assert not page.engine.jobs.status().active


# --- 10. a terminal that cannot show every letter -----------------------------------------------------------------

def test_27_10_an_ascii_terminal_escapes_letters_it_lacks_and_the_command_succeeds(world, tmp_path):
    run = tmp_path / "ü-run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "PYTHONIOENCODING": "ascii"}
    for args in (cli_args(world, run), ["generate", "--run", str(run), "--question", "кто автор ?", "--question",
                                        "who is the author ?", "--max-new-tokens", "4"]):
        done = subprocess.run([sys.executable, "-m", "gantune", *args], capture_output=True, text=True, env=env,
                              timeout=WAIT * 2)
        assert done.returncode == 0, done.stderr
    assert "Q: \\u043a\\u0442\\u043e" in done.stdout
    assert RunFolder(run).read_summary().status == "completed"


# --- 11. and 12. --init-from names a model as a folder; a flag that does not apply ---------------------------------

def test_27_11_init_from_a_run_of_the_same_model_folder_written_otherwise_starts_from_it(capsys, world, tmp_path):
    out = tmp_path / "slashed"
    args = cli_args(world, out, "--init-from", str(world.finished))
    args[args.index("--model") + 1] = f"{world.model}/"  # the run's model, with a trailing slash
    code, err = run_cli(capsys, args)
    assert code == 0, err
    assert RunFolder(out).read_config()[0].init_from == str(world.finished)


@pytest.mark.parametrize(("method", "flags", "says"), [
    ("lora", ["--adapter", "prompt-tuning"], "--adapter does not apply to --method lora (only to --method gan)"),
    ("full", ["--lora-r", "4"], "--lora-r does not apply to --method full (only to --method gan / lora / "
                                "prompt-tuning / prefix-tuning)"),
], ids=["lora-adapter", "full-lora-r"])
def test_27_12_a_flag_that_does_not_apply_to_the_method_is_refused(capsys, world, tmp_path, method, flags, says):
    args = cli_args(world, tmp_path / "run", "--method", method, *flags)
    for name in ("--noise-dim", "--d-hidden"):  # the GAN's, in the tiny settings
        i = args.index(name)
        del args[i:i + (4 if name == "--d-hidden" else 2)]
    line = assert_one_line(*run_cli(capsys, args))
    assert line == f"gantune: error: {says}; leave it out"
    assert not (tmp_path / "run").exists()


# --- 13. and 14. bench's rows and preset, checked before anything loads ----------------------------------------------

def test_27_13_bench_refuses_a_row_named_twice(capsys, world, tmp_path):
    args = bench_args(world, tmp_path / "report.json")
    args.insert(args.index("adapter-mle") + 1, "adapter-mle")
    line = assert_one_line(*run_cli(capsys, args))
    assert line == "gantune: error: --methods names adapter-mle twice; name each row once"
    assert not any(tmp_path.iterdir())


def test_27_13_the_page_refuses_a_comparison_row_named_twice(world, page):
    run = copy_run(world, page.engine.settings.runs_dir / "twice")
    refresh(page)
    job = page.client.submit(run.name, ["lora", "lora"], 1, api_name="/compare")
    job.result(timeout=WAIT)
    assert any("lora is named twice; pick each method once" in w for w in warnings_of(job)), warnings_of(job)
    assert not page.engine.jobs.status().active


def test_27_14_bench_plateau_with_too_few_pairs_is_refused_before_the_model_loads(capsys, world, tmp_path,
                                                                                  monkeypatch):
    import gantune.bench as bench_module

    def never(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(bench_module, "load_base_model", never)
    args = ["bench", "--preset", "plateau", "--n", "8", "--model", str(world.model), "--data", str(world.data),
            "--bleurt", "none", "--out", str(tmp_path / "r.json")]
    line = assert_one_line(*run_cli(capsys, args))
    assert line == ("gantune: error: the plateau preset trains each warm-up to its plateau on validation pairs (a tenth "
                    "of the training pairs at most), but --n 8 leaves 4 training pairs a seed, too few to hold any "
                    "out; raise --n to at least 19")
    assert not any(tmp_path.iterdir())


# --- the general rule, over the doors it does not list: a string that says nothing --------------------------

@pytest.mark.parametrize("args", [
    ["train", "--resume", ""], ["train", "--out", " "], ["train", "--data", ""], ["train", "--model", "  "],
    ["generate", "--run", "", "--question", "who ?"], ["generate", "--run", "x", "--question", " "],
    ["bench", "--out", ""], ["bench", "--data", " "],
], ids=["resume", "out", "data", "model", "run", "question", "bench-out", "bench-data"])
def test_27_a_flag_that_says_nothing_is_one_line_and_nothing_runs(capsys, tmp_path, monkeypatch, args):
    """``--resume ''`` used to start a new run in runs/; ``--data ''`` trained on the default data."""
    monkeypatch.chdir(tmp_path)
    line = assert_one_line(*run_cli(capsys, args))
    assert "says nothing; give a value or leave the flag out" in line
    assert not any(tmp_path.iterdir())


def test_27_4_the_page_counts_the_gan_adapter_s_virtual_tokens_in_the_context(world, page):
    shown = page_refusal(page, start_args(world.data, setup={"model": str(world.model)}, adapter="prefix-tuning",
                                          virtual_tokens=300))
    assert "--max-prompt-tokens 32 + --max-new-tokens 8 + --virtual-tokens 300 make 340 tokens, more than the " \
           "model's context of 256; lower them" in shown


def test_27_5_overwriting_a_run_the_page_s_comparison_evaluates_is_refused(capsys, world, page, monkeypatch):
    reference = copy_run(world, page.engine.settings.runs_dir / "compared-meanwhile")
    refresh(page)
    refused, real = [], compare_evaluation._evaluated

    def evaluated(base, method, *args, **kwargs):
        if method is not None and method.config.method == "adapter-mle":  # the row the comparison trained
            out = Path(method.config.out)
            refused.append((out, assert_one_line(*run_cli(capsys, cli_args(world, out, "--seed", "4",
                                                                             "--overwrite")))))
        return real(base, method, *args, **kwargs)

    monkeypatch.setattr(compare_evaluation, "_evaluated", evaluated)
    page.client.predict(reference.name, ["adapter-mle"], 1, api_name="/compare")
    status = page.engine.jobs.wait(WAIT)
    assert status.state == "completed", status.error
    [(out, line)] = refused
    assert f"{out} is in use by another gantune job (process {os.getpid()}, evaluating the run since " in line
    assert RunFolder(out).read_config()[0].seed == 3 and RunFolder(out).read_eval() is not None


def test_27_2_a_folder_claimed_for_a_run_whose_init_from_is_refused_is_given_back(world, tmp_path):
    from gantune.runs import claim_unused

    source = copy_run(world, tmp_path / "source")
    _fifo_adapter(source)
    claimed = claim_unused(tmp_path / "row")  # as a comparison claims a row's folder
    with pytest.raises(GantuneError, match="is not a regular file"):
        train(_config(world, claimed.path, init_from=str(source)), base=make_base(), claimed=claimed)
    assert not claimed.path.exists()
