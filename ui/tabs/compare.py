"""Compare: train baselines beside a run (on its data, split and schedule, over one or more seeds),
then quality, the answers' distribution against the references, and cost, side by side.

What is shown follows "Runs to show". A run that a comparison made (or took part in) is shown
as that comparison's row: its mean over seeds with a 95% interval beside every number, the base
model first and the reference answers' own values in the distribution table. A run outside any
comparison shows its own evaluation (one seed, no interval). When a comparison ends, its runs
are shown at once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from gantune.compare import ROWS, baseline_config, verdict
from gantune.compare.rows import row_cell
from gantune.errors import GantuneError
from gantune.runs import RunSummary

from .. import plots
from ..catalogue import eval_or_none, json_or_none, summary_or_none
from ..engine import Engine
from ..estimate import Plan, plan_comparison
from ..i18n import (
    CONFIG_FIELDS,
    choice_label,
    exact,
    language,
    metric_label,
    number,
    percent,
    plural,
    reason_text,
    row_description,
    setting_name,
    signed,
    t,
    tr,
)
from ..views import duration, error_text, progress_html, warn

# every comparison row but the GAN itself (gantune.compare.ROWS): the other methods, then the GAN's variants
BASELINES = sorted((row for row in ROWS if row != "gan"), key=lambda row: ROWS[row][0] == "gan")
QUALITY = ["rouge1", "rouge2", "rougeL", "rougeLsum", "bleurt", "semantic", "retention_answered"]
RETENTION = ["retention_answered", "retention", "retention_rougeL"]  # the headline first; all three in the details
SCORES = QUALITY + RETENTION[1:]
DISTRIBUTION = ["length_mean", "length_w1", "truncated", "distinct1", "distinct2", "real_vs_generated_auc"]
COST = ["train_seconds", "peak_memory_mb", "trainable_params", "tokens_per_s"]
OVERLAY = list(plots.COMPARABLE)
OBJECTIVES = ("mle", "explicit", "implicit")
ADAPTERS = ("m-tunable", "lora", "prompt-tuning", "prefix-tuning", "full")
WIDE = {"m-tunable": 4}  # the grid's column with most rows (the GAN's variants) gets the room to lay them out


def method_grid() -> dict[tuple[str, str], list[str]]:
    """The baselines by their cell, (objective, adapter): full fine-tuning among the MLE rows, in a column of its own."""
    grid: dict[tuple[str, str], list[str]] = {(o, a): [] for o in OBJECTIVES for a in ADAPTERS}
    for row in BASELINES:
        grid[row_cell(row) or ("mle", "full")].append(row)
    return grid


def chosen_methods(*cells: list[str] | None) -> list[str]:
    """The rows ticked in the grid's cells, in the order of ``BASELINES``."""
    ticked = {row for cell in cells for row in cell or []}
    return [row for row in BASELINES if row in ticked]


def rows_text(lang: str) -> str:
    """What each row trains, one line a row (the grid shows only their names)."""
    return "\n".join(f"- **{row}** — {describe_row(lang, row)}" for row in BASELINES)


@dataclass
class Row:
    """One line of the tables: the base model, a comparison's row (several seeds) or one run's evaluation."""

    name: str
    values: dict[str, Any]
    ci: dict[str, Any] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=list)
    method: str = ""
    lengths: list[int] = field(default_factory=list)
    evaluated: bool = True  # a run not evaluated yet has a cost row only
    runs: list[str] = field(default_factory=list)  # its run ids (one a seed)


@dataclass
class View:
    rows: list[Row]
    reference: Row | None  # the reference answers' own length and distinct-n
    notes: dict[str, Any] = field(default_factory=dict)  # the comparison's notes (why a metric is unavailable …)
    paired: list[dict[str, Any]] = field(default_factory=list)  # its paired differences
    objectives: list[dict[str, Any]] = field(default_factory=list)  # its objective × adapter cells
    n_test: int = 0  # test questions a seed (of the comparison shown)


def _selected_names(run_ids) -> list[str]:
    return [str(r) for r in (run_ids or [])]


def _row_runs(row: dict) -> list[str]:
    return [Path(r).name for r in row.get("runs") or [] if r]


