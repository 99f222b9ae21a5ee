"""The equal-compute protocol on the tiny model: a run started from another's adapter (--init-from), MLE to
its plateau (--patience), the twins of a continuation starting from the same weights for the same steps, the
refusals, and the bench's plateau preset."""

from __future__ import annotations

import pytest
import torch
from conftest import make_arch_model, make_base, make_tokenizer
from safetensors.torch import load_file

from gantune.bench import BENCH_PRESETS, report_markdown, run_bench
from gantune.cli import main
from gantune.compare import ROWS, Continuation, compare_methods, row_adapter, seeded_splits, twin
from gantune.config import preset_config
from gantune.errors import GantuneError
from gantune.evaluate import EvalSettings, Scorers
from gantune.methods.gan.settings import GENERATOR_METHODS
from gantune.runs import RunFolder
from gantune.trainer import train

SMALL = dict(noise_dim=8, d_hidden=[16, 8, 4], virtual_tokens=4, lora_r=4, lora_alpha=8)


def _config(method, data, out, **overrides):
    # 16 pairs, 12 to train on (one of them validates): 11 fit pairs, 3 steps an epoch in batches of 4
    values = dict(data=str(data), n=16, train_fraction=0.75, seed=2, out=str(out), device="cpu", epochs=1,
                  batch_size=4, max_new_tokens=8, max_prompt_tokens=32, **SMALL)
    values.update(overrides)
    return preset_config(method, "improved", **values)


def _weights(run) -> dict[str, torch.Tensor]:
    return load_file(RunFolder(run).adapter_dir / "adapter_model.safetensors")


@pytest.mark.parametrize("kind, rows", [
    ("adapter-mle", [("adapter-mle", {}), ("gan", {"warmup_epochs": 0}), ("gan", {"warmup_epochs": 0, "discriminator": "implicit"})]),
    ("lora", [("lora", {}), ("gan", {"adapter": "lora", "warmup_epochs": 0}),
              ("gan", {"adapter": "lora", "warmup_epochs": 0, "discriminator": "implicit"})]),
    ("prompt-tuning", [("prompt-tuning", {}), ("gan", {"adapter": "prompt-tuning", "warmup_epochs": 0,
                                                       "discriminator": "implicit"})]),
], ids=["m-tunable", "lora", "prompt-tuning"])
def test_runs_started_from_a_warm_up_start_from_its_weights(kind, rows, sixteen_pairs, tmp_path):
    """Each continuation, stopped before its first step, saves exactly the warm-up's adapter (the optimiser fresh)."""
    warm = tmp_path / "warm"
    train(_config(kind, sixteen_pairs, warm, epochs=2, lr=0.05, adapter_init="default"), base=make_base())
    start = _weights(warm)
    for i, (method, extra) in enumerate(rows):
        out = tmp_path / f"row{i}"
        summary = train(_config(method, sixteen_pairs, out, init_from=str(warm), **extra), base=make_base(),
                        should_stop=lambda: True)
        assert summary.status == "stopped" and summary.steps == 0
        saved = _weights(out)
        assert saved.keys() == start.keys() and all(torch.equal(saved[k], start[k]) for k in start), (method, extra)
        assert RunFolder(out).read_config()[0].init_from == str(warm)
        state = load_file(RunFolder(out).checkpoint_dir / "state.safetensors")
        assert not any(k.startswith(("opt_g.", "opt.")) for k in state)  # no optimiser state carried over
    # and a continuation that runs does train from there
    moved = train(_config(kind, sixteen_pairs, tmp_path / "on", init_from=str(warm), lr=0.05), base=make_base())
    assert moved.status == "completed" and moved.steps == 3
    assert any(not torch.equal(_weights(tmp_path / "on")[k], start[k]) for k in start)


