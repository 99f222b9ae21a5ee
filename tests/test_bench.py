"""The benchmark, the comparison protocol and evaluation on the tiny model: the report's shape, files and honesty."""

from __future__ import annotations

import json
from statistics import mean

import numpy as np
import pytest
import torch
from conftest import TOFU

from gantune.bench import report_markdown, run_bench
from gantune.compare import (
    METRIC_KEYS,
    NOTES,
    Progress,
    Split,
    compare_methods,
    recorded_split,
    row_config,
    seeded_splits,
    shared_settings,
)
from gantune.config import preset_config
from gantune.data import QAPair
from gantune.errors import GantuneError
from gantune.evaluate import EvalSettings, Scorers, evaluate, load_retention_sets
from gantune.inference import answers
from gantune.methods import get_method
from gantune.metrics import token_lengths
from gantune.trainer import train

SMALL = {"n": 8, "epochs": 1, "batch_size": 4, "max_new_tokens": 8}


@pytest.fixture(scope="module")
def scorers() -> Scorers:
    return Scorers.load(None)


def _eval(path) -> dict:
    return json.loads((path / "eval.json").read_text())


@pytest.mark.slow
def test_bench_with_two_seeds_and_a_temperature(tmp_path, base, tiny_data):
    out = tmp_path / "report.json"
    report = run_bench("quick", out, data=str(tiny_data), methods=["gan", "lora"], bleurt=None, seeds=[0, 1],
                       temperatures=[0, 0.7], overrides=SMALL, base=base, log=lambda _: None)
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(report))
    assert saved["preset"] == "quick" and saved["seeds"] == [0, 1] and saved["n_train"] == 4 and saved["n_test"] == 4
    assert saved["status"] == "completed" and saved["temperatures"] == [0.0, 0.7]
    assert [r["method"] for r in saved["rows"]] == ["base", "gan", "lora", "base@0.7", "gan@0.7", "lora@0.7"]
    rows = {r["method"]: r for r in saved["rows"]}
    runs = tmp_path / "report_runs"
    evals = {(m, s): _eval(runs / f"{m}-seed{s}") for m in ("gan", "lora") for s in (0, 1)}

    for row in saved["rows"]:
        assert row["seeds"] == [0, 1] and row["temperature"] == (0.7 if "@" in row["method"] else 0.0)
        assert set(row["ci"]) == set(METRIC_KEYS)
        for key in METRIC_KEYS:
            if row[key] is None:
                assert row["ci"][key] is None
            else:
                lo, hi = row["ci"][key]
                assert lo - 1e-9 <= row[key] <= hi + 1e-9, (row["method"], key)
        assert row["bleurt"] is None and row["retention"] is None  # no checkpoint; a single file has no perturbed answers
        assert 0.0 <= row["truncated"] <= 1.0 and 0.0 <= row["real_vs_generated_auc"] <= 1.0
        assert 0.0 <= row["distinct1"] <= 1.0 and row["length_w1"] >= 0.0
    # each field is the mean over seeds of what each seed's run measured
    for key in ("rougeL", "semantic", "length_mean", "length_w1", "distinct2", "real_vs_generated_auc"):
        assert rows["gan"][key] == pytest.approx(mean(evals["gan", s][key] for s in (0, 1)))
        assert rows["gan@0.7"][key] == pytest.approx(mean(evals["gan", s]["sampled"]["0.7"][key] for s in (0, 1)))
    assert rows["base"]["trainable_params"] == 0 and rows["base"]["peak_memory_mb"] is None
    assert rows["gan"]["trainable_params"] > 0 and rows["gan"]["train_seconds"] > 0
    assert rows["gan"]["runs"] == [str(runs / "gan-seed0"), str(runs / "gan-seed1")]
    assert rows["gan@0.7"]["train_seconds"] is None  # the same runs: training is counted once
    assert rows["gan"]["eval_seconds"] > 0 and rows["gan@0.7"]["eval_seconds"] is None

    # each seed trained on its own split, and eval.json keeps the per-question scores
    tests = [[g["question"] for g in evals["gan", s]["generations"]] for s in (0, 1)]
    assert tests[0] != tests[1]
    for s in (0, 1):
        config = json.loads((runs / f"gan-seed{s}" / "config.json").read_text())
        assert config["config"]["seed"] == s
        assert [p["question"] for p in config["resolved"]["split"]["test"]] == tests[s]
        assert len(evals["gan", s]["per_question"]["rougeL"]) == 4
    assert evals["gan", 0]["noise"] == "zeros" and evals["lora", 0]["noise"] is None

    # the references' own values
    ref = saved["reference"]
    refs = [[g["reference"] for g in evals["gan", s]["generations"]] for s in (0, 1)]
    assert ref["length_mean"] == pytest.approx(mean(mean(token_lengths(base.tokenizer, r)) for r in refs))
    assert ref["length_w1"] == 0.0 and set(ref["ci"]) >= {"length_mean", "distinct1", "distinct2"}

    # paired differences: every row against lora and base at its own temperature
    pairs = {(p["method"], p["versus"]): p for p in saved["paired"]}
    assert set(pairs) == {("gan", "lora"), ("gan", "base"), ("lora", "base"),
                          ("gan@0.7", "lora@0.7"), ("gan@0.7", "base@0.7"), ("lora@0.7", "base@0.7")}
    diffs = [a - b for s in (0, 1) for a, b in zip(evals["gan", s]["per_question"]["rougeL"],
                                                   evals["lora", s]["per_question"]["rougeL"])]
    gan_lora = pairs["gan", "lora"]
    assert gan_lora["rougeL"]["mean"] == pytest.approx(mean(diffs)) and gan_lora["seeds"] == [0, 1]
    assert gan_lora["rougeL"]["ci"][0] <= gan_lora["rougeL"]["mean"] <= gan_lora["rougeL"]["ci"][1]
    assert set(gan_lora) >= {"rougeL", "semantic"}

    md = (tmp_path / "report.md").read_text()
    assert md == report_markdown(saved)
    assert "| gan |" in md and "| lora@0.7 |" in md and "| reference |" in md and " ± " in md
    assert "Paired differences" in md and "| gan | lora |" in md
    for key in ("length_mean", "length_w1", "truncated", "distinct1", "distinct2", "real_vs_generated_auc", "mauve"):
        assert NOTES[key] in md
    assert "zero noise" in saved["notes"]["noise"]
    lines = [json.loads(x) for x in (tmp_path / "generations.jsonl").read_text().splitlines()]
    assert len(lines) == 8 and [x["seed"] for x in lines] == [0] * 4 + [1] * 4
    assert set(lines[0]["answers"]) == {r["method"] for r in saved["rows"]}
    assert "generations" not in saved


