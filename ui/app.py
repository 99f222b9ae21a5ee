"""The workbench: five tabs over one engine (its jobs, and the policy, models and runs folder they use)."""

from __future__ import annotations

import json
import warnings

import gradio as gr

from .engine import Engine
from .i18n import I18N, LANGUAGES, language, t, tr
from .tabs import chat, compare, runs, setup, tuning
from .tabs.chat import run_choices
from .views import CSS

# Gradio 6.17 reads starlette's renamed HTTP_422 constant on every queued call: one warning a request
_HTTP_422 = "'HTTP_422_UNPROCESSABLE_ENTITY' is deprecated"

# Gradio 6.17 leaves a toast's head ("Warning", whatever gr.Warning's title) and its close button in English, and
# a few accessible names too, whatever the page's language ("number input for …" and
# "range slider for …" on a slider, "chatbot conversation" on a chat's log, "user's message: …") and none on the
# "Runs to show" multiselect: each gets the (translated) label of its own block, or its own words. Plotly draws a figure at 700 px when its tab is hidden and never looks again:
# each plot is resized whenever its box changes size (a tab shown, the window resized).
_PAGE_SCRIPT = """
() => {
  const catalogue = __WORDS__;  // a toast's head ("Warning") and close button, in the browser's first spoken language
  const spoken = (navigator.languages || [navigator.language]).map(tag => tag.toLowerCase().split('-')[0]);
  const words = catalogue[spoken.find(tag => tag in catalogue) || 'en'];
  const label = el => {
    const block = el.closest('.block');
    const info = block && block.querySelector('[data-testid="block-info"], [data-testid="block-label"]');
    return info ? info.textContent.trim() : null;
  };
  const rename = () => {
    document.querySelectorAll('input[aria-label^="number input for"], input[aria-label^="range slider for"], '
                              + '[role="log"][aria-label="chatbot conversation"], #gantune-compare-runs input')
      .forEach(el => {
        const name = label(el);
        if (name && el.getAttribute('aria-label') !== name) el.setAttribute('aria-label', name);
      });
    // a message's own words are its name; landmarks need none
    document.querySelectorAll('[aria-label*="s message: "]').forEach(el =>
      el.setAttribute('aria-label', el.getAttribute('aria-label').replace(/^(user|bot)'s message: /, '')));
    document.querySelectorAll('[aria-label="Gradio footer navigation"], [aria-label="Table actions"]').forEach(el =>
      el.removeAttribute('aria-label'));
    document.querySelectorAll('.toast-title.warning').forEach(el => {
      const head = el.firstChild;
      if (head && head.nodeType === 3 && head.textContent.trim() === 'Warning') head.textContent = words.warning + ' ';
    });
    document.querySelectorAll('[data-testid="toast-close"][aria-label="Close"]').forEach(el =>
      el.setAttribute('aria-label', words.close));
  };
  const plots = new Map();
  const resizer = new ResizeObserver(entries => entries.forEach(entry => {
    const plot = plots.get(entry.target);
    if (plot && plot.isConnected && plot.offsetParent && window.Plotly && plot._fullLayout) window.Plotly.Plots.resize(plot);
  }));
  const watch = () => document.querySelectorAll('.js-plotly-plot').forEach(plot => {
    const box = plot.closest('.block') || plot.parentElement;
    if (box && plots.get(box) !== plot) { plots.set(box, plot); resizer.observe(box); }
  });
  rename();
  watch();
  let queued = false;  // once a frame, however many changes
  new MutationObserver(() => {
    if (queued) return;
    queued = true;
    requestAnimationFrame(() => { queued = false; rename(); watch(); });
  }).observe(document.body, {childList: true, subtree: true});
}
"""


