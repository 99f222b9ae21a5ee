"""Answering with a run: load its tuned model from the run folder, and answer questions with it.

Generate, chat, the bench and the trainer's validation all answer through here; nothing in this
module trains. Loading reads safetensors and JSON only, and a run's base model runs its own code
only when the caller allows it now.
"""

from __future__ import annotations

import threading
from contextlib import nullcontext
from pathlib import Path
from typing import Iterator

import torch
from safetensors import SafetensorError
from transformers import GenerationConfig, TextIteratorStreamer

from .data import Encoder
from .errors import GantuneError, first_line
from .generation import generate_answers
from .methods import get_method
from .methods.base import TuningMethod
from .models import BaseModel, load_base_model, pick_device
from .runs import RunFolder, recover_dir


def load_method(run_path: str, base: BaseModel | None = None, trust_remote_code: bool = False) -> TuningMethod:
    """A finished run's tuned model, for generation: base model + the adapter from the run folder.

    Reads safetensors and JSON only. A run whose base model needs its own code loads only when the
    caller allows it (``trust_remote_code``); a run folder alone never turns it on.
    """
    run = RunFolder(run_path)
    config, _ = run.read_config()
    recover_dir(run.adapter_dir)
    if not run.adapter_dir.is_dir():
        raise GantuneError(f"{run.path} has no adapter yet (the run did not finish or save)")
    run.check_adapter()  # regular files inside the run folder only
    check_data_only(run.adapter_dir)
    if base is None:
        if config.trust_remote_code and not trust_remote_code:
            raise remote_code_refusal(run.path)
        base = load_base_model(config.model, config.gguf_file, pick_device(config.device), config.trust_remote_code)
    try:
        return get_method(config.method).from_pretrained(base, run.adapter_dir, config)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError) as exc:
        raise GantuneError(f"the adapter in {run.adapter_dir} is damaged or incomplete: {first_line(exc)}") from exc


def remote_code_refusal(run_path: str | Path) -> GantuneError:
    """Why a run whose base model runs its own code is not loaded: the person did not allow it on this command."""
    return GantuneError(f"{run_path} was tuned from a model that runs its own code; "
                        "allow it with --trust-remote-code only if you trust that model")


# what a saved adapter may hold: tensors as safetensors, settings and tokenizer files as text;
# anything else (pickles: .bin, .pt, .pkl; code: .py) could run code when loaded
DATA_SUFFIXES = {".safetensors", ".json", ".jinja", ".txt", ".md", ".model"}


def check_data_only(folder: Path) -> None:
    """Refuse an adapter folder that holds anything but safetensors and text (nothing in it may run)."""
    others = sorted(p.name for p in folder.rglob("*") if p.is_file() and p.suffix.lower() not in DATA_SUFFIXES)
    if others:
        raise GantuneError(f"{folder} holds {others[0]}, which is not safetensors or JSON; "
                           "gantune loads only those (nothing in a run may run code)")


def answer_questions(
    base: BaseModel,
    questions: list[str],
    max_new_tokens: int,
    max_prompt_tokens: int = 512,
    method: TuningMethod | None = None,
    batch_size: int = 8,
) -> list[str]:
    """Greedy answers to plain-text questions, from the base model or, with ``method``, the tuned one."""
    encoder = Encoder(base.tokenizer, base.eos_id, max_prompt_tokens, max_new_tokens)
    answers: list[str] = []
    for start in range(0, len(questions), batch_size):
        chunk = questions[start : start + batch_size]
        ids, mask = (t.to(base.device) for t in encoder.prompts(chunk))
        with method.enabled(len(chunk)) if method is not None else nullcontext(base.model) as model:
            out, out_mask = generate_answers(model, ids, mask, base.eos_id, encoder.pad_id, max_new_tokens, sample=False)
        for row, m in zip(out, out_mask):
            answers.append(base.tokenizer.decode(row[m.bool()], skip_special_tokens=True).strip())
    return answers


def stream_answer(
    base: BaseModel,
    question: str,
    max_new_tokens: int,
    max_prompt_tokens: int = 512,
    method: TuningMethod | None = None,
) -> Iterator[str]:
    """The greedy answer to one question, yielded as it grows (the text so far, each time)."""
    encoder = Encoder(base.tokenizer, base.eos_id, max_prompt_tokens, max_new_tokens)
    ids, mask = (t.to(base.device) for t in encoder.prompts([question]))
    streamer = TextIteratorStreamer(base.tokenizer, skip_prompt=True, skip_special_tokens=True)
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=base.eos_id,
                              pad_token_id=encoder.pad_id)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with method.enabled(1) if method is not None else nullcontext(base.model) as model, torch.no_grad():
                model.generate(input_ids=ids, attention_mask=mask, generation_config=config, streamer=streamer,
                               use_model_defaults=False)
        except BaseException as exc:  # surfaced in the caller's thread below
            errors.append(exc)
            streamer.end()

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    text = ""
    for piece in streamer:
        text += piece
        yield text.strip()
    worker.join()
    if errors:
        raise errors[0]
