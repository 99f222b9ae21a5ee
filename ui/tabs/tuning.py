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
from gantune.methods.gan.method import warmup_epochs
from gantune.monitor import watch
from gantune.runs import RunFolder
from gantune.trainer import MIN_VAL_PAIRS

from .. import plots
from ..catalogue import planned_steps, summary_or_none
from ..engine import Engine
from ..i18n import (
    CONFIG_FIELDS,
    choices,
    exact,
    field_help,
    field_label,
    language,
    metric_label,
    number,
    percent,
    plural,
    t,
    title_text,
    tr,
)
from ..jobs import JobStatus
from ..policy import PageError
from ..views import html_table, progress_html, refusal_html, warn
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
PRESETS = ("improved", "thesis")
CHOICE_FIELDS = [name for name in FIELDS if "choices" in CONFIG_FIELDS[name].metadata]
IN_VIEW = ("epochs", "batch_size", "lr", "sample_every", "val_pairs")  # what a student changes
# the rest, folded by what they act on (a setting named in none is the run's)
GROUPS = {
    "generator": ("adapter", "noise_dim", "adapter_hidden", "adapter_init", "eval_noise", "lora_r", "lora_alpha",
                  "lora_targets", "virtual_tokens", "warmup_epochs", "rollout", "rollout_temperature",
                  "samples_per_question"),
    "discriminator": ("discriminator", "d_loss", "implicit_loss", "implicit_beta", "round_epochs", "d_lr", "d_hidden",
                      "d_dropout", "d_weight_decay", "d_steps", "label_smoothing"),
    "policy": ("adv_lr", "reward", "baseline", "normalize_advantage", "kl_coef", "clip", "ppo_epochs", "pg_estimator",
               "mle_weight", "resample_for_g", "max_grad_norm"),
    "run": (),
}


def settings_groups() -> dict[str, list[str]]:
    """The settings in view (``main``) and each folded group's, every field of ``FIELDS`` in one, in its order."""
    out: dict[str, list[str]] = {"main": [n for n in FIELDS if n in IN_VIEW]}
    for group, names in GROUPS.items():
        out[group] = [n for n in FIELDS if n in names]
    grouped = {n for names in out.values() for n in names}
    out["run"] += [n for n in FIELDS if n not in grouped]
    return out


@dataclass
class TuningOutputs:
    viewed_run: gr.State  # the id of the run the plots show when no job runs (set from the Runs tab)
    status: gr.HTML


def _widget(name: str, value) -> gr.components.Component:
    meta, hint = CONFIG_FIELDS[name].metadata, _HINTS[name]
    common = {"label": t(field_label(name)), "info": t(field_help(name))}
    if "choices" in meta:
        return gr.Dropdown(choices("en", name, meta["choices"]), value=value, **common)
    if hint is bool:
        return gr.Checkbox(value=value, **common)
    if typing.get_origin(hint) is list:  # shown as "256 64 16" (_preset_values already joined it)
        return gr.Textbox(value=value, **common)
    return gr.Number(value=value, precision=0 if hint is int else None, **common)


def _preset_values(preset: str) -> list:
    return _form_values(preset_config("gan", preset))


def _form_values(config: TrainConfig) -> list:
    """A config's values as the settings form shows them (widths as "256 64 16")."""
    return [" ".join(map(str, v)) if isinstance(v, list) else v for v in (getattr(config, f) for f in FIELDS)]


