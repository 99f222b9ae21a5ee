"""GAN tuning: preset and every setting, Start / Stop, progress with ETA, live plots and samples.

The page never drives training: Start hands a config to the job manager; a 2 s timer reads the
job's status and the run's metrics.jsonl and redraws. A reloaded page finds the running job there.
"""

from __future__ import annotations

import dataclasses
import html
import math
import typing
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from gantune.config import TrainConfig, preset_config
from gantune.errors import GantuneError
from gantune.runs import RunFolder

from .. import plots
from ..engine import Engine
from ..i18n import t
from ..jobs import JobStatus
from .setup import SetupInputs, setup_values

# The settings shown on this tab (model and data come from Setup).
FIELDS = ["epochs", "batch_size", "lr", "d_lr", "max_new_tokens", "max_prompt_tokens", "mle_weight", "baseline",
          "normalize_advantage", "discriminator", "d_hidden", "d_steps", "label_smoothing", "pg_estimator",
          "resample_for_g", "noise_dim", "adapter_hidden", "adapter_init", "eval_noise", "checkpoint_every",
          "sample_every"]
_HINTS = typing.get_type_hints(TrainConfig)
_META = {f.name: f.metadata for f in dataclasses.fields(TrainConfig)}


@dataclass
class TuningOutputs:
    viewed_run: gr.State  # the run the plots show when no job runs (set from the Runs tab)
    status: gr.HTML


def _widget(name: str, value) -> gr.components.Component:
    meta, hint, label = _META[name], _HINTS[name], name.replace("_", " ")
    if "choices" in meta:
        return gr.Dropdown(list(meta["choices"]), value=value, label=label, info=meta["help"])
    if hint is bool:
        return gr.Checkbox(value=value, label=label, info=meta["help"])
    if typing.get_origin(hint) is list:  # shown as "256 64 16" (_preset_values already joined it)
        return gr.Textbox(value=value, label=label, info=meta["help"])
    return gr.Number(value=value, label=label, info=meta["help"], precision=0 if hint is int else None)


def _preset_values(preset: str) -> list:
    config = preset_config("gan", preset)
    return [" ".join(map(str, v)) if isinstance(v, list) else v for v in (getattr(config, f) for f in FIELDS)]


def build_config(method: str, preset: str, setup: dict, values: list) -> TrainConfig:
    """Widget values → a validated TrainConfig, or a GantuneError naming the bad field."""
    fields = {}
    for name, value in zip(FIELDS, values):
        hint = _HINTS[name]
        if typing.get_origin(hint) is list:
            try:
                fields[name] = [int(x) for x in str(value or "").replace(",", " ").split()]
            except ValueError:
                raise GantuneError(f"{name.replace('_', ' ')}: whole numbers separated by spaces") from None
        elif hint in (int, float):
            if value is None or not math.isfinite(float(value)):
                raise GantuneError(f"{name.replace('_', ' ')} must be a finite number")
            fields[name] = int(value) if hint is int else float(value)
        else:
            fields[name] = value
    return preset_config(method, preset, **setup, **fields).validate()


def progress_html(status: JobStatus) -> str:
    """A progress bar with ETA and the job's message (or its error)."""
    if status.state == "idle":
        return "<div class='gantune-status'>No job yet. Press Start.</div>"
    share = status.step / status.total if status.total else 0.0
    eta = status.eta_seconds()
    eta_text = f" · ETA {int(eta // 60)} min {int(eta % 60)} s" if eta is not None else ""
    colour = {"failed": "#c0392b", "stopped": "#e67e22", "completed": "#27ae60"}.get(status.state, "#2c7be5")
    # text from settings, paths and exception messages is escaped: "<unk>" or a path must not become markup
    error = f"<div style='color:#c0392b'><b>Error:</b> {html.escape(status.error)}</div>" if status.error else ""
    message = "" if status.error else f" · {html.escape(status.message)}"  # a failed job's message is its error
    run = f" · run <code>{html.escape(Path(status.run).name)}</code>" if status.run else ""
    return (f"<div class='gantune-status' data-state='{status.state}'><b>{html.escape(status.title)}</b> — "
            f"{status.state}{run}"
            f"<div style='background:#eee;border-radius:4px;margin:6px 0'><div style='width:{share:.0%};"
            f"background:{colour};height:12px;border-radius:4px'></div></div>"
            f"step {status.step}/{status.total or '?'} ({share:.0%}){eta_text}{message}{error}</div>")


