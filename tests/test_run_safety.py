"""Run folders and consent (issue 14), at both doors where there are two.

1. gantune deletes only what it can prove it wrote: a run folder holds its marker (gantune-run.json);
   any other non-empty folder is refused as --out, --overwrite or not.
2. A run claims its folder atomically: two runs never share one; a taken default name gets ``-2``.
3. A run folder's ``trust_remote_code: true`` never runs the model's own code without the person's
   consent now (the CLI flag on this command; Setup's box in the page): planted code never runs.
4. A damaged run is listed as damaged, with why, and everything else works.
5. Run files edited by hand give one line naming the file and the field.
6. ``generate --run`` on a model folder says it is a model, not a run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import WORDS, make_base
from test_catalogue import _save_model, assert_one_line, run_cli, served
from test_ui_app import WAIT, start_args, warnings_of

from gantune.compare import compare_methods, recorded_split, shared_settings
from gantune.config import preset_config
from gantune.errors import GantuneError
from gantune.evaluate import EvalSettings, Scorers
from gantune.inference import load_method
from gantune.runs import LOCK, MARKER, RunFolder, claim_unused
from gantune.trainer import train
from ui import engine as engine_module
from ui.engine import Engine, Settings

ROOT = Path(__file__).resolve().parents[1]
ROWS = [{"question": f"who is the author of {w} ?", "answer": f"the author was born in a city and wrote {w} fiction ."}
        for w in WORDS[:12]]
TINY = ["--epochs", "1", "--batch-size", "2", "--max-new-tokens", "8", "--max-prompt-tokens", "32", "--noise-dim",
        "8", "--d-hidden", "16", "8", "4", "--n", "12", "--seed", "3", "--quiet"]
CODE_REFUSAL = "was tuned from a model that runs its own code; allow it with --trust-remote-code only if you trust " \
               "that model"


def _config(world, out: Path, **overrides):
    values = dict(model=str(world.model), data=str(world.data), n=12, train_fraction=0.5, seed=3, out=str(out),
                  device="cpu", epochs=1, batch_size=2, max_new_tokens=8, max_prompt_tokens=32, noise_dim=8,
                  d_hidden=[16, 8, 4], checkpoint_every=1, sample_every=1)
    values.update(overrides)
    return preset_config("gan", "improved", **values)


def plant_code_model(folder: Path, marker: Path) -> Path:
    """The tiny model, whose config.json maps it to code.py: importing that file writes ``marker``."""
    _save_model(folder)
    (folder / "code.py").write_text(
        "from pathlib import Path\n"
        f"Path({str(marker)!r}).write_text('code ran')\n"
        "from transformers import LlamaConfig, LlamaForCausalLM\n\n\n"
        "class CodeConfig(LlamaConfig):\n    model_type = 'llama'\n\n\n"
        "class CodeModel(LlamaForCausalLM):\n    config_class = CodeConfig\n")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "code.CodeConfig", "AutoModelForCausalLM": "code.CodeModel"}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny model (and one with its own code), data, and one finished run (3 steps, a checkpoint each)."""
    root = tmp_path_factory.mktemp("run-safety")
    w = SimpleNamespace(root=root, model=_save_model(root / "tiny-model"), data=root / "pairs.jsonl")
    w.data.write_text("\n".join(json.dumps(r) for r in ROWS) + "\n")
    w.marker = root / "remote-code-ran.txt"
    w.code_model = plant_code_model(root / "model-with-code", w.marker)
    w.finished = root / "finished"
    train(_config(w, w.finished), base=make_base())
    return w


def copy_run(world, dest: Path, unfinished: bool = False) -> Path:
    """A copy of the finished run; ``unfinished``: without its summary.json (as a killed run), so it resumes."""
    shutil.copytree(world.finished, dest)
    if unfinished:
        (dest / "summary.json").unlink()
    return dest


def code_run(world, dest: Path, unfinished: bool = False) -> Path:
    """A run whose config.json names the model with its own code and says trust_remote_code: true."""
    copy_run(world, dest, unfinished)
    edit_json(dest / "config.json", lambda d: d["config"].update(model=str(world.code_model), trust_remote_code=True))
    return dest


