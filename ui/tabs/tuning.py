"""GAN tuning: preset and every setting, Start / Stop, progress with time left, live plots, the
answers sampled during training and a warning when they collapse.

The page never drives training: Start hands a config to the job manager; a 2 s timer reads the
latest training job's status and the run's metrics.jsonl / samples.jsonl and redraws. A reloaded
page finds the running job there. Comparison jobs have a tab of their own and never show here.
"""

from __future__ import annotations

import dataclasses
import html
import math
import typing
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from gantune.config import RunSettings, TrainConfig, preset_config
from gantune.errors import GantuneError
from gantune.methods import METHODS
from gantune.monitor import watch
from gantune.runs import RunFolder

from .. import plots
from ..catalogue import planned_steps, summary_or_none
from ..engine import Engine
from ..i18n import CONFIG_FIELDS, field_help, field_label, language, t, tr
from ..jobs import JobStatus
from ..policy import PageError
from ..views import error_text, html_table, progress_html, title_text
from .setup import SetupInputs, setup_values

# Every setting a GAN run reads (the run's section and the GAN's, see gantune.methods.METHODS) but the
# model and data (Setup's) and the run's identity.
NOT_HERE = {"method", "preset", "out", "device", "model", "gguf_file", "trust_remote_code", "data", "subset", "n",
            "train_fraction", "seed"}
FIELDS = [f.name for section in (RunSettings, *METHODS["gan"].sections) for f in dataclasses.fields(section)
          if f.name not in NOT_HERE]
_HINTS = typing.get_type_hints(TrainConfig)
SAMPLE_ROWS = 10  # newest first
WATCH_ANSWERS = 8  # the latest sampled answers the collapse watch reads


@dataclass
class TuningOutputs:
    viewed_run: gr.State  # the id of the run the plots show when no job runs (set from the Runs tab)
    status: gr.HTML


def _widget(name: str, value) -> gr.components.Component:
    meta, hint = CONFIG_FIELDS[name].metadata, _HINTS[name]
    common = {"label": t(field_label(name)), "info": t(field_help(name))}
    if "choices" in meta:
        return gr.Dropdown(list(meta["choices"]), value=value, **common)
    if hint is bool:
        return gr.Checkbox(value=value, **common)
    if typing.get_origin(hint) is list:  # shown as "256 64 16" (_preset_values already joined it)
        return gr.Textbox(value=value, **common)
    return gr.Number(value=value, precision=0 if hint is int else None, **common)


def _preset_values(preset: str) -> list:
    config = preset_config("gan", preset)
    return [" ".join(map(str, v)) if isinstance(v, list) else v for v in (getattr(config, f) for f in FIELDS)]


def build_config(method: str, preset: str, setup: dict, values: list) -> TrainConfig:
    """Widget values → a TrainConfig, or a PageError naming a field that is not a number (by its label).

    Its values are checked where the job starts (``Engine.start_training``).
    """
    fields = {}
    for name, value in zip(FIELDS, values):
        hint = _HINTS[name]
        if typing.get_origin(hint) is list:
            try:
                fields[name] = [int(x) for x in str(value or "").replace(",", " ").split()]
            except ValueError:
                raise PageError("bad_widths", name_key=field_label(name)) from None
        elif hint in (int, float):
            if value is None or not math.isfinite(float(value)):
                raise PageError("not_finite", name_key=field_label(name))
            fields[name] = int(value) if hint is int else float(value)
        else:
            fields[name] = value
    return preset_config(method, preset, **setup, **fields)


def _known_run(engine: Engine, run_id: str | None) -> RunFolder | None:
    """A run of the runs folder by its id, or None: a page never reads files elsewhere."""
    try:
        return engine.runs.folder(run_id) if run_id else None
    except GantuneError:
        return None


def _config(run: RunFolder | None) -> TrainConfig | None:
    try:
        return run.read_config()[0] if run else None
    except GantuneError:
        return None


def kept_note(run: RunFolder, lang: str) -> str:
    """Which step's adapter a finished run kept, and why (from its summary.json), or ''."""
    summary = summary_or_none(run)
    if summary is None or summary.kept_step is None:
        return ""
    best = next((v for v in summary.validation if v.get("step") == summary.kept_step), None)
    score = next(((k.removeprefix("val_"), v) for k, v in (best or {}).items() if k.startswith("val_")), None)
    if score is None:
        return tr(lang, "kept_last", step=summary.kept_step)
    return tr(lang, "kept", step=summary.kept_step, metric=score[0], score=f"{score[1]:.4f}",
              count=len(summary.validation))


def samples_html(samples: list[dict], config: TrainConfig | None, lang: str) -> str:
    """The latest sampled answers, newest first, each beside its question and reference answer."""
    if not samples:
        warmup = getattr(config, "warmup_epochs", 0) if config is not None and config.method == "gan" else 0
        note = tr(lang, "samples_warmup", epochs=warmup) if warmup else tr(lang, "samples_none")
        return f"<div class='gantune-samples-empty'>{html.escape(note)}</div>"
    rows = [[s["step"], s["question"], s["answer"], s["reference"]] for s in reversed(samples[-SAMPLE_ROWS:])]
    headers = [tr(lang, k) for k in ("col_step", "col_question", "col_sampled", "col_reference")]
    return html_table(headers, rows, ["4.5em", "26%", "calc(37% - 2.25em)", "calc(37% - 2.25em)"], "gantune-samples")


