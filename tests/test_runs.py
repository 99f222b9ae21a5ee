"""The run folder under faults: torn lines, a crash between renames, a full disk, a killed process."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import WORDS, make_base

from gantune.config import preset_config
from gantune.errors import GantuneError
from gantune.inference import load_method
from gantune.runs import RunFolder, files, folder, replace_dir_atomic
from gantune.trainer import train

ROOT = Path(__file__).resolve().parents[1]


def _config(data, out, **overrides):
    # 6 training pairs in batches of 2 -> 3 steps an epoch; a checkpoint after every step
    values = dict(data=str(data), n=12, train_fraction=0.5, seed=3, out=str(out), device="cpu", epochs=2,
                  batch_size=2, max_new_tokens=8, max_prompt_tokens=32, noise_dim=8, d_hidden=[16, 8, 4],
                  checkpoint_every=1)
    values.update(overrides)
    return preset_config("gan", "improved", **values)


def _adapter(run_path) -> dict[str, torch.Tensor]:
    method = load_method(str(run_path), base=make_base())
    return {k: v.clone() for k, v in method.generator.adapter.state_dict().items()}


# --- metrics.jsonl --------------------------------------------------------------------------------

def test_an_append_after_a_torn_line_starts_on_a_line_of_its_own(tmp_path):
    run = RunFolder(tmp_path)
    run.append_metrics({"step": 1})
    with open(run.metrics_path, "a", encoding="utf-8") as fh:
        fh.write('{"step": 2, "g_lo')  # a crash mid-write
    run.append_metrics({"step": 2})
    run.append_metrics({"step": 3})
    assert [r["step"] for r in run.read_metrics()] == [1, 2, 3]


def test_resume_drops_the_records_of_steps_after_its_checkpoint(tmp_path):
    run = RunFolder(tmp_path)
    for step in (1, 2, 3, 4):
        run.append_metrics({"step": step})
        run.append_sample({"step": step, "answer": "a"})
    run.keep_records_until(2)
    assert [r["step"] for r in run.read_metrics()] == [1, 2]
    assert [r["step"] for r in run.read_samples()] == [1, 2]


# --- atomic folders -------------------------------------------------------------------------------

def _fill(value: str):
    def fill(folder: Path) -> None:
        (folder / "v.txt").write_text(value)
    return fill


def test_a_crash_between_the_two_renames_is_undone_on_the_next_read(tmp_path, monkeypatch):
    target = tmp_path / "checkpoint"
    replace_dir_atomic(target, _fill("one"))
    real_replace = os.replace
    calls = []

    def crash_on_second(src, dst):
        calls.append(dst)
        if len(calls) == 2:  # old moved aside, new not yet in place: the process dies here
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        replace_dir_atomic(target, _fill("two"))
    monkeypatch.setattr(os, "replace", real_replace)
    assert not target.exists()  # what a crash at that moment leaves on disk
    files.recover_dir(target)
    assert (target / "v.txt").read_text() == "one"
    replace_dir_atomic(target, _fill("three"))
    assert (target / "v.txt").read_text() == "three"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]  # no temp or .old folders left


def test_a_full_disk_keeps_the_previous_checkpoint_and_resume_then_matches_a_straight_run(tiny_data, tmp_path,
                                                                                         monkeypatch):
    straight, faulty = tmp_path / "straight", tmp_path / "faulty"
    train(_config(tiny_data, straight), base=make_base())

    real_save = folder.save_file
    saves = []

    def disk_full_on_third(tensors, path):
        saves.append(path)
        if len(saves) == 3:
            with open(path, "wb") as fh:  # a partial file, as a full disk leaves it
                fh.write(b"\0" * 100)
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(tensors, path)

    monkeypatch.setattr(folder, "save_file", disk_full_on_third)
    with pytest.raises(GantuneError) as info:
        train(_config(tiny_data, faulty), base=make_base())
    message = str(info.value)
    assert "could not save a checkpoint in" in message and "the disk is full; the previous copy is kept" in message
    run = RunFolder(faulty)
    tensors, state = run.load_checkpoint()
    assert state["step"] == 2  # the checkpoint before the failed one, whole
    assert [p.name for p in faulty.iterdir() if p.name.startswith(".")] == []
    assert json.loads(run.config_path.read_text())["config"]["epochs"] == 2

    monkeypatch.setattr(folder, "save_file", real_save)  # space freed
    summary = train(_config(tiny_data, faulty), base=make_base(), resume=True)
    assert summary.status == "completed" and summary.steps == 6
    assert [r["step"] for r in run.read_metrics()] == [1, 2, 3, 4, 5, 6]
    a, b = _adapter(straight), _adapter(faulty)
    assert all(torch.equal(a[k], b[k]) for k in a)


# --- a process killed mid-save ----------------------------------------------------------------------

SAVER = """
import sys, torch
from pathlib import Path
from gantune.runs import RunFolder, write_json_atomic
run = RunFolder(sys.argv[1])
for step in range(1, 100000):
    # every tensor holds the step number: a torn or mixed checkpoint would show another value
    run.save_checkpoint({"w": torch.full((2_000_000,), float(step)), "v": torch.full((10,), float(step))},
                        {"step": step})
    write_json_atomic(run.summary_path, {"step": step, "pad": "x" * 200_000})
    run.append_metrics({"step": step, "pad": "y" * 50_000})
    print(step, flush=True)