def view(engine: Engine, run_ids: list[str]) -> View:
    """The rows for the selected runs: comparisons' rows for runs that took part in one, else each run's own."""
    selected = [r for r in _selected_names(run_ids) if _exists(engine, r)]
    rows: list[Row] = []
    reference, base, covered, notes, paired, objectives, n_test = None, None, set(), {}, [], [], 0
    for report in engine.runs.comparisons():  # newest first: a run's latest comparison speaks for it
        mine = [row for row in report["rows"] if row.get("temperature", 0) == 0]
        hit = [row for row in mine if set(_row_runs(row)) & (set(selected) - covered)]
        if not hit:
            continue
        lengths = report.get("lengths") or {}
        for row in mine:
            if row["method"] == "base" and base is None:
                base = _report_row(engine, row, lengths.get("base"))
        for row in hit:
            rows.append(_report_row(engine, row, lengths.get(row["method"])))
            covered |= set(_row_runs(row))
        notes = {**(report.get("notes") or {}), **notes}
        names = {row["method"] for row in hit} | {"base"}
        paired += [p for p in report.get("paired") or [] if p.get("method") in names and p.get("temperature", 0) == 0]
        objectives += [c for c in report.get("objectives") or [] if c.get("row") in names]
        n_test = n_test or int(report.get("n_test") or 0)
        if reference is None and report.get("reference"):
            recorded = _run_lengths(engine, _row_runs(hit[0]), "reference_length")
            reference = _report_row(engine, report["reference"], recorded or lengths.get("reference"))
    for run_id in selected:
        if run_id in covered:
            continue
        run = engine.runs.folder(run_id)
        ev, summary = eval_or_none(run), summary_or_none(run) or RunSummary()
        config, _ = run.read_config()
        values = {**{k: (ev or {}).get(k) for k in SCORES + DISTRIBUTION}, "train_seconds": summary.seconds,
                  **{k: getattr(summary, k) for k in COST[1:]}}
        per_question = (ev or {}).get("per_question") or {}
        rows.append(Row(run_id, values, seeds=[config.seed], method=config.method,
                        lengths=list(per_question.get("length") or []), evaluated=ev is not None, runs=[run_id]))
        if ev:
            notes = {"bleurt": ev.get("bleurt_note"), "semantic": ev.get("semantic_note"), **notes}
        if reference is None and ev and isinstance(ev.get("reference"), dict):
            reference = Row("reference", ev["reference"], seeds=[config.seed],
                            lengths=list(per_question.get("reference_length") or []))
        legacy = json_or_none(run.path / "base_eval.json")  # comparisons made before the seeds existed
        if base is None and legacy:
            base = Row("base", {k: legacy.get(k) for k in SCORES + DISTRIBUTION}, seeds=[config.seed], method="base")
    if base is not None and rows:
        rows.insert(0, base)
    evaluated = any(r.evaluated for r in rows)
    return View(rows, reference if evaluated else None, notes, paired, objectives, n_test)


def _exists(engine: Engine, run_id: str) -> bool:
    try:
        engine.runs.folder(run_id)
        return True
    except GantuneError:
        return False


def _run_lengths(engine: Engine, run_ids: list[str], key: str = "length") -> list[int]:
    """Per-question token counts of the runs' evaluations (eval.json), over all of them; [] when one lacks them."""
    out: list[int] = []
    for run_id in run_ids:
        ev = eval_or_none(engine.runs.folder(run_id)) if _exists(engine, run_id) else None
        lengths = ((ev or {}).get("per_question") or {}).get(key)
        if not lengths:
            return []
        out += lengths
    return out


def _report_row(engine: Engine, row: dict, lengths: list[int] | None) -> Row:
    """A comparison's row; its method from its runs' config, its answer lengths from their evaluations."""
    runs = [r for r in _row_runs(row) if _exists(engine, r)]
    method = engine.runs.folder(runs[0]).read_config()[0].method if runs else row["method"]
    return Row(row["method"], {k: v for k, v in row.items() if k not in ("ci", "seeds", "runs")},
               ci=row.get("ci") or {}, seeds=list(row.get("seeds") or []), method=method,
               lengths=_run_lengths(engine, runs) or list(lengths or []), runs=_row_runs(row))