def _known_run(engine: Engine, path: str | None) -> str | None:
    """A run of the runs folder (by its path's name), or None: a page never reads files elsewhere."""
    try:
        return str(engine.run_folder(Path(path).name).path) if path else None
    except GantuneError:
        return None


def build(demo: gr.Blocks, engine: Engine, setup: SetupInputs) -> TuningOutputs:
    viewed_run = gr.State(None)
    shown = gr.State(None)  # (run, number of records) last drawn: skip redraws when nothing changed
    with gr.Row():
        preset = gr.Radio(["improved", "thesis"], value="improved", label=t("preset"), scale=2)
        start = gr.Button(t("start"), variant="primary", scale=1)
        stop = gr.Button(t("stop"), variant="stop", scale=1)
    with gr.Accordion(t("settings"), open=False):
        widgets = []
        for i in range(0, len(FIELDS), 3):
            with gr.Row():
                for name, value in zip(FIELDS[i:i + 3], _preset_values("improved")[i:i + 3]):
                    widgets.append(_widget(name, value))
    status = gr.HTML(progress_html(engine.jobs.status()), label=t("status"))
    with gr.Row():
        loss_plot, game_plot = gr.Plot(), gr.Plot()
    with gr.Row():
        weight_plot, memory_plot = gr.Plot(), gr.Plot()
    samples = gr.Dataframe(headers=["step", "question", "sampled answer", "reference"], label=t("samples"), wrap=True)

    preset.change(_preset_values, preset, widgets)

    def on_start(preset_name, *values):
        n_setup = len(setup.as_list())
        try:
            config = build_config("gan", preset_name, setup_values(engine, *values[:n_setup]), list(values[n_setup:]))
            status_now = engine.start_training(config)
        except GantuneError as exc:
            gr.Warning(str(exc))
            return progress_html(engine.jobs.status()), gr.skip()
        return progress_html(status_now), status_now.run

    start.click(on_start, [preset, *setup.as_list(), *widgets], [status, viewed_run], api_name="start")
    stop.click(lambda: progress_html(engine.jobs.stop()), None, status, api_name="stop")

    drawn: list = [None]  # (key, figures) last drawn, shared by every page: one draw per step, not one per page

    def figures(run, records) -> tuple:
        # a run's name is never reused; a resumed run rewrites its later steps, with other timings
        key = (run, len(records), records[-1].get("seconds") if records else None)
        last = drawn[0]
        if last is None or last[0] != key:
            last = drawn[0] = (key, (plots.losses(records), plots.game(records), plots.weights(records),
                                     plots.memory(records)))
        return last[1]

    def refresh(viewed, last):
        job = engine.jobs.status()
        run = job.run if job.run and (job.active or viewed is None) else _known_run(engine, viewed)
        records = RunFolder(run).read_metrics() if run else []
        samples = RunFolder(run).read_samples() if run else []  # appended just after a step's metrics line
        signature = (run, len(records), len(samples), job.state)
        if signature == last:
            return progress_html(job), *(gr.skip(),) * 5, last
        sample_rows = [[s["step"], s["question"], s["answer"], s["reference"]] for s in samples[-6:]]
        return progress_html(job), *figures(run, records), sample_rows, signature

    outputs = [status, loss_plot, game_plot, weight_plot, memory_plot, samples, shown]
    # every 2 s, and at once when a page (re)loads: a reloaded page re-attaches to the running job
    gr.on([gr.Timer(2.0).tick, demo.load], refresh, [viewed_run, shown], outputs, show_progress="hidden",
          api_name="status")
    return TuningOutputs(viewed_run=viewed_run, status=status)