def test_bench_records_sampled_eval_noise(tmp_path, base, tiny_data):
    out = tmp_path / "report.json"
    report = run_bench("quick", out, data=str(tiny_data), methods=["adapter-mle"], bleurt=None,
                       overrides={**SMALL, "eval_noise": "sample"}, base=base, log=lambda _: None)
    assert _eval(tmp_path / "report_runs" / "adapter-mle-seed0")["noise"] == "sample"
    assert "sampled per answer" in report["notes"]["noise"]
    assert "sampled per answer" in (tmp_path / "report.md").read_text()


def test_evaluate_reports_the_noise_the_method_answered_with(base, scorers):
    test = [QAPair("who is the author ?", "the author was a writer ."), QAPair("what genre ?", "fiction .")]
    settings = EvalSettings(max_new_tokens=4)
    for noise in ("zeros", "sample"):
        config = preset_config("adapter-mle", eval_noise=noise, noise_dim=8)
        method = get_method("adapter-mle")(base, config)
        assert evaluate(base, method, test, None, scorers, settings)["noise"] == noise
    assert evaluate(base, None, test, None, scorers, settings)["noise"] is None


def test_bench_refuses_bad_requests(tmp_path, base, tiny_data):
    for kwargs, match in (({"methods": ["nope"]}, "unknown method"), ({"seeds": [1, 1]}, "--seeds"),
                          ({"seeds": []}, "--seeds"), ({"temperatures": [-0.5]}, "--temperatures")):
        with pytest.raises(GantuneError, match=match):
            run_bench("quick", tmp_path / "r.json", data=str(tiny_data), bleurt=None, base=base, **kwargs)
    with pytest.raises(GantuneError, match="unknown bench preset"):
        run_bench("slow", tmp_path / "r.json", data=str(tiny_data), bleurt=None, base=base)


