"""Chat: base, GAN-tuned and LoRA-tuned models answer the same message side by side.

One copy of the base weights (the engine's chat slot); each tuned answer loads its run's adapter
onto it and takes it off again (``close()``), so the base answers are the untouched model's.
Each message is answered on its own, as in training (no chat history in the prompt). When the
message is a question with a known short true answer (TOFU's world facts and real authors, where
the data folder has them) and the base model gives it, a tuned answer that no longer does is
flagged (``gantune.metrics.gives_answer``).
"""

from __future__ import annotations

import functools
import random
from pathlib import Path
from typing import Iterator

import gradio as gr

from gantune.data import Encoder, QAPair, default_data_source
from gantune.errors import GantuneError
from gantune.evaluate import load_retention_sets
from gantune.inference import load_method, stream_reply
from gantune.metrics import gives_answer

from ..catalogue import RunRow
from ..engine import Engine
from ..i18n import language, t, tr
from ..policy import PageError
from ..views import warn
from .setup import SetupInputs, setup_values, whole_number

MAX_PROMPT_TOKENS = 512  # the longest message (with the chat template) the chat answers
MAX_NEW_TOKENS = 1024
CUT = "…"  # ends an answer that stopped at the token limit
PANELS = ("base", "gan", "lora")


def run_choices(rows: list[RunRow], method: str) -> list[str]:
    """The ids of the runs of ``method`` that saved an adapter."""
    return [r.run for r in rows if r.method == method and r.adapter]


def answers(engine: Engine, model: str, question: str, gan_run: str | None, lora_run: str | None,
            max_new_tokens: int, lang: str = "en", trusted: bool = False,
            cut: list[bool] | None = None) -> Iterator[tuple[str, str, str]]:
    """(base, gan, lora) answers as they grow; one model at a time under the chat lock. An answer that stopped at
    the token limit ends with "…"; ``cut`` (three flags), when given, is set where one did.

    ``trusted``: Setup's “Trust the model's own code” box; a run's model runs its own code only with the
    person's consent (``Policy.run_trust``), whatever the run's config.json says.
    """
    limit = whole_number(max_new_tokens, "what_max_new_tokens")
    if not 1 <= limit <= MAX_NEW_TOKENS:
        raise PageError("chat_max_tokens", most=MAX_NEW_TOKENS, got=limit)
    engine.policy.check_chat_tokens(limit)
    out = ["", "", ""]
    # the runs' own base model (the adapters fit it); the Setup tab's when no run is picked
    runs = {r: engine.runs.folder(r) for r in (gan_run, lora_run) if r}
    configs = [(r, run.read_config()[0]) for r, run in runs.items()]
    models = {(c.model, c.gguf_file) for _, c in configs} or {(model, None)}
    if len(models) > 1:
        raise PageError("chat_two_models")
    name, gguf_file = models.pop()
    trust = any([engine.policy.run_trust(c, r, trusted) for r, c in configs]) if configs else trusted
    with engine.models.chat_lock:
        base = engine.model(name, gguf_file, trust, slot="chat")
        length = Encoder(base.tokenizer, base.eos_id, MAX_PROMPT_TOKENS, limit).prompt_length(question)
        if length > MAX_PROMPT_TOKENS:
            raise PageError("chat_too_long", tokens=length, most=MAX_PROMPT_TOKENS)
        for i, run_id in enumerate((None, gan_run, lora_run)):
            if i and not run_id:
                out[i] = tr(lang, "pick_a_run")
                yield tuple(out)
                continue
            method = load_method(str(runs[run_id].path), base=base) if run_id else None
            try:
                for text, stopped in stream_reply(base, question, limit, MAX_PROMPT_TOKENS, method=method):
                    out[i] = f"{text}{CUT}" if stopped else text
                    if stopped and cut is not None:
                        cut[i] = True
                    yield tuple(out)
            finally:
                if method is not None:
                    method.close()


@functools.cache
def known_facts(folder: str) -> dict[str, QAPair]:
    """The questions with a short true answer (world facts, real authors) of a TOFU data folder, by question."""
    if not Path(folder).is_dir():  # the hub's sets are not fetched for a chat message
        return {}
    sets = load_retention_sets(folder, None, 0)
    return {p.question.strip(): p for pairs in sets.values() for p in pairs}


