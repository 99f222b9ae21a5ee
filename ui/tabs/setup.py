"""Setup: the base model and the data (source, subset, n, split, seed), with a preview."""

from __future__ import annotations

import math
from dataclasses import dataclass

import gradio as gr

from gantune.data import OFFLINE_SUBSETS, Encoder, default_data_source
from gantune.errors import GantuneError

from .. import plots
from ..engine import Engine
from ..i18n import t

OFFLINE, HUB, UPLOAD = "offline", "hub", "upload"
HUB_SUBSETS = ["forget01", "forget05", "forget10", "full", "retain90", "retain95", "retain99", "real_authors",
               "world_facts", "forget01_perturbed", "forget05_perturbed", "forget10_perturbed",
               "real_authors_perturbed", "world_facts_perturbed", "retain_perturbed"]


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
    """Widget values (or an API request's) → TrainConfig fields for model and data; bad ones are refused."""
    model = (model or "default").strip()
    gguf_file = (gguf_file or "").strip() or None
    engine.check_model(model, gguf_file)
    return {"model": model, "gguf_file": gguf_file, "trust_remote_code": bool(trust) and not engine.settings.space,
            "data": engine.data_source(kind, path, upload), "subset": str(subset or "forget10"),
            "n": None if n in (None, "") else whole_number(n, "pairs (n)"),
            "train_fraction": finite_number(fraction, "train share"), "seed": whole_number(seed or 0, "seed")}


def finite_number(value, what: str) -> float:
    """A number box's value as a finite float, or a GantuneError naming the box."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise GantuneError(f"{what} must be a number (got {value!r})") from None
    if not math.isfinite(number):
        raise GantuneError(f"{what} must be a finite number (got {value!r})")
    return number


def whole_number(value, what: str) -> int:
    number = finite_number(value, what)
    if number != int(number):
        raise GantuneError(f"{what} must be a whole number (got {value!r})")
    return int(number)


def build(engine: Engine) -> SetupInputs:
    space = engine.settings.space
    with gr.Row():
        model = gr.Textbox(value="default", label=t("model"), info=t("model_info"), scale=3)
        gguf_file = gr.Textbox(label=t("gguf_file"), visible=not space, scale=2)
        trust = gr.Checkbox(value=False, label=t("trust_remote_code"), visible=not space, scale=1)
    load = gr.Button(t("load_model"))
    model_status = gr.Markdown()
    with gr.Row():
        # plain words: Gradio 6.17 does not translate labels inside choice tuples
        kind = gr.Radio([("offline TOFU folder", OFFLINE), ("hub (locuslab/TOFU)", HUB), ("my .jsonl / .json / .csv file", UPLOAD)],
                        value=OFFLINE, label=t("data_kind"))
        path = gr.Textbox(value=engine.settings.data or default_data_source(), label=t("data_path"), visible=not space)
        subset = gr.Dropdown(list(OFFLINE_SUBSETS), value="forget10", label=t("subset"), allow_custom_value=True)
    upload = gr.File(label=t("upload"), file_types=[".jsonl", ".json", ".csv"], visible=False, type="filepath")
    with gr.Row():
        n = gr.Number(value=min(40, engine.settings.max_n) if space else 40, precision=0, label=t("n"),
                      maximum=engine.settings.max_n if space else None, minimum=0)
        fraction = gr.Slider(0.05, 0.95, value=0.5, step=0.05, label=t("fraction"))
        seed = gr.Number(value=0, precision=0, label=t("seed"))
    preview_button = gr.Button(t("preview"))
    preview_status = gr.Markdown()
    with gr.Row():
        preview = gr.Dataframe(headers=["split", "question", "answer"], label=t("pairs"), wrap=True, scale=3)
        histogram = gr.Plot(scale=2)
    inputs = SetupInputs(model, gguf_file, trust, kind, path, upload, subset, n, fraction, seed)

    def on_kind(k):
        subsets = HUB_SUBSETS if k == HUB else list(OFFLINE_SUBSETS)
        return gr.update(visible=k == UPLOAD), gr.update(visible=k == OFFLINE and not space), \
            gr.update(choices=subsets, value="forget10", visible=k != UPLOAD)

    kind.change(on_kind, kind, [upload, path, subset])

    def on_load(name, gguf, trusted, progress=gr.Progress()):
        progress(0.1, desc="loading …")
        try:
            base = engine.model((name or "default").strip(), (gguf or "").strip() or None, bool(trusted))
        except GantuneError as exc:
            return f"**Error:** {exc}"
        n_params = sum(p.numel() for p in base.model.parameters())
        template = "chat template" if getattr(base.tokenizer, "chat_template", None) else "no chat template (plain Q/A prompts)"
        return f"Loaded **{base.source.get('name')}** ({type(base.model).__name__}, {n_params / 1e6:.0f}M parameters, {template}) on {base.device}."

    load.click(on_load, [model, gguf_file, trust], model_status, api_name="load_model")

    def on_preview(*values):
        try:
            v = setup_values(engine, *values)
            train, test, source = engine.pairs(v["data"], v["subset"], v["n"], v["train_fraction"], v["seed"])
        except GantuneError as exc:
            return f"**Error:** {exc}", None, None
        rows = [["train", p.question, p.answer] for p in train[:5]] + [["test", p.question, p.answer] for p in test[:5]]
        figure = None
        try:
            base = engine.model(v["model"], v["gguf_file"], v["trust_remote_code"])
            enc = Encoder(base.tokenizer, base.eos_id, 10_000, 10_000)
            encoded = enc.encode(train + test)
            figure = plots.token_lengths([len(q) for q, _ in encoded], [len(a) for _, a in encoded])
        except GantuneError as exc:
            source += f" (no token histogram: {exc})"
        return f"{len(train)} train / {len(test)} test pairs from {source}", rows, figure

    preview_button.click(on_preview, inputs.as_list(), [preview_status, preview, histogram], api_name="preview")
    return inputs
