"""Base + each method, trained and evaluated side by side in one process on one split.

Writes report.json, report.md (the table, with ratios to LoRA and, for the thesis preset, the
thesis' own numbers beside ours) and generations.jsonl; each method's run folder lands in
``<report stem>_runs/<method>/`` with its own eval.json.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .config import TrainConfig, preset_config
from .data import QAPair, load_pairs, split_pairs
from .errors import GantuneError
from .evaluate import EvalSettings, Scorers, evaluate, load_retention_sets
from .memory import release_freed_memory
from .metrics import Bleurt
from .models import BaseModel, load_base_model, pick_device
from .runs import RunFolder, saving, write_json_atomic, write_text_atomic
from .trainer import load_method, train

# row name -> (method, TrainConfig preset, settings on top of the preset)
ROWS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "gan": ("gan", "improved", {}),
    "gan-mle": ("gan", "improved", {"mle_weight": 1.0}),  # adversarial + MLE in one pass (SeqGAN-style mix)
    "gan-thesis": ("gan", "thesis", {}),
    "adapter-mle": ("adapter-mle", "improved", {}),
    "lora": ("lora", "improved", {}),
    "prompt-tuning": ("prompt-tuning", "improved", {}),
    "prefix-tuning": ("prefix-tuning", "improved", {}),
    "full": ("full", "improved", {}),
}


@dataclass
class BenchPreset:
    n: int
    train_fraction: float
    epochs: int
    batch_size: int
    max_new_tokens: int
    max_prompt_tokens: int
    retention_n: int | None
    eval_batch_size: int
    methods: list[str] = field(default_factory=list)


QUICK_ROWS = ["gan", "gan-mle", "adapter-mle", "lora", "prompt-tuning", "prefix-tuning", "full"]
BENCH_PRESETS: dict[str, BenchPreset] = {
    # about 20 min on a 2-core CPU with the offline model
    "quick": BenchPreset(n=80, train_fraction=0.5, epochs=3, batch_size=8, max_new_tokens=48, max_prompt_tokens=128,
                         retention_n=20, eval_batch_size=40, methods=QUICK_ROWS),
    # the thesis' protocol: 50 train / 50 test, 100 prompt / 50 new tokens, 30 epochs, batch 1 (for a GPU)
    "thesis": BenchPreset(n=100, train_fraction=0.5, epochs=30, batch_size=1, max_new_tokens=50, max_prompt_tokens=100,
                          retention_n=None, eval_batch_size=50, methods=[*QUICK_ROWS[:2], "gan-thesis", *QUICK_ROWS[2:]]),
}

# The thesis' Tables 4.1-4.3 (GPT-2, 50/50 pairs, 30 epochs, batch 1, on a GPU).
THESIS = {
    "base": {"rouge1": 0.066, "bleurt": -0.936},
    "gan-thesis": {"rouge1": 0.109, "bleurt": -0.611, "train_minutes": 91, "peak_memory_gb": 12.3},
    "lora": {"rouge1": 0.127, "bleurt": -0.536, "train_minutes": 2, "peak_memory_gb": 1.1},
}
# what a baseline shares with the run it is compared to
SHARED_SETTINGS = ("model", "gguf_file", "trust_remote_code", "data", "subset", "n", "train_fraction", "seed",
                   "device", "epochs", "batch_size", "max_new_tokens", "max_prompt_tokens")
METRIC_KEYS = ("rouge1", "rouge2", "rougeL", "rougeLsum", "bleurt", "semantic", "retention")


def run_bench(
    preset: str,
    out: str | Path,
    data: str | None = None,
    subset: str = "forget10",
    model: str = "default",
    methods: list[str] | None = None,
    bleurt: str | None = Bleurt.DEFAULT_CHECKPOINT,
    seed: int = 0,
    overrides: dict[str, Any] | None = None,
    base: BaseModel | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the benchmark; returns the report (also written beside ``out``)."""
    if preset not in BENCH_PRESETS:
        raise GantuneError(f"unknown bench preset {preset!r}; choose one of {', '.join(BENCH_PRESETS)}")
    bp = BENCH_PRESETS[preset]
    names = methods or bp.methods
    unknown = [m for m in names if m not in ROWS]
    if unknown:
        raise GantuneError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(ROWS)}")
    out = Path(out)
    if out.suffix != ".json":
        raise GantuneError(f"--out must name a .json report file (got {out})")
    schedule = {k: getattr(bp, k) for k in ("n", "train_fraction", "epochs", "batch_size", "max_new_tokens",
                                            "max_prompt_tokens")} | (overrides or {})
    pairs, data_source = load_pairs(data, subset)
    train_pairs, test_pairs = split_pairs(pairs, schedule["n"], schedule["train_fraction"], seed)
    device = pick_device("auto")
    if base is None:
        log(f"loading model {model} …")
        base = load_base_model(model, device=device)
    scorers = Scorers.load(bleurt, device=str(device))
    settings = EvalSettings(max_new_tokens=schedule["max_new_tokens"], max_prompt_tokens=schedule["max_prompt_tokens"],
                            batch_size=bp.eval_batch_size, retention_n=bp.retention_n, seed=seed)
    retention = load_retention_sets(data, bp.retention_n, seed)
    runs_dir = out.with_name(out.stem + "_runs")

    log(f"evaluating base on {len(test_pairs)} test pairs …")
    t0 = time.perf_counter()
    base_eval = evaluate(base, None, test_pairs, retention, scorers, settings)
    rows = [_row("base", base_eval, None, time.perf_counter() - t0)]
    evals = {"base": base_eval}
    for name in names:
        method, method_preset, extra = ROWS[name]
        config = preset_config(method, method_preset, model=model, data=data, subset=subset, seed=seed,
                               out=str(runs_dir / name), **{**extra, **schedule})
        log(f"training {name} ({config.epochs} epochs, batch {config.batch_size}) …")
        release_freed_memory()
        summary = train(config, base=base, progress=True, overwrite=True)
        if summary["status"] != "completed":
            log(f"{name}: training {summary['status']}; evaluated as it stands")
        log(f"evaluating {name} …")
        t0 = time.perf_counter()
        result = evaluate_run(summary["run"], base, test_pairs, retention, scorers, settings)
        rows.append(_row(name, result, summary, time.perf_counter() - t0))
        evals[name] = result

    report = {
        "preset": preset, "model": base.source, "device": str(device), "data": data_source, "seed": seed,
        "n_train": len(train_pairs), "n_test": len(test_pairs), "schedule": schedule,
        "notes": {"rouge": base_eval["rouge_note"], "bleurt": base_eval["bleurt_note"],
                  "semantic": base_eval["semantic_note"], "retention": base_eval.get("retention_note"),
                  "noise": "M_tunable is fed zero noise when answering", "memory": _memory_note(device.type)},
        "rows": rows,
    }
    markdown = report_markdown(report)
    generations = "".join(
        json.dumps({"question": pair.question, "reference": pair.answer,
                    "answers": {name: ev["generations"][i]["answer"] for name, ev in evals.items()}}) + "\n"
        for i, pair in enumerate(test_pairs))
    with saving("the report", out.parent):
        write_json_atomic(out, report)
        write_text_atomic(out.with_name(out.stem + ".md"), markdown)
        write_text_atomic(out.with_name("generations.jsonl"), generations)
    log(markdown)
    return report


