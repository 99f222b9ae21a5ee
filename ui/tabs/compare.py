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

from gantune.compare import ROWS
from gantune.errors import GantuneError
from gantune.runs import RunSummary

from .. import plots
from ..catalogue import eval_or_none, json_or_none, summary_or_none
from ..engine import Engine
from ..i18n import language, t, tr
from ..views import error_text, progress_html

# every comparison row but the GAN itself (gantune.compare.ROWS): the other methods, then the GAN's variants
BASELINES = sorted((row for row in ROWS if row != "gan"), key=lambda row: ROWS[row][0] == "gan")
QUALITY = ["rouge1", "rouge2", "rougeL", "rougeLsum", "bleurt", "semantic", "retention", "retention_rougeL"]
DISTRIBUTION = ["length_mean", "length_w1", "truncated", "distinct1", "distinct2", "real_vs_generated_auc"]
COST = ["train_seconds", "peak_memory_mb", "trainable_params", "tokens_per_s"]
OVERLAY = list(plots.COMPARABLE)


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


@dataclass
class View:
    rows: list[Row]
    reference: Row | None  # the reference answers' own length and distinct-n


def _selected_names(run_ids) -> list[str]:
    return [str(r) for r in (run_ids or [])]


def _row_runs(row: dict) -> list[str]:
    return [Path(r).name for r in row.get("runs") or [] if r]


def view(engine: Engine, run_ids: list[str]) -> View:
    """The rows for the selected runs: comparisons' rows for runs that took part in one, else each run's own."""
    selected = [r for r in _selected_names(run_ids) if _exists(engine, r)]
    rows: list[Row] = []
    reference, base, covered = None, None, set()
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
        if reference is None and report.get("reference"):
            recorded = _run_lengths(engine, _row_runs(hit[0]), "reference_length")
            reference = _report_row(engine, report["reference"], recorded or lengths.get("reference"))
    for run_id in selected:
        if run_id in covered:
            continue
        run = engine.runs.folder(run_id)
        ev, summary = eval_or_none(run), summary_or_none(run) or RunSummary()
        config, _ = run.read_config()
        values = {**{k: (ev or {}).get(k) for k in QUALITY + DISTRIBUTION}, "train_seconds": summary.seconds,
                  **{k: getattr(summary, k) for k in COST[1:]}}
        per_question = (ev or {}).get("per_question") or {}
        rows.append(Row(run_id, values, seeds=[config.seed], method=config.method,
                        lengths=list(per_question.get("length") or []), evaluated=ev is not None))
        if reference is None and ev and isinstance(ev.get("reference"), dict):
            reference = Row("reference", ev["reference"], seeds=[config.seed],
                            lengths=list(per_question.get("reference_length") or []))
        legacy = json_or_none(run.path / "base_eval.json")  # comparisons made before the seeds existed
        if base is None and legacy:
            base = Row("base", {k: legacy.get(k) for k in QUALITY + DISTRIBUTION}, seeds=[config.seed], method="base")
    if base is not None and rows:
        rows.insert(0, base)
    evaluated = any(r.evaluated for r in rows)
    return View(rows, reference if evaluated else None)


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
               lengths=_run_lengths(engine, runs) or list(lengths or []))


def cell(row: Row, key: str, digits: int = 3) -> str:
    """A number with half its 95% interval beside it (``0.312 ± 0.021``), or ``—``."""
    value = row.values.get(key)
    if not isinstance(value, (int, float)):
        return "—"
    interval = row.ci.get(key)
    text = f"{value:,.{digits}f}"
    if interval and interval[1] > interval[0]:
        text += f" ± {(interval[1] - interval[0]) / 2:,.{digits}f}"
    return text


def _name(row: Row, lang: str) -> str:
    return tr(lang, "row_base") if row.name == "base" else tr(lang, "row_reference") if row.name == "reference" \
        else row.name


def evaluated_rows(v: View) -> list[Row]:
    return [r for r in v.rows if r.evaluated]