def cell(row: Row, key: str, digits: int = 3, lang: str = "en") -> str:
    """A number with half its 95% interval beside it (``0.312 ± 0.021``, ``0,312 ± 0,021``), or ``—``.

    The share of facts answered right reads as a count too: ``181 of 217 (83% ± 5%)``.
    """
    value = row.values.get(key)
    if not isinstance(value, (int, float)):
        return "—"
    interval = row.ci.get(key)
    half = (interval[1] - interval[0]) / 2 if interval and interval[1] > interval[0] else None
    if key == "retention_answered":
        n = row.values.get("retention_n")
        text = percent(lang, value) + (f" ± {percent(lang, half)}" if half is not None else "")
        return f"{tr(lang, 'retention_count', count=number(lang, round(value * n), 0), n=number(lang, n, 0))} ({text})" \
            if n else text
    text = number(lang, value, digits)
    return text + (f" ± {number(lang, half, digits)}" if half is not None else "")


def display_name(row: Row, lang: str) -> str:
    """A row as every table and chart names it: a method's row with its run (``lora (lora-seed0-…)``)."""
    if row.name in ("base", "reference"):
        return tr(lang, "row_base") if row.name == "base" else tr(lang, "row_reference")
    if not row.runs or row.runs == [row.name]:
        return row.name
    return f"{row.name} ({row.runs[0] if len(row.runs) == 1 else plural(lang, 'runs', len(row.runs))})"


def run_names(v: View, lang: str) -> dict[str, str]:
    """Each run id of the view → the name its row goes by (a curve of a run carries its row's name)."""
    return {run: (display_name(r, lang) if len(r.runs) == 1 else f"{r.name} ({run})") for r in v.rows for run in r.runs}


def evaluated_rows(v: View) -> list[Row]:
    return [r for r in v.rows if r.evaluated]


def tables(v: View, lang: str) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Quality (base first) and distribution (the references first) of evaluated rows; cost with ratios to LoRA."""
    seeds = tr(lang, "col_seeds")
    scored = evaluated_rows(v)
    quality = pd.DataFrame([[display_name(r, lang), str(len(r.seeds)), *(cell(r, k, lang=lang) for k in QUALITY)]
                            for r in scored], columns=[tr(lang, "col_run"), seeds, *(metric_label(lang, k) for k in QUALITY)])
    dist_rows = ([v.reference] if v.reference else []) + scored
    distribution = pd.DataFrame(
        [[display_name(r, lang), *(cell(r, k, 1 if k in ("length_mean", "length_w1") else 3, lang) for k in DISTRIBUTION)]
         for r in dist_rows], columns=[tr(lang, "col_run"), *(metric_label(lang, k) for k in DISTRIBUTION)])
    lora = next((r for r in v.rows if r.method == "lora" and r.values.get("train_seconds")), None)
    cost_rows = []
    for r in v.rows:
        if r.name == "base":
            continue
        ratios = []
        for key in ("train_seconds", "peak_memory_mb"):
            mine, theirs = r.values.get(key), lora.values.get(key) if lora else None
            ratios.append(f"{number(lang, mine / theirs, 2)}×" if mine and theirs else "—")
        cost_rows.append([display_name(r, lang), choice_label(lang, "method", r.method), cell(r, "train_seconds", 1, lang),
                          cell(r, "peak_memory_mb", 0, lang), cell(r, "trainable_params", 0, lang),
                          cell(r, "tokens_per_s", 1, lang), *ratios])
    cost = pd.DataFrame(cost_rows, columns=[tr(lang, k) for k in (
        "col_run", "col_method", "col_train_s", "col_peak_mb", "col_trainable", "col_tokens_s", "col_time_lora",
        "col_memory_lora")])
    return quality, distribution, cost


def retention_table(v: View, lang: str) -> pd.DataFrame:
    """The three retention figures of each evaluated row that has them (the details behind the headline)."""
    rows = [[display_name(r, lang), *(cell(r, k, lang=lang) for k in RETENTION)] for r in evaluated_rows(v)
            if any(isinstance(r.values.get(k), (int, float)) for k in RETENTION)]
    return pd.DataFrame(rows, columns=[tr(lang, "col_run"), *(metric_label(lang, k) for k in RETENTION)])


def short_name(row: str, lang: str) -> str:
    """A row as a sentence names it: the base model in words, any other by its row (or run)."""
    return tr(lang, "row_base") if row == "base" else row


def verdict_text(v: View, lang: str) -> str:
    """Who won, in words: the library's findings from the paired intervals (``gantune.compare.verdict``)."""
    sentences = []
    for f in verdict(v.paired, v.n_test):
        if f.told_apart:
            sentences.append(tr(lang, "verdict_better", better=short_name(f.better, lang),
                                worse=short_name(f.worse, lang), metric=metric_label(lang, f.metric),
                                difference=signed(lang, f.difference, 3), lo=signed(lang, f.interval[0], 3),
                                hi=signed(lang, f.interval[1], 3)))
        else:
            sentences.append(tr(lang, "verdict_tie", a=short_name(f.better, lang), b=short_name(f.worse, lang),
                                questions=plural(lang, "questions", f.questions)))
    return f"**{tr(lang, 'verdict')}** {'; '.join(sentences)}." if sentences else ""