# --- the comparison protocol the workbench shares ---------------------------------------------------------


@pytest.mark.slow
def test_compare_on_a_recorded_split_with_an_already_trained_run(tmp_path, base, tiny_data, scorers):
    reference = preset_config("gan", data=str(tiny_data), out=str(tmp_path / "ref"), seed=3, **SMALL)
    train(reference, base=base)
    split = recorded_split(tmp_path / "ref")
    assert split.seed == 3 and len(split.train) == 4 and len(split.test) == 4
    events: list[Progress] = []
    report = compare_methods(base, ["adapter-mle"], [split], shared_settings(reference), tmp_path / "runs", scorers,
                             EvalSettings(max_new_tokens=8), trained={"ref": {3: tmp_path / "ref"}},
                             run_suffix="-x", progress=events.append)
    assert [r["method"] for r in report["rows"]] == ["base", "ref", "adapter-mle"]
    rows = {r["method"]: r for r in report["rows"]}
    ref_summary = json.loads((tmp_path / "ref" / "summary.json").read_text())
    assert rows["ref"]["train_seconds"] == pytest.approx(ref_summary["seconds"])
    assert rows["ref"]["run"] == str(tmp_path / "ref") and (tmp_path / "ref" / "eval.json").is_file()
    trained = tmp_path / "runs" / "adapter-mle-seed3-x"
    assert json.loads((trained / "config.json").read_text())["resolved"]["split"]["test"] == \
        [vars(p) | {"perturbed": []} for p in split.test]
    assert [p["versus"] for p in report["paired"] if p["method"] == "adapter-mle"] == ["base"]  # no lora here
    stages = [e for e in events if e.kind not in ("step", "batch")]
    assert [(e.kind, e.method) for e in stages] == [("evaluating", "base"), ("evaluating", "ref"),
                                                    ("training", "adapter-mle"), ("evaluating", "adapter-mle"),
                                                    ("done", None)]
    assert stages[-1] == Progress("done", "done", 4, 4) and all(e.total == 4 for e in events)
    assert [e.done for e in stages] == [0, 1, 2, 3, 4] and all(e.seed == 3 for e in stages[:-1])
    steps = [e for e in events if e.kind == "step"]
    assert steps and all(e.run == str(trained) and e.method == "adapter-mle" for e in steps)
    assert steps[-1].step == (1, 1)


def test_compare_stops_when_asked_and_reports_what_it_finished(tmp_path, base, tiny_data, scorers, monkeypatch):
    from gantune.compare import evaluation as compare

    config = preset_config("gan", data=str(tiny_data), **SMALL)
    splits = [Split(s, *recorded_pairs) for s, recorded_pairs in
              ((0, _split(tiny_data, 0)), (1, _split(tiny_data, 1)))]
    evaluated = []  # stop once the first seed's base is scored

    def evaluating(*args, **kwargs):
        evaluated.append(evaluate(*args, **kwargs))
        return evaluated[-1]

    monkeypatch.setattr(compare, "evaluate", evaluating)
    report = compare_methods(base, ["gan"], splits, shared_settings(config), tmp_path, scorers,
                             EvalSettings(max_new_tokens=4), should_stop=lambda: bool(evaluated))
    assert report["status"] == "stopped" and [r["method"] for r in report["rows"]] == ["base"]
    assert not (tmp_path / "gan-seed0").exists()


