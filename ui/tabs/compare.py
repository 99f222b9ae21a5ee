"""Compare: train baselines on a run's data and split, then quality and cost side by side."""

from __future__ import annotations

import json

import gradio as gr
import pandas as pd

from gantune.errors import GantuneError

from .. import plots
from ..engine import Engine
from ..i18n import t
from .tuning import progress_html

BASELINES = ["lora", "adapter-mle", "prompt-tuning", "prefix-tuning", "full", "gan-thesis"]
QUALITY = ["rouge1", "rouge2", "rougeL", "rougeLsum", "bleurt", "semantic", "retention", "retention_rougeL"]


def _read(path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _fmt(value) -> str:
    return "—" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def tables(engine: Engine, run_ids: list[str]) -> tuple[list[list], list[list], str]:
    """Quality rows (base first, when evaluated), cost rows with ratios to LoRA, and notes."""
    quality, cost, notes, lora_cost = [], [], set(), None
    runs = []
    for run_id in run_ids or []:
        try:
            runs.append(engine.run_folder(run_id))
        except GantuneError:
            continue
    base_done = False
    for run in runs:
        base_eval = _read(run.path / "base_eval.json")
        if base_eval and not base_done:
            quality.append(["base", *(_fmt(base_eval.get(k)) for k in QUALITY)])
            base_done = True
        ev, summary = _read(run.eval_path), _read(run.summary_path) or {}
        config, _ = run.read_config()
        if ev:
            quality.append([run.path.name, *(_fmt(ev.get(k)) for k in QUALITY)])
            notes.update(ev.get(k) for k in ("bleurt_note", "rouge_note") if ev.get(k))
        row = [run.path.name, config.method, summary.get("seconds"), summary.get("peak_memory_mb"),
               summary.get("trainable_params"), summary.get("tokens_per_s")]
        cost.append(row)
        if config.method == "lora" and summary:
            lora_cost = row
    for row in cost:
        for i in (2, 3):
            row.append(f"{row[i] / lora_cost[i]:.2f}×" if lora_cost and row[i] and lora_cost[i] else "—")
    return quality, cost, " · ".join(sorted(notes))


def config_diff(engine: Engine, run_ids: list[str]) -> pd.DataFrame:
    """Settings that differ between the selected runs (one column a run)."""
    configs = []
    for run_id in run_ids or []:
        try:
            configs.append((run_id, engine.run_folder(run_id).read_config()[0].to_dict()))
        except GantuneError:
            continue
    columns = ["setting", *(c[0] for c in configs)]
    if len(configs) < 2:
        return pd.DataFrame(columns=columns)
    keys = [k for k in configs[0][1] if len({json.dumps(c[1].get(k)) for c in configs}) > 1 and k != "out"]
    return pd.DataFrame([[k, *(json.dumps(c[1].get(k)) for c in configs)] for k in keys], columns=columns)


def build(engine: Engine) -> gr.Dropdown:
    choices = [r["run"] for r in engine.list_runs()]
    with gr.Row():
        reference = gr.Dropdown(choices, label=t("reference_run"), scale=2)
        methods = gr.CheckboxGroup(BASELINES, value=["lora"], label=t("methods"), scale=3)
        run_button = gr.Button(t("run_compare"), variant="primary", scale=1)
    status = gr.HTML()
    selected = gr.Dropdown(choices, multiselect=True, label=t("compare_runs"))
    notes = gr.Markdown()
    quality = gr.Dataframe(headers=["run", *QUALITY], label=t("metrics_table"))
    cost = gr.Dataframe(headers=["run", "method", "train s", "peak MB", "trainable", "tokens/s", "time/LoRA",
                                 "memory/LoRA"], label=t("cost_table"))
    key = gr.Radio(["g_loss", "d_loss", "mle_loss", "reward_mean", "adapter_norm"], value="g_loss", label=t("overlay_key"))
    overlay = gr.Plot()
    diff = gr.Dataframe(label=t("config_diff"))

    def on_run(ref, chosen):
        try:
            job = engine.start_comparison(ref, chosen or [])
        except GantuneError as exc:
            gr.Warning(str(exc))
            return progress_html(engine.jobs.status())
        return progress_html(job)

    run_button.click(on_run, [reference, methods], status, api_name="compare")

    def show(run_ids, metric):
        # empty tables first: Gradio 6.17 draws only one row of a table that grows from one row to more
        # until it is redrawn (gradio-app/gradio#13611)
        yield [], [], gr.skip(), gr.skip(), gr.skip()
        q, c, n = tables(engine, run_ids)
        curves = {}
        for run_id in run_ids or []:
            try:
                curves[run_id] = engine.run_folder(run_id).read_metrics()
            except GantuneError:
                continue
        yield q, c, n, plots.overlay(curves, metric), config_diff(engine, run_ids)

    gr.on([selected.change, key.change], show, [selected, key], [quality, cost, notes, overlay, diff])

    def refresh_choices():
        names = [r["run"] for r in engine.list_runs()]
        return gr.update(choices=names), gr.update(choices=names), progress_html(engine.jobs.status())

    gr.Timer(5.0).tick(refresh_choices, None, [reference, selected, status], show_progress="hidden")
    return selected