def collapse_html(engine: Engine, samples: list[dict], config: TrainConfig | None, lang: str) -> str:
    """A visible warning naming the signs of collapse in the latest samples and the settings to change ('' if none)."""
    latest = samples[-WATCH_ANSWERS:]
    if config is None or not latest:
        return ""
    tokenizer = engine.models.loaded_tokenizer(config.model, config.gguf_file)
    count = (lambda text: len(tokenizer(text, add_special_tokens=False).input_ids)) if tokenizer is not None else None
    found = watch([s["answer"] for s in latest], [s["reference"] for s in latest], count, config.max_new_tokens)
    if not found:
        return ""
    lines = [tr(lang, f"collapse_{f.signal}", value=f.value, reference=f.reference, cap=config.max_new_tokens)
             for f in found]
    lr = "adv_lr" if hasattr(config, "adv_lr") and config.method == "gan" else "lr"  # samples come from that phase
    more = "".join(tr(lang, "collapse_more", field=tr(lang, field_label(name)), value=getattr(config, name))
                   for name in ("kl_coef", "mle_weight") if hasattr(config, name))
    advice = tr(lang, "collapse_advice", lr=tr(lang, field_label(lr)), lr_value=getattr(config, lr), more=more)
    items = "".join(f"<li>{html.escape(line)}</li>" for line in lines)
    return (f"<div class='gantune-collapse' role='alert'><b>⚠ {html.escape(tr(lang, 'collapse_title'))}</b>"
            f"<ul>{items}</ul>{html.escape(advice)}</div>")


def status_html(engine: Engine, job: JobStatus, lang: str) -> str:
    """This tab's job (the latest training job) with the note of another kind of job running, and the kept adapter."""
    notes = []
    current = engine.jobs.status()
    if current.active and current.kind != job.kind:
        notes.append(tr(lang, "other_job", title=title_text(current, lang), state=tr(lang, "state_" + current.state)))
    if job.state in ("completed", "stopped") and job.run:
        notes.append(kept_note(RunFolder(job.run), lang))
    planned = planned_steps(RunFolder(job.run)) if job.run and not job.total and job.active else None
    return progress_html(job, lang, planned, [n for n in notes if n])


def build(demo: gr.Blocks, engine: Engine, setup: SetupInputs) -> TuningOutputs:
    viewed_run = gr.State(None)
    shown = gr.State(None)  # what was last drawn: skip redraws when nothing changed
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
    status = gr.HTML(progress_html(engine.jobs.status("train"), "en"), label=t("status"))
    collapse = gr.HTML()
    with gr.Row():
        loss_plot, game_plot = gr.Plot(), gr.Plot()
    with gr.Row():
        weight_plot, memory_plot = gr.Plot(), gr.Plot()
    gr.Markdown(f"### {t('samples')}")
    samples = gr.HTML()

    preset.change(_preset_values, preset, widgets)

    def on_start(request: gr.Request, preset_name, *values):
        lang = language(request)
        n_setup = len(setup.as_list())
        try:
            config = build_config("gan", preset_name, setup_values(engine, *values[:n_setup]), list(values[n_setup:]))
            job = engine.start_training(config)
        except GantuneError as exc:  # a toast, and the same words above the status (a toast fades after 10 s)
            gr.Warning(error_text(exc, lang))
            refusal = f'<p class="gantune-refusal">⚠ {html.escape(error_text(exc, lang))}</p>'
            return refusal + status_html(engine, engine.jobs.status("train"), lang), gr.skip()
        return status_html(engine, job, lang), Path(job.run).name

    start.click(on_start, [preset, *setup.as_list(), *widgets], [status, viewed_run], api_name="start")
    def on_stop(request: gr.Request):
        return status_html(engine, engine.jobs.stop("train"), language(request))

    stop.click(on_stop, None, status, api_name="stop")

    drawn: dict = {}  # language -> (key, figures) last drawn, shared by every page: one draw per step, not per page

    def figures(run_id: str | None, records: list[dict], lang: str) -> tuple:
        # a run's name is never reused; a resumed run rewrites its later steps, with other timings
        key = (run_id, len(records), records[-1].get("seconds") if records else None)
        last = drawn.get(lang)
        if last is None or last[0] != key:
            last = drawn[lang] = (key, (plots.losses(records, lang), plots.game(records, lang),
                                        plots.weights(records, lang), plots.memory(records, lang)))
        return last[1]

    def refresh(viewed, last, request: gr.Request):
        lang = language(request)
        job = engine.jobs.status("train")
        run = RunFolder(job.run) if job.run and (job.active or viewed is None) else _known_run(engine, viewed)
        try:  # samples.jsonl is appended just after a step's metrics line
            records, samples_now = (run.read_metrics(), run.read_samples()) if run else ([], [])
        except GantuneError:  # a damaged run file (a FIFO, a link): no curves, and the page answers on
            records, samples_now = [], []
        run_id = run.path.name if run else None
        signature = (run_id, len(records), len(samples_now), job.state, lang)
        status_now = status_html(engine, job, lang)
        if signature == last:
            return status_now, *(gr.skip(),) * 6, last
        config = _config(run)
        return (status_now, *figures(run_id, records, lang), samples_html(samples_now, config, lang),
                collapse_html(engine, samples_now, config, lang), signature)

    outputs = [status, loss_plot, game_plot, weight_plot, memory_plot, samples, collapse, shown]
    # every 2 s, and at once when a page (re)loads: a reloaded page re-attaches to the running job
    gr.on([gr.Timer(2.0).tick, demo.load], refresh, [viewed_run, shown], outputs, show_progress="hidden",
          api_name="status")
    return TuningOutputs(viewed_run=viewed_run, status=status)