def build_config(method: str, preset: str, setup: dict, values: list) -> TrainConfig:
    """Widget values → a TrainConfig, or a PageError naming a field that is not a number (by its label).

    Its values are checked where the job starts (``Engine.start_training``).
    """
    fields = {}
    for name, value in zip(FIELDS, values):
        hint = _HINTS[name]
        if typing.get_origin(hint) is list:  # "256 64 16", "q_proj, v_proj": of the list's own kind
            item = typing.get_args(hint)[0]
            try:
                fields[name] = [item(x) for x in str(value or "").replace(",", " ").split()]
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
    n_val, config = summary.n_val or 0, _config(run)
    if summary.validation and n_val < MIN_VAL_PAIRS and summary.kept_step == summary.steps:
        note = tr(lang, "kept_few", step=summary.kept_step, count=n_val, least=MIN_VAL_PAIRS)
    elif score is None:
        note = tr(lang, "kept_last", step=summary.kept_step)
    else:
        note = tr(lang, "kept_untrained" if summary.kept_step == 0 else "kept", step=summary.kept_step,
                  metric=metric_label(lang, score[0]), score=number(lang, score[1], 4), count=len(summary.validation))
    if config is not None and config.val_pairs > n_val and summary.n_train is not None:
        note += " " + tr(lang, "val_short", asked=config.val_pairs, got=n_val, train=summary.n_train + n_val)
    return note


def samples_html(samples: list[dict], config: TrainConfig | None, records: list[dict], active: bool, lang: str) -> str:
    """The latest sampled answers, newest first, each beside its question and reference answer; when there are
    none, why (the warm-up still runs, samples are off, or the run's steps met no multiple of "sample every")."""
    if not samples:
        return f"<div class='gantune-samples-empty'>{html.escape(_no_samples(config, records, active, lang))}</div>"
    rows = [[s["step"], s["question"], s["answer"], s["reference"]] for s in reversed(samples[-SAMPLE_ROWS:])]
    headers = [tr(lang, k) for k in ("col_step", "col_question", "col_sampled", "col_reference")]
    return html_table(headers, rows, ["4.5em", "26%", "calc(37% - 2.25em)", "calc(37% - 2.25em)"], "gantune-samples")


def _no_samples(config: TrainConfig | None, records: list[dict], active: bool, lang: str) -> str:
    if config is None or config.method != "gan":
        return tr(lang, "samples_none")
    if not config.sample_every:
        return tr(lang, "samples_never")
    adversarial = [r["step"] for r in records if r.get("phase") == "adversarial"]
    if active or not records:  # still to come: after the warm-up the run really has (at most epochs - 1)
        warmup = warmup_epochs(config)
        return tr(lang, "samples_warmup", epochs=plural(lang, "epochs", warmup)) if warmup else tr(lang, "samples_none")
    if not adversarial:
        return tr(lang, "samples_no_adversarial")
    return tr(lang, "samples_missed", first=adversarial[0], last=adversarial[-1], every=config.sample_every)


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
    def shown(signal: str, x: float) -> str:  # distinct-2 a number, the others shares
        return number(lang, x, 2) if signal == "diversity" else percent(lang, x)

    lines = [tr(lang, f"collapse_{f.signal}", value=shown(f.signal, f.value), reference=shown(f.signal, f.reference),
                cap=config.max_new_tokens) for f in found]
    lr = "adv_lr" if hasattr(config, "adv_lr") and config.method == "gan" else "lr"  # samples come from that phase
    more = "".join(tr(lang, "collapse_more", field=tr(lang, field_label(name)), value=exact(lang, getattr(config, name)))
                   for name in ("kl_coef", "mle_weight") if hasattr(config, name))
    advice = tr(lang, "collapse_advice", lr=tr(lang, field_label(lr)), lr_value=exact(lang, getattr(config, lr)),
                more=more)
    items = "".join(f"<li>{html.escape(line)}</li>" for line in lines)
    return (f"<div class='gantune-collapse' role='alert'><b>⚠ {html.escape(tr(lang, 'collapse_title'))}</b>"
            f"<ul>{items}</ul>{html.escape(advice)}</div>")


