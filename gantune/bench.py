"""Base + each method, trained and evaluated side by side in one process, once per seed.

Writes report.json (means over seeds with 95% intervals, the references' own distribution,
paired differences to LoRA, base and each adversarial row's twin), report.md (the tables, with ratios
to LoRA, the smallest difference the protocol can detect and, for the thesis preset, the thesis' own
numbers beside ours) and generations.jsonl; each method's run folder lands in
``<report stem>_runs/<method>-seed<seed>/`` with its own eval.json (and, for ``plateau``, each seed's
MLE warm-ups in ``warmup-<adapter>-seed<seed>/``). The protocol itself is
``gantune.compare.compare_methods``, shared with the workbench's Compare tab.

The bench never replaces a user's file: it refuses an ``--out`` where any of these already is (before anything
loads), makes ``<report stem>_runs/`` fresh, and writes each report file only where nothing is. A row
that fails still leaves the report of the rows finished before it (its ``status`` says failed, and why), and
so does a stop (Ctrl-C: ``status`` stopped). The one exception: the same bench again at the ``--out`` of such a
report (its ``bench`` settings the same) continues it: the runs it finished are kept, not trained or evaluated
again, and its report files are replaced by the new report. A bench holds its runs folder's lock while it runs.
"""

from __future__ import annotations

import json
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from . import compiled
from .compare import (
    ROWS,
    ComparisonFailed,
    Continuation,
    baseline_config,
    compare_methods,
    evaluate_run,
    row_config,
    seeded_splits,
)
from .errors import GantuneError
from .evaluate import EvalSettings, Scorers, load_retention_sets
from .metrics import Bleurt
from .models import BaseModel, load_base_model, pick_device
from .runs import read_json_file, saving, write_text_atomic, write_text_new
from .runs.lock import LOCK, RunLock

__all__ = ["BENCH_PRESETS", "ROWS", "baseline_config", "evaluate_run", "report_markdown", "run_bench"]


@dataclass
class BenchPreset:
    n: int
    train_fraction: float
    epochs: int
    batch_size: int
    max_new_tokens: int
    max_prompt_tokens: int
    retention_n: int | None
    methods: list[str] = field(default_factory=list)
    continuation: Continuation | None = None  # every row from an MLE warm-up to its plateau (compare.Continuation)
    temperatures: tuple[float, ...] = ()  # sampling temperatures always scored besides greedy
    settings: dict[str, Any] = field(default_factory=dict)  # more TrainConfig settings every run shares


# The plateau protocol (issue 20): 120 train / 120 test forget10 pairs a seed; 12 training pairs validate (108 fit:
# 14 steps an epoch at batch 8). Per seed and adapter (M_tunable, LoRA, prompt tuning): MLE to its plateau (at most
# 8 epochs, stopped after 2 without a better validation ROUGE-L), then from that adapter 3 epochs (42 steps) of the
# explicit GAN, of the implicit one and of MLE continued (the twin); greedy and temperature-1 answers scored.
# Time on a 2-core CPU (MLE step ~2 s, explicit adversarial ~5 s, implicit ~4 s + ~17 s a round for its rollout and
# π_ref pass, a validation ~5 s, one row's evaluation of 120 questions at two temperatures ~100 s), per seed: warm-ups
# ≤ 3 × (112 × 2 + 9 × 5) ≈ 810 s, twins 3 × (42 × 2 + 20) ≈ 310 s, explicit 3 × (42 × 5 + 20) ≈ 690 s, implicit
# 3 × (42 × 4 + 3 × 17 + 20) ≈ 720 s, evaluations 10 × 100 s ≈ 1000 s: ≤ ~59 min a seed, ≤ ~3 h for three
# (~2.7 h when the warm-ups plateau by epoch 5).
PLATEAU_ROWS = ["adapter-mle", "gan", "gan-implicit", "lora", "gan-lora", "gan-lora-implicit", "prompt-tuning",
                "gan-prompt", "gan-prompt-implicit"]


