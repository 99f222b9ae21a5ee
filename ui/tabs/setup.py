"""Setup: the base model and the data (source, subset, n, split, seed), with a preview."""

from __future__ import annotations

import math
from dataclasses import dataclass

import gradio as gr
import pandas as pd

from gantune.data import OFFLINE_SUBSETS, Encoder, default_data_source
from gantune.errors import GantuneError

from .. import plots
from ..engine import Engine, PageError
from ..i18n import language, number, percent, plural, t, tr
from ..views import error_markdown, error_text

OFFLINE, HUB, UPLOAD = "offline", "hub", "upload"
KINDS = {OFFLINE: "data_offline", HUB: "data_hub", UPLOAD: "data_upload"}
RETENTION_ONLY = ("real_authors_perturbed", "world_facts_perturbed")  # retention's answer sets, not training data
HUB_SUBSETS = ["forget01", "forget05", "forget10", "full", "retain90", "retain95", "retain99", "real_authors",
               "world_facts", "forget01_perturbed", "forget05_perturbed", "forget10_perturbed", "retain_perturbed"]
TRAINING_SUBSETS = [s for s in OFFLINE_SUBSETS if s not in RETENTION_ONLY]


@dataclass
class SetupInputs:
    """The Setup tab's components that other tabs read when they start work."""

    model: gr.Textbox
    gguf_file: gr.Textbox
    trust_remote_code: gr.Checkbox
    data_kind: gr.Radio
    data_path: gr.Textbox
    upload: gr.File
    subset: gr.Dropdown
    n: gr.Number
    fraction: gr.Slider
    seed: gr.Number

    def as_list(self) -> list[gr.components.Component]:
        return [self.model, self.gguf_file, self.trust_remote_code, self.data_kind, self.data_path, self.upload,
                self.subset, self.n, self.fraction, self.seed]


def setup_values(engine: Engine, model, gguf_file, trust, kind, path, upload, subset, n, fraction, seed) -> dict:
    """Widget values (or an API request's) → TrainConfig fields for model and data; bad numbers and data sources
    are refused (the model is checked where it is loaded: ``Engine.model``, ``Engine.start_training``)."""
    model = (model or "default").strip()
    gguf_file = (gguf_file or "").strip() or None
    return {"model": model, "gguf_file": gguf_file, "trust_remote_code": bool(trust) and not engine.settings.space,
            "data": engine.policy.data_source(kind, path, upload), "subset": str(subset or "forget10"),
            "n": None if n in (None, "") else whole_number(n, "what_n"),
            "train_fraction": finite_number(fraction, "what_fraction"), "seed": whole_number(seed or 0, "what_seed")}


def finite_number(value, what: str) -> float:
    """A number box's value as a finite float, or a refusal naming the box (``what``: its catalogue key)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise PageError("not_a_number", name_key=what, value=repr(value)) from None
    if not math.isfinite(number):
        raise PageError("not_finite_got", name_key=what, value=repr(value))
    return number


def whole_number(value, what: str) -> int:
    """A number box's value as an int, or a refusal naming the box (``what``: its catalogue key)."""
    number = finite_number(value, what)
    if number != int(number):
        raise PageError("not_whole", name_key=what, value=repr(value))
    return int(number)


def kind_choices(lang: str) -> list[tuple[str, str]]:
    """The data-source choices, labelled in the page's language (Gradio leaves choice labels as they are)."""
    return [(tr(lang, key), value) for value, key in KINDS.items()]


def preview_headers(lang: str) -> list[str]:
    return [tr(lang, k) for k in ("col_split", "col_question", "col_answer")]