def tables(v: View, lang: str) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Quality (base first) and distribution (the references first) of evaluated rows; cost with ratios to LoRA."""
    seeds = tr(lang, "col_seeds")
    scored = evaluated_rows(v)
    quality = pd.DataFrame([[_name(r, lang), " ".join(map(str, r.seeds)), *(cell(r, k) for k in QUALITY)]
                            for r in scored], columns=[tr(lang, "col_run"), seeds, *QUALITY])
    dist_rows = ([v.reference] if v.reference else []) + scored
    distribution = pd.DataFrame(
        [[_name(r, lang), *(cell(r, k, 1 if k in ("length_mean", "length_w1") else 3) for k in DISTRIBUTION)]
         for r in dist_rows], columns=[tr(lang, "col_run"), *DISTRIBUTION])
    lora = next((r for r in v.rows if r.method == "lora" and r.values.get("train_seconds")), None)
    cost_rows = []
    for r in v.rows:
        if r.name == "base":
            continue
        ratios = []
        for key in ("train_seconds", "peak_memory_mb"):
            mine, theirs = r.values.get(key), lora.values.get(key) if lora else None
            ratios.append(f"{mine / theirs:.2f}×" if mine and theirs else "—")
        cost_rows.append([r.name, r.method, cell(r, "train_seconds", 1), cell(r, "peak_memory_mb", 0),
                          cell(r, "trainable_params", 0), cell(r, "tokens_per_s", 1), *ratios])
    cost = pd.DataFrame(cost_rows, columns=[tr(lang, k) for k in (
        "col_run", "col_method", "col_train_s", "col_peak_mb", "col_trainable", "col_tokens_s", "col_time_lora",
        "col_memory_lora")])
    return quality, distribution, cost


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
    return pd.DataFrame([[k, *(json.dumps(c[1].get(k)) for c in configs)] for k in keys], columns=columns)


def compared_runs(result: Any) -> list[str]:
    """The run ids a finished comparison made or took part in (its job's result)."""
    return list(dict.fromkeys(Path(r).name for r in (result or {}).get("runs", []))) if isinstance(result, dict) else []


@dataclass
class CompareOutputs:
    reference: gr.Dropdown
    selected: gr.Dropdown


def build(demo: gr.Blocks, engine: Engine) -> CompareOutputs:
    choices = [r.run for r in engine.runs.rows()]
    with gr.Row():
        reference = gr.Dropdown(choices, label=t("reference_run"), scale=2)
        methods = gr.CheckboxGroup(BASELINES, value=["lora"], label=t("methods"), scale=3)
        seeds = gr.Slider(1, 5, value=1, step=1, label=t("seeds"), scale=1)
    with gr.Row():
        run_button = gr.Button(t("run_compare"), variant="primary")
        stop = gr.Button(t("stop"), variant="stop")
    status = gr.HTML()
    seen = gr.State(None)  # the comparison job last seen (its start time, state): select its runs once it ends
    selected = gr.Dropdown(choices, multiselect=True, label=t("compare_runs"), elem_id="gantune-compare-runs")
    notes = gr.Markdown(t("compare_pick"))
    quality = gr.Dataframe(label=t("metrics_table"), interactive=False, wrap=True, visible=False,
                           column_widths=["20%", "6%", *["9.25%"] * len(QUALITY)])
    distribution = gr.Dataframe(label=t("distribution_table"), interactive=False, wrap=True, visible=False,
                                column_widths=["22%", *["13%"] * len(DISTRIBUTION)])
    with gr.Row():
        with gr.Column(scale=1):
            bar_metric = gr.Radio(QUALITY + DISTRIBUTION, value="rougeL", label=t("bar_metric"))
        bars = gr.Plot(scale=3)
    lengths = gr.Plot()
    cost = gr.Dataframe(label=t("cost_table"), interactive=False, wrap=True, visible=False,
                        column_widths=["26%", "10%", "10%", "9%", "11%", "10%", "12%", "12%"])
    key = gr.Radio(OVERLAY, value="mle_loss", label=t("overlay_key"))
    overlay = gr.Plot()
    diff = gr.Dataframe(label=t("config_diff"), interactive=False, wrap=True, visible=False)

    def on_run(ref, chosen, n_seeds, request: gr.Request):
        lang = language(request)
        try:
            job = engine.start_comparison(ref, chosen or [], int(n_seeds or 1))
        except GantuneError as exc:
            gr.Warning(error_text(exc, lang))
            return progress_html(engine.jobs.status("compare"), lang, idle="idle_compare")
        return progress_html(job, lang, idle="idle_compare")

    run_button.click(on_run, [reference, methods, seeds], status, api_name="compare")

    def on_stop(request: gr.Request):
        return progress_html(engine.jobs.stop("compare"), language(request), idle="idle_compare")

    stop.click(on_stop, None, status, api_name="stop_compare")

    def show(run_ids, metric, quantity, request: gr.Request):
        lang = language(request)
        # empty tables first: Gradio 6.17 draws only one row of a table that grows from one row to more
        # until it is redrawn (gradio-app/gradio#13611)
        yield gr.skip(), [], [], [], gr.skip(), gr.skip(), gr.skip(), []
        v = view(engine, run_ids)
        q, d, c = tables(v, lang)
        curves = {}
        for run_id in _selected_names(run_ids):
            try:
                curves[run_id] = engine.runs.folder(run_id).read_metrics()
            except GantuneError:
                continue
        d_rows = ([v.reference] if v.reference else []) + evaluated_rows(v)
        bar_rows = [{"name": _name(r, lang), **r.values, "ci": r.ci} for r in d_rows]
        histogram = {_name(r, lang): r.lengths for r in d_rows}
        differ = config_diff(engine, run_ids, lang)
        some = bool(evaluated_rows(v))
        text = tr(lang, "interval_note") if some else tr(lang, "compare_pick")
        for report, reason in engine.runs.damaged_comparisons():  # listed as damaged, as the Runs tab lists runs
            text += "\n\n⚠ " + tr(lang, "comparison_damaged", name=report, reason=engine.policy.shown(reason))
        yield (text, gr.update(value=q, visible=some), gr.update(value=d, visible=some),
               gr.update(value=c, visible=bool(len(c))), plots.metric_bars(bar_rows, metric, metric, lang),
               plots.answer_lengths(histogram, lang), plots.overlay(curves, quantity, lang),
               gr.update(value=differ, visible=bool(len(differ))))

    outputs = [notes, quality, distribution, cost, bars, lengths, overlay, diff]
    gr.on([selected.change, key.change, bar_metric.change, demo.load], show, [selected, bar_metric, key], outputs,
          show_progress="hidden", api_name="compare_view")

    def refresh(last, current, request: gr.Request):
        """This tab's job; once a comparison ends, its runs are shown (their choices come with them)."""
        lang = language(request)
        job = engine.jobs.status("compare")
        mark = (job.started, job.state)
        if job.state not in ("completed", "stopped") or mark == last or last is None and current:
            return progress_html(job, lang, idle="idle_compare"), gr.skip(), mark
        runs = compared_runs(job.result)
        names = [r.run for r in engine.runs.rows()]
        shown = gr.update(choices=names, value=[r for r in runs if r in names])
        return progress_html(job, lang, idle="idle_compare"), shown, mark

    gr.on([gr.Timer(2.0).tick, demo.load], refresh, [seen, selected], [status, selected, seen], show_progress="hidden",
          api_name="compare_status")
    return CompareOutputs(reference, selected)