def status_html(engine: Engine, job: JobStatus, lang: str, viewed: str | None = None) -> str:
    """This tab's status: the latest training job, or the run the plots show when that is another one (a run picked
    in Runs: ``viewed``; nothing when the job's run was deleted); with the note of another kind of job running, and
    the kept adapter."""
    shown = _shown_run(engine, job, viewed)
    notes = []
    current = engine.jobs.status()
    if current.active and current.kind != job.kind:
        notes.append(tr(lang, "other_job", title=title_text(current, lang), state=tr(lang, "state_" + current.state)))
    if shown is not None and (job.run is None or Path(job.run).resolve() != shown.path.resolve()):
        job = run_status(shown)
    elif shown is None and job.state in ("completed", "stopped"):
        job = JobStatus()  # the job's run was deleted since: nothing to say about it (a failure still says why)
    if job.state in ("completed", "stopped") and job.run:
        notes.append(kept_note(RunFolder(job.run), lang))
    planned = planned_steps(RunFolder(job.run)) if job.run and not job.total else None
    return progress_html(job, lang, planned, [n for n in notes if n])


def run_status(run: RunFolder) -> JobStatus:
    """A finished (or stopped, crashed) run's status as its files tell it: the status line of a run picked in Runs."""
    summary = summary_or_none(run)
    config = _config(run)
    state = {"completed": "completed", "diverged": "failed"}.get(summary.status if summary else None, "stopped")
    steps = summary.steps if summary and summary.steps is not None else len(run.read_metrics())
    return JobStatus(state=state, kind="train", title=run.path.name, run=str(run.path), step=steps or 0,
                     total=(summary.total_steps if summary else None) or planned_steps(run) or 0,
                     title_key="title_train" if config else "", title_args={"preset": config.preset} if config else {},
                     message=state)


def _shown_run(engine: Engine, job: JobStatus, viewed: str | None) -> RunFolder | None:
    """The run the tab shows: the running job's, else the run picked in Runs, else the last job's while it exists."""
    if job.run and job.active:
        return RunFolder(job.run)
    if viewed is not None and (run := _known_run(engine, viewed)) is not None:
        return run
    return _known_run(engine, Path(job.run).name) if job.run else None