def test_a_resumed_continuation_is_bit_identical(sixteen_pairs, tmp_path):
    """The adversarial rate after --init-from survives the resume (it is read from the run's settings)."""
    warm = tmp_path / "warm"
    train(_config("adapter-mle", sixteen_pairs, warm), base=make_base())
    settings = dict(init_from=str(warm), warmup_epochs=0, epochs=2, lr=0.05, adv_lr=0.001, val_pairs=0)
    train(_config("gan", sixteen_pairs, tmp_path / "straight", **settings), base=make_base())
    done = []
    train(_config("gan", sixteen_pairs, tmp_path / "resumed", **settings), base=make_base(), on_step=done.append,
          should_stop=lambda: len(done) >= 4)
    train(_config("gan", sixteen_pairs, tmp_path / "resumed", **settings), base=make_base(), resume=True)
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "resumed")
    assert all(torch.equal(a[k], b[k]) for k in a)
    losses = [[r["g_loss"] for r in RunFolder(tmp_path / run).read_metrics()] for run in ("straight", "resumed")]
    assert len(losses[0]) == 6 and losses[0] == losses[1]


@pytest.mark.parametrize("method, settings, words", [
    ("gan", {"adapter": "lora"}, "holds a m-tunable adapter (--method adapter-mle) but this run tunes lora"),
    ("lora", {}, "holds a m-tunable adapter (--method adapter-mle) but this run tunes lora"),
    ("gan", {"noise_dim": 4}, "has --noise-dim 8, this run 4: the adapters differ in shape"),
    ("adapter-mle", {"model": "other/model"}, "tuned the model 'default', not this run's 'other/model'"),
    ("full", {}, "--method full trains no adapter"),
], ids=["gan-lora-from-m-tunable", "lora-from-m-tunable", "other-shape", "other-model", "full"])
def test_a_mismatched_start_is_refused_and_leaves_no_run(method, settings, words, sixteen_pairs, tmp_path):
    warm = tmp_path / "warm"
    train(_config("adapter-mle", sixteen_pairs, warm), base=make_base())
    out = tmp_path / "refused"
    with pytest.raises(GantuneError) as err:
        train(_config(method, sixteen_pairs, out, init_from=str(warm), **settings), base=make_base())
    assert words in str(err.value) and str(err.value).startswith(f"--init-from {warm}") and "\n" not in str(err.value)
    assert not out.exists()  # the claim is given back: nothing was written


