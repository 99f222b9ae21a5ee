"""Runs: the runs folder as a table; open a run in the other tabs, download its adapter, delete it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import pandas as pd

from gantune.errors import GantuneError
from gantune.share import push

from ..catalogue import DAMAGED, RunRow
from ..engine import Engine
from ..i18n import choice_label, language, number, t, tr
from ..policy import PageError
from ..views import error_markdown
from .chat import run_choices

COLUMNS = ["run", "method", "preset", "status", "steps", "seconds", "peak_memory_mb", "trainable_params",
           "evaluated", "adapter", "created"]
HEADERS = ["col_run", "col_method", "col_preset", "col_status", "col_steps", "col_seconds", "col_peak_memory",
           "col_params", "col_evaluated", "col_adapter", "col_created"]
WIDTHS = ["19%", "8%", "9%", "9%", "5%", "7%", "7%", "8%", "8%", "8%", "12%"]
GAN_TAB = "gan"  # the GAN tuning tab's id: "Show in GAN tuning" switches to it


@dataclass
class Targets:
    """Widgets of other tabs that a run can be opened into."""

    viewed_run: gr.State
    compare_selected: gr.Dropdown
    gan_run: gr.Dropdown
    lora_run: gr.Dropdown
    tabs: gr.Tabs


def _cell(column: str, value, lang: str):
    if isinstance(value, bool):
        return tr(lang, "yes" if value else "no")
    if column == "status" and isinstance(value, str) and value.startswith(DAMAGED):
        return tr(lang, "status_damaged", reason=value.removeprefix(DAMAGED))
    if column == "status":
        return tr(lang, f"status_{value}") if f"status_{value}" in _STATUS_KEYS else value
    if column in ("method", "preset") and isinstance(value, str):
        return choice_label(lang, column, value)
    if column in ("seconds", "peak_memory_mb") and isinstance(value, (int, float)):
        return number(lang, value, 1 if column == "seconds" else 0)
    if column == "trainable_params" and isinstance(value, int):
        return number(lang, value, 0)
    return "—" if value is None else value


_STATUS_KEYS = {"status_running", "status_completed", "status_stopped", "status_diverged", "status_unfinished"}


def table(rows: list[RunRow], lang: str = "en") -> pd.DataFrame:
    """The runs as the page shows them: headers and words in the page's language."""
    return pd.DataFrame([[_cell(c, getattr(r, c), lang) for c in COLUMNS] for r in rows],
                        columns=[tr(lang, h) for h in HEADERS])