def evaluate_run(run: str | Path, base: BaseModel, test: list[QAPair], retention: dict[str, list[QAPair]],
                 scorers: Scorers, settings: EvalSettings) -> dict[str, Any]:
    """Evaluate a finished run's tuned model and keep the result as the run's eval.json."""
    tuned = load_method(str(run), base=base)
    try:
        result = evaluate(base, tuned, test, retention, scorers, settings)
    finally:
        tuned.close()
    with saving("the evaluation", run):
        write_json_atomic(RunFolder(run).eval_path, result)
    return result


def baseline_config(reference: TrainConfig, row: str, out: str | Path) -> TrainConfig:
    """The ``row`` method on the same model, data, split, schedule and token limits as ``reference``."""
    same = {k: getattr(reference, k) for k in SHARED_SETTINGS}
    method, preset, extra = ROWS[row]
    return preset_config(method, preset, out=str(out), **{**extra, **same})


def _memory_note(device_type: str) -> str:
    if device_type == "cuda":
        return "peak torch.cuda.max_memory_allocated during training"
    return "peak resident set of the process during training (base model included; freed memory returned first)"


def _row(name: str, ev: dict[str, Any], summary: dict[str, Any] | None, eval_seconds: float) -> dict[str, Any]:
    row = {"method": name, **{k: ev.get(k) for k in METRIC_KEYS}, "retention_rougeL": ev.get("retention_rougeL")}
    row.update({
        "train_seconds": summary["seconds"] if summary else 0.0,
        "peak_memory_mb": summary["peak_memory_mb"] if summary else None,
        "trainable_params": summary["trainable_params"] if summary else 0,
        "tokens_per_s": summary.get("tokens_per_s") if summary else None,
        "eval_seconds": round(eval_seconds, 1),
        "run": summary["run"] if summary else None,
    })
    return row