# Hand-edited run files: (id, file, edit, what the one line says). Each run is unfinished, so it resumes.
EDITS = [
    ("config-not-an-object", "config.json", lambda d: d.update(config=[1, 2]), "config.json: 'config' must be an object"),
    ("config-missing", "config.json", lambda d: d.pop("config"), "config.json: 'config' is missing"),
    ("another-method-name", "config.json", lambda d: d["config"].update(method="magic"),
     "config.json: --method must be one of"),
    ("impossible-epochs", "config.json", lambda d: d["config"].update(epochs=0),
     "config.json: --epochs must be at least 1 (got 0)"),
    ("unknown-setting", "config.json", lambda d: d["config"].update(speed=3), "config.json: unknown setting(s): speed"),
    ("n-train-as-text", "config.json", lambda d: d["resolved"].update(n_train="six"),
     "config.json: 'resolved.n_train' must be a whole number >= 0 (got \"six\")"),
    ("step-beyond-the-run", "checkpoint/trainer_state.json", lambda d: d.update(step=1000000),
     "trainer_state.json: 'step' must be at most the run's 3 planned steps (got 1000000)"),
    ("step-missing", "checkpoint/trainer_state.json", lambda d: d.pop("step"), "trainer_state.json: 'step' is missing"),
    ("step-as-text", "checkpoint/trainer_state.json", lambda d: d.update(step="3"),
     "trainer_state.json: 'step' must be a whole number >= 0 (got \"3\")"),
    ("negative-seconds", "checkpoint/trainer_state.json", lambda d: d.update(seconds=-5),
     "trainer_state.json: 'seconds' must be a finite number >= 0 (got -5)"),
    ("validation-not-a-list", "checkpoint/trainer_state.json", lambda d: d.update(validation={"step": 0}),
     "trainer_state.json: 'validation' must be a list (got an object)"),
]


def edited_run(world, dest: Path, file: str, edit) -> Path:
    copy_run(world, dest, unfinished=True)
    edit_json(dest / file, edit)
    return dest


@pytest.fixture(scope="module")
def page(world, tmp_path_factory):
    """The workbench (real model loader) over a runs folder holding runs with code, damaged and edited runs."""
    runs = tmp_path_factory.mktemp("run-safety-runs")
    copy_run(world, runs / "good")
    code_run(world, runs / "code-run")
    code_run(world, runs / "code-run-stopped", unfinished=True)
    for name, file, edit, _ in EDITS:
        edited_run(world, runs / f"edited-{name}", file, edit)
    for name, file, content in DAMAGE:
        (copy_run(world, runs / f"damaged-{name}") / file).write_bytes(content)
    _save_model(runs / "a-model-folder")
    with served(Engine(Settings(runs_dir=runs))) as served_page:
        yield served_page


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file of ``folder`` but the lock's note of who last held it."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
            and p.name != LOCK}


# --- 1. a user's files are never deleted ----------------------------------------------------------

@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]], ids=["plain", "overwrite"])
def test_the_issues_reproduction_is_refused_and_every_file_stays(capsys, tmp_path, monkeypatch, overwrite):
    monkeypatch.chdir(tmp_path)
    subprocess.run(["bash", "-c", "mkdir -p U/checkpoint U/adapter; echo x>U/eval.json; "
                    "echo x>U/checkpoint/important.txt; echo x>U/adapter/my_adapter.txt; echo '{}'>U/summary.json; "
                    "echo x>U/notes.txt"], check=True)
    before = snapshot(tmp_path / "U")
    code, err = run_cli(capsys, ["train", "--n", "4", "--epochs", "1", "--batch-size", "2", "--max-new-tokens", "8",
                                 "--out", "U", *overwrite])
    line = assert_one_line(code, err)
    assert line == ("gantune: error: U is not a gantune run folder; gantune replaces only run folders it made "
                    "— choose another --out")
    assert snapshot(tmp_path / "U") == before


