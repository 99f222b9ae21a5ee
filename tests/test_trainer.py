"""The training loop and the run folder it writes."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import make_base, nan_on_step
from safetensors.torch import load_file

from gantune.config import preset_config
from gantune.errors import GantuneError
from gantune.inference import answer_questions, load_method
from gantune.methods.gan.method import GanMethod
from gantune.runs import RunFolder
from gantune.scoring import answer_logprobs, mle_loss
from gantune.trainer import diverged_message, train

STEP_KEYS = {"step", "epoch", "g_loss", "adapter_norm", "frozen_norm", "tokens_per_s", "seconds", "memory_mb"}
ADVERSARIAL_KEYS = {"d_loss", "reward_mean", "d_acc_real", "d_acc_fake", "kl", "pg_loss"}


def _config(data, out, **overrides):
    # 12 pairs, half for training: 6 pairs in batches of 4 -> 2 steps per epoch; no MLE warm-up, so that a run
    # of one epoch is the first epoch of a run of two (the warm-up's length depends on the number of epochs)
    values = dict(data=str(data), n=12, train_fraction=0.5, seed=3, out=str(out), device="cpu", epochs=2,
                  batch_size=4, max_new_tokens=8, max_prompt_tokens=32, noise_dim=8, d_hidden=[16, 8, 4],
                  warmup_epochs=0)
    values.update(overrides)
    return preset_config("gan", "improved", **values)


def _adapter_weights(run_path) -> dict[str, torch.Tensor]:
    return load_file(RunFolder(run_path).adapter_dir / "adapter_model.safetensors")


def _no_timing(record: dict) -> dict:
    return {k: v for k, v in record.items()
            if not (k.endswith("seconds") or k in ("tokens_per_s", "memory_mb", "peak_memory_mb"))}


def test_train_writes_the_run_folder(base, tiny_data, tmp_path):
    out = tmp_path / "run"
    records = []
    summary = train(_config(tiny_data, out, warmup_epochs=1), base=base, on_step=records.append)
    run = RunFolder(out)

    # config.json: settings, resolved sources, the command that repeats the run
    data = json.loads(run.config_path.read_text())
    assert data["command"].startswith("python -m gantune train")
    assert "--seed 3" in data["command"]
    assert data["config"]["seed"] == 3 and data["config"]["epochs"] == 2
    resolved = data["resolved"]
    assert resolved["model"]["name"] == "tiny-random-llama"
    assert resolved["data"] == str(tiny_data.resolve())
    assert len(resolved["split"]["train"]) == 6 and len(resolved["split"]["test"]) == 6
    assert {r["question"] for r in resolved["split"]["train"]}.isdisjoint(r["question"] for r in resolved["split"]["test"])
    config, _ = run.read_config()
    # "auto" precision took the given model's, and the run records it (so the command repeats it anywhere)
    assert data["config"]["precision"] == "fp32" and "--precision fp32" in data["command"]
    assert config == _config(tiny_data, out, warmup_epochs=1, precision="fp32")

    # metrics.jsonl: one record per step
    metrics = run.read_metrics()
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]
    assert [m["epoch"] for m in metrics] == [0.5, 1.0, 1.5, 2.0]
    # the first epoch is the MLE warm-up, the second adversarial
    assert [m["phase"] for m in metrics] == ["mle", "mle", "adversarial", "adversarial"]
    for m in metrics:
        keys = STEP_KEYS | (ADVERSARIAL_KEYS if m["phase"] == "adversarial" else {"mle_loss"})
        assert keys <= m.keys(), keys - m.keys()
        assert all(math.isfinite(m[k]) for k in keys)
        if m["phase"] == "adversarial":
            assert 0 <= m["d_acc_real"] <= 1 and 0 <= m["d_acc_fake"] <= 1
        assert m["tokens_per_s"] > 0 and m["memory_mb"] > 0
    assert len({m["frozen_norm"] for m in metrics}) == 1  # the LM never moves
    assert metrics[0]["frozen_norm"] > 0
    norms = [m["adapter_norm"] for m in metrics]
    assert len(set(norms)) == len(norms)  # the adapter moves every step
    seconds = [m["seconds"] for m in metrics]
    assert seconds == sorted(seconds)

    # the callback saw exactly the recorded steps
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert [_no_timing(r) for r in records] == [_no_timing(m) for m in metrics]

    # summary.json
    on_disk = json.loads(run.summary_path.read_text())
    assert on_disk == summary.to_dict() and run.read_summary() == summary
    assert summary.status == "completed"
    assert summary.steps == summary.total_steps == 4
    assert summary.n_train == 6 and summary.n_test == 6
    assert summary.adapter == str(run.adapter_dir)
    method_params = GanMethod(base, config).trainable_parameters()
    assert summary.trainable_params == sum(p.numel() for p in method_params)

    # adapter and checkpoint
    assert (run.adapter_dir / "adapter_config.json").is_file()
    assert (run.adapter_dir / "adapter_model.safetensors").is_file()
    assert (run.checkpoint_dir / "state.safetensors").is_file()
    assert json.loads((run.checkpoint_dir / "trainer_state.json").read_text())["step"] == 4


def test_train_keeps_the_lm_frozen(base, tiny_data, tmp_path):
    before = {k: v.clone() for k, v in base.model.state_dict().items()}
    train(_config(tiny_data, tmp_path / "run", epochs=1), base=base)
    assert all(torch.equal(v, before[k]) for k, v in base.model.state_dict().items())
    assert not any(p.requires_grad for p in base.model.parameters())


def test_should_stop_stops_and_still_saves(base, tiny_data, tmp_path):
    out = tmp_path / "run"
    done = []
    summary = train(_config(tiny_data, out, epochs=3), base=base, on_step=done.append,
                    should_stop=lambda: len(done) >= 2)
    run = RunFolder(out)
    assert summary.status == "stopped"
    assert summary.steps == 2 and summary.total_steps == 6
    assert [m["step"] for m in run.read_metrics()] == [1, 2]
    assert summary.adapter == str(run.adapter_dir)
    assert (run.adapter_dir / "adapter_model.safetensors").is_file()
    assert json.loads(run.summary_path.read_text())["status"] == "stopped"


def test_stopping_before_the_first_step(base, tiny_data, tmp_path):
    summary = train(_config(tiny_data, tmp_path / "run"), base=base, should_stop=lambda: True)
    assert summary.status == "stopped" and summary.steps == 0
    assert RunFolder(tmp_path / "run").read_metrics() == []


def test_a_run_diverging_before_any_checkpoint_keeps_no_adapter(base, tiny_data, tmp_path, monkeypatch):
    nan_on_step(monkeypatch, 2)  # the checkpoint would come at the end of step 2 (epoch 1)
    summary = train(_config(tiny_data, tmp_path / "run"), base=base)
    assert summary.status == "diverged"
    assert summary.steps == 2
    assert summary.adapter is None and summary.adapter_step is None
    assert not RunFolder(tmp_path / "run").adapter_dir.exists()
    assert "no checkpoint had been reached, so no adapter was saved" in diverged_message(summary)


def test_a_diverged_run_keeps_the_last_good_adapter(tiny_data, tmp_path, monkeypatch):
    good = tmp_path / "good"
    train(_config(tiny_data, good, epochs=1), base=make_base())  # steps 1-2, the same numbers
    nan_on_step(monkeypatch, 3)
    summary = train(_config(tiny_data, tmp_path / "run"), base=make_base())
    assert summary.status == "diverged" and summary.steps == 3
    assert summary.adapter_step == 2 and summary.adapter == str(RunFolder(tmp_path / "run").adapter_dir)
    kept, expected = _adapter_weights(tmp_path / "run"), _adapter_weights(good)
    assert all(torch.equal(kept[k], expected[k]) for k in expected)
    assert diverged_message(summary).startswith("training diverged at step 3 (a loss became NaN/inf); "
                                                "the adapter of step 2 (the last checkpoint) was kept")


def test_read_metrics_skips_a_torn_last_line(base, tiny_data, tmp_path):
    out = tmp_path / "run"
    train(_config(tiny_data, out, epochs=1), base=base)
    run = RunFolder(out)
    good = run.read_metrics()
    assert len(good) == 2
    with open(run.metrics_path, "a", encoding="utf-8") as fh:
        fh.write('{"step": 3, "epoch": 1.5, "g_lo')
    assert run.read_metrics() == good


def test_read_metrics_of_an_empty_folder(tmp_path):
    assert RunFolder(tmp_path).read_metrics() == []


def test_resume_continues_from_the_checkpoint(tiny_data, tmp_path):
    out = tmp_path / "run"
    first = train(_config(tiny_data, out, epochs=1), base=make_base())
    assert first.status == "completed" and first.steps == 2 and first.total_steps == 2
    seen = []
    second = train(_config(tiny_data, out, epochs=2), base=make_base(), resume=True, on_step=seen.append)
    assert second.status == "completed"
    assert second.steps == second.total_steps == 4
    assert [r["step"] for r in seen] == [3, 4]  # only the new steps ran
    metrics = RunFolder(out).read_metrics()
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]
    assert [m["epoch"] for m in metrics] == [0.5, 1.0, 1.5, 2.0]
    assert metrics[2]["seconds"] >= metrics[1]["seconds"]  # elapsed time carries over
    assert json.loads(RunFolder(out).summary_path.read_text())["steps"] == 4


def test_resume_without_a_checkpoint_is_a_clear_error(base, tiny_data, tmp_path):
    with pytest.raises(GantuneError, match="no checkpoint to resume from"):
        train(_config(tiny_data, tmp_path / "empty"), base=base, resume=True)


def test_a_fresh_run_refuses_a_used_folder_unless_overwrite(base, tiny_data, tmp_path):
    out = tmp_path / "run"
    train(_config(tiny_data, out, epochs=1), base=base)
    with pytest.raises(GantuneError, match="already holds a run"):
        train(_config(tiny_data, out, epochs=1), base=base)
    summary = train(_config(tiny_data, out, epochs=1), base=base, overwrite=True)
    assert summary.status == "completed"
    assert [m["step"] for m in RunFolder(out).read_metrics()] == [1, 2]  # the old metrics are gone


def test_resumed_run_is_bit_identical_to_a_straight_run(tiny_data, tmp_path):
    straight = tmp_path / "straight"
    resumed = tmp_path / "resumed"
    train(_config(tiny_data, straight, epochs=2), base=make_base())
    train(_config(tiny_data, resumed, epochs=1), base=make_base())
    train(_config(tiny_data, resumed, epochs=2), base=make_base(), resume=True)

    a, b = _adapter_weights(straight), _adapter_weights(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"adapter tensor {k} differs after resuming"
    ma, mb = RunFolder(straight).read_metrics(), RunFolder(resumed).read_metrics()
    # the same steps and numbers; only the plan differed (the first part was started for 1 epoch)
    assert [r["total_steps"] for r in mb] == [2, 2, 4, 4] and [r["total_steps"] for r in ma] == [4] * 4
    assert [_no_timing(m) | {"total_steps": 0} for m in ma] == [_no_timing(m) | {"total_steps": 0} for m in mb]


def test_new_levers_resume_bit_identically(tiny_data, tmp_path):
    """PPO epochs, a cold rollout and dense rewards keep no state of their own: resuming mid-epoch is exact."""
    levers = dict(ppo_epochs=2, rollout_temperature=0.7, reward="dense")
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(_config(tiny_data, straight, **levers), base=make_base())
    done = []
    train(_config(tiny_data, resumed, **levers), base=make_base(), on_step=done.append,
          should_stop=lambda: len(done) >= 3)
    train(_config(tiny_data, resumed, **levers), base=make_base(), resume=True)
    a, b = _adapter_weights(straight), _adapter_weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    ma, mb = RunFolder(straight).read_metrics(), RunFolder(resumed).read_metrics()
    assert [_no_timing(m) for m in ma] == [_no_timing(m) for m in mb]


def test_a_run_stopped_mid_epoch_resumes_bit_identically(tiny_data, tmp_path):
    straight = tmp_path / "straight"
    resumed = tmp_path / "resumed"
    train(_config(tiny_data, straight, epochs=2), base=make_base())
    done = []
    first = train(_config(tiny_data, resumed, epochs=2), base=make_base(), on_step=done.append,
                  should_stop=lambda: len(done) >= 3)
    assert first.status == "stopped" and first.steps == 3  # stopped in the middle of epoch 2
    second = train(_config(tiny_data, resumed, epochs=2), base=make_base(), resume=True)
    assert second.status == "completed" and second.steps == 4
    a, b = _adapter_weights(straight), _adapter_weights(resumed)
    for k in a:
        assert torch.equal(a[k], b[k]), f"adapter tensor {k} differs after resuming mid-epoch"


def test_same_seed_same_run(tiny_data, tmp_path):
    train(_config(tiny_data, tmp_path / "a", epochs=1), base=make_base())
    train(_config(tiny_data, tmp_path / "b", epochs=1), base=make_base())
    a, b = _adapter_weights(tmp_path / "a"), _adapter_weights(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)
    train(_config(tiny_data, tmp_path / "c", epochs=1, seed=4), base=make_base())
    c = _adapter_weights(tmp_path / "c")
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_load_method_and_answer(base, tiny_data, tmp_path):
    out = tmp_path / "run"
    train(_config(tiny_data, out, epochs=1, lr=0.05), base=base)
    method = load_method(str(out), base=base)
    assert isinstance(method, GanMethod)
    saved = _adapter_weights(out)
    assert all(torch.equal(v, saved[k]) for k, v in method.generator.adapter.state_dict().items())
    questions = ["who is the author of novel ?", "what did his mother write ?"]
    answers = answer_questions(base, questions, 8, method=method)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
    again = answer_questions(base, questions, 8, method=load_method(str(out), base=base))
    assert again == answers


def test_load_method_errors(tmp_path):
    with pytest.raises(GantuneError, match="not a run folder"):
        load_method(str(tmp_path / "nothing"))


def test_the_adapter_with_the_best_validation_score_is_kept(tiny_data, tmp_path, monkeypatch):
    """Validation at step 0 and each epoch's end; adapter/ holds the best one and the summary says which."""
    monkeypatch.setattr("gantune.trainer.MIN_VAL_PAIRS", 1)  # the choice itself (below 8 pairs: test_too_few_…)
    scores = iter([3.0, 2.0, 2.5, 2.9])  # step 0, then epochs 1-3: epoch 1 is the best
    monkeypatch.setattr("gantune.trainer.Validation.score", lambda self, method: next(scores))
    train(_config(tiny_data, tmp_path / "one", train_fraction=0.9, epochs=1, val_pairs=2, val_metric="nll"),
            base=make_base())
    scores = iter([3.0, 2.0, 2.5, 2.9])
    summary = train(_config(tiny_data, tmp_path / "run", train_fraction=0.9, epochs=3, val_pairs=2, val_metric="nll",
                            val_tolerance=0.5), base=make_base())
    assert summary.n_train == 10 and summary.n_val == 1  # 11 training pairs: at most a tenth is held out
    assert summary.kept_step == 3 and "best validation nll (2.0000)" in summary.kept_reason
    assert "worse by more than 0.5" in summary.kept_reason
    assert [v["step"] for v in summary.validation] == [0, 3, 6, 9]
    kept, first_epoch = _adapter_weights(tmp_path / "run"), _adapter_weights(tmp_path / "one")
    assert all(torch.equal(kept[k], first_epoch[k]) for k in first_epoch)
    metrics = RunFolder(tmp_path / "run").read_metrics()
    assert [m.get("val_nll") for m in metrics if m["step"] % 3 == 0] == [2.0, 2.5, 2.9]

    # within the tolerance, the last adapter stays: a noisy validation slice does not undo later epochs
    scores = iter([3.0, 2.0, 2.5, 2.4])
    last = train(_config(tiny_data, tmp_path / "last", train_fraction=0.9, epochs=3, val_pairs=2, val_metric="nll",
                         val_tolerance=0.5), base=make_base())
    assert last.kept_step == 9 and last.kept_reason.startswith("the last adapter")
    saved = _adapter_weights(tmp_path / "last")
    assert any(not torch.equal(saved[k], kept[k]) for k in kept)  # not the epoch-1 adapter


