"""Runs: the runs folder as a table; open a run in the other tabs, download its adapter, delete it."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from gantune.errors import GantuneError

from ..engine import Engine
from ..i18n import t

COLUMNS = ["run", "method", "preset", "status", "steps", "seconds", "peak_memory_mb", "trainable_params",
           "evaluated", "adapter", "created"]


@dataclass
class Targets:
    """Widgets of other tabs that a run can be opened into."""

    viewed_run: gr.State
    compare_selected: gr.Dropdown
    gan_run: gr.Dropdown
    lora_run: gr.Dropdown


def table(engine: Engine) -> list[list]:
    return [[r[c] for c in COLUMNS] for r in engine.list_runs()]


def build(demo: gr.Blocks, engine: Engine, targets: Targets) -> None:
    refresh = gr.Button(t("refresh"))
    runs = gr.Dataframe(table(engine), headers=COLUMNS, label=t("runs"), interactive=False)
    selected = gr.Dropdown([r[0] for r in table(engine)], label=t("selected_run"))
    with gr.Row():
        open_run = gr.Button(t("open_run"))
        resume = gr.Button(t("resume"))
        use_in_chat = gr.Button(t("use_in_chat"))
        download = gr.DownloadButton(t("download"), interactive=False)
        delete = gr.Button(t("delete"), variant="stop")
    with gr.Row(visible=False) as confirm_row:
        confirm = gr.Button(t("confirm_delete"), variant="stop")
        cancel = gr.Button(t("cancel"))
    message = gr.Markdown()

    def on_refresh():
        rows = table(engine)
        return rows, gr.update(choices=[r[0] for r in rows])

    # also when a page (re)loads: the table's initial value is the one from when the app was built
    gr.on([refresh.click, demo.load], on_refresh, None, [runs, selected], api_name="list_runs")

    def on_row(evt: gr.SelectData):
        return evt.row_value[0] if evt.row_value else gr.skip()

    runs.select(on_row, None, selected)

    def on_select(run_id):
        if not run_id:
            return gr.update(value=None, interactive=False), ""
        try:
            return gr.update(value=str(engine.adapter_archive(run_id)), interactive=True), ""
        except GantuneError as exc:
            return gr.update(value=None, interactive=False), str(exc)

    selected.change(on_select, selected, [download, message])

    def on_open(run_id, current):
        if not run_id:
            return gr.skip(), gr.skip(), "pick a run first"
        try:
            path = str(engine.run_folder(run_id).path)
        except GantuneError as exc:
            return gr.skip(), gr.skip(), str(exc)
        names = [r["run"] for r in engine.list_runs()]
        chosen = [r for r in dict.fromkeys([*(current or []), run_id]) if r in names]
        # the choices too: Compare's own refresh runs every 5 s, and a value outside them is refused
        return path, gr.update(choices=names, value=chosen), f"showing {run_id} in GAN tuning and Compare"

    open_run.click(on_open, [selected, targets.compare_selected],
                   [targets.viewed_run, targets.compare_selected, message])

    def on_resume(run_id):
        if not run_id:
            return gr.skip(), "pick a run first"
        try:
            job = engine.resume_training(run_id)
        except GantuneError as exc:
            return gr.skip(), f"**Error:** {exc}"
        return job.run, f"resuming {run_id} from its last checkpoint: watch it in GAN tuning"

    resume.click(on_resume, selected, [targets.viewed_run, message], api_name="resume")

    def on_chat(run_id):
        rows = engine.list_runs()
        method = next((r["method"] for r in rows if r["run"] == run_id and r["adapter"]), None)
        if method in ("gan", "lora"):  # with the choices: Chat's own refresh of them runs every 5 s
            update = gr.update(choices=[r["run"] for r in rows if r["method"] == method and r["adapter"]], value=run_id)
        if method == "gan":
            return update, gr.skip(), f"{run_id} is the GAN run in Chat"
        if method == "lora":
            return gr.skip(), update, f"{run_id} is the LoRA run in Chat"
        return gr.skip(), gr.skip(), "Chat compares GAN and LoRA runs that saved an adapter; pick one of those"

    use_in_chat.click(on_chat, selected, [targets.gan_run, targets.lora_run, message])
    delete.click(lambda run_id: (gr.update(visible=bool(run_id)), f"delete {run_id}?" if run_id else "pick a run first"),
                 selected, [confirm_row, message])
    cancel.click(lambda: (gr.update(visible=False), ""), None, [confirm_row, message])

    def on_confirm(run_id):
        try:
            engine.delete_run(run_id)
            text = f"deleted {run_id}"
        except GantuneError as exc:
            text = f"**Error:** {exc}"
        rows = table(engine)
        return gr.update(visible=False), text, rows, gr.update(choices=[r[0] for r in rows], value=None)

    confirm.click(on_confirm, selected, [confirm_row, message, runs, selected], api_name="delete_run")