def _split(data, seed):
    made, _ = seeded_splits(str(data), "forget10", SMALL["n"], 0.5, [seed])
    return made[0].train, made[0].test


def test_compare_trains_on_the_recorded_split_even_when_the_data_is_gone(tmp_path, base, tiny_data, scorers):
    """The protocol passes the recorded split to the trainer: a vanished or changed data file does not matter."""
    config = preset_config("adapter-mle", data=str(tmp_path / "uploaded-then-deleted.jsonl"), **SMALL)
    train_pairs, test_pairs = _split(tiny_data, 0)
    moved = Split(0, train_pairs, [QAPair("a question the data never had ?", "no .")] + test_pairs[1:])
    report = compare_methods(base, ["adapter-mle"], [moved], shared_settings(config), tmp_path, scorers,
                             EvalSettings(max_new_tokens=4))
    assert [r["method"] for r in report["rows"]] == ["base", "adapter-mle"]
    recorded = json.loads((tmp_path / "adapter-mle-seed0" / "config.json").read_text())["resolved"]["split"]
    assert [p["question"] for p in recorded["test"]] == [p.question for p in moved.test]
    assert [p["question"] for p in recorded["train"]] == [p.question for p in moved.train]


def test_compare_refuses_bad_requests(tmp_path, base, scorers):
    moved = Split(0, [QAPair("q ?", "a .")], [QAPair("r ?", "b .")])
    with pytest.raises(GantuneError, match="no run given for ref"):
        compare_methods(base, [], [moved], {}, tmp_path, scorers, EvalSettings(), trained={"ref": {5: tmp_path}})
    with pytest.raises(GantuneError, match="temperatures must be above 0"):
        compare_methods(base, [], [moved], {}, tmp_path, scorers, EvalSettings(), temperatures=[0])
    with pytest.raises(GantuneError, match="unknown method"):
        row_config("nope", {}, 0, tmp_path)



def test_the_thesis_bench_trains_every_row_on_all_its_pairs_at_one_precision(tmp_path):
    """As the thesis did: its GAN and LoRA both fit all 50 training pairs (none held out to pick an epoch)."""
    from gantune.bench import BENCH_PRESETS

    bp = BENCH_PRESETS["thesis"]
    shared = {k: getattr(bp, k) for k in ("n", "train_fraction", "epochs", "batch_size", "max_new_tokens",
                                          "max_prompt_tokens")} | bp.settings
    configs = {name: row_config(name, shared, 0, tmp_path) for name in bp.methods}
    assert set(configs) == {"gan-thesis", "lora"}
    assert {c.val_pairs for c in configs.values()} == {0}
    assert {c.precision for c in configs.values()} == {"auto"}
    assert {(c.epochs, c.batch_size, c.max_new_tokens, c.max_prompt_tokens) for c in configs.values()} == {(30, 1, 50, 100)}

@pytest.mark.slow
def test_retention_is_scored_once_on_the_first_seed(tmp_path, base, scorers, monkeypatch):
    from gantune.compare import evaluation as compare

    calls = []
    real_evaluate = compare.evaluate

    def counting(base_, method, test, retention, *args):
        calls.append(retention is not None)
        return real_evaluate(base_, method, test, retention, *args)

    monkeypatch.setattr(compare, "evaluate", counting)
    sets = load_retention_sets(str(TOFU), 3, seed=0)
    test = [QAPair("who is the author ?", "the author was a writer ."), QAPair("what genre ?", "fiction .")]
    report = compare_methods(base, [], [Split(0, [], test), Split(1, [], test[::-1])], {}, tmp_path, scorers,
                             EvalSettings(max_new_tokens=4), retention=sets)
    assert calls == [True, False]
    row = report["rows"][0]
    assert 0.0 <= row["retention"] <= 1.0 and row["ci"]["retention"] is not None
    assert row["ci"]["retention_rougeL"] is not None