QUICK_ROWS = ["gan", "gan-no-mle", "adapter-mle", "lora", "prompt-tuning", "prefix-tuning", "full"]
BENCH_PRESETS: dict[str, BenchPreset] = {
    # about 20 min on a 2-core CPU with the offline model
    "quick": BenchPreset(n=80, train_fraction=0.5, epochs=3, batch_size=8, max_new_tokens=48, max_prompt_tokens=128,
                         retention_n=20, methods=QUICK_ROWS),
    # the thesis' experiment (Tables 4.1-4.3): base, its GAN and LoRA; 50 train / 50 test, 100 prompt / 50 new
    # tokens, 30 epochs, batch 1; every row trained on all 50 pairs (no validation pairs held out) and at the bench's
    # --precision (auto: bf16 where the chip computes it fast, which the time on a CPU needs; --precision fp32 for the
    # thesis' own). About 67 min on a quiet 2-core CPU in bf16.
    "thesis": BenchPreset(n=100, train_fraction=0.5, epochs=30, batch_size=1, max_new_tokens=50, max_prompt_tokens=100,
                          retention_n=None, methods=["gan-thesis", "lora"],
                          settings={"precision": "auto", "val_pairs": 0}),
    # MLE to its plateau, then equal-compute continuations on each adapter (the comment above PLATEAU_ROWS)
    "plateau": BenchPreset(n=240, train_fraction=0.5, epochs=3, batch_size=8, max_new_tokens=48, max_prompt_tokens=128,
                           retention_n=20, methods=PLATEAU_ROWS,
                           continuation=Continuation(max_epochs=8, patience=2), temperatures=(1.0,),
                           settings={"val_pairs": 12}),
}

# The thesis' Tables 4.1-4.3 (GPT-2, 50/50 pairs, 30 epochs, batch 1, on a GPU).
THESIS = {
    "base": {"rouge1": 0.066, "bleurt": -0.936},
    "gan-thesis": {"rouge1": 0.109, "bleurt": -0.611, "train_minutes": 91, "peak_memory_gb": 12.3},
    "lora": {"rouge1": 0.127, "bleurt": -0.536, "train_minutes": 2, "peak_memory_gb": 1.1},
}
# the main table's quality columns and the distribution table's, as (report field, header)
QUALITY = (("rouge1", "ROUGE-1"), ("rouge2", "ROUGE-2"), ("rougeL", "ROUGE-L"), ("rougeLsum", "ROUGE-Lsum"),
           ("bleurt", "BLEURT"), ("semantic", "semantic"), ("retention", "retention"))
DISTRIBUTION = (("length_mean", "length"), ("length_w1", "length W1"), ("truncated", "truncated"),
                ("distinct1", "distinct-1"), ("distinct2", "distinct-2"), ("real_vs_generated_auc", "real-vs-generated AUC"))