def test_validation_nll_matches_the_scoring_of_the_answers(base, tiny_data):
    from gantune.data import Encoder, load_pairs
    from gantune.methods import get_method
    from gantune.trainer import Validation

    pairs, _ = load_pairs(str(tiny_data), "forget10")
    encoder = Encoder(base.tokenizer, base.eos_id, 32, 8)
    method = get_method("adapter-mle")(base, _config(tiny_data, "unused"))
    nll = Validation(base, encoder, pairs[:3], "nll", base.device).score(method)
    batch = encoder.collate(encoder.encode(pairs[:3]))
    with torch.no_grad():
        logp = answer_logprobs(base.model, batch.prompt_ids, batch.prompt_mask, batch.answer_ids, batch.answer_mask)
    assert nll == pytest.approx(float(mle_loss(logp, batch.answer_mask)), rel=1e-5)  # zero-init: the base model


@pytest.mark.parametrize("metric", ["nll", "rougeL"])
def test_validation_scores_the_held_out_pairs(tiny_data, tmp_path, metric, monkeypatch):
    monkeypatch.setattr("gantune.trainer.MIN_VAL_PAIRS", 1)
    summary = train(_config(tiny_data, tmp_path / "run", train_fraction=0.9, epochs=1, val_pairs=2, lr=0.05,
                            val_metric=metric, adapter_init="default"), base=make_base())
    start, end = (v[f"val_{metric}"] for v in summary.validation)
    assert start >= 0 and end >= 0 and (metric == "rougeL" or start != end)
    lower_is_better = metric == "nll"
    start_wins = start + 0.02 < end if lower_is_better else start - 0.02 > end  # beyond the default tolerance
    assert summary.kept_step == (0 if start_wins else summary.steps)


