"""The workbench: five tabs over one engine (models, the job manager, the runs folder)."""

from __future__ import annotations

import gradio as gr

from .engine import Engine
from .i18n import I18N, t
from .tabs import chat, compare, runs, setup, tuning

CSS = ".gantune-status { font-size: 0.95em }"


def build_app(engine: Engine) -> gr.Blocks:
    with gr.Blocks(title="gantune") as demo:
        gr.Markdown(f"# {t('title')}")
        gr.Markdown(t("intro"))
        if engine.settings.space:
            gr.Markdown(t("space_hint"))
        with gr.Tabs():
            with gr.Tab(t("tab_setup")):
                setup_inputs = setup.build(engine)
            with gr.Tab(t("tab_gan")):
                tuning_outputs = tuning.build(demo, engine, setup_inputs)
            with gr.Tab(t("tab_compare")):
                compare_selected = compare.build(engine)
            with gr.Tab(t("tab_chat")):
                gan_run, lora_run = chat.build(engine, setup_inputs)
            with gr.Tab(t("tab_runs")):
                runs.build(demo, engine, runs.Targets(tuning_outputs.viewed_run, compare_selected, gan_run, lora_run))
    return demo


def launch(engine: Engine, **kwargs) -> tuple[gr.Blocks, str | None, str | None]:
    """Start the server; returns (the Blocks, local URL, share URL): ``demo.close()`` stops it.

    (Gradio's own launch() returns the FastAPI app first; the Blocks is what a caller can close.)
    With ``prevent_thread_lock=True`` this returns at once; otherwise when the server stops.
    """
    demo = build_app(engine)
    demo.queue(default_concurrency_limit=4)
    allowed = [str(engine.settings.runs_dir.resolve())]
    max_file_size = int(engine.settings.max_upload_mb * 2**20)  # bytes: Gradio refuses bigger uploads as they come
    _, local_url, share_url = demo.launch(i18n=I18N, css=CSS, allowed_paths=allowed, max_file_size=max_file_size,
                                          **kwargs)
    return demo, local_url, share_url