def run_bench(
    preset: str,
    out: str | Path,
    data: str | None = None,
    subset: str = "forget10",
    model: str = "default",
    methods: list[str] | None = None,
    bleurt: str | None = Bleurt.DEFAULT_CHECKPOINT,
    seeds: Sequence[int] = (0,),
    temperatures: Sequence[float] = (),
    overrides: dict[str, Any] | None = None,
    base: BaseModel | None = None,
    log: Callable[[str], None] = print,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Run the benchmark once per seed; returns the report (also written beside ``out``).

    ``temperatures``: sampling temperatures scored besides greedy answers (0 is greedy and is
    always scored). ``overrides``: TrainConfig settings over the preset's (n, epochs, eval_noise …).
    ``should_stop`` (Ctrl-C) is asked between stages, in training and between answer batches: the report
    then keeps the rows finished before it, its ``status`` "stopped".
    """
    if preset not in BENCH_PRESETS:
        raise GantuneError(f"unknown bench preset {preset!r}; choose one of {', '.join(BENCH_PRESETS)}")
    bp = BENCH_PRESETS[preset]
    names = methods or bp.methods
    unknown = [m for m in names if m not in ROWS]
    if unknown:
        raise GantuneError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(ROWS)}")
    twice = next((m for i, m in enumerate(names) if m in names[:i]), None)
    if twice is not None:
        raise GantuneError(f"--methods names {twice} twice; name each row once")
    if bp.continuation and "full" in names:
        raise GantuneError(f"the {preset} preset continues each row from an MLE warm-up of its adapter; full "
                           "fine-tuning has none: leave it out of --methods")
    if not seeds or len(set(seeds)) != len(seeds):
        raise GantuneError(f"--seeds needs one or more different seeds (got {' '.join(map(str, seeds)) or 'none'})")
    if any(t < 0 for t in temperatures):
        raise GantuneError(f"--temperatures must be 0 (greedy) or more (got {min(temperatures)})")
    out = Path(out)
    if out.suffix != ".json":
        raise GantuneError(f"--out must name a .json report file (got {out})")
    schedule = {k: getattr(bp, k) for k in ("n", "train_fraction", "epochs", "batch_size", "max_new_tokens",
                                            "max_prompt_tokens")} | bp.settings | (overrides or {})
    temperatures = sorted({t for t in (*temperatures, *bp.temperatures) if t > 0})
    bench = json.loads(json.dumps({"preset": preset, "methods": names, "model": model, "data": data, "subset": subset,
                                   "seeds": list(seeds), "temperatures": temperatures, "bleurt": bleurt,
                                   "schedule": schedule}))  # as report.json records them
    files, runs_dir = bench_outputs(out)
    taken = [p for p in (*files, runs_dir) if p.exists() or p.is_symlink()]
    previous = _continued(out, runs_dir, bench, taken[0]) if taken else None
    continuing = previous is not None
    splits, data_source = seeded_splits(data, subset, schedule["n"], schedule["train_fraction"], seeds)
    shared = {"model": model, "data": data, "subset": subset, **schedule}
    for name in names:  # every row's settings, as its run will check them, before anything loads
        row_config(name, shared, seeds[0], out).validate()
    n_train = min(len(split.train) for split in splits)
    if bp.continuation and not min(row_config(names[0], shared, seeds[0], out).val_pairs, n_train // 10):
        raise GantuneError(f"the {preset} preset trains each warm-up to its plateau on validation pairs (a tenth of "
                           f"the training pairs at most), but --n {schedule['n']} leaves {n_train} training pairs a "
                           f"seed, too few to hold any out; raise --n to at least {_least_n(schedule)}")
    device = pick_device("auto")
    if not continuing:
        try:
            runs_dir.mkdir(parents=True)  # fresh: another bench at this --out is refused here
        except FileExistsError:
            raise GantuneError(f"{runs_dir} already exists, and bench never replaces a file; choose another --out") from None
        except OSError as exc:
            raise GantuneError(f"cannot create {runs_dir}: {exc.strerror}") from exc
    lock = RunLock.take(runs_dir, "benchmarking")  # one bench at a time continues this one
    if continuing:
        log(f"continuing the {previous} bench of {out}: the runs it finished are kept")
    try:
        if base is None:
            log(f"loading model {model} …")
            base = load_base_model(model, device=device, precision=schedule.get("precision", "auto"))
        scorers = Scorers.load(bleurt, device=str(device))
        settings = EvalSettings(max_new_tokens=schedule["max_new_tokens"],
                                max_prompt_tokens=schedule["max_prompt_tokens"],
                                retention_n=bp.retention_n)
        try:
            report = compare_methods(
                base, names, splits, shared, runs_dir, scorers, settings, temperatures=temperatures,
                retention=load_retention_sets(data, bp.retention_n, seeds[0]), continuation=bp.continuation,
                keep_finished=continuing, progress=lambda p: None if p.kind in ("step", "batch") else log(p.message),
                progress_bars=True, should_stop=should_stop)
            failed = None
        except ComparisonFailed as exc:
            report, failed = exc.report, exc
    except BaseException:
        lock.release()
        if not continuing:
            with suppress(OSError):
                (runs_dir / LOCK).unlink()
                runs_dir.rmdir()  # nothing else was written in it
        raise
    try:
        generations = report.pop("generations")
        report = {"preset": preset, "model": base.source, "device": str(device), "precision": base.precision,
                  "decode": {"mode": compiled.mode(), "compile_seconds": round(compiled.compile_seconds(base.model), 1)},
                  "data": data_source, "schedule": schedule, "bench": bench, **report}
        report["notes"]["memory"] = _memory_note(device.type)
        markdown = report_markdown(report)
        with saving("the report", out.parent):
            for path, text in zip(files, (json.dumps(report, indent=2), markdown,
                                          "".join(json.dumps(g) + "\n" for g in generations))):
                if continuing and path in taken:  # the stopped or failed report's own files
                    write_text_atomic(path, text)
                    continue
                try:
                    write_text_new(path, text)
                except FileExistsError:
                    raise GantuneError(f"{path} appeared while the bench ran, and bench never replaces a file; the "
                                       f"runs and their eval.json are in {runs_dir}") from None
    finally:
        lock.release()
    log(markdown)
    if failed is not None:
        raise GantuneError(f"{failed} (the report keeps the rows finished before it: {out}; the same bench again "
                           "continues it)") from failed
    return report


def _continued(out: Path, runs_dir: Path, bench: dict[str, Any], taken: Path) -> str:
    """The status ("stopped" or "failed") of the bench at ``out`` that a bench of settings ``bench`` continues: its
    report, written by gantune, of the same settings, beside its runs folder. Else one line saying why ``taken``
    (already there) refuses this bench."""
    try:
        report = read_json_file(out, out.parent) if out.is_file() and runs_dir.is_dir() and not runs_dir.is_symlink() else None
    except GantuneError:
        report = None
    status = report.get("status") if isinstance(report, dict) else None
    if status == "completed":
        raise GantuneError(f"{out} is a completed bench's report, and bench never replaces it; choose another --out "
                           "(or move it aside)")
    if status not in ("stopped", "failed") or not isinstance(report.get("bench"), dict):
        raise GantuneError(f"{taken} already exists, and bench never replaces a file; choose another --out (or move "
                           "it aside)")
    mine, theirs = _flat(bench), _flat(report["bench"])
    differs = next((k for k in mine if theirs.get(k) != mine[k]), None)
    if differs is not None:
        raise GantuneError(f"{out} is a {status} bench of other settings ({differs} differs); run the same bench again "
                           "to continue it, or choose another --out")
    return status


def _flat(bench: dict[str, Any]) -> dict[str, Any]:
    """A bench's settings with its schedule's among them (``epochs``, not ``schedule``, names what differs)."""
    schedule = bench.get("schedule")
    return {**{k: v for k, v in bench.items() if k != "schedule"}, **(schedule if isinstance(schedule, dict) else {})}


def _least_n(schedule: dict[str, Any]) -> int:
    """The fewest pairs whose training share holds ten pairs, so validation can hold one out."""
    n = 2
    while min(max(1, round(n * schedule["train_fraction"])), n - 1) < 10:  # data.split_pairs's training share
        n += 1
    return n


def bench_outputs(out: Path) -> tuple[tuple[Path, Path, Path], Path]:
    """What a bench with ``--out out`` writes: the report's .json, .md and generations.jsonl, and its runs folder."""
    return (out, out.with_name(out.stem + ".md"), out.with_name("generations.jsonl")), out.with_name(out.stem + "_runs")


def _memory_note(device_type: str) -> str:
    if device_type == "cuda":
        return "peak torch.cuda.max_memory_allocated during training"
    return "peak resident set of the process during training (base model included; freed memory returned first)"


def report_markdown(report: dict[str, Any]) -> str:
    """The report in Markdown: quality and cost (ratios to LoRA; the thesis' numbers for its preset), the
    answers' distribution beside the references', paired differences, and what each number means."""
    rows = report["rows"]
    greedy = {r["method"]: r for r in rows if not r.get("temperature")}
    lora = greedy.get("lora")
    thesis = report["preset"] == "thesis"
    head = ["method", *(h for _, h in QUALITY), "train s", "peak MB", "trainable", "time/LoRA", "memory/LoRA"]
    if thesis:
        head += ["thesis ROUGE-1", "thesis BLEURT", "thesis time/LoRA", "thesis memory/LoRA"]
    seeds = report.get("seeds", [])
    lines = [
        f"**{report['preset']}** — model {report['model'].get('name')} on {report['device']} "
        f"({report.get('precision', 'fp32')}{_decoding(report.get('decode'))}), "
        f"{report['n_train']} train / {report['n_test']} test pairs, seed{'s' if len(seeds) > 1 else ''} "
        f"{' '.join(map(str, seeds))}, {report['schedule']['epochs']} epochs, "
        f"batch {report['schedule']['batch_size']}, ≤{report['schedule']['max_new_tokens']} new tokens",
        "",
        *_table_head(head),
    ]
    for r in rows:
        marks = _comparators(r, rows)
        cells = [r["method"], *(_cell(r, k, 3, marks) for k, _ in QUALITY),
                 _num(r.get("train_seconds"), 0), _num(r.get("peak_memory_mb"), 0), _count(r.get("trainable_params")),
                 _ratio(r.get("train_seconds"), lora and lora["train_seconds"], r),
                 _ratio(r.get("peak_memory_mb"), lora and lora["peak_memory_mb"], r)]
        if thesis:
            t = THESIS.get(r["method"], {})
            tl = THESIS["lora"]
            cells += [_num(t.get("rouge1")), _num(t.get("bleurt")),
                      _ratio(t.get("train_minutes"), tl["train_minutes"], t), _ratio(t.get("peak_memory_gb"), tl["peak_memory_gb"], t)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "▲B / ▼B: the whole 95% interval lies above / below base's; ▲L / ▼L: above / below LoRA's.", ""]
    lines += _detectable(report.get("paired") or [])
    lines += _protocol(report, greedy)
    if any(k in r for r in rows for k, _ in DISTRIBUTION):
        lines += ["**Distribution of the answers** (the reference row: the test references themselves)", "",
                  *_table_head(["method", *(h for _, h in DISTRIBUTION)])]
        for r in [*([report["reference"]] if report.get("reference") else []), *rows]:
            marks = _comparators(r, rows) if r["method"] != "reference" else {}
            lines.append("| " + " | ".join([r["method"], *(_cell(r, k, 3 if "length" not in k else 1, marks)
                                                          for k, _ in DISTRIBUTION)]) + " |")
        lines.append("")
    if report.get("paired"):
        lines += ["**Paired differences** (mean per-question difference, same questions and seed; 95% bootstrap "
                  "interval; *twin*: the MLE row of the same adapter)", "",
                  *_table_head(["method", "versus", "Δ ROUGE-L", "Δ semantic", "Δ length W1 (twin)", "Δ AUC (twin)"])]
        for p in report["paired"]:
            versus = f"{p['versus']} (twin)" if p.get("twin") else p["versus"]
            lines.append("| " + " | ".join([p["method"], versus, *(_difference(p.get(k)) for k in
                                                                   ("rougeL", "semantic", "length_w1",
                                                                    "real_vs_generated_auc"))]) + " |")
        lines.append("")
    lines += _objective_grid(report.get("objectives") or [])
    notes = report["notes"]
    explained = [("ROUGE", "rouge"), ("BLEURT", "bleurt"), ("semantic", "semantic"), ("retention", "retention"),
                 ("retention, seeds", "retention_seeds"), *((h, k) for k, h in DISTRIBUTION), ("±", "ci"),
                 ("paired", "paired"), ("temperature", "temperature"), ("MAUVE", "mauve"), ("noise", "noise"),
                 ("memory", "memory")]
    lines += [f"- {label}: {notes[key]}" for label, key in explained if notes.get(key)]
    return "\n".join(lines) + "\n"


OBJECTIVE_NAMES = {"mle": "MLE", "explicit": "GAN, D network", "implicit": "GAN, implicit D"}


def _objective_grid(cells: list[dict[str, Any]]) -> list[str]:
    """The objective × adapter table (greedy): each cell's row, its ROUGE-L and its paired difference to its twin."""
    if not cells or len({c["objective"] for c in cells}) < 2:
        return []
    adapters = list(dict.fromkeys(c["adapter"] for c in cells))
    lines = ["**Objective × adapter** (greedy ROUGE-L; Δ: the paired difference to the twin, the MLE row of the same "
             "adapter, with its 95% interval)", "", *_table_head(["objective", *adapters])]
    for kind, name in OBJECTIVE_NAMES.items():
        mine = {c["adapter"]: c for c in cells if c["objective"] == kind}
        if not mine:
            continue
        shown = []
        for adapter in adapters:
            c = mine.get(adapter)
            text = "—" if c is None else f"{c['row']}: {_num(c.get('rougeL'))}"
            if c is not None and (c.get("vs_twin") or {}).get("rougeL"):
                text += f", Δ {_difference(c['vs_twin']['rougeL'])}"
            shown.append(text)
        lines.append("| " + " | ".join([name, *shown]) + " |")
    return [*lines, ""]


def _detectable(paired: list[dict[str, Any]]) -> list[str]:
    """The smallest difference the protocol can tell from zero: the mean half-width of the greedy paired intervals
    (of the adversarial rows against their twins when there are such pairs, else of every pair)."""
    greedy = [p for p in paired if not p.get("temperature")]
    twins = [p for p in greedy if p.get("twin")]
    chosen = twins or greedy
    widths = {label: [(p[k]["ci"][1] - p[k]["ci"][0]) / 2 for p in chosen if p.get(k)]
              for k, label in (("rougeL", "ROUGE-L"), ("semantic", "semantic"))}
    shown = ", ".join(f"{label} ±{sum(w) / len(w):.3f}" for label, w in widths.items() if w)
    if not shown:
        return []
    which = "the adversarial rows against their twins" if twins else "every pair"
    return [f"**Smallest detectable difference**: {shown} (the mean half-width of the greedy paired 95% intervals of "
            f"{which}): a true difference smaller than this cannot be told from zero on this protocol.", ""]


def _protocol(report: dict[str, Any], greedy: dict[str, dict[str, Any]]) -> list[str]:
    """The MLE warm-ups of a continuation, and the pairs the report compares (row, twin, steps, start)."""
    lines = []
    cont = report.get("continuation")
    if cont:
        lines += [f"**Equal-compute continuation**: per seed and adapter, MLE to its plateau first (at most "
                  f"{cont['max_epochs']} epochs, stopped after {cont['patience']} without a better validation score); "
                  f"then every row starts from that warm-up's kept adapter and trains {report['schedule']['epochs']} "
                  "epochs.", "", *_table_head(["seed", "adapter", "warm-up steps", "kept step", "run"])]
        for w in cont["warmups"]:
            lines.append(f"| {w['seed']} | {w['adapter']} | {w['steps']} of at most {w['max_steps']} | "
                         f"{_num(w['kept_step'], 0) if w['kept_step'] is not None else '—'} | {w['run']} |")
        lines.append("")
    pairs = [p for p in report.get("paired") or [] if p.get("twin") and not p.get("temperature")]
    if pairs:
        start = "the same warm-up" if cont else "the untouched model"
        lines += ["**The pairs** (an adversarial row against its twin: the MLE row of the same adapter, from "
                  f"{start}, the same number of steps; training seconds a seed, and the row's time over its twin's)", "",
                  *_table_head(["row", "twin", "steps a seed (row / twin)", "train s (row / twin)", "time / twin"])]
        for p in pairs:
            mine, theirs = greedy.get(p["method"], {}), greedy.get(p["versus"], {})
            seconds = mine.get("train_seconds"), theirs.get("train_seconds")
            lines.append(f"| {p['method']} | {p['versus']} | {_steps(mine.get('steps'))} / {_steps(theirs.get('steps'))} | "
                         f"{_num(seconds[0], 0)} / {_num(seconds[1], 0)} | {_ratio(seconds[0], seconds[1], mine)} |")
        lines.append("")
    return lines


def _steps(steps: list[int] | None) -> str:
    return " ".join(map(str, steps)) if steps else "—"


def _table_head(head: list[str]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]


def _comparators(row: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """base's and LoRA's rows at the row's temperature (not the row itself), by their marker letter."""
    t = row.get("temperature") or 0
    found = {}
    for letter, name in (("B", "base"), ("L", "lora")):
        label = name if not t else f"{name}@{t:g}"
        other = next((r for r in rows if r["method"] == label), None)
        if other is not None and other is not row:
            found[letter] = other
    return found


def _cell(row: dict[str, Any], key: str, digits: int, comparators: dict[str, dict[str, Any]]) -> str:
    """``0.312 ± 0.021`` (half the interval's width) and a marker where it clears base's or LoRA's interval."""
    value = row.get(key)
    if value is None:
        return "—"
    interval = (row.get("ci") or {}).get(key)
    text = _num(value, digits) if interval is None else f"{value:.{digits}f} ± {(interval[1] - interval[0]) / 2:.{digits}f}"
    for letter, other in comparators.items():
        theirs = (other.get("ci") or {}).get(key)
        if interval is None or theirs is None:
            continue
        if interval[0] > theirs[1]:
            text += f" ▲{letter}"
        elif interval[1] < theirs[0]:
            text += f" ▼{letter}"
    return text


def _difference(entry: dict[str, Any] | None) -> str:
    if not entry:
        return "—"
    lo, hi = entry["ci"]
    return f"{entry['mean']:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def _decoding(decode: dict | None) -> str:
    """How the bench decoded, for the report's first line (nothing for a report written before it was said)."""
    if not decode:
        return ""
    spent = decode.get("compile_seconds") or 0
    return f", decoding {decode['mode']}" + (f", {spent:.0f} s compiling" if spent else "")


def _num(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _count(value: int | None) -> str:
    return "—" if value is None else f"{value:,}"


def _ratio(value: float | None, reference: float | None, row: dict) -> str:
    if value is None or not reference or not row:
        return "—"
    return f"{value / reference:.2f}×"