def build(demo: gr.Blocks, engine: Engine, targets: Targets) -> tuple[gr.Dataframe, gr.Dropdown]:
    """The tab; returns its table and run picker (the app refreshes both when the runs change)."""
    refresh = gr.Button(t("refresh"))
    rows = engine.runs.rows()
    runs = gr.Dataframe(table(rows), label=t("runs"), interactive=False, wrap=True, column_widths=WIDTHS, buttons=[],
                        elem_id="gantune-runs-table")
    selected = gr.Dropdown([r.run for r in rows], label=t("selected_run"))
    with gr.Row():
        open_run = gr.Button(t("open_run"))
        resume = gr.Button(t("resume"))
        use_in_chat = gr.Button(t("use_in_chat"))
        download = gr.DownloadButton(t("download"), interactive=False)
        delete = gr.Button(t("delete"), variant="stop")
    with gr.Row(visible=False) as confirm_row:
        confirm = gr.Button(t("confirm_delete"), variant="stop")
        cancel = gr.Button(t("cancel"))
    with gr.Row():
        repo = gr.Textbox(label=t("push_repo"), scale=2)
        # a hosted page never uploads with the server's own token: only with the visitor's
        token = gr.Textbox(label=t("push_token_space" if engine.settings.space else "push_token"), type="password", scale=2)
        share = gr.Button(t("push"), scale=1)
    message = gr.Markdown()

    def on_refresh(request: gr.Request):
        lang = language(request)
        rows = engine.runs.rows()
        # empty first: Gradio 6.17 draws only one row of a table that grows from one row to more (gradio#13611)
        yield table([], lang), gr.skip()
        yield table(rows, lang), gr.update(choices=[r.run for r in rows])

    gr.on([refresh.click], on_refresh, None, [runs, selected], api_name="list_runs")

    def on_select(run_id):
        """The download button: the run's adapter as a .zip, or off when it has none (crashed, running)."""
        if not run_id:
            return gr.update(value=None, interactive=False)
        try:
            return gr.update(value=str(engine.runs.adapter_archive(run_id)), interactive=True)
        except GantuneError:
            return gr.update(value=None, interactive=False)

    # on the user's pick (Gradio 6.17 does not fire this dropdown's change event on a pick; input it does)
    selected.input(on_select, selected, download)

    def on_row(evt: gr.SelectData):
        run_id = evt.row_value[0] if evt.row_value else None
        return (run_id, on_select(run_id)) if run_id else (gr.skip(), gr.skip())

    runs.select(on_row, None, [selected, download])

    def on_open(run_id, current, request: gr.Request):
        lang = language(request)
        if not run_id:
            return gr.skip(), gr.skip(), tr(lang, "pick_run_first"), gr.skip()
        try:
            engine.runs.folder(run_id)
        except GantuneError as exc:
            return gr.skip(), gr.skip(), error_markdown(exc, lang), gr.skip()
        names = [r.run for r in engine.runs.rows()]
        chosen = [r for r in dict.fromkeys([*(current or []), run_id]) if r in names]
        # the choices too: a value outside them is refused; then the GAN tuning tab, which shows it
        return run_id, gr.update(choices=names, value=chosen), tr(lang, "showing", run=run_id), gr.Tabs(selected=GAN_TAB)

    open_run.click(on_open, [selected, targets.compare_selected],
                   [targets.viewed_run, targets.compare_selected, message, targets.tabs], show_progress="hidden")

    def on_resume(run_id, request: gr.Request):
        lang = language(request)
        if not run_id:
            return gr.skip(), tr(lang, "pick_run_first")
        try:
            job = engine.resume_training(run_id)
        except GantuneError as exc:
            return gr.skip(), error_markdown(exc, lang)
        return Path(job.run).name, tr(lang, "resuming", run=run_id)

    resume.click(on_resume, selected, [targets.viewed_run, message], api_name="resume", show_progress="hidden")

    def on_chat(run_id, request: gr.Request):
        lang = language(request)
        rows = engine.runs.rows()
        method = next((r.method for r in rows if r.run == run_id and r.adapter), None)
        if method in ("gan", "lora"):  # with the choices: a value outside them is refused
            update = gr.update(choices=run_choices(rows, method), value=run_id)
        if method == "gan":
            return update, gr.skip(), tr(lang, "in_chat_gan", run=run_id)
        if method == "lora":
            return gr.skip(), update, tr(lang, "in_chat_lora", run=run_id)
        return gr.skip(), gr.skip(), tr(lang, "chat_needs")

    use_in_chat.click(on_chat, selected, [targets.gan_run, targets.lora_run, message], show_progress="hidden")

    def on_push(run_id, repo_id, token_text, request: gr.Request):
        lang = language(request)
        if not run_id:
            return tr(lang, "pick_run_first")
        try:
            run = engine.runs.folder(run_id)
            job = engine.jobs.status()
            if job.active and job.run and Path(job.run).name == run_id:
                raise PageError("push_running", run=run_id)
            url = push(run.path, (repo_id or "").strip(), token_text, stored_token=not engine.settings.space)
        except GantuneError as exc:
            return error_markdown(exc, lang)
        return tr(lang, "pushed", run=run_id, url=url)

    share.click(on_push, [selected, repo, token], message, api_name="push", show_progress="minimal")

    def on_delete(run_id, request: gr.Request):
        lang = language(request)
        if not run_id:
            return gr.update(visible=False), tr(lang, "pick_run_first")
        return gr.update(visible=True), tr(lang, "delete_question", run=run_id)

    delete.click(on_delete, selected, [confirm_row, message], show_progress="hidden")
    cancel.click(lambda: (gr.update(visible=False), ""), None, [confirm_row, message], show_progress="hidden")

    def on_confirm(run_id, request: gr.Request):
        lang = language(request)
        try:
            engine.runs.delete(run_id)
            text = tr(lang, "deleted", run=run_id)
        except GantuneError as exc:
            text = error_markdown(exc, lang)
        rows = engine.runs.rows()
        picker = gr.update(choices=[r.run for r in rows], value=None)
        return gr.update(visible=False), text, table(rows, lang), picker, on_select(None)

    confirm.click(on_confirm, selected, [confirm_row, message, runs, selected, download], api_name="delete_run")
    return runs, selected