def build_app(engine: Engine) -> gr.Blocks:
    with gr.Blocks(title="gantune") as demo:
        gr.Markdown(f"# {t('title')}")
        gr.Markdown(t("intro"))
        if engine.settings.space:
            gr.Markdown(t("space_hint"))
        with gr.Tabs() as tabs:
            with gr.Tab(t("tab_setup")):
                setup_inputs = setup.build(demo, engine)
            with gr.Tab(t("tab_gan"), id=runs.GAN_TAB):
                tuning_outputs = tuning.build(demo, engine, setup_inputs)
            with gr.Tab(t("tab_compare")):
                compare_outputs = compare.build(demo, engine)
            with gr.Tab(t("tab_chat")):
                gan_run, lora_run = chat.build(engine, setup_inputs)
            with gr.Tab(t("tab_runs")):
                runs_table, runs_selected = runs.build(demo, engine, runs.Targets(
                    tuning_outputs.viewed_run, compare_outputs.selected, gan_run, lora_run, tabs))
        seen = gr.State(None)

        def refresh_lists(last, request: gr.Request):
            """Every list of runs, read again on a page's load and whenever the runs change (a job ends …)."""
            lang = language(request)
            signature = (engine.runs.signature(), lang)
            if signature == last:
                yield *(gr.skip(),) * 6, last
                return
            rows = engine.runs.rows()
            names = [r.run for r in rows]
            # the table empty first: Gradio 6.17 draws only one row of a table that grows from one row (gradio#13611)
            yield *(gr.skip(),) * 4, runs.table([], lang), gr.skip(), gr.skip()
            yield (gr.update(choices=names), gr.update(choices=names), gr.update(choices=run_choices(rows, "gan")),
                   gr.update(choices=run_choices(rows, "lora")), runs.table(rows, lang), gr.update(choices=names),
                   signature)

        gr.on([gr.Timer(2.0).tick, demo.load], refresh_lists, seen,
              [compare_outputs.reference, compare_outputs.selected, gan_run, lora_run, runs_table, runs_selected, seen],
              show_progress="hidden", api_name="refresh_lists")
        words = {lang: {"warning": tr(lang, "warning_title"), "close": tr(lang, "toast_close")} for lang in LANGUAGES}
        demo.load(None, js=_PAGE_SCRIPT.replace("__WORDS__", json.dumps(words, ensure_ascii=False)))
    return demo


# How often Gradio's queue looks for work while it has none (seconds): its own 1 ms and 10 ms kept an idle server at
# ~5 % of a core on a quiet 2-core CPU (~0.4 of one on a busy one) with no page open; 50 ms and 100 ms keep it under
# 1 %, and an event waits at most 50 ms more to start (a page's polls come every 2 s)
QUEUE_IDLE_POLL = 0.05
PROGRESS_IDLE_POLL = 0.1


def quiet_queue(demo: gr.Blocks) -> None:
    """Slow the queue's idle polling loops (Gradio 6.17's ``Queue`` attributes; left alone where a later Gradio
    has none of that name)."""
    queue = getattr(demo, "_queue", None)
    if queue is not None and hasattr(queue, "sleep_when_free") and hasattr(queue, "progress_update_sleep_when_free"):
        queue.sleep_when_free = max(queue.sleep_when_free, QUEUE_IDLE_POLL)
        queue.progress_update_sleep_when_free = max(queue.progress_update_sleep_when_free, PROGRESS_IDLE_POLL)


def launch(engine: Engine, **kwargs) -> tuple[gr.Blocks, str | None, str | None]:
    """Start the server; returns (the Blocks, local URL, share URL): ``demo.close()`` stops it.

    (Gradio's own launch() returns the FastAPI app first; the Blocks is what a caller can close.)
    With ``prevent_thread_lock=True`` this returns at once; otherwise when the server stops.
    """
    warnings.filterwarnings("ignore", message=_HTTP_422)
    demo = build_app(engine)
    demo.queue(default_concurrency_limit=4)
    quiet_queue(demo)
    max_file_size = int(engine.settings.max_upload_mb * 2**20)  # bytes: Gradio refuses bigger uploads as they come
    # no allowed_paths: no file of the runs folder is served (config.json names server paths); the adapter .zip
    # is made in a temporary folder, which Gradio copies to its cache when a download offers it. No Settings link:
    # its theme, language, Screen Studio and PWA panels are Gradio's, in English, and the page's language is the
    # browser's (Accept-Language), not a choice there
    _, local_url, share_url = demo.launch(i18n=I18N, css=CSS, max_file_size=max_file_size, footer_links=["api", "gradio"],
                                          **kwargs)
    return demo, local_url, share_url