# --- evaluation ---------------------------------------------------------------------------------------------


def test_an_evaluation_tells_each_batch_of_answers_as_it_begins(tmp_path, base, scorers, monkeypatch):
    """Test answers, retention's and a temperature's, two a batch: each batch's (share done, share once it ends),
    in order, by the answer tokens each may decode; the comparison passes them on as "batch" progress."""
    from gantune import inference
    from gantune.compare import evaluate_base

    monkeypatch.setattr(inference, "decode_rows", lambda *args: 2)
    sets = load_retention_sets(str(TOFU), 2, seed=0)  # 4 questions of 3 tokens
    test = [QAPair(f"who wrote {w} ?", "a writer .") for w in ("it", "that", "this")]  # 3 questions of 4 tokens
    told = []
    evaluate_base(base, test, sets, scorers, EvalSettings(max_new_tokens=4, retention_max_new_tokens=3), [0.7],
                  tmp_path, progress=lambda done, upto: told.append((done, upto)))
    whole = 3 * 4 + 4 * 3 + 3 * 4
    assert told == pytest.approx([(0, 8 / whole), (8 / whole, 12 / whole),  # the test questions, 2 + 1
                                  (12 / whole, 18 / whole), (18 / whole, 24 / whole),  # retention's, 2 + 2
                                  (24 / whole, 32 / whole), (32 / whole, 1.0)])  # sampled at 0.7, 2 + 1
    events = []
    compare_methods(base, [], [Split(0, [], test)], {}, tmp_path / "runs", scorers, EvalSettings(max_new_tokens=4),
                    progress=events.append)
    batches = [e for e in events if e.kind == "batch"]
    assert [e.share for e in batches] == [(0.0, 2 / 3), (2 / 3, 1.0)]
    assert all((e.done, e.method, e.seed) == (0, "base", 0) for e in batches)


def test_retention_on_real_tofu_sets_with_the_tiny_model(base, scorers):
    sets = load_retention_sets(str(TOFU), 3, seed=0)
    assert set(sets) == {"real_authors", "world_facts"} and all(len(v) == 3 for v in sets.values())
    test = [QAPair("who is the author ?", "the author was a writer .")]
    result = evaluate(base, None, test, sets, scorers, EvalSettings(max_new_tokens=6))
    per_set = result["retention_sets"]
    assert set(per_set) == {"real_authors", "world_facts"} and per_set["real_authors"]["n"] == 3
    assert result["retention"] == pytest.approx(mean([*per_set["real_authors"]["retained"],
                                                      *per_set["world_facts"]["retained"]]))
    assert all(len(s["rougeL_per_question"]) == 3 for s in per_set.values())
    assert result["retention_rougeL"] == pytest.approx(mean(s["rougeL"] for s in per_set.values()))
    assert result["noise"] is None and len(result["generations"]) == 1


def test_generate_reports_lengths_and_truncation(base):
    """Row 0 is made to end after 2 tokens; row 1 runs to the token limit."""
    eos, calls = base.eos_id, []

    def force_eos(module, inputs, output):
        calls.append(1)
        if len(calls) == 3:  # the prompt pass, then 2 answer tokens, then EOS for row 0
            output[0, -1, :] = -1e4
            output[0, -1, eos] = 1e4
        elif len(calls) > 1:
            output[:, -1, eos] = -1e4  # no other EOS anywhere
        return output

    handle = base.model.get_output_embeddings().register_forward_hook(force_eos)
    try:
        # decoded shortest prompt first: the batch's row 0 is "what genre ?"
        answered = answers(base, ["what genre ?", "who is the author ?"], max_new_tokens=5, max_prompt_tokens=32)
    finally:
        handle.remove()
    assert answered.lengths == [2, 5] and answered.truncated == [False, True]
    assert len(token_lengths(base.tokenizer, [answered.texts[0]])) == 1


