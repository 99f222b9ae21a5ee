"""The bad-input catalogue, at both doors.

CLI: ``python -m gantune train`` (run in-process) exits 2 with one ``gantune: error:`` line and no
traceback. Page: the workbench served for real, driven through its /start endpoint with
gradio_client as the page drives it; the refusal is a warning (a toast in the page) or, for what only
shows once the job runs, the job's error in the status box; either way the app answers the next
call and no run folder is left behind for a refused start.
"""

from __future__ import annotations

import contextlib
import html
import json
import os
import re
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator

import pytest
import torch
from conftest import WORDS, make_base, nan_on_step
from gradio_client import Client
from gradio_client.exceptions import AppError
from safetensors.torch import load_file
from test_ui_app import WAIT, free_port, poll_status, start_args, state_of, warnings_of

from gantune.methods.gan.method import GanMethod
from gantune.runs import RunFolder
from ui.app import launch
from ui.engine import Engine, Settings

ROOT = Path(__file__).resolve().parents[1]
ROWS = [{"question": f"who is the author of {w} ?", "answer": f"the author was born in a city and wrote {w} fiction ."}
        for w in WORDS[:12]]


def _save_model(folder: Path, chat_template: bool = True) -> Path:
    base = make_base(chat_template=chat_template)
    base.model.save_pretrained(folder)
    base.tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Good and bad models and data files, made once for the module."""
    root = tmp_path_factory.mktemp("catalogue")
    w = SimpleNamespace(root=root)
    w.model = _save_model(root / "tiny-model")
    w.plain_model = _save_model(root / "tiny-model-no-template", chat_template=False)
    w.data = root / "pairs.jsonl"
    w.data.write_text("\n".join(json.dumps(r) for r in ROWS) + "\n")
    (root / "no-model").mkdir()
    w.no_model = root / "no-model"
    w.broken_gguf = root / "broken.gguf"
    w.broken_gguf.write_bytes(b"GGUF" + struct.pack("<I", 3) + os.urandom(4000))
    w.huge = root / "huge-model"
    w.huge.mkdir()
    (w.huge / "config.json").write_text(json.dumps({
        "model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 16384,
        "intermediate_size": 53248, "num_hidden_layers": 126, "num_attention_heads": 128,
        "num_key_value_heads": 8, "vocab_size": 128256}))
    w.files = {
        "empty": ("empty.jsonl", b""),
        "not_data": ("notes.txt", b"who wrote it? nobody knows\n"),
        "not_json": ("garbage.jsonl", b"this is not json\n"),
        "wrong_fields": ("wrong.jsonl", b'{"prompt": "who?", "completion": "me"}\n'),
        "latin1": ("latin1.jsonl", '{"question": "qui a \u00e9crit ?", "answer": "moi"}\n'.encode("latin-1")),
        "one_pair": ("one.jsonl", (json.dumps(ROWS[0]) + "\n").encode()),
        "long_question": ("long.jsonl", ("\n".join(json.dumps(
            {"question": " ".join(WORDS * 3) if i == 4 else r["question"], "answer": r["answer"]})
            for i, r in enumerate(ROWS)) + "\n").encode()),
    }
    for key, (name, content) in w.files.items():
        (root / name).write_bytes(content)
        setattr(w, key, root / name)
    return w


# One row per case: (id, the setting as TrainConfig names, what the user reads at the CLI, at the page).
# Values are callables of the world where they name a file or folder.
CASES = [
    # model
    ("unknown-hub-id-offline", {"model": "nosuch-org/nosuch-model"}, "nosuch-org/nosuch-model", None),
    ("folder-without-a-model", {"model": lambda w: w.no_model}, "holds no model", None),
    ("corrupt-gguf", {"model": lambda w: w.broken_gguf}, "broken.gguf", None),
    ("model-too-big", {"model": lambda w: w.huge}, "needs about", None),
    # data
    ("missing-path", {"data": lambda w: w.root / "missing.jsonl"}, "no data file or folder at", None),
    ("empty-file", {"data": lambda w: w.empty}, "holds no question/answer pairs", None),
    ("not-json-or-csv", {"data": lambda w: w.not_data}, "is not a data file gantune reads", None),
    ("invalid-json-line", {"data": lambda w: w.not_json}, "garbage.jsonl:1 is not valid JSON", None),
    ("wrong-fields", {"data": lambda w: w.wrong_fields}, "needs text fields 'question' and 'answer'", None),
    ("non-utf8-bytes", {"data": lambda w: w.latin1}, "is not UTF-8 text", None),
    ("one-pair-only", {"data": lambda w: w.one_pair, "n": None}, "need at least 2 pairs", None),
    ("n-zero", {"n": 0}, "--n must be at least 2", "need at least 2 pairs"),
    ("n-over-the-subset", {"n": 40}, "--n 40 is more than the 12 pairs available", None),
    ("question-over-the-prompt-limit", {"data": lambda w: w.long_question},
     "over the limit of 32 (--max-prompt-tokens)", None),
    ("subset-escaping-the-folder", {"data": lambda w: w.root, "subset": "../../etc/passwd"}, "is not a subset name",
     None),
    # hyper-parameters
    ("epochs-zero", {"epochs": 0}, "--epochs must be at least 1", "epochs must be at least 1 (got 0)"),
    ("negative-lr", {"lr": -0.001}, "--lr must be a number in (0, 1]", "lr must be a number above 0 and at most 1"),
    ("absurd-lr", {"lr": 1e9}, "--lr must be a number in (0, 1]", "lr must be a number above 0 and at most 1"),
    ("batch-size-zero", {"batch_size": 0}, "--batch-size must be at least 1", "batch size must be at least 1"),
    # (the page's slider refuses these itself: 0.05 to 0.95)
    ("train-fraction-zero", {"train_fraction": 0.0}, "--train-fraction must be between 0 and 1",
     "Value 0.0 is less than minimum value 0.05"),
    ("train-fraction-over-one", {"train_fraction": 1.5}, "--train-fraction must be between 0 and 1",
     "Value 1.5 is greater than maximum value 0.95"),
    ("max-new-tokens-zero", {"max_new_tokens": 0}, "--max-new-tokens must be at least 1",
     "max new tokens must be at least 1"),
    # a number box left unparsable (what "nan" or "inf" typed into the page's box sends) / typed at the CLI
    ("lr-nan", {"lr": "nan"}, "'nan' is not a finite number", "lr must be a finite number"),
    ("d-lr-inf", {"d_lr": "inf"}, "'inf' is not a finite number", "d lr must be a finite number"),
    ("max-new-tokens-inf", {"max_new_tokens": "inf"}, "invalid int value: 'inf'", "max new tokens must be a finite number"),
]
SETUP_KEYS = {"model": "model", "data": "data_path", "n": "n", "train_fraction": "fraction", "subset": "subset"}
BASE_SETTINGS = {"epochs": 1, "batch_size": 2, "max_new_tokens": 8, "max_prompt_tokens": 32, "noise_dim": 8,
                 "d_hidden": "16 8 4"}


def _resolve(world, value):
    return str(value(world)) if callable(value) else value


def _cli_args(world, change: dict, out: Path) -> list[str]:
    values = {"model": str(world.model), "data": str(world.data), "n": 12, "seed": 3, **BASE_SETTINGS,
              "d_hidden": "16 8 4"}
    values.update({k: _resolve(world, v) for k, v in change.items()})
    args = ["train", "--quiet", "--out", str(out)]
    for key, value in values.items():
        flag = "--" + key.replace("_", "-")
        if value is None:
            args += [flag, "all"]
        else:
            args += [flag, *str(value).split()]
    return args


def _page_args(world, change: dict) -> list:
    setup, settings = {"model": str(world.model)}, dict(BASE_SETTINGS)
    for key, value in change.items():
        value = _resolve(world, value)
        if value in ("nan", "inf"):
            value = None  # the browser sends an empty number box for text it cannot parse
        if key in SETUP_KEYS:
            setup[SETUP_KEYS[key]] = value
        else:
            settings[key] = value
    return start_args(world.data, setup=setup, **settings)


@pytest.fixture(scope="module")
def page(world, tmp_path_factory):
    """The workbench with the real model loader (models load by path) on a free loopback port."""
    with served(Engine(Settings(runs_dir=tmp_path_factory.mktemp("catalogue-runs")))) as served_page:
        yield served_page


@contextlib.contextmanager
def served(engine: Engine) -> Iterator[SimpleNamespace]:
    """``engine``'s workbench on a free loopback port, with a client; its job stopped and the server closed after."""
    demo, url, _ = launch(engine, prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(),
                          quiet=True)
    try:
        yield SimpleNamespace(engine=engine, url=url, client=Client(url, verbose=False))
    finally:
        engine.jobs.stop()
        engine.jobs.wait(WAIT)
        demo.close()