def report_markdown(report: dict[str, Any]) -> str:
    """The report as a Markdown table: metrics, cost, ratios to LoRA, and the thesis' numbers (thesis preset)."""
    rows = report["rows"]
    lora = next((r for r in rows if r["method"] == "lora"), None)
    thesis = report["preset"] == "thesis"
    head = ["method", "ROUGE-1", "ROUGE-2", "ROUGE-L", "ROUGE-Lsum", "BLEURT", "semantic", "retention",
            "train s", "peak MB", "trainable", "time/LoRA", "memory/LoRA"]
    if thesis:
        head += ["thesis ROUGE-1", "thesis BLEURT", "thesis time/LoRA", "thesis memory/LoRA"]
    lines = [
        f"**{report['preset']}** — model {report['model'].get('name')} on {report['device']}, "
        f"{report['n_train']} train / {report['n_test']} test pairs, {report['schedule']['epochs']} epochs, "
        f"batch {report['schedule']['batch_size']}, ≤{report['schedule']['max_new_tokens']} new tokens",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in rows:
        cells = [r["method"], *(_num(r[k]) for k in ("rouge1", "rouge2", "rougeL", "rougeLsum", "bleurt", "semantic",
                                                    "retention")),
                 f"{r['train_seconds']:.0f}", _num(r["peak_memory_mb"], 0), f"{r['trainable_params']:,}",
                 _ratio(r["train_seconds"], lora and lora["train_seconds"], r),
                 _ratio(r["peak_memory_mb"], lora and lora["peak_memory_mb"], r)]
        if thesis:
            t = THESIS.get(r["method"], {})
            tl = THESIS["lora"]
            cells += [_num(t.get("rouge1")), _num(t.get("bleurt")),
                      _ratio(t.get("train_minutes"), tl["train_minutes"], t), _ratio(t.get("peak_memory_gb"), tl["peak_memory_gb"], t)]
        lines.append("| " + " | ".join(cells) + " |")
    notes = report["notes"]
    lines += ["", f"- ROUGE: {notes['rouge']}", f"- BLEURT: {notes['bleurt']}", f"- semantic: {notes['semantic']}",
              f"- retention: {notes['retention']}", f"- {notes['noise']}", f"- memory: {notes['memory']}"]
    return "\n".join(lines) + "\n"


def _num(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _ratio(value: float | None, reference: float | None, row: dict) -> str:
    if value is None or not reference or not row:
        return "—"
    return f"{value / reference:.2f}×"