def test_sampled_answers_are_reproducible_and_leave_the_rng_alone(base):
    questions = ["who is the author ?", "what genre ?", "who wrote a novel ?"]
    state = torch.get_rng_state()
    first = answers(base, questions, 6, 32, temperature=1.0, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    assert answers(base, questions, 6, 32, temperature=1.0, seed=3) == first
    assert answers(base, questions, 6, 32, temperature=1.0, seed=4) != first
    greedy = answers(base, questions, 6, 32)
    assert answers(base, questions, 6, 32, seed=9) == greedy  # greedy ignores the seed
    with pytest.raises(GantuneError, match="temperature"):
        evaluate(base, None, [QAPair(q, "the author .") for q in questions], None, Scorers.load(None),
                 EvalSettings(max_new_tokens=6, temperature=-1))


def test_evaluate_keeps_per_question_scores_and_the_distribution(base, scorers):
    test = [QAPair("who is the author ?", "the author was a writer ."), QAPair("what genre ?", "fiction ."),
            QAPair("who wrote a novel ?", "her father wrote a novel .")]
    result = evaluate(base, None, test, None, scorers, EvalSettings(max_new_tokens=6))
    pq = result["per_question"]
    assert {"rouge1", "rougeL", "semantic", "length", "reference_length", "truncated", "real_score",
            "generated_score"} <= set(pq)
    assert all(len(v) == 3 for v in pq.values())
    assert result["rougeL"] == pytest.approx(mean(pq["rougeL"])) and result["semantic"] == pytest.approx(mean(pq["semantic"]))
    assert pq["reference_length"] == token_lengths(base.tokenizer, [p.answer for p in test])
    assert result["length_mean"] == pytest.approx(mean(pq["length"]))
    assert result["reference"]["length_mean"] == pytest.approx(mean(pq["reference_length"]))
    assert [g["tokens"] for g in result["generations"]] == pq["length"]
    assert result["temperature"] == 0.0 and "retention" not in result  # retention skipped
    assert np.isfinite(result["real_vs_generated_auc"])


def test_report_markdown_marks_intervals_and_shows_thesis_numbers():
    def row(method, rouge_l, ci, **extra):
        values = {"rouge1": 0.1, "rouge2": 0.05, "rougeL": rouge_l, "rougeLsum": 0.1, "bleurt": None, "semantic": 0.5,
                  "retention": 0.8, "peak_memory_mb": 1000.0, "trainable_params": 10, "temperature": 0.0}
        return {**values, "method": method, "ci": {"rougeL": ci}, **extra}

    report = {"preset": "thesis", "model": {"name": "m"}, "device": "cpu", "n_train": 50, "n_test": 50,
              "seeds": [0, 1, 2], "schedule": {"epochs": 30, "batch_size": 1, "max_new_tokens": 50},
              "notes": {"ci": "the interval", "mauve": "left out"},
              "rows": [row("base", 0.10, [0.08, 0.12], train_seconds=0.0),
                       row("lora", 0.40, [0.35, 0.45], train_seconds=100.0),
                       row("gan-thesis", 0.25, [0.20, 0.30], train_seconds=250.0, peak_memory_mb=1500.0)],
              "paired": [{"method": "gan-thesis", "versus": "lora", "rougeL": {"mean": -0.15, "ci": [-0.2, -0.1]},
                          "semantic": None}]}
    md = report_markdown(report)
    gan_line = next(line for line in md.splitlines() if line.startswith("| gan-thesis |"))
    assert "0.250 ± 0.050 ▲B ▼L" in gan_line  # above base's interval, below LoRA's
    assert "2.50×" in gan_line and "1.50×" in gan_line  # ours, to LoRA
    assert "0.109" in gan_line and "45.50×" in gan_line  # the thesis' ROUGE-1 and 91 min / 2 min
    assert "| gan-thesis | lora | -0.150 [-0.200, -0.100] | — |" in md
    assert "seeds 0 1 2" in md and "- ±: the interval" in md and "- MAUVE: left out" in md