def run_cli(capsys, args: list[str]) -> tuple[int, str]:
    from gantune.cli import main

    try:
        code = main(args)
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


def assert_one_line(code: int, err: str) -> str:
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("gantune: error:"), err
    return lines[0]


def page_refusal(page, args: list) -> str:
    """What the page shows for a Start: its warning, or the failed job's error; '' if it trained."""
    job = page.client.submit(*args, api_name="/start")
    try:
        job.result(timeout=WAIT)
    except AppError as exc:  # a component refused the value (Gradio's own error toast)
        return str(exc)
    warnings = warnings_of(job)
    if warnings:
        return " | ".join(warnings)
    status = page.engine.jobs.wait(WAIT)
    return status.error or ""


@pytest.mark.parametrize(("case", "change", "cli_says", "page_says"), CASES, ids=[c[0] for c in CASES])
def test_cli_refuses_in_one_line(capsys, world, tmp_path, case, change, cli_says, page_says):
    code, err = run_cli(capsys, _cli_args(world, change, tmp_path / "run"))
    line = assert_one_line(code, err)
    assert cli_says in line
    assert not (tmp_path / "run" / "metrics.jsonl").exists()  # no step was taken
    print(f"{case}: {line}")  # the catalogue's wording, for `pytest -rA`


@pytest.mark.parametrize(("case", "change", "cli_says", "page_says"), CASES, ids=[c[0] for c in CASES])
def test_page_shows_the_refusal_and_stays_usable(world, page, case, change, cli_says, page_says):
    runs_before = {r.run: r.steps for r in page.engine.runs.rows()}
    shown = page_refusal(page, _page_args(world, change))
    print(f"{case}: {shown}")  # the catalogue's wording, for `pytest -rA`
    assert (page_says or cli_says) in shown
    assert "Traceback" not in shown
    # nothing trained, earlier runs untouched, and the page still answers
    assert {r.run: r.steps for r in page.engine.runs.rows() if r.run in runs_before} == runs_before
    assert all(r.steps == 0 for r in page.engine.runs.rows() if r.run not in runs_before)
    assert state_of(page.client.predict(api_name="/status")[0]) in ("idle", "failed", "completed")