"""


@pytest.mark.slow
def test_a_process_killed_mid_save_leaves_the_last_whole_checkpoint(tmp_path):
    run = RunFolder(tmp_path / "run")
    run.create()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for round_ in range(4):
        proc = subprocess.Popen([sys.executable, "-c", SAVER, str(run.path)], stdout=subprocess.PIPE, env=env,
                                text=True)
        try:
            first = proc.stdout.readline()  # at least one save done in this round
            assert first.strip(), "the saver printed nothing"
            time.sleep(0.05 + 0.13 * round_)
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait(30)
        tensors, state = run.load_checkpoint()
        step = state["step"]
        assert torch.all(tensors["w"] == step) and torch.all(tensors["v"] == step)
        summary = json.loads(run.summary_path.read_text())  # never torn
        assert summary["step"] >= 1
        steps = [r["step"] for r in run.read_metrics()]  # a torn last line is skipped
        assert steps and steps[-1] >= step - 1


# --- loading a run never runs code from it --------------------------------------------------------

class _Bomb:
    """Unpickling this writes a marker file: proof that a load executed code from the run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran"))


@pytest.fixture(scope="module")
def trained_once(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("trained")
    data = root / "pairs.jsonl"
    data.write_text("\n".join(json.dumps({"question": f"who is the author of {w} ?", "answer": f"the author wrote {w} ."})
                              for w in WORDS[:12]) + "\n")
    train(_config(data, root / "run", epochs=1, checkpoint_every=0), base=make_base())
    return root / "run"


@pytest.fixture
def finished_run(trained_once, tmp_path) -> Path:
    """A copy of one finished run, for a test to change."""
    return Path(shutil.copytree(trained_once, tmp_path / "run"))


@pytest.mark.parametrize("name", ["adapter_model.bin", "pytorch_model.pt", "extra.pkl", "modeling_evil.py"])
def test_an_adapter_folder_with_a_pickle_or_code_is_refused_before_loading(finished_run, tmp_path, name):
    import pickle

    marker = tmp_path / "marker.txt"
    (RunFolder(finished_run).adapter_dir / name).write_bytes(pickle.dumps(_Bomb(marker)))
    with pytest.raises(GantuneError, match=f"holds {name}, which is not safetensors or JSON"):
        load_method(str(finished_run), base=make_base())
    assert not marker.exists()


def test_an_adapter_without_safetensors_is_refused(finished_run):
    (RunFolder(finished_run).adapter_dir / "adapter_model.safetensors").unlink()
    with pytest.raises(GantuneError, match="is damaged or incomplete: No such file"):
        load_method(str(finished_run), base=make_base())


def test_a_run_cannot_turn_trust_remote_code_on_by_itself(finished_run):
    run = RunFolder(finished_run)
    saved = json.loads(run.config_path.read_text())
    saved["config"]["trust_remote_code"] = True
    saved["config"]["model"] = "someone/model-with-code"
    run.config_path.write_text(json.dumps(saved))
    with pytest.raises(GantuneError, match="runs its own code; allow it with --trust-remote-code"):
        load_method(str(finished_run))