def build(demo: gr.Blocks, engine: Engine) -> SetupInputs:
    space = engine.settings.space
    with gr.Row():
        model = gr.Textbox(value="default", label=t("model"), info=t("model_info"), scale=3)
        gguf_file = gr.Textbox(label=t("gguf_file"), visible=not space, scale=2)
        trust = gr.Checkbox(value=False, label=t("trust_remote_code"), visible=not space, scale=1)
    load = gr.Button(t("load_model"))
    model_status = gr.Markdown()
    with gr.Row():
        kind = gr.Radio(kind_choices("en"), value=OFFLINE, label=t("data_kind"))
        path = gr.Textbox(value="" if space else engine.settings.data or default_data_source(), label=t("data_path"),
                          visible=not space)  # hosted: its own data folder, whose path the page never shows
        subset = gr.Dropdown(TRAINING_SUBSETS, value="forget10", label=t("subset"), allow_custom_value=True)
    upload = gr.File(label=t("upload"), file_types=[".jsonl", ".json", ".csv"], visible=False, type="filepath")
    with gr.Row():
        n = gr.Number(value=min(40, engine.settings.max_n) if space else 40, precision=0, label=t("n"),
                      maximum=engine.settings.max_n if space else None, minimum=0)
        # its number box hidden (views.CSS): the line under it says the share in the page's numbers (on_share)
        fraction = gr.Slider(0.05, 0.95, value=0.5, step=0.05, label=t("fraction"), buttons=[],
                             elem_id="gantune-train-share")
        seed = gr.Number(value=0, precision=0, label=t("seed"))
    preview_button = gr.Button(t("preview"))
    preview_status = gr.Markdown()
    # the table takes the page's width (questions and answers wrap at words); the histogram comes below
    # both shown once there is a preview
    preview = gr.Dataframe(headers=preview_headers("en"), label=t("pairs"), wrap=True, interactive=False,
                           column_widths=["9%", "41%", "50%"], max_height=420, visible=False, buttons=[])
    histogram = gr.Plot(visible=False)
    inputs = SetupInputs(model, gguf_file, trust, kind, path, upload, subset, n, fraction, seed)

    def on_page_load(request: gr.Request):
        return gr.update(choices=kind_choices(language(request)))

    demo.load(on_page_load, None, kind, show_progress="hidden")

    def on_share(share, request: gr.Request):
        """The train share under the slider in the page's numbers (Gradio writes the slider's own number as JavaScript
        does, ``0.5`` on a Russian page too: that box is hidden)."""
        lang = language(request)
        if not isinstance(share, (int, float)) or not 0 <= share <= 1:
            return gr.skip()
        return gr.update(info=tr(lang, "fraction_info", share=percent(lang, share), rest=percent(lang, 1 - share)))

    gr.on([fraction.change, demo.load], on_share, fraction, fraction, show_progress="hidden", queue=False,
          trigger_mode="always_last", api_visibility="private")

    def on_kind(k):
        subsets = HUB_SUBSETS if k == HUB else TRAINING_SUBSETS
        return gr.update(visible=k == UPLOAD), gr.update(visible=k == OFFLINE and not space), \
            gr.update(choices=subsets, value="forget10", visible=k != UPLOAD)

    kind.change(on_kind, kind, [upload, path, subset], show_progress="hidden")  # instant: no spinner over Setup

    def on_load(name, gguf, trusted, request: gr.Request, progress=gr.Progress()):
        lang = language(request)
        progress(0.1, desc=tr(lang, "loading"))
        try:
            base = engine.model((name or "default").strip(), (gguf or "").strip() or None, bool(trusted))
        except GantuneError as exc:
            return error_markdown(exc, lang)
        n_params = sum(p.numel() for p in base.model.parameters())
        template = tr(lang, "chat_template" if getattr(base.tokenizer, "chat_template", None) else "no_chat_template")
        device = tr(lang, "device_cuda" if base.device.type == "cuda" else "device_cpu")
        return tr(lang, "loaded", name=base.source.get("name"), arch=type(base.model).__name__,
                  params=number(lang, n_params / 1e6, 0), template=template, device=device)

    load.click(on_load, [model, gguf_file, trust], model_status, api_name="load_model")

    def on_preview(request: gr.Request, *values):
        lang = language(request)
        try:
            v = setup_values(engine, *values)
            train, test, source = engine.pairs(v["data"], v["subset"], v["n"], v["train_fraction"], v["seed"])
        except GantuneError as exc:
            return error_markdown(exc, lang), gr.update(visible=False), gr.update(visible=False)
        rows = [[tr(lang, "split_train"), p.question, p.answer] for p in train[:5]] + \
            [[tr(lang, "split_test"), p.question, p.answer] for p in test[:5]]
        figure = None
        try:
            base = engine.model(v["model"], v["gguf_file"], v["trust_remote_code"])
            enc = Encoder(base.tokenizer, base.eos_id, 10_000, 10_000)
            encoded = enc.encode(train + test)
            figure = plots.for_page(plots.token_lengths([len(q) for q, _ in encoded], [len(a) for _, a in encoded], lang),
                                    lang)
        except GantuneError as exc:
            source += " " + tr(lang, "no_histogram", error=error_text(exc, lang))
        counts = tr(lang, "preview_counts", train=plural(lang, "pairs", len(train)), test=plural(lang, "pairs", len(test)),
                    source=source)
        return (counts, gr.update(value=pd.DataFrame(rows, columns=preview_headers(lang)), visible=True),
                gr.update(value=figure, visible=figure is not None))

    preview_button.click(on_preview, inputs.as_list(), [preview_status, preview, histogram], api_name="preview")
    return inputs