def build(demo: gr.Blocks, engine: Engine, setup: SetupInputs) -> TuningOutputs:
    viewed_run = gr.State(None)
    shown = gr.State(None)  # what was last drawn: skip redraws when nothing changed
    with gr.Row():
        preset = gr.Radio(choices("en", "preset", PRESETS), value="improved", label=t("preset"), scale=2)
        start = gr.Button(t("start"), variant="primary", scale=1)
        stop = gr.Button(t("stop"), variant="stop", scale=1)
    values = dict(zip(FIELDS, _preset_values("improved")))
    made: dict[str, gr.components.Component] = {}
    for group, names in settings_groups().items():
        with gr.Row() if group == "main" else gr.Accordion(t(f"group_{group}"), open=False):
            if group == "main":
                made.update((name, _widget(name, values[name])) for name in names)
                continue
            gr.Markdown(t(f"group_{group}_note"))
            for i in range(0, len(names), 3):
                with gr.Row():
                    made.update((name, _widget(name, values[name])) for name in names[i:i + 3])
    widgets = [made[name] for name in FIELDS]  # in FIELDS' order, as every handler takes them
    refusal = gr.HTML()  # a refused Start's reason, kept above the status until the next Start
    status = gr.HTML(progress_html(engine.jobs.status("train"), "en"), label=t("status"))
    collapse = gr.HTML()
    with gr.Row():
        loss_plot, game_plot = gr.Plot(), gr.Plot()
    with gr.Row():
        weight_plot, memory_plot = gr.Plot(), gr.Plot()
    gr.Markdown(f"### {t('samples')}")
    samples = gr.HTML()

    preset.change(_preset_values, preset, widgets, show_progress="hidden")

    def on_page_load(request: gr.Request):
        """The choices in the page's language; a page that opens while a job trains shows that job's settings."""
        lang = language(request)
        job = engine.jobs.status("train")
        config = _config(RunFolder(job.run)) if job.active and job.run else None
        values = _form_values(config) if config is not None else [gr.skip()] * len(FIELDS)
        updates = [gr.update(choices=choices(lang, name, CONFIG_FIELDS[name].metadata["choices"]),
                             **({"value": value} if config is not None else {}))
                   if name in CHOICE_FIELDS else value for name, value in zip(FIELDS, values)]
        preset_now = {"value": config.preset} if config is not None else {}
        return gr.update(choices=choices(lang, "preset", PRESETS), **preset_now), *updates

    demo.load(on_page_load, None, [preset, *widgets], show_progress="hidden", api_name="settings_form")

    def on_start(request: gr.Request, preset_name, *values):
        lang = language(request)
        n_setup = len(setup.as_list())
        try:
            config = build_config("gan", preset_name, setup_values(engine, *values[:n_setup]), list(values[n_setup:]))
            job = engine.start_training(config)
        except GantuneError as exc:  # a toast, and the same words above the status (a toast fades)
            warn(exc, lang)
            return refusal_html(exc, lang), status_html(engine, engine.jobs.status("train"), lang), gr.skip()
        return "", status_html(engine, job, lang), Path(job.run).name

    start.click(on_start, [preset, *setup.as_list(), *widgets], [refusal, status, viewed_run], api_name="start",
                show_progress="hidden")

    def on_stop(request: gr.Request):
        return status_html(engine, engine.jobs.stop("train"), language(request))

    stop.click(on_stop, None, status, api_name="stop", show_progress="hidden")

    drawn: dict = {}  # language -> (key, figures) last drawn, shared by every page: one draw per step, not per page

    def figures(run_id: str | None, records: list[dict], validation: list[dict], config: TrainConfig | None,
                lang: str) -> tuple:
        # a run's name is never reused; a resumed run rewrites its later steps, with other timings
        key = (run_id, len(records), records[-1].get("seconds") if records else None, len(validation))
        last = drawn.get(lang)
        if last is None or last[0] != key:
            warmup = warmup_epochs(config) if config is not None and config.method == "gan" else 0
            made = (plots.losses(records, lang, validation), plots.game(records, lang, warmup), plots.weights(records, lang),
                    plots.memory(records, lang))
            last = drawn[lang] = (key, tuple(plots.for_page(f, lang) for f in made))
        return last[1]

    def refresh(viewed, last, request: gr.Request):
        lang = language(request)
        job = engine.jobs.status("train")
        run = _shown_run(engine, job, viewed)
        try:  # samples.jsonl is appended just after a step's metrics line
            records, samples_now = (run.read_metrics(), run.read_samples()) if run else ([], [])
        except GantuneError:  # a damaged run file (a FIFO, a link): no curves, and the page answers on
            records, samples_now = [], []
        try:  # the scores no step record holds (step 0's), from the checkpoint or the summary
            validation = run.read_validation() if run else []
        except GantuneError:
            validation = []
        run_id = run.path.name if run else None
        signature = (run_id, len(records), len(samples_now), len(validation), job.state, lang)
        status_now = status_html(engine, job, lang, viewed)
        if signature == last:
            return status_now, *(gr.skip(),) * 6, last
        config = _config(run)
        active = job.active and run is not None and job.run is not None and Path(job.run).name == run_id
        return (status_now, *figures(run_id, records, validation, config, lang),
                samples_html(samples_now, config, records, active, lang),
                collapse_html(engine, samples_now, config, lang), signature)

    outputs = [status, loss_plot, game_plot, weight_plot, memory_plot, samples, collapse, shown]
    # every 2 s, and at once when a page (re)loads: a reloaded page re-attaches to the running job
    gr.on([gr.Timer(2.0).tick, demo.load], refresh, [viewed_run, shown], outputs, show_progress="hidden",
          api_name="status")
    return TuningOutputs(viewed_run=viewed_run, status=status)