def test_other_bad_starts_are_refused(sixteen_pairs, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(GantuneError, match="is not a run folder"):
        train(_config("gan", sixteen_pairs, out, init_from=str(tmp_path / "nothing")), base=make_base())
    with pytest.raises(GantuneError, match="names this run's own folder"):
        train(_config("gan", sixteen_pairs, out, init_from=str(out)), base=make_base())
    stopped = tmp_path / "stopped"  # a run that never saved an adapter
    train(_config("adapter-mle", sixteen_pairs, stopped, val_pairs=0), base=make_base(), should_stop=lambda: True)
    RunFolder(stopped).adapter_dir.rename(tmp_path / "elsewhere")
    with pytest.raises(GantuneError, match="has no adapter yet"):
        train(_config("adapter-mle", sixteen_pairs, out, init_from=str(stopped)), base=make_base())


def test_the_command_line_refuses_a_mismatched_start_in_one_line(sixteen_pairs, tmp_path, capsys):
    model = tmp_path / "tiny"  # a tiny model in a folder, as a user's own
    make_arch_model("llama").save_pretrained(model)
    make_tokenizer().save_pretrained(model)
    warm = tmp_path / "warm"
    args = ["--model", str(model), "--data", str(sixteen_pairs), "--n", "16", "--train-fraction", "0.75", "--epochs", "1", "--batch-size", "4",
            "--max-new-tokens", "4", "--max-prompt-tokens", "32", "--noise-dim", "8", "--device", "cpu", "--quiet"]
    assert main(["train", "--method", "adapter-mle", "--out", str(warm), *args]) == 0
    capsys.readouterr()
    code = main(["train", "--method", "gan", "--adapter", "lora", "--lora-r", "4", "--init-from", str(warm), "--out",
                 str(tmp_path / "gan"), *args])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith(f"gantune: error: --init-from {warm} holds a m-tunable")


# --- MLE to its plateau ----------------------------------------------------------------------------------

def test_patience_stops_once_validation_stops_improving(sixteen_pairs, tmp_path, monkeypatch):
    monkeypatch.setattr("gantune.trainer.MIN_VAL_PAIRS", 1)  # the tiny data's 1 validation pair: the choice itself
    scores = iter([0.10, 0.30, 0.20, 0.25, 0.9, 0.9])  # step 0, then epochs 1, 2, 3: the best is epoch 1's
    monkeypatch.setattr("gantune.trainer.Validation.score", lambda self, method: next(scores))
    summary = train(_config("adapter-mle", sixteen_pairs, tmp_path / "run", epochs=6, patience=2, val_tolerance=0.0),
                    base=make_base())
    assert summary.status == "completed" and summary.steps == 9 and summary.total_steps == 18
    assert [v["step"] for v in summary.validation] == [0, 3, 6, 9]
    assert summary.kept_step == 3
    assert "stopped after epoch 3 of at most 6: the validation rougeL had not improved for 2 epochs" in summary.kept_reason
    assert [r["step"] for r in RunFolder(tmp_path / "run").read_metrics()][-1] == 9


def test_patience_needs_validation(sixteen_pairs, tmp_path):
    with pytest.raises(GantuneError, match="--patience needs validation pairs"):
        _config("lora", sixteen_pairs, tmp_path / "a", patience=2, val_pairs=0).validate()
    with pytest.raises(GantuneError, match="--patience needs validation pairs, but 4 training pairs hold none"):
        train(_config("lora", sixteen_pairs, tmp_path / "b", n=8, train_fraction=0.5, patience=2), base=make_base())
    assert not (tmp_path / "b").exists()


# --- the protocol: warm-ups, twins, the report ------------------------------------------------------------

def test_twins_are_the_mle_rows_of_the_same_adapter():
    assert twin("gan") == twin("gan-implicit") == twin("gan-spin") == "adapter-mle"
    assert twin("gan-lora") == twin("gan-lora-implicit") == "lora"
    assert twin("gan-prompt") == twin("gan-prompt-implicit") == "prompt-tuning"
    assert twin("gan-prefix") == "prefix-tuning" and twin("lora") is None and row_adapter("full") == "full"
    for row in ROWS:
        if twin(row):
            assert twin(row) in ROWS and row_adapter(twin(row)) == row_adapter(row)


def test_the_plateau_preset_is_a_protocol_that_can_tell():
    bp = BENCH_PRESETS["plateau"]
    n_train = round(bp.n * bp.train_fraction)
    assert n_train >= 120 and bp.n - n_train >= 120
    assert bp.continuation is not None and bp.continuation.max_epochs > bp.epochs and bp.continuation.patience >= 1
    assert 1.0 in bp.temperatures and bp.settings["val_pairs"] <= n_train // 10
    for kind in ("m-tunable", "lora", "prompt-tuning"):  # each adapter: its twin and an explicit and an implicit row
        mine = [r for r in bp.methods if row_adapter(r) == kind]
        assert GENERATOR_METHODS[kind] in mine
        assert {ROWS[r][2].get("discriminator", "hidden") for r in mine if twin(r)} == {"hidden", "implicit"}
    assert BENCH_PRESETS["quick"].continuation is None and BENCH_PRESETS["quick"].n == 80
    with pytest.raises(GantuneError, match="full fine-tuning has none"):  # refused before anything loads
        run_bench("plateau", "report.json", methods=["lora", "full"], base=object(), log=lambda _: None)


@pytest.mark.slow
def test_a_continuation_comparison_trains_each_warm_up_once_and_both_twins_from_it(sixteen_pairs, tmp_path):
    base = make_base()
    splits, _ = seeded_splits(str(sixteen_pairs), "forget10", 16, 0.75, [0])
    shared = {"data": str(sixteen_pairs), "n": 16, "train_fraction": 0.75, "epochs": 1, "batch_size": 4,
              "max_new_tokens": 6, "max_prompt_tokens": 32, "val_pairs": 2, **SMALL}
    stages = []
    report = compare_methods(base, ["adapter-mle", "gan-implicit", "lora", "gan-lora"], splits, shared, tmp_path / "runs",
                             Scorers.load(None), EvalSettings(max_new_tokens=6, max_prompt_tokens=32),
                             continuation=Continuation(max_epochs=3, patience=1), progress=stages.append)
    assert report["status"] == "completed"
    warmups = {w["adapter"]: w for w in report["continuation"]["warmups"]}
    assert set(warmups) == {"m-tunable", "lora"} and all(w["steps"] <= w["max_steps"] == 9 for w in warmups.values())
    assert [s.done for s in stages if s.kind == "done"] == [1 + 2 + 2 * 4] and stages[-1].total == 11
    rows = {r["method"]: r for r in report["rows"]}
    for row in ("adapter-mle", "gan-implicit", "lora", "gan-lora"):
        run = RunFolder(tmp_path / "runs" / f"{row}-seed0")
        config, _ = run.read_config()
        warm = warmups[row_adapter(row)]
        assert config.init_from == warm["run"] and config.warmup_epochs == 0 and config.epochs == 1
        # the same weights at step 0: the row's first validation score is the warm-up's kept one
        kept = next(v for v in RunFolder(warm["run"]).read_summary().validation if v["step"] == warm["kept_step"])
        assert run.read_summary().validation[0] == {**kept, "step": 0}
        assert rows[row]["steps"] == [3]  # the same number of steps, twin and adversarial row alike
    pairs = {(p["method"], p["versus"]) for p in report["paired"] if p["twin"]}
    assert pairs == {("gan-implicit", "adapter-mle"), ("gan-lora", "lora")}
    for p in report["paired"]:  # against the twin only: the answers' distribution too, paired
        for key in ("length_w1", "real_vs_generated_auc"):
            if p["twin"]:
                lo, hi = p[key]["ci"]
                assert lo - 1e-9 <= p[key]["mean"] <= hi + 1e-9
            else:
                assert key not in p
    md = report_markdown({**report, "preset": "plateau", "model": {"name": "tiny"}, "device": "cpu",
                          "schedule": {"epochs": 1, "batch_size": 4, "max_new_tokens": 6}})
    assert "**Smallest detectable difference**: ROUGE-L ±" in md and "adversarial rows against their twins" in md
    assert "**Equal-compute continuation**" in md and "| 0 | lora | " in md
    assert "| gan-lora | lora | 3 / 3 |" in md and "| gan-implicit | adapter-mle (twin) |" in md
    # each pair's training time against its twin's (the cost the protocol's pairs are judged at)
    seconds = rows["gan-lora"]["train_seconds"], rows["lora"]["train_seconds"]
    assert f"| {seconds[0]:.0f} / {seconds[1]:.0f} | {seconds[0] / seconds[1]:.2f}× |" in md
    # the objective × adapter table: each row in its cell, an adversarial one with its difference to its twin
    cells = {(c["objective"], c["adapter"]): c for c in report["objectives"]}
    assert {k: c["row"] for k, c in cells.items()} == {("mle", "m-tunable"): "adapter-mle", ("mle", "lora"): "lora",
                                                      ("implicit", "m-tunable"): "gan-implicit",
                                                      ("explicit", "lora"): "gan-lora"}
    by_pair = {p["method"]: p for p in report["paired"] if p["twin"]}
    assert cells["explicit", "lora"]["vs_twin"]["rougeL"] == by_pair["gan-lora"]["rougeL"]
    assert cells["mle", "lora"]["vs_twin"] is None and cells["mle", "lora"]["rougeL"] == rows["lora"]["rougeL"]
    assert "**Objective × adapter**" in md and "| GAN, implicit D | gan-implicit: " in md