def test_a_model_without_a_chat_template_trains_on_plain_prompts(capsys, world, tmp_path, page):
    code, err = run_cli(capsys, _cli_args(world, {"model": str(world.plain_model)}, tmp_path / "run"))
    assert code == 0, err
    assert RunFolder(tmp_path / "run").adapter_dir.is_dir()
    shown = page.client.predict(str(world.plain_model), "", False, api_name="/load_model")
    assert "no chat template (plain Q/A prompts)" in shown


def test_the_good_settings_of_the_catalogue_do_train(capsys, world, tmp_path, page):
    """The cases above differ from these settings in one value only, and these train at both doors."""
    code, err = run_cli(capsys, _cli_args(world, {}, tmp_path / "run"))
    assert code == 0, err
    page.client.predict(*_page_args(world, {}), api_name="/start")
    assert page.engine.jobs.wait(WAIT).state == "completed"


# --- runtime faults -------------------------------------------------------------------------------

def _fault_on_step(monkeypatch, n: int, fault) -> None:
    original = GanMethod.train_step

    def step(self, batch):
        self._calls = getattr(self, "_calls", 0) + 1
        if self._calls == n:
            fault(self)
        return original(self, batch)

    monkeypatch.setattr(GanMethod, "train_step", step)


def _run_both(capsys, world, tmp_path, page, **settings) -> tuple[str, str, Path, Path]:
    """The same faulty run at the CLI and at the page: (CLI line, page status error, both run folders)."""
    cli_out = tmp_path / "cli-run"
    code, err = run_cli(capsys, _cli_args(world, settings, cli_out))
    line = assert_one_line(code, err)
    page.client.predict(*_page_args(world, settings), api_name="/start")
    status = page.engine.jobs.wait(WAIT)
    status_html = poll_status(page.client, lambda o: state_of(o[0]) == "failed", "the failure")[0]
    assert status.state == "failed"
    assert html.escape(status.error) in status_html
    return line, status.error, cli_out, Path(status.run)


