"""``python -m gantune``, run in-process: clear one-line refusals, the help, and a tiny end-to-end run."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TOFU, make_base

from gantune.cli import build_parser, main
from gantune.config import TrainConfig, preset_config
from gantune.runs import RunFolder


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse refuses by exiting
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_refused(code: int, err: str) -> str:
    assert code == 2
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("gantune: error:"), err
    return lines[0]


@pytest.fixture
def tiny_model_dir(tmp_path):
    """The tiny model and tokenizer saved like a hub model, so the CLI can load it by path."""
    base = make_base()
    folder = tmp_path / "tiny-model"
    base.model.save_pretrained(folder)
    base.tokenizer.save_pretrained(folder)
    return folder


# --- refusals -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("args", "mentions"), [
    (["--epochs", "0"], "--epochs"),
    (["--batch-size", "0"], "--batch-size"),
    (["--lr", "-1"], "--lr"),
    (["--lr", "nan"], "--lr"),
    (["--lr", "inf"], "--lr"),
    (["--d-lr", "2"], "--d-lr"),
    (["--train-fraction", "1.5"], "--train-fraction"),
    (["--train-fraction", "0"], "--train-fraction"),
    (["--n", "0"], "--n"),
    (["--n", "1"], "--n"),
    (["--max-new-tokens", "0"], "--max-new-tokens"),
    (["--max-prompt-tokens", "0"], "--max-prompt-tokens"),
    (["--label-smoothing", "0.5"], "--label-smoothing"),
    (["--mle-weight", "-0.1"], "--mle-weight"),
    (["--checkpoint-every", "-1"], "--checkpoint-every"),
    (["--d-hidden", "16", "8"], "--d-hidden"),
    (["--adapter-hidden", "16"], "--adapter-hidden"),
    (["--epochs", "two"], "--epochs"),
    (["--preset", "nosuch"], "--preset"),
    (["--discriminator", "nosuch"], "--discriminator"),
    (["--data", "/nonexistent"], "/nonexistent"),
    (["--data", "/nonexistent/pairs.jsonl"], "/nonexistent/pairs.jsonl"),
    (["--nosuch-flag", "1"], "--nosuch-flag"),
])
def test_bad_train_values_are_refused_in_one_line(capsys, tmp_path, args, mentions):
    code, out, err = run_cli(capsys, "train", "--out", str(tmp_path / "run"), "--quiet", *args)
    line = assert_refused(code, err)
    assert mentions in line
    assert not (tmp_path / "run").exists()  # nothing was written


def test_unknown_subset_is_refused(capsys, tmp_path):
    if not TOFU.is_dir():
        pytest.skip("../shared/tofu is not there")
    code, _, err = run_cli(capsys, "train", "--data", str(TOFU), "--subset", "nosuch", "--out", str(tmp_path / "r"))
    line = assert_refused(code, err)
    assert "nosuch" in line and "forget10" in line


def test_n_larger_than_the_data_is_refused(capsys, tmp_path, tiny_data):
    code, _, err = run_cli(capsys, "train", "--data", str(tiny_data), "--n", "40", "--out", str(tmp_path / "r"))
    line = assert_refused(code, err)
    assert "40" in line and "12" in line


def test_generate_from_a_missing_run_is_refused(capsys):
    code, _, err = run_cli(capsys, "generate", "--run", "/nonexistent", "--question", "who ?")
    line = assert_refused(code, err)
    assert "/nonexistent" in line


def test_generate_needs_a_positive_max_new_tokens(capsys, tmp_path):
    code, _, err = run_cli(capsys, "generate", "--run", str(tmp_path), "--question", "who ?", "--max-new-tokens", "0")
    assert "--max-new-tokens" in assert_refused(code, err)


def test_resume_of_a_folder_without_a_run_is_refused(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", "--resume", str(tmp_path / "nothing"))
    assert "not a run folder" in assert_refused(code, err)


def test_a_command_is_required(capsys):
    code, _, err = run_cli(capsys)
    assert_refused(code, err)


# --- help -----------------------------------------------------------------------------------------

def test_help_lists_every_flag_and_preset_values(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")  # no wrapping: one line per flag
    code, out, _ = run_cli(capsys, "train", "--help")
    assert code == 0
    for f in dataclasses.fields(TrainConfig):
        assert "--" + f.name.replace("_", "-") in out, f.name
    for flag in ("--resume", "--quiet", "--no-resample-for-g", "--no-trust-remote-code"):
        assert flag in out
    epochs = [line for line in out.splitlines() if line.strip().startswith("--epochs")]
    assert len(epochs) == 1
    assert "thesis: 30" in epochs[0] and "improved: 3" in epochs[0]


def test_top_level_help_lists_the_commands(capsys):
    code, out, _ = run_cli(capsys, "--help")
    assert code == 0
    assert "train" in out and "generate" in out and "bench" in out


def test_help_and_refusals_do_not_import_torch():
    code = ("import sys\nfrom gantune.cli import main\n"
            "for argv in (['--help'], ['train', '--help'], ['bench', '--help'], ['train', '--epochs', 'x']):\n"
            "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
            "print(sorted(m for m in ('torch', 'transformers', 'accelerate') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_preset_help_says_what_each_preset_sets(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")
    _, out, _ = run_cli(capsys, "train", "--help")
    lines = out.splitlines()
    start = next(i for i, x in enumerate(lines) if x.strip().startswith("--preset"))
    line = " ".join(lines[start:start + 2])  # the help may start on the flag's next line
    assert "improved: improved" not in line
    assert "improved: the defaults" in line and "thesis: sets --n 100, --precision fp32, --epochs 30" in line and "more" in line


def test_bench_flags(capsys, monkeypatch):
    from gantune.compare import ROWS

    args = build_parser().parse_args(["bench", "--seeds", "0", "1", "2", "--temperatures", "0", "0.7", "1.0"])
    assert args.seeds == [0, 1, 2] and args.temperatures == [0.0, 0.7, 1.0]
    args = build_parser().parse_args(["bench"])
    assert args.seeds == [0] and args.temperatures == [0.0] and not hasattr(args, "eval_noise")
    assert build_parser().parse_args(["bench", "--seed", "3"]).seeds == [3]  # the old flag still reads
    assert build_parser().parse_args(["bench", "--eval-noise", "sample"]).eval_noise == "sample"
    monkeypatch.setenv("COLUMNS", "1000")
    _, out, _ = run_cli(capsys, "bench", "--help")
    lines = out.splitlines()
    start = next(i for i, x in enumerate(lines) if x.strip().startswith("--methods"))
    methods = " ".join(lines[start:start + 2])
    assert all(f" {name}" in methods for name in ROWS)


@pytest.mark.parametrize(("args", "mentions"), [
    (["--seeds", "1", "1"], "--seeds"),
    (["--temperatures", "-1"], "--temperatures"),
    (["--temperatures", "nan"], "--temperatures"),
    (["--seeds", "x"], "--seeds"),
    (["--eval-noise", "loud"], "--eval-noise"),
    (["--epochs", "0"], "--epochs"),
])
def test_bad_bench_values_are_refused_in_one_line(capsys, tmp_path, args, mentions):
    code, _, err = run_cli(capsys, "bench", "--out", str(tmp_path / "r.json"), "--bleurt", "none", *args)
    assert mentions in assert_refused(code, err)
    assert not list(tmp_path.iterdir())


# --- the recorded command repeats the run ---------------------------------------------------------

def _config_from_command(command: str) -> TrainConfig:
    argv = shlex.split(command)
    assert argv[:4] == ["python", "-m", "gantune", "train"]
    args = build_parser().parse_args(argv[3:])
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}
    return preset_config(given.pop("method"), given.pop("preset"), **given)


@pytest.mark.parametrize("preset", ["improved", "thesis"])
def test_command_preview_round_trips(preset):
    config = preset_config("gan", preset, data="/data/pairs.jsonl", n=12, seed=7, out="/runs/x", lr=0.01,
                           d_hidden=[8, 4, 2], resample_for_g=preset == "improved", label_smoothing=0.1)
    assert _config_from_command(config.command_preview()) == config


def test_command_preview_round_trips_all_pairs():
    config = preset_config("gan", "improved", data="/data/pairs.jsonl", n=None, out="/runs/x")
    assert _config_from_command(config.command_preview()) == config


# --- a tiny run end to end ------------------------------------------------------------------------

def test_train_then_generate(capsys, tmp_path, tiny_data, tiny_model_dir):
    out_dir = tmp_path / "run"
    code, out, err = run_cli(
        capsys, "train", "--model", str(tiny_model_dir), "--data", str(tiny_data), "--n", "12",
        "--epochs", "1", "--batch-size", "4", "--max-new-tokens", "8", "--max-prompt-tokens", "32",
        "--noise-dim", "8", "--d-hidden", "16", "8", "4", "--device", "cpu", "--seed", "5",
        "--out", str(out_dir), "--quiet",
    )
    assert code == 0, err
    assert "Traceback" not in err
    run = RunFolder(out_dir)
    for path in (run.config_path, run.metrics_path, run.summary_path,
                 run.adapter_dir / "adapter_model.safetensors", run.adapter_dir / "adapter_config.json"):
        assert path.is_file(), path
    summary = json.loads(run.summary_path.read_text())
    assert summary["status"] == "completed" and summary["steps"] == 2
    last = out.strip().splitlines()[-1]
    assert last.startswith("completed: 2/2 steps")
    assert str(run.adapter_dir) in last
    config, resolved = run.read_config()
    assert config.model == str(tiny_model_dir) and config.seed == 5 and config.n == 12
    assert resolved["model"]["kind"] == "folder"
    assert "--seed 5" in json.loads(run.config_path.read_text())["command"]

    code, out, err = run_cli(capsys, "generate", "--run", str(out_dir), "--question", "who is the author ?")
    assert code == 0, err
    assert out.endswith("\n") and len(out.splitlines()) == 1

    code, out, err = run_cli(capsys, "generate", "--run", str(out_dir), "--question", "who is the author ?",
                             "--question", "what did his mother write ?", "--base", "--max-new-tokens", "4")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "Q: who is the author ?" and lines[3] == "Q: what did his mother write ?"
    assert lines[1].startswith("base:") and lines[2].startswith("tuned:")
    # the adapter starts as the identity, and 2 small steps barely move it: base and tuned share a start
    assert len(lines) == 6

    # the same --out again is refused without --overwrite
    code, _, err = run_cli(capsys, "train", "--model", str(tiny_model_dir), "--data", str(tiny_data), "--n", "12",
                           "--out", str(out_dir), "--quiet")
    assert "already holds a run" in assert_refused(code, err)


def test_train_then_resume(capsys, tmp_path, tiny_data, tiny_model_dir):
    out_dir = tmp_path / "run"
    common = ["--quiet"]
    code, out, err = run_cli(
        capsys, "train", "--model", str(tiny_model_dir), "--data", str(tiny_data), "--n", "12",
        "--epochs", "1", "--batch-size", "4", "--max-new-tokens", "8", "--max-prompt-tokens", "32",
        "--noise-dim", "8", "--d-hidden", "16", "8", "4", "--device", "cpu", "--out", str(out_dir), *common,
    )
    assert code == 0, err
    code, out, err = run_cli(capsys, "train", "--resume", str(out_dir), "--epochs", "2", *common)
    assert code == 0, err
    assert re.match(r"completed: 4/4 steps", out.strip().splitlines()[-1])
    assert [m["step"] for m in RunFolder(out_dir).read_metrics()] == [1, 2, 3, 4]
    config, _ = RunFolder(out_dir).read_config()
    assert config.epochs == 2 and config.noise_dim == 8  # the run's settings, with the flag given on top


def test_resume_with_out_is_not_an_internal_error(capsys, tmp_path, tiny_data, tiny_model_dir):
    out_dir = tmp_path / "run"
    code, _, err = run_cli(
        capsys, "train", "--model", str(tiny_model_dir), "--data", str(tiny_data), "--n", "12", "--epochs", "1",
        "--batch-size", "4", "--max-new-tokens", "8", "--noise-dim", "8", "--d-hidden", "16", "8", "4",
        "--device", "cpu", "--out", str(out_dir), "--quiet",
    )
    assert code == 0, err
    code, _, err = run_cli(capsys, "train", "--resume", str(out_dir), "--out", str(out_dir), "--epochs", "2", "--quiet")
    assert "internal error" not in err
    assert code in (0, 2)


@pytest.mark.slow
def test_two_processes_train_in_lockstep(tmp_path, tiny_data, tiny_model_dir):
    """torchrun (what accelerate launch does on GPUs) with 2 CPU processes: shared steps, one writer."""
    out_dir = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "gantune", "--", "train",
         "--model", str(tiny_model_dir), "--data", str(tiny_data), "--n", "12", "--epochs", "2", "--batch-size", "2",
         "--max-new-tokens", "8", "--noise-dim", "8", "--device", "cpu", "--out", str(out_dir), "--quiet"],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("completed:") == 1  # only the main process reports
    config, resolved = RunFolder(out_dir).read_config()
    assert resolved["processes"] == 2
    # 6 training pairs, batch 2 -> 3 batches an epoch; 2 processes take whole rounds -> 1 step an epoch each
    assert [m["step"] for m in RunFolder(out_dir).read_metrics()] == [1, 2]
    assert (out_dir / "adapter" / "adapter_model.safetensors").is_file()


@pytest.mark.parametrize(("method", "shows", "never"), [
    (["lora"], ["loss="], ["d=", "r=", "nan"]),
    (["gan", "--adapter", "lora"], ["loss=", "g=", "d=", "r="], ["nan"]),  # gan-lora: its MLE warm-up, then the game
])
def test_the_progress_bar_shows_only_what_the_method_has(capsys, tmp_path, tiny_data, tiny_model_dir, method, shows,
                                                         never):
    code, _, err = run_cli(
        capsys, "train", "--method", *method, "--model", str(tiny_model_dir), "--data", str(tiny_data), "--n", "12",
        "--epochs", "2", "--batch-size", "4", "--max-new-tokens", "4", "--max-prompt-tokens", "32", "--lora-r", "4",
        "--device", "cpu", "--out", str(tmp_path / "run"),
    )
    assert code == 0, err
    assert all(s in err for s in shows), err[-600:]
    assert not any(s in err for s in never), err[-600:]


def test_progress_postfix_names_only_the_quantities_a_step_has():
    from gantune.trainer import progress_postfix

    assert progress_postfix({"g_loss": 1.23456, "mle_loss": 1.23456, "grad_norm": 0.5}) == {"loss": "1.235"}
    assert progress_postfix({"g_loss": 0.5, "mle_loss": 1.0, "phase": "mle"}) == {"loss": "0.500"}
    adversarial = {"g_loss": 0.1, "d_loss": 0.7, "reward_mean": -0.25, "phase": "adversarial", "clipped": True}
    assert progress_postfix(adversarial) == {"g": "0.100", "d": "0.700", "r": "-0.25"}
    assert progress_postfix({**adversarial, "mle_loss": 2.0})["mle"] == "2.000"
