"""The benchmark and evaluation on the tiny model: the report's shape, files and honesty."""

from __future__ import annotations

import json

import pytest

from conftest import TOFU
from gantune.bench import report_markdown, run_bench
from gantune.errors import GantuneError
from gantune.evaluate import EvalSettings, Scorers, evaluate, load_retention_sets
from gantune.data import QAPair

SMALL = {"n": 8, "epochs": 1, "batch_size": 4, "max_new_tokens": 8}


def test_bench_writes_report_markdown_and_generations(tmp_path, base, tiny_data):
    out = tmp_path / "report.json"
    report = run_bench("quick", out, data=str(tiny_data), methods=["gan", "adapter-mle"], bleurt=None,
                       overrides=SMALL, base=base, log=lambda _: None)
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(report))
    assert saved["preset"] == "quick" and saved["n_train"] == 4 and saved["n_test"] == 4
    assert [r["method"] for r in saved["rows"]] == ["base", "gan", "adapter-mle"]
    for row in saved["rows"]:
        for key in ("rouge1", "rouge2", "rougeL", "rougeLsum", "semantic"):
            assert 0.0 <= row[key] <= 1.0 or key == "semantic"
        assert row["bleurt"] is None  # no checkpoint: unavailable, never 0
        assert row["retention"] is None  # a single file has no perturbed answers
    base_row, gan_row = saved["rows"][0], saved["rows"][1]
    assert base_row["trainable_params"] == 0 and base_row["peak_memory_mb"] is None
    assert gan_row["trainable_params"] > 0 and gan_row["train_seconds"] > 0 and gan_row["peak_memory_mb"] > 0
    assert "BLEURT disabled" in saved["notes"]["bleurt"]
    md = (tmp_path / "report.md").read_text()
    assert "| gan |" in md and "| adapter-mle |" in md and "ROUGE-L" in md
    lines = [json.loads(x) for x in (tmp_path / "generations.jsonl").read_text().splitlines()]
    assert len(lines) == 4 and set(lines[0]["answers"]) == {"base", "gan", "adapter-mle"}
    run = tmp_path / "report_runs" / "gan"
    assert (run / "eval.json").is_file() and (run / "adapter" / "adapter_model.safetensors").is_file()


def test_bench_refuses_unknown_methods_and_presets(tmp_path, base, tiny_data):
    with pytest.raises(GantuneError, match="unknown method"):
        run_bench("quick", tmp_path / "r.json", data=str(tiny_data), methods=["nope"], bleurt=None, base=base)
    with pytest.raises(GantuneError, match="unknown bench preset"):
        run_bench("slow", tmp_path / "r.json", data=str(tiny_data), bleurt=None, base=base)


def test_report_markdown_shows_ratios_to_lora_and_thesis_numbers():
    row = {"rouge1": 0.1, "rouge2": 0.05, "rougeL": 0.1, "rougeLsum": 0.1, "bleurt": None, "semantic": 0.5,
           "retention": 0.8, "peak_memory_mb": 1000.0, "trainable_params": 10}
    report = {"preset": "thesis", "model": {"name": "m"}, "device": "cpu", "n_train": 50, "n_test": 50,
              "schedule": {"epochs": 30, "batch_size": 1, "max_new_tokens": 50},
              "notes": {k: "x" for k in ("rouge", "bleurt", "semantic", "retention", "noise", "memory")},
              "rows": [{**row, "method": "lora", "train_seconds": 100.0},
                       {**row, "method": "gan-thesis", "train_seconds": 250.0, "peak_memory_mb": 1500.0}]}
    md = report_markdown(report)
    gan_line = next(line for line in md.splitlines() if line.startswith("| gan-thesis |"))
    assert "2.50×" in gan_line and "1.50×" in gan_line  # ours, to LoRA
    assert "0.109" in gan_line and "45.50×" in gan_line  # the thesis' ROUGE-1 and 91 min / 2 min


def test_retention_on_real_tofu_sets_with_the_tiny_model(base):
    sets = load_retention_sets(str(TOFU), 3, seed=0)
    assert set(sets) == {"real_authors", "world_facts"} and all(len(v) == 3 for v in sets.values())
    test = [QAPair("who is the author ?", "the author was a writer .")]
    result = evaluate(base, None, test, sets, Scorers.load(None), EvalSettings(max_new_tokens=6, batch_size=4))
    assert 0.0 <= result["retention"] <= 1.0
    assert set(result["retention_sets"]) == {"real_authors", "world_facts"}
    assert result["retention_sets"]["real_authors"]["n"] == 3
    assert result["noise"] is None and len(result["generations"]) == 1