def test_a_loss_turning_nan_stops_with_a_message_and_keeps_the_last_good_adapter(capsys, world, tmp_path, page,
                                                                                  monkeypatch):
    nan_on_step(monkeypatch, 3)  # checkpoints after every step: step 2's adapter is the last good one
    line, shown, cli_run, page_run = _run_both(capsys, world, tmp_path, page, epochs=2, checkpoint_every=1)
    for text in (line, shown):
        assert "training diverged at step 3" in text and "the adapter of step 2 (the last checkpoint) was kept" in text
    for run in (cli_run, page_run):
        assert (RunFolder(run).adapter_dir / "adapter_model.safetensors").is_file()
        assert json.loads(RunFolder(run).summary_path.read_text())["adapter_step"] == 2


def test_out_of_memory_names_the_settings_to_lower(capsys, world, tmp_path, page, monkeypatch):
    def oom(_):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    _fault_on_step(monkeypatch, 2, oom)
    line, shown, cli_run, page_run = _run_both(capsys, world, tmp_path, page, epochs=2, checkpoint_every=1)
    for text in (line, shown):
        assert "out of memory; lower the batch size (--batch-size)" in text and "--max-new-tokens" in text
    for run in (cli_run, page_run):
        assert RunFolder(run).load_checkpoint()[1]["step"] == 1  # what was saved stays


def test_the_run_folder_deleted_mid_run(capsys, world, tmp_path, page, monkeypatch):
    import shutil

    _fault_on_step(monkeypatch, 2, lambda method: shutil.rmtree(method._run_path))
    original_init = GanMethod.__init__

    def remember(self, base, config, *a, **k):
        original_init(self, base, config, *a, **k)
        self._run_path = config.out

    monkeypatch.setattr(GanMethod, "__init__", remember)
    line, shown, _, _ = _run_both(capsys, world, tmp_path, page)
    for text in (line, shown):
        assert "the folder was deleted or moved while writing" in text


def test_the_run_folder_turning_unwritable_mid_run(capsys, world, tmp_path, page, monkeypatch):
    from gantune.runs import folder

    real = folder.append_line
    calls = []

    def refuse_later(path, record):
        calls.append(path)
        if len(calls) > 2:
            raise PermissionError(13, "Permission denied", str(path))
        real(path, record)

    monkeypatch.setattr(folder, "append_line", refuse_later)  # two lines go through, then the folder turns read-only
    code, err = run_cli(capsys, _cli_args(world, {}, tmp_path / "cli"))
    assert "the folder cannot be written (permission denied or read-only)" in assert_one_line(code, err)
    calls.clear()
    page.client.predict(*_page_args(world, {}), api_name="/start")
    status = page.engine.jobs.wait(WAIT)
    assert status.state == "failed" and "the folder cannot be written" in status.error