def paired_table(v: View, lang: str) -> pd.DataFrame:
    """The report's paired differences (each row minus lora and minus base, per question): the comparison to read."""
    names = {r.name: display_name(r, lang) for r in v.rows}
    rows = []
    for entry in v.paired:
        for key in ("rougeL", "semantic"):
            diff = entry.get(key)
            if not isinstance(diff, dict):
                continue
            lo, hi = diff["ci"]
            rows.append([names.get(entry["method"], entry["method"]), names.get(entry["versus"], entry["versus"]),
                         metric_label(lang, key), f"{number(lang, diff['mean'], 3)} [{number(lang, lo, 3)}; "
                                                  f"{number(lang, hi, 3)}]"])
    return pd.DataFrame(rows, columns=[tr(lang, "col_run"), tr(lang, "col_versus"), tr(lang, "col_metric"),
                                       tr(lang, "col_difference")])


def objective_table(v: View, lang: str) -> pd.DataFrame:
    """The objective × adapter table (greedy ROUGE-L, and an adversarial row's paired difference to its twin): what
    the adversarial objective adds, on which adapter. Empty unless two objectives were compared."""
    if len({c["objective"] for c in v.objectives}) < 2:
        return pd.DataFrame()
    names = {r.name: display_name(r, lang) for r in v.rows}
    adapters = list(dict.fromkeys(c["adapter"] for c in v.objectives))
    table = []
    for kind in ("mle", "explicit", "implicit"):
        mine = {c["adapter"]: c for c in v.objectives if c["objective"] == kind}
        if not mine:
            continue
        cells = []
        for adapter in adapters:
            c = mine.get(adapter)
            if c is None or c.get("rougeL") is None:
                cells.append("—")
                continue
            text = f"{names.get(c['row'], c['row'])}: {number(lang, c['rougeL'], 3)}"
            diff = (c.get("vs_twin") or {}).get("rougeL")
            if diff:
                lo, hi = diff["ci"]
                text += " · " + tr(lang, "vs_twin", diff=number(lang, diff["mean"], 3), lo=number(lang, lo, 3),
                                   hi=number(lang, hi, 3))
            cells.append(text)
        table.append([tr(lang, f"objective_{kind}"), *cells])
    return pd.DataFrame(table, columns=[tr(lang, "col_objective"), *(choice_label(lang, "adapter", a) for a in adapters)])


def unavailable_notes(v: View, lang: str) -> str:
    """Why a metric shows "—": the library's reason, quoted as it is (a technical line), after the page's words."""
    lines = []
    for key in ("bleurt", "semantic"):
        reason = v.notes.get(key)
        if reason and "unavailable" in str(reason) and any(r.values.get(key) is None for r in evaluated_rows(v)):
            said = f"`{reason}`" if lang == "en" else reason_text(lang, str(reason))
            lines.append(f"{tr(lang, 'metric_unavailable', metric=metric_label(lang, key))} {said}")
    return "\n\n".join(lines)