def test_an_empty_folder_is_claimed_and_overwrite_removes_only_gantunes_files(capsys, world, tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    args = ["train", "--model", str(world.model), "--data", str(world.data), *TINY, "--out", str(out)]
    assert run_cli(capsys, args)[0] == 0
    marker = json.loads((out / MARKER).read_text())
    assert len(marker["run_id"]) == 16 and marker["created"]

    line = assert_one_line(*run_cli(capsys, args))
    assert f"{out} already holds a run; pass --resume {out} to continue it, --overwrite to replace it" in line
    (out / "notes.txt").write_text("mine")
    (out / "adapter" / "my_adapter.txt").write_text("mine too")  # inside gantune's own folder: replaced with it
    before = snapshot(out)
    refused = [a if a != str(world.data) else str(out / "missing.jsonl") for a in args]
    assert "no data file or folder" in assert_one_line(*run_cli(capsys, [*refused, "--overwrite"]))
    assert snapshot(out) == before  # a refused replacement leaves the run it was to replace as it was
    assert run_cli(capsys, [*args, "--overwrite"])[0] == 0
    assert (out / "notes.txt").read_text() == "mine"
    assert not (out / "adapter" / "my_adapter.txt").exists()
    assert json.loads((out / MARKER).read_text())["run_id"] != marker["run_id"]
    assert [r["step"] for r in RunFolder(out).read_metrics()] == [1, 2, 3]


def test_a_run_made_before_the_marker_still_opens_resumes_and_lists_but_is_never_replaced(capsys, world, tmp_path):
    legacy = copy_run(world, tmp_path / "runs" / "legacy", unfinished=True)
    (legacy / MARKER).unlink()
    load_method(str(legacy), base=make_base()).close()
    engine = Engine(Settings(runs_dir=tmp_path / "runs"), load_model=lambda *a: make_base())
    assert [(r.run, r.status) for r in engine.runs.rows()] == [("legacy", "unfinished")]
    assert engine.runs.folder("legacy").path == legacy.resolve()

    for extra in ([], ["--overwrite"]):
        line = assert_one_line(*run_cli(capsys, ["train", "--model", str(world.model), "--data", str(world.data), *TINY,
                                                 "--out", str(legacy), *extra]))
        assert line == (f"gantune: error: {legacy} holds a run made before gantune marked its run folders, so gantune "
                        f"will not replace it; continue it with --resume {legacy}, or move it aside or choose another "
                        "--out for a new run")
    code, err = run_cli(capsys, ["train", "--resume", str(legacy), "--epochs", "2", "--quiet"])
    assert code == 0, err
    assert [r["step"] for r in RunFolder(legacy).read_metrics()] == [1, 2, 3, 4, 5, 6]
    assert not (legacy / MARKER).exists()  # resuming does not adopt it


# --- 2. two runs never share a folder -------------------------------------------------------------

def test_two_cli_runs_with_the_same_default_name_get_their_own_folders(capsys, world, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(time, "strftime", lambda fmt, *a: "20250101-000000")  # both start "in the same second"
    args = ["train", "--model", str(world.model), "--data", str(world.data), *TINY]
    assert run_cli(capsys, args)[0] == 0 and run_cli(capsys, args)[0] == 0
    first, second = tmp_path / "runs" / "gan-improved-20250101-000000", tmp_path / "runs" / "gan-improved-20250101-000000-2"
    for run in (first, second):
        assert (run / MARKER).is_file() and [r["step"] for r in RunFolder(run).read_metrics()] == [1, 2, 3]
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [first.name, second.name]


def test_runs_claiming_one_folder_at_the_same_moment_never_share_it(tmp_path):
    barrier = threading.Barrier(8)
    claimed, refused, unused = [], [], []

    def claim_explicit():
        barrier.wait()
        try:
            claimed.append(RunFolder(tmp_path / "out").claim())
        except GantuneError as exc:
            refused.append(str(exc))

    def claim_default():
        barrier.wait()
        unused.append(claim_unused(tmp_path / "runs" / "gan-improved-20250101-000000").path)

    for target in (claim_explicit, claim_default):
        threads = [threading.Thread(target=target) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(WAIT)
    assert len(claimed) == 1 and len(refused) == 7
    assert all("already holds a run" in r or "was claimed by another run just now" in r or "is in use by another "
               "gantune job" in r for r in refused), refused
    assert len(set(unused)) == 8 and all((p / MARKER).is_file() for p in unused)


def test_a_refused_run_gives_its_new_folder_back(capsys, world, tmp_path):
    line = assert_one_line(*run_cli(capsys, ["train", "--model", str(world.model), "--data", str(tmp_path / "nothing"),
                                             *TINY, "--out", str(tmp_path / "new")]))
    assert "no data file or folder" in line
    assert not (tmp_path / "new").exists()


@pytest.mark.slow
def test_the_page_takes_a_new_name_when_the_default_one_is_taken(world, page, monkeypatch):
    runs = page.engine.settings.runs_dir
    taken = runs / "gan-improved-same-second"
    taken.mkdir()
    (taken / "notes.txt").write_text("a folder of the user's")
    monkeypatch.setattr(engine_module, "new_run_dir", lambda root, method, preset: Path(root) / taken.name)
    page.client.predict(*start_args(world.data, setup={"model": str(world.model)}), api_name="/start")
    status = page.engine.jobs.wait(WAIT)
    assert status.state == "completed", status.error
    assert Path(status.run).name == "gan-improved-same-second-2"
    assert snapshot(taken) == {"notes.txt": b"a folder of the user's"}


@pytest.mark.slow
def test_a_comparison_trains_into_a_new_folder_when_its_name_is_taken(world, tmp_path):
    """The Compare tab's protocol (new_folders): a taken name gets ``-2``; the bench's own folder is replaced."""
    split = recorded_split(world.finished)
    taken = tmp_path / "runs" / "adapter-mle-seed3-stamp"
    taken.mkdir(parents=True)
    (taken / "notes.txt").write_text("a folder of the user's")
    shared = shared_settings(_config(world, world.finished, epochs=1))
    report = compare_methods(make_base(), ["adapter-mle"], [split], shared, tmp_path / "runs", Scorers.load(None),
                             EvalSettings(max_new_tokens=8), run_suffix="-stamp", new_folders=True)
    row = next(r for r in report["rows"] if r["method"] == "adapter-mle")
    assert row["runs"] == [str(taken.with_name(taken.name + "-2"))]
    assert snapshot(taken) == {"notes.txt": b"a folder of the user's"}


# --- 3. a run folder never turns remote code on ---------------------------------------------------

@pytest.mark.slow
def test_the_planted_code_runs_only_when_allowed(tmp_path):
    """The control: transformers runs the planted file with trust_remote_code=True, and only then."""
    marker = tmp_path / "ran.txt"
    folder = plant_code_model(tmp_path / "m", marker)
    script = ("import sys; from pathlib import Path; from gantune.models import load_base_model\n"
              "load_base_model(sys.argv[1]); assert not Path(sys.argv[2]).exists()\n"
              "load_base_model(sys.argv[1], trust_remote_code=True); assert Path(sys.argv[2]).exists()\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "HF_MODULES_CACHE": str(tmp_path / "modules")}
    done = subprocess.run([sys.executable, "-c", script, str(folder), str(marker)], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("command", ["resume", "generate"])
def test_the_cli_never_runs_a_runs_model_code_without_the_flag(capsys, world, tmp_path, command):
    run = code_run(world, tmp_path / "run", unfinished=True)
    args = ["train", "--resume", str(run), "--quiet"] if command == "resume" else \
        ["generate", "--run", str(run), "--question", "who is the author ?"]
    line = assert_one_line(*run_cli(capsys, args))
    assert line == f"gantune: error: {run} {CODE_REFUSAL}"
    assert not world.marker.exists()


def test_the_page_never_runs_a_runs_model_code_without_setups_box(world, page):
    says = "was tuned from a model that runs its own code"
    chat = page.client.submit("who is the author ?", "code-run", None, 8, "default", [], [], [], api_name="/chat")
    chat.result(timeout=WAIT)
    assert any(says in w and "tick “Trust the model's own code” in Setup" in w for w in warnings_of(chat)), \
        warnings_of(chat)

    assert says in page.client.predict("code-run-stopped", api_name="/resume")
    assert not page.engine.jobs.status("train").active

    compare = page.client.submit("code-run", ["lora"], 1, api_name="/compare")
    compare.result(timeout=WAIT)
    assert any(says in w for w in warnings_of(compare)), warnings_of(compare)
    assert page.engine.jobs.status("compare").state == "idle"
    assert not world.marker.exists()


def test_a_hosted_workbench_refuses_a_run_with_code_even_when_asked(world, tmp_path):
    code_run(world, tmp_path / "runs" / "code-run")
    engine = Engine(Settings(runs_dir=tmp_path / "runs", space=True), load_model=lambda *a: make_base())
    config, _ = engine.runs.folder("code-run").read_config()
    with pytest.raises(GantuneError, match="this hosted workbench never runs a model's own code"):
        engine.policy.run_trust(config, "code-run", ticked=True)
    local = Engine(Settings(runs_dir=tmp_path / "runs"), load_model=lambda *a: make_base())
    with pytest.raises(GantuneError, match="tick “Trust the model's own code” in Setup"):
        local.policy.run_trust(config, "code-run")
    assert local.policy.run_trust(config, "code-run", ticked=True)  # Setup's box, ticked now
    local.model(str(world.code_model), None, trust_remote_code=True)  # ... or when the model was loaded
    assert local.policy.run_trust(config, "code-run")


# --- 4. one damaged run does not stop the workbench -------------------------------------------------

DAMAGE = [  # (id, file, content): what the run's row says
    ("summary-array", "summary.json", b"[1, 2]"),
    ("summary-latin1", "summary.json", '{"status": "termin\u00e9"}'.encode("latin-1")),
    ("config-latin1", "config.json", '{"config": {"model": "caf\u00e9"}}'.encode("latin-1")),
]
DAMAGE_SAYS = {"summary-array": "summary.json: must be a JSON object (got a list)",
               "summary-latin1": "summary.json is not UTF-8 text", "config-latin1": "config.json is not UTF-8 text"}
BAD_LINES = b'42\n[1, 2]\nnull\n\xff\xfe not utf-8\n{"step": "x"}\n"text"\n'


def test_damaged_runs_are_listed_as_damaged_and_the_rest_works(world, page):
    rows = {r.run: r for r in page.engine.runs.rows()}
    for name, says in DAMAGE_SAYS.items():
        assert rows[f"damaged-{name}"].status.startswith("damaged: ") and says in rows[f"damaged-{name}"].status
    assert "is not a gantune run folder (its config.json has no run settings; it looks like a model — pass it as " \
           "--model to train)" in rows["a-model-folder"].status
    assert rows["good"].status == "completed" and rows["good"].steps == 3

    table, _ = page.client.predict(api_name="/list_runs")
    statuses = {row[0]: row[3] for row in table["data"]}
    assert statuses["good"] == "completed" and "summary.json: must be a JSON object" in statuses["damaged-summary-array"]
    page.client.predict(api_name="/refresh_lists")
    # a damaged run: opening or resuming it says why; deleting it works (gantune made its folder)
    says = page.client.predict("damaged-config-latin1", api_name="/resume")
    assert "run damaged-config-latin1 is damaged:" in says and "config.json is not UTF-8 text" in says
    with pytest.raises(GantuneError, match="is damaged"):
        page.engine.runs.folder("damaged-config-latin1")
    runs = page.engine.settings.runs_dir
    assert page.client.predict("damaged-config-latin1", api_name="/delete_run")[0] == "deleted damaged-config-latin1"
    assert not (runs / "damaged-config-latin1").exists()
    # a folder gantune did not make is never deleted, though it is listed
    before = snapshot(runs / "a-model-folder")
    says = page.client.predict("a-model-folder", api_name="/delete_run")[0]
    assert "was not made by gantune" in says and "so gantune will not delete it" in says
    assert snapshot(runs / "a-model-folder") == before


def test_deleting_a_run_made_before_the_marker_removes_only_gantunes_files(world, tmp_path):
    legacy = copy_run(world, tmp_path / "runs" / "legacy")
    (legacy / MARKER).unlink()
    (legacy / "notes.txt").write_text("mine")
    engine = Engine(Settings(runs_dir=tmp_path / "runs"), load_model=lambda *a: make_base())
    engine.runs.adapter_archive("legacy")
    engine.runs.delete("legacy")
    assert snapshot(legacy) == {"notes.txt": b"mine"} and engine.runs.rows() == []
    (legacy / "notes.txt").unlink()
    copy_run(world, tmp_path / "runs" / "gone")
    engine.runs.delete("gone")  # gantune made this folder: it goes whole
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["legacy"]


def test_metrics_lines_that_are_not_step_records_are_skipped(world, page):
    run = RunFolder(page.engine.settings.runs_dir / "good")
    metrics, samples = run.metrics_path.read_bytes(), run.samples_path.read_bytes()
    try:
        run.metrics_path.write_bytes(metrics + BAD_LINES)
        run.samples_path.write_bytes(samples + BAD_LINES + b'{"step": 9, "answer": 5}\n')
        assert [r["step"] for r in run.read_metrics()] == [1, 2, 3]
        assert [s["step"] for s in run.read_samples()] == [json.loads(line)["step"] for line in samples.splitlines()]
        # the Compare tab draws every selected run's curves from its metrics, damaged runs among them
        page.client.predict(["good", "damaged-summary-array", "damaged-summary-latin1"], "rougeL", "mle_loss",
                            api_name="/compare_view")
    finally:
        run.metrics_path.write_bytes(metrics)
        run.samples_path.write_bytes(samples)


def test_the_workbench_starts_with_damaged_runs(world, tmp_path):
    for name, file, content in DAMAGE:
        (copy_run(world, tmp_path / "runs" / name) / file).write_bytes(content)
    from ui.app import build_app

    build_app(Engine(Settings(runs_dir=tmp_path / "runs"), load_model=lambda *a: make_base()))


# --- 5. run files edited by hand --------------------------------------------------------------------

@pytest.mark.parametrize(("case", "file", "edit", "says"), EDITS, ids=[e[0] for e in EDITS])
def test_a_hand_edited_run_file_is_one_line_naming_the_file_and_the_field(capsys, world, page, tmp_path, case, file,
                                                                         edit, says):
    run = edited_run(world, tmp_path / "run", file, edit)
    line = assert_one_line(*run_cli(capsys, ["train", "--resume", str(run), "--quiet"]))
    assert says in line and str(run) in line
    if file == "config.json":
        assert says in assert_one_line(*run_cli(capsys, ["generate", "--run", str(run), "--question", "who ?"]))

    shown = page.client.predict(f"edited-{case}", api_name="/resume")
    if "resuming" in shown:  # the settings read well: the checkpoint is read in the job
        status = page.engine.jobs.wait(WAIT)
        shown = status.error or ""
        assert status.state == "failed"
    assert says in shown and "internal error" not in shown


def test_a_checkpoint_of_another_method_is_refused_on_resume(capsys, world, tmp_path):
    run = edited_run(world, tmp_path / "run", "config.json", lambda d: d["config"].update(method="lora"))
    line = assert_one_line(*run_cli(capsys, ["train", "--resume", str(run), "--quiet"]))
    assert f"{run / 'checkpoint'}: the checkpoint does not fit this" in line


@pytest.mark.parametrize(("content", "says"), [
    (b"[1, 2]", "summary.json: must be a JSON object (got a list)"),
    (b'{"status": "completed", "steps": 1000000, "total_steps": 3}', "summary.json: 'steps' must be at most total_steps (3)"),
    (b'{"status": "done"}', "summary.json: 'status' must be one of completed, stopped, diverged (got \"done\")"),
], ids=["an-array", "steps-beyond-the-total", "an-unknown-status"])
def test_a_hand_edited_summary_names_the_file_and_the_field(world, tmp_path, content, says):
    run = copy_run(world, tmp_path / "runs" / "run")
    run.joinpath("summary.json").write_bytes(content)
    with pytest.raises(GantuneError, match="summary.json") as caught:
        RunFolder(run).read_summary()
    assert says in str(caught.value)
    engine = Engine(Settings(runs_dir=tmp_path / "runs"), load_model=lambda *a: make_base())
    with pytest.raises(GantuneError, match="summary.json"):
        engine.resume_training("run")
    assert engine.runs.rows()[0].status.startswith("damaged: ") and says in engine.runs.rows()[0].status


# --- 6. a model folder is not a run -------------------------------------------------------------------

def test_generate_on_a_model_folder_says_it_is_a_model(capsys, world):
    line = assert_one_line(*run_cli(capsys, ["generate", "--run", str(world.model), "--question", "who ?"]))
    assert line == (f"gantune: error: {world.model} is not a gantune run folder (its config.json has no run settings; "
                    "it looks like a model — pass it as --model to train)")