def test_too_few_validation_pairs_keep_the_last_adapter_and_say_so(tiny_data, tmp_path, monkeypatch):
    """Below 8 validation pairs the scores are recorded, never used to choose: the last adapter stays, even where
    step 0 scored best (which, with enough pairs, is kept and said); a --val-pairs the data cannot give is said."""
    settings = dict(train_fraction=0.9, epochs=3, val_pairs=2, val_metric="nll")  # 11 training pairs: 1 held out
    for least, folder in ((1, "enough"), (8, "few")):
        monkeypatch.setattr("gantune.trainer.MIN_VAL_PAIRS", least)
        scores = iter([1.0, 2.0, 2.5, 2.9])  # NLL: no epoch beat step 0 by the tolerance
        monkeypatch.setattr("gantune.trainer.Validation.score", lambda self, method, scores=scores: next(scores))
        summary = train(_config(tiny_data, tmp_path / folder, **settings), base=make_base())
        assert summary.n_val == 1 and [v["step"] for v in summary.validation] == [0, 3, 6, 9]
        shortfall = "; --val-pairs asks for 2 validation pairs, but 11 training pairs allow 1 (at most a tenth)"
        assert summary.kept_reason.endswith(shortfall)
        if least == 1:
            assert summary.kept_step == summary.adapter_step == 0
            assert "; training did not beat the untouched model on validation" in summary.kept_reason
        else:
            assert summary.kept_step == summary.adapter_step == 9
            assert summary.kept_reason.startswith("the last adapter: too few validation pairs (1) to choose between "
                                                  "adapters (at least 8)")
    untouched, last = _adapter_weights(tmp_path / "enough"), _adapter_weights(tmp_path / "few")
    assert any(not torch.equal(untouched[k], last[k]) for k in untouched)  # the trained one, not step 0's

    # none at all: the setting asks for some, the data hold none, and the summary says so
    none = train(_config(tiny_data, tmp_path / "none", epochs=1, val_pairs=4), base=make_base())
    assert none.n_val == 0 and none.validation == [] and none.kept_step == none.steps
    assert none.kept_reason == ("the last step's adapter (no validation pairs); --val-pairs asks for 4 validation pairs, "
                                "but 6 training pairs allow 0 (at most a tenth)")


def test_answers_are_sampled_at_each_epochs_end_and_the_last_step_whatever_sample_every_says(tiny_data, tmp_path):
    # 6 training pairs in batches of 4: 2 steps an epoch, 6 steps; every 5 steps, the first, each epoch's end, the last
    summary = train(_config(tiny_data, tmp_path / "run", epochs=3, sample_every=5, val_pairs=0), base=make_base())
    assert summary.steps == 6
    steps = [s["step"] for s in RunFolder(tmp_path / "run").read_samples()]
    assert sorted(set(steps)) == [1, 2, 4, 5, 6] and steps == sorted(steps)
    train(_config(tiny_data, tmp_path / "never", epochs=3, sample_every=0, val_pairs=0), base=make_base())
    assert RunFolder(tmp_path / "never").read_samples() == []  # 0 still means never