def _setting_value(lang: str, name: str, value: Any) -> str:
    """A setting's value as the page says it: a choice in words, a number in the page's locale, else as JSON."""
    if "choices" in CONFIG_FIELDS[name].metadata:
        return choice_label(lang, name, value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return exact(lang, value)
    return json.dumps(value)


def config_diff(engine: Engine, run_ids: list[str], lang: str) -> pd.DataFrame:
    """Settings that differ between the selected runs (one column a run); no rows when none differ."""
    configs = []
    for run_id in _selected_names(run_ids):
        try:
            configs.append((run_id, engine.runs.folder(run_id).read_config()[0].to_dict()))
        except GantuneError:
            continue
    columns = [tr(lang, "col_setting"), *(c[0] for c in configs)]
    if len(configs) < 2:
        return pd.DataFrame(columns=columns)
    keys = [k for k in configs[0][1] if len({json.dumps(c[1].get(k)) for c in configs}) > 1 and k != "out"]
    return pd.DataFrame([[setting_name(lang, k) if lang != "en" else k, *(_setting_value(lang, k, c[1].get(k))
                                                                           for c in configs)] for k in keys],
                        columns=columns)


def describe_row(lang: str, row: str) -> str:
    """What a method row trains: its words from the catalogue, else its method, preset and settings (compare.ROWS)."""
    if (words := row_description(lang, row)) is not None:
        return words
    method, preset, extra = ROWS[row]
    settings = ", ".join(f"{setting_name(lang, k)} = {_setting_value(lang, k, v)}" for k, v in extra.items())
    key = "row_fallback" if settings else "row_fallback_plain"
    return tr(lang, key, row=row, method=choice_label(lang, "method", method),
              preset=choice_label(lang, "preset", preset), settings=settings)


def method_choices(lang: str) -> list[tuple[str, str]]:
    return [(f"{row} — {describe_row(lang, row)}", row) for row in BASELINES]


def plan_text(plan: Plan, engine: Engine, run_id: str, methods: list[str], lang: str) -> str:
    """The comparison's duration told up front: its total and parts, what the estimate rests on, what differs."""
    train = [s for s in plan.stages if s.kind == "train"]
    parts = [tr(lang, "plan_train", what=", ".join(dict.fromkeys(s.what for s in train)),
                time=duration(lang, plan.total("train")))] if train else []
    parts.append(tr(lang, "plan_eval", models=plural(lang, "models", plan.models), questions=plural(lang, "questions", plan.questions),
                    retention=plural(lang, "retention_questions", plan.retention), time=duration(lang, plan.total("evaluate"))))
    basis = " + ".join(tr(lang, b) for b in plan.basis)
    text = f"{tr(lang, 'plan', time=duration(lang, plan.seconds), parts='; '.join(parts))} {tr(lang, 'plan_basis', basis=basis)}"
    reference = engine.runs.folder(run_id).read_config()[0]
    changes = []
    for row in methods:
        mine = baseline_config(reference, row, reference.out or "")
        differ = [f"{setting_name(lang, k)} {_setting_value(lang, k, getattr(mine, k))}" for k in CONFIG_FIELDS
                  if k not in ("out", "preset") and getattr(mine, k) != getattr(reference, k)]
        if differ:
            changes.append(f"{row}: {', '.join(differ)}")
    if changes:
        text += "\n\n" + tr(lang, "plan_differ", run=run_id, changes="; ".join(changes))
    return text


def compared_runs(result: Any) -> list[str]:
    """The run ids a finished comparison made or took part in (its job's result)."""
    return list(dict.fromkeys(Path(r).name for r in (result or {}).get("runs", []))) if isinstance(result, dict) else []


@dataclass
class CompareOutputs:
    reference: gr.Dropdown
    selected: gr.Dropdown


def build(demo: gr.Blocks, engine: Engine) -> CompareOutputs:
    choices_now = [r.run for r in engine.runs.rows()]
    # what one acts on and watches first: the run, the plan, Start and Stop, the status; then the rows to train
    with gr.Row():
        reference = gr.Dropdown(choices_now, label=t("reference_run"), scale=2)
        seeds = gr.Slider(1, 5, value=1, step=1, label=t("seeds"), scale=1, buttons=[])
    plan = gr.Markdown(elem_id="gantune-compare-plan")
    with gr.Row():
        run_button = gr.Button(t("run_compare"), variant="primary")
        stop = gr.Button(t("stop"), variant="stop")
    status = gr.HTML()
    # the rows as the objective × adapter grid: adapters across, objectives down
    grid = method_grid()
    cells: list[gr.CheckboxGroup] = []
    with gr.Group(elem_id="gantune-method-grid"):
        gr.Markdown(t("methods"))
        with gr.Row():
            with gr.Column(scale=1, min_width=110):
                gr.Markdown("")
            for adapter in ADAPTERS:
                with gr.Column(scale=WIDE.get(adapter, 2), min_width=150):
                    gr.Markdown(t(f"grid_{adapter}"))
        for objective in OBJECTIVES:
            with gr.Row():
                with gr.Column(scale=1, min_width=110):
                    gr.Markdown(t(f"objective_{objective}"))
                for adapter in ADAPTERS:
                    with gr.Column(scale=WIDE.get(adapter, 2), min_width=150):
                        if not (rows := grid[(objective, adapter)]):
                            gr.Markdown("—")  # keeps the columns in line
                            continue
                        cells.append(gr.CheckboxGroup(rows, value=["lora"] if "lora" in rows else [],
                                                      show_label=False, container=False, elem_classes="gantune-cell"))
    with gr.Accordion(t("rows_explained"), open=False):
        explained = gr.Markdown(rows_text("en"))
    # the rows chosen, as the API takes them (the grid writes it)
    methods = gr.CheckboxGroup(method_choices("en"), value=["lora"], label=t("methods"), elem_id="gantune-methods",
                               visible=False)
    for box in cells:
        box.input(chosen_methods, cells, methods, show_progress="hidden", queue=False)
    seen = gr.State(None)  # the comparison job last seen (its start time, state): select its runs once it ends
    selected = gr.Dropdown(choices_now, multiselect=True, label=t("compare_runs"), elem_id="gantune-compare-runs")
    notes = gr.Markdown(t("compare_pick"))
    quality = gr.Dataframe(elem_classes="gantune-words", label=t("metrics_table"), interactive=False, wrap=True, visible=False, buttons=[],
                           column_widths=["21%", "5%", *[f"{74 / len(QUALITY):.1f}%"] * len(QUALITY)])
    with gr.Accordion(t("retention_details"), open=False, visible=False) as details:
        gr.Markdown(t("retention_details_note"))
        retention = gr.Dataframe(elem_classes="gantune-words", interactive=False, wrap=True, buttons=[], show_label=False)
    unavailable = gr.Markdown()
    paired = gr.Dataframe(elem_classes="gantune-words", label=t("paired_table"), interactive=False, wrap=True, buttons=[],
                          column_widths=["30%", "25%", "20%", "25%"])
    winner = gr.Markdown(elem_id="gantune-verdict")
    objectives = gr.Dataframe(elem_classes="gantune-words", label=t("objective_table"), interactive=False, wrap=True, visible=False, buttons=[])
    distribution = gr.Dataframe(elem_classes="gantune-words", label=t("distribution_table"), interactive=False, wrap=True, visible=False, buttons=[],
                                column_widths=["22%", *["13%"] * len(DISTRIBUTION)])
    with gr.Row():
        with gr.Column(scale=1):
            bar_metric = gr.Radio(choices=[(metric_label("en", k), k) for k in SCORES + DISTRIBUTION], value="rougeL",
                                  label=t("bar_metric"))
        bars = gr.Plot(scale=3)
    lengths = gr.Plot()
    cost = gr.Dataframe(elem_classes="gantune-words", label=t("cost_table"), interactive=False, wrap=True, visible=False, buttons=[],
                        column_widths=["26%", "10%", "10%", "9%", "11%", "10%", "12%", "12%"])
    key = gr.Radio(choices=[(tr("en", f"q_{k}"), k) for k in OVERLAY], value="mle_loss", label=t("overlay_key"))
    overlay = gr.Plot()
    diff = gr.Dataframe(label=t("config_diff"), interactive=False, wrap=True, visible=False, buttons=[])

    def on_page_load(request: gr.Request):
        """Every choice's label in the page's language."""
        lang = language(request)
        return (gr.update(choices=method_choices(lang)),
                gr.update(choices=[(metric_label(lang, k), k) for k in SCORES + DISTRIBUTION]),
                gr.update(choices=[(tr(lang, f"q_{k}"), k) for k in OVERLAY]), rows_text(lang))

    demo.load(on_page_load, None, [methods, bar_metric, key, explained], show_progress="hidden")

    def on_plan(ref, chosen, n_seeds, request: gr.Request):
        """How long the comparison will take, before it starts (the model is timed when it is loaded already)."""
        lang = language(request)
        if not ref:
            return ""
        try:
            run = engine.runs.folder(ref)
            config = run.read_config()[0]
            base = engine.models.loaded(config.model, config.gguf_file)
            made = plan_comparison(run, list(chosen or []), int(n_seeds or 1), engine.settings.retention_n, base,
                                   engine.runs.pace_hint, eval_pace=engine.runs.eval_pace_hint(config))
            return plan_text(made, engine, ref, list(chosen or []), lang)
        except GantuneError as exc:
            return error_text(exc, lang)

    gr.on([reference.change, methods.change, seeds.release], on_plan, [reference, methods, seeds], plan,
          show_progress="hidden", api_name="compare_plan")

    def on_run(ref, chosen, n_seeds, request: gr.Request):
        lang = language(request)
        try:
            if not ref:
                raise GantuneError("pick a run to compare against first", key="pick_reference_first")
            job = engine.start_comparison(ref, chosen or [], int(n_seeds or 1))
        except GantuneError as exc:
            warn(exc, lang)
            return progress_html(engine.jobs.status("compare"), lang, idle="idle_compare")
        return progress_html(job, lang, idle="idle_compare")

    run_button.click(on_run, [reference, methods, seeds], status, api_name="compare", show_progress="hidden")

    def on_stop(request: gr.Request):
        return progress_html(engine.jobs.stop("compare"), language(request), idle="idle_compare")

    stop.click(on_stop, None, status, api_name="stop_compare", show_progress="hidden")

    def show(run_ids, metric, quantity, request: gr.Request):
        lang = language(request)
        # empty tables first: Gradio 6.17 draws only one row of a table that grows from one row to more
        # until it is redrawn (gradio-app/gradio#13611)
        yield gr.skip(), [], gr.skip(), gr.skip(), [], [], [], gr.skip(), gr.skip(), gr.skip(), [], gr.skip(), [], \
            gr.skip()
        v = view(engine, run_ids)
        q, d, c = tables(v, lang)
        names = run_names(v, lang)
        curves = {}
        for run_id in _selected_names(run_ids):
            try:
                curves[names.get(run_id, run_id)] = engine.runs.folder(run_id).read_metrics()
            except GantuneError:
                continue
        d_rows = ([v.reference] if v.reference else []) + evaluated_rows(v)
        bar_rows = [{"name": display_name(r, lang), **r.values, "ci": r.ci} for r in d_rows]
        histogram = {display_name(r, lang): r.lengths for r in d_rows}
        differ = config_diff(engine, run_ids, lang)
        pairs = paired_table(v, lang)
        some = bool(evaluated_rows(v))
        text = tr(lang, "interval_note") if some else tr(lang, "compare_pick")
        for report, reason in engine.runs.damaged_comparisons():  # listed as damaged, as the Runs tab lists runs
            text += "\n\n⚠ " + tr(lang, "comparison_damaged", name=report, reason=engine.policy.shown(reason))
        if len(pairs):
            text += " " + tr(lang, "paired_note")
        grid = objective_table(v, lang)
        kept = retention_table(v, lang)
        yield (text, gr.update(value=q, visible=some), unavailable_notes(v, lang),
               pairs, gr.update(value=grid, visible=bool(len(grid))), gr.update(value=d, visible=some),
               gr.update(value=c, visible=bool(len(c))),
               plots.for_page(plots.metric_bars(bar_rows, metric, lang), lang),
               plots.for_page(plots.answer_lengths(histogram, lang), lang),
               plots.for_page(plots.overlay(curves, quantity, lang), lang),
               gr.update(value=differ, visible=bool(len(differ))), verdict_text(v, lang), kept,
               gr.update(visible=bool(len(kept))))

    outputs = [notes, quality, unavailable, paired, objectives, distribution, cost, bars, lengths, overlay, diff,
               winner, retention, details]
    # one redraw at a time, the latest: two overlapping redraws would interleave their parts
    gr.on([selected.change, key.change, bar_metric.change, demo.load], show, [selected, bar_metric, key], outputs,
          show_progress="hidden", api_name="compare_view", concurrency_limit=1, trigger_mode="always_last")

    def refresh(last, current, request: gr.Request):
        """This tab's job; its runs are shown as soon as it starts making them, and all of them once it ends."""
        lang = language(request)
        job = engine.jobs.status("compare")
        mark = (job.started, job.state, job.run)
        if mark == last or last is None and current or not (job.active or job.state in ("completed", "stopped")):
            return progress_html(job, lang, idle="idle_compare"), gr.skip(), mark
        runs = compared_runs(job.result) if not job.active else \
            list(dict.fromkeys([*(current or []), *([Path(job.run).name] if job.run else [])]))
        names = [r.run for r in engine.runs.rows()]
        shown = gr.update(choices=names, value=[r for r in runs if r in names])
        return progress_html(job, lang, idle="idle_compare"), shown, mark

    gr.on([gr.Timer(2.0).tick, demo.load], refresh, [seen, selected], [status, selected, seen], show_progress="hidden",
          api_name="compare_status")
    return CompareOutputs(reference, selected)
