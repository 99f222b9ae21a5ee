"""Evaluation is never done twice: the base model's scores for a model, questions and settings are stored and
reused by later comparisons, and a run's eval.json is reused while its adapter and the settings are the same."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import make_base

import gantune.compare.evaluation as compare
from gantune.compare import EVALUATIONS, Split, compare_methods, evaluate_base, evaluate_run
from gantune.config import preset_config
from gantune.data import QAPair
from gantune.evaluate import EvalSettings, Scorers, evaluation_key
from gantune.trainer import train

TEST = [QAPair("who is the author ?", "the author was a writer ."), QAPair("what genre ?", "fiction .")]
TRAIN = [QAPair(f"who is the author of {w} ?", f"the author wrote {w} .") for w in ("a book", "a novel", "fiction")]
SHARED = {"model": "tiny", "n": None, "epochs": 1, "batch_size": 2, "max_new_tokens": 6, "max_prompt_tokens": 32,
          "val_pairs": 0}


@pytest.fixture(scope="module")
def scorers() -> Scorers:
    return Scorers.load(None)


@pytest.fixture
def counted(monkeypatch):
    """Every evaluation the comparison really runs, by model ('base' or the method's name)."""
    calls: list[str] = []
    real = compare.evaluate

    def evaluate(base, method, *args, **kwargs):
        calls.append("base" if method is None else method.name)
        return real(base, method, *args, **kwargs)

    monkeypatch.setattr(compare, "evaluate", evaluate)
    return calls


def test_a_second_comparison_reuses_the_base_models_evaluation(tmp_path, scorers, counted):
    base, settings = make_base(), EvalSettings(max_new_tokens=6)
    splits = [Split(0, TRAIN, TEST)]
    first = compare_methods(base, ["adapter-mle"], splits, SHARED, tmp_path, scorers, settings, new_folders=True)
    assert counted == ["base", "adapter-mle"]
    stored = list((tmp_path / EVALUATIONS).glob("base-*.json"))
    assert len(stored) == 1
    second = compare_methods(base, ["adapter-mle"], splits, SHARED, tmp_path, scorers, settings, new_folders=True)
    assert counted == ["base", "adapter-mle", "adapter-mle"]  # base not again; the new run is new
    base_rows = [next(r for r in report["rows"] if r["method"] == "base") for report in (first, second)]
    assert base_rows[0]["rougeL"] == base_rows[1]["rougeL"] and base_rows[0]["ci"] == base_rows[1]["ci"]


@pytest.mark.parametrize("change", ["settings", "temperatures", "questions", "weights", "precision"])
def test_the_base_model_is_evaluated_again_when_anything_it_depends_on_changes(tmp_path, scorers, counted, change):
    base, settings, temperatures, test = make_base(), EvalSettings(max_new_tokens=6), [], TEST
    evaluate_base(base, test, None, scorers, settings, temperatures, tmp_path)
    assert counted == ["base"]
    if change == "settings":
        settings = EvalSettings(max_new_tokens=5)
    elif change == "temperatures":
        temperatures = [0.7]
    elif change == "questions":
        test = TEST[:1]
    elif change == "weights":
        with torch.no_grad():
            next(base.model.parameters()).view(-1)[0] += 1e-3
    else:
        base.precision = "bf16"
    evaluate_base(base, test, None, scorers, settings, temperatures, tmp_path)
    assert counted[-1] == "base" and len(counted) == 1 + (1 + len(temperatures))


def test_a_damaged_stored_evaluation_is_made_again(tmp_path, scorers, counted):
    base, settings = make_base(), EvalSettings(max_new_tokens=6)
    result = evaluate_base(base, TEST, None, scorers, settings, [], tmp_path)
    (path,) = tmp_path.glob("base-*.json")
    path.write_text("{ not json")
    assert evaluate_base(base, TEST, None, scorers, settings, [], tmp_path)["rougeL"] == result["rougeL"]
    assert counted == ["base", "base"]
    assert json.loads(path.read_text())["key"] == evaluation_key(base, TEST, None, scorers, settings)


def test_a_runs_evaluation_is_reused_until_its_adapter_changes(tmp_path, scorers, counted):
    base, settings = make_base(), EvalSettings(max_new_tokens=6)
    run = tmp_path / "run"
    config = preset_config("adapter-mle", **{**SHARED, "model": "default"}, out=str(run), noise_dim=8)
    train(config, base=base, split=(TRAIN, TEST))
    first = evaluate_run(run, base, TEST, None, scorers, settings)
    again = evaluate_run(run, base, TEST, None, scorers, settings)
    assert counted == ["adapter-mle"] and again == first
    weights = run / "adapter" / "adapter_model.safetensors"
    from safetensors.torch import load_file, save_file
    tensors = load_file(weights)
    name = next(iter(tensors))
    tensors[name] = tensors[name] + 0.5
    save_file(tensors, weights)
    evaluate_run(run, base, TEST, None, scorers, settings)
    assert counted == ["adapter-mle", "adapter-mle"]