def fact_flags(fact: QAPair | None, answered: tuple[str, str, str], lang: str) -> str:
    """Under the answers: which tuned answer lost a true answer the base model gave (or kept it)."""
    if fact is None or not answered[0] or not gives_answer(answered[0], fact.answer, fact.perturbed):
        return ""
    lines = []
    for key, answer in (("gan", answered[1]), ("lora", answered[2])):
        if not answer or answer == tr(lang, "pick_a_run"):
            continue
        kept = gives_answer(answer, fact.answer, fact.perturbed)
        lines.append(tr(lang, "chat_kept" if kept else "chat_forgot", model=tr(lang, key), answer=fact.answer))
    return "\n\n".join(lines)


def cut_note(cut: list[bool], limit: int, lang: str) -> str:
    """Under the answers: which stopped at the token limit (they end with "…"), and where to raise it; '' if none."""
    if not any(cut):
        return ""
    models = ", ".join(tr(lang, key) for key, stopped in zip(PANELS, cut) if stopped)
    return tr(lang, "chat_cut", limit=limit, models=models, setting=tr(lang, "max_new_tokens"))


def build(engine: Engine, setup: SetupInputs) -> tuple[gr.Dropdown, gr.Dropdown]:
    """The tab; returns its two run pickers (the app refreshes their choices when the runs change)."""
    rows = engine.runs.rows()
    with gr.Row():
        gan_run = gr.Dropdown(run_choices(rows, "gan"), label=t("gan_run"))
        lora_run = gr.Dropdown(run_choices(rows, "lora"), label=t("lora_run"))
        max_new = gr.Slider(8, 256, value=64, step=8, label=t("max_new_tokens"), buttons=[])
    with gr.Row():
        # each panel's own copy button (Gradio's words, translated by it); no panel-wide buttons over the bubbles
        bots = [gr.Chatbot(label=t(k), height=360, buttons=["copy"], elem_classes=["gantune-chat"]) for k in PANELS]
    flags = gr.Markdown()
    with gr.Row():
        message = gr.Textbox(label=t("message"), scale=4)
        send = gr.Button(t("send"), variant="primary", scale=1)
        random_button = gr.Button(t("random_question"), scale=1)
        fact_button = gr.Button(t("random_fact"), scale=1)
    reference = gr.Markdown()

    facts_folder = engine.settings.data or default_data_source()

    def on_send(request: gr.Request, text, gan, lora, limit, model, base_history, gan_history, lora_history,
                trusted=False):
        lang = language(request)
        text = (text or "").strip()
        histories = [list(h or []) for h in (base_history, gan_history, lora_history)]
        if not text:
            warn(tr(lang, "type_first"), lang)
            yield (*histories, gr.skip(), gr.skip())
            return
        for h in histories:
            h += [{"role": "user", "content": text}, {"role": "assistant", "content": ""}]
        parts, cut = ("", "", ""), [False] * len(PANELS)
        try:
            for parts in answers(engine, (model or "default").strip(), text, gan, lora, limit, lang, bool(trusted), cut):
                for h, part in zip(histories, parts):
                    h[-1]["content"] = part
                yield (*histories, "", "")
        except GantuneError as exc:
            warn(exc, lang)
            yield (*histories, gr.skip(), gr.skip())
            return
        notes = [fact_flags(known_facts(facts_folder).get(text), tuple(p.removesuffix(CUT) for p in parts), lang),
                 cut_note(cut, int(float(limit)), lang)]  # (a number: answers took it)
        yield (*histories, "", "\n\n".join(n for n in notes if n))

    send_inputs = [message, gan_run, lora_run, max_new, setup.model, *bots, setup.trust_remote_code]
    # the answers stream in: no progress overlay (and its timer) over the panels
    send.click(on_send, send_inputs, [*bots, message, flags], api_name="chat", show_progress="hidden")
    message.submit(on_send, send_inputs, [*bots, message, flags], api_visibility="private", show_progress="hidden")

    def on_fact(request: gr.Request):
        lang = language(request)
        facts = list(known_facts(facts_folder).values())
        if not facts:
            warn(tr(lang, "no_facts"), lang)
            return gr.skip(), gr.skip()
        fact = random.choice(facts)
        return fact.question, tr(lang, "true_answer", answer=fact.answer)

    fact_button.click(on_fact, None, [message, reference], api_name="random_fact")

    def on_random(request: gr.Request, *values):
        lang = language(request)
        try:
            v = setup_values(engine, *values)
            _, test, _ = engine.pairs(v["data"], v["subset"], v["n"], v["train_fraction"], v["seed"])
        except GantuneError as exc:
            warn(exc, lang)
            return gr.skip(), gr.skip()
        pair = random.choice(test)
        return pair.question, tr(lang, "reference_answer", answer=pair.answer)

    random_button.click(on_random, setup.as_list(), [message, reference], api_name="random_question")
    return gan_run, lora_run