def test_a_full_disk_on_save_at_the_cli(capsys, world, tmp_path, monkeypatch):
    from gantune.runs import folder

    def full(tensors, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(folder, "save_file", full)
    code, err = run_cli(capsys, _cli_args(world, {}, tmp_path / "run"))
    line = assert_one_line(code, err)
    assert "could not save a checkpoint in" in line and "the disk is full" in line


# --- stop, kill, resume, two starts ---------------------------------------------------------------

def _cli_process(world, out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    args = _cli_args(world, {"epochs": 200, "checkpoint_every": 1}, out)
    return subprocess.Popen([sys.executable, "-m", "gantune", *args, *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def _wait_for_steps(run: RunFolder, n: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while len(run.read_metrics()) < n:
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, f"fewer than {n} steps in {timeout:.0f} s"
        time.sleep(0.05)


@pytest.mark.slow
def test_ctrl_c_at_the_cli_stops_after_the_step_and_saves(world, tmp_path):
    out = tmp_path / "run"
    proc = _cli_process(world, out)
    try:
        _wait_for_steps(RunFolder(out), 2, proc)
        proc.send_signal(signal.SIGINT)  # mid-step, most likely: a step is most of the loop's time
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "stopping after this step and saving" in stderr
    assert re.match(r"stopped: \d+/600 steps", stdout) and "continue it with: python -m gantune train --resume" in stdout
    run = RunFolder(out)
    summary = json.loads(run.summary_path.read_text())
    assert summary["status"] == "stopped" and summary["steps"] == len(run.read_metrics()) >= 2
    assert (run.adapter_dir / "adapter_model.safetensors").is_file()


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_same_result_as_an_uninterrupted_one(capsys, world, tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    # one MLE warm-up epoch in both: the warm-up's default length depends on the planned number of epochs
    settings = {"epochs": 2, "checkpoint_every": 2, "warmup_epochs": 1}
    assert run_cli(capsys, _cli_args(world, settings, straight))[0] == 0

    # the same run, planned for 200 epochs: killed long before their end
    proc = _cli_process(world, killed, "--warmup-epochs", "1")
    try:
        _wait_for_steps(RunFolder(killed), 3, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        proc.kill()
    assert not RunFolder(killed).summary_path.exists()  # it never finished
    code, err = run_cli(capsys, ["train", "--resume", str(killed), "--epochs", "2", "--checkpoint-every", "2",
                                 "--quiet"])
    assert code == 0, err
    a = load_file(RunFolder(straight).adapter_dir / "adapter_model.safetensors")
    b = load_file(RunFolder(killed).adapter_dir / "adapter_model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["step"] for r in RunFolder(killed).read_metrics()] == list(range(1, 7))


def test_two_browsers_pressing_start_at_once_start_one_job(world, page):
    clients = [Client(page.url, verbose=False) for _ in range(2)]
    before = {p.name for p in page.engine.settings.runs_dir.iterdir()}
    barrier = threading.Barrier(2)
    jobs = []

    def press(client):
        barrier.wait()
        job = client.submit(*_page_args(world, {"epochs": 100}), api_name="/start")
        job.result(timeout=WAIT)
        jobs.append(job)

    threads = [threading.Thread(target=press, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    warned = [j for j in jobs if any("a job is running" in w for w in warnings_of(j))]
    assert len(jobs) == 2 and len(warned) == 1
    page.engine.jobs.stop()
    assert page.engine.jobs.wait(WAIT).state == "stopped"
    assert len({p.name for p in page.engine.settings.runs_dir.iterdir()} - before) == 1


def test_the_resume_button_continues_a_stopped_run_to_the_uninterrupted_result(world, page, capsys, tmp_path):
    straight = tmp_path / "straight"
    assert run_cli(capsys, _cli_args(world, {"epochs": 10, "checkpoint_every": 1}, straight))[0] == 0

    page.client.predict(*_page_args(world, {"epochs": 10, "checkpoint_every": 1}), api_name="/start")
    wait_until = time.monotonic() + WAIT
    while page.engine.jobs.status().step < 2 and time.monotonic() < wait_until:
        time.sleep(0.01)
    page.client.predict(api_name="/stop")
    stopped = page.engine.jobs.wait(WAIT)
    assert stopped.state == "stopped" and stopped.step < 30
    run_id = Path(stopped.run).name

    page.client.predict(api_name="/list_runs")  # what the page's Refresh does: the new run joins the choices
    message = page.client.predict(run_id, api_name="/resume")  # (the State output is not part of the API)
    assert "resuming" in message
    resumed = page.engine.jobs.wait(WAIT)
    assert resumed.state == "completed" and resumed.run == stopped.run
    a = load_file(RunFolder(straight).adapter_dir / "adapter_model.safetensors")
    b = load_file(RunFolder(stopped.run).adapter_dir / "adapter_model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)

    # a finished run, or a made-up id, is refused in the page's message
    assert "already complete" in page.client.predict(run_id, api_name="/resume")
    with pytest.raises(AppError, match="not in the list of choices"):
        page.client.predict("../" + run_id, api_name="/resume")


def test_a_chat_message_over_the_prompt_limit_is_refused_in_the_page(world, page):
    question = " ".join(WORDS * 20)  # about 700 tokens with the chat template
    job = page.client.submit(question, None, None, 8, str(world.model), [], [], [], api_name="/chat")
    job.result(timeout=WAIT)
    assert any(re.search(r"the message is \d+ tokens as a prompt; the chat takes at most 512", w)
               for w in warnings_of(job)), warnings_of(job)
    histories = page.client.predict("who is the author ?", None, None, 8, str(world.model), [], [], [],
                                    api_name="/chat")  # the next message is answered
    assert histories[0][-1]["role"] == "assistant"
