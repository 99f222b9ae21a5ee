"""Answering with a run: load its tuned model from the run folder, and answer questions with it.

Generate, chat, the bench and the trainer's validation all answer through here; nothing in this
module trains. Loading reads safetensors and JSON only, and a run's base model runs its own code
only when the caller allows it now.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
from safetensors import SafetensorError

from .data import Encoder, pad
from .errors import GantuneError, first_line
from .generation import decode, decode_steps
from .memory import available_memory_bytes
from .methods import get_method
from .methods.base import TuningMethod
from .models import BaseModel, load_base_model, pick_device
from .runs import RunFolder


def load_method(run_path: str, base: BaseModel | None = None, trust_remote_code: bool = False) -> TuningMethod:
    """A finished run's tuned model, for generation: base model + the adapter from the run folder.

    Reads safetensors and JSON only. A run whose base model needs its own code loads only when the
    caller allows it (``trust_remote_code``); a run folder alone never turns it on.
    """
    run = RunFolder(run_path)
    config, _ = run.read_config()
    run.checked_adapter()  # there is one, of regular files inside the run folder only: before the model loads
    if base is None:
        if config.trust_remote_code and not trust_remote_code:
            raise remote_code_refusal(run.path)
        base = load_base_model(config.model, config.gguf_file, pick_device(config.device), config.trust_remote_code,
                               precision=config.precision)

    def load(folder: Path) -> TuningMethod:
        try:
            return get_method(config.method).from_pretrained(base, folder, config)
        except (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError) as exc:
            raise GantuneError(f"the adapter in {folder} is damaged or incomplete: {first_line(exc)}") from exc

    return run.read_adapter(load, discard=lambda method: method.close())  # read, never repaired: no lock is held


def remote_code_refusal(run_path: str | Path) -> GantuneError:
    """Why a run whose base model runs its own code is not loaded: the person did not allow it on this command."""
    return GantuneError(f"{run_path} was tuned from a model that runs its own code; "
                        "allow it with --trust-remote-code only if you trust that model")


# Wider decoding batches stop paying once a step is compute-bound (about 40 rows for SmolLM2-135M on a 2-core
# CPU in bf16: benchmarks/cpu_floor.py), while rows that have ended keep riding along until the longest ends.
MAX_DECODE_ROWS = 64


@dataclass
class Answers:
    """Decoded answers with what the text alone does not tell: length in tokens and truncation."""

    texts: list[str]
    lengths: list[int]  # generated tokens before EOS
    truncated: list[bool]  # no EOS within the token limit


def decode_rows(base: BaseModel, prompt_tokens: int, new_tokens: int) -> int:
    """How many prompts one decoding call takes: what a quarter of free memory holds (each row's key/value
    cache, a layer's activations over its prompt and one row of logits), at most ``MAX_DECODE_ROWS``."""
    text = base.model.config.get_text_config()
    hidden = getattr(text, "hidden_size", 1)
    width = max(hidden, getattr(text, "intermediate_size", None) or 4 * hidden)
    heads = getattr(text, "num_attention_heads", 1)
    kv = (getattr(text, "num_key_value_heads", None) or heads) * (getattr(text, "head_dim", None) or hidden // heads)
    layers = getattr(text, "num_hidden_layers", 1)
    row = 4 * ((prompt_tokens + new_tokens) * layers * 2 * kv + prompt_tokens * 4 * width
               + 2 * base.model.get_input_embeddings().num_embeddings)
    return max(1, min(MAX_DECODE_ROWS, available_memory_bytes(base.device) // 4 // row))


def scoring_rows(base: BaseModel, answer_tokens: int) -> int:
    """How many (question, answer) rows one teacher-forced scoring pass takes: what a quarter of free memory
    holds of their answers' logits (and their fp32 log-softmax), at most ``MAX_DECODE_ROWS``."""
    row = 3 * 4 * answer_tokens * base.model.get_input_embeddings().num_embeddings
    return max(1, min(MAX_DECODE_ROWS, available_memory_bytes(base.device) // 4 // row))


def answers(
    base: BaseModel,
    questions: list[str],
    max_new_tokens: int,
    max_prompt_tokens: int = 512,
    method: TuningMethod | None = None,
    temperature: float = 0.0,
    seed: int = 0,
    should_stop: Callable[[], bool] | None = None,
    on_batch: Callable[[int, int], None] | None = None,
) -> Answers:
    """Answers to ``questions`` from the base model or, with ``method``, the tuned one: greedy at temperature 0,
    else sampled at ``temperature`` from torch's generator seeded with ``seed`` (the caller's random state is
    left as it was).

    The prompts are decoded shortest first in the widest batches memory allows (``decode_rows``), so a batch
    pads little; the answers come back in the questions' order. ``should_stop`` is asked between tokens; when
    it says so, ``Stopped`` is raised. ``on_batch`` is told as each batch begins: (questions answered, questions
    answered once the batch ends).
    """
    encoder = Encoder(base.tokenizer, base.eos_id, max_prompt_tokens, max_new_tokens)
    prompts = [encoder.prompt_ids(q) for q in questions]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    rows = decode_rows(base, max((len(p) for p in prompts), default=0), max_new_tokens)
    texts, lengths, truncated = [""] * len(prompts), [0] * len(prompts), [False] * len(prompts)
    cuda = [base.device] if base.device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda), base.autocast():
        torch.manual_seed(seed)
        for start in range(0, len(order), rows):
            chunk = order[start:start + rows]
            if on_batch is not None:
                on_batch(start, start + len(chunk))
            ids, mask = (t.to(base.device) for t in pad([prompts[i] for i in chunk], encoder.pad_id, left=True))
            with method.enabled(len(chunk)) if method is not None else nullcontext(base.model) as model:
                out = decode(model, ids, mask, base.eos_id, encoder.pad_id, max_new_tokens, temperature, should_stop)
            ended = (out.ids == base.eos_id).any(dim=1)
            for i, row, m, e in zip(chunk, out.ids, out.mask, ended):
                texts[i] = base.tokenizer.decode(row[m.bool()], skip_special_tokens=True).strip()
                lengths[i], truncated[i] = int(m.sum()) - int(e), not bool(e)
    return Answers(texts, lengths, truncated)


def answer_questions(
    base: BaseModel,
    questions: list[str],
    max_new_tokens: int,
    max_prompt_tokens: int = 512,
    method: TuningMethod | None = None,
) -> list[str]:
    """Greedy answers to plain-text questions, from the base model or, with ``method``, the tuned one."""
    return answers(base, questions, max_new_tokens, max_prompt_tokens, method).texts


INCOMPLETE = "\ufffd"  # what decoding makes of a character whose bytes have not all come


def stream_answer(
    base: BaseModel,
    question: str,
    max_new_tokens: int,
    max_prompt_tokens: int = 512,
    method: TuningMethod | None = None,
) -> Iterator[str]:
    """The greedy answer to one question, yielded as it grows (the text so far, each time): ``stream_reply``'s texts."""
    shown = None
    for text, _ in stream_reply(base, question, max_new_tokens, max_prompt_tokens, method):
        if text != shown:
            shown = text
            yield text


def stream_reply(
    base: BaseModel,
    question: str,
    max_new_tokens: int,
    max_prompt_tokens: int = 512,
    method: TuningMethod | None = None,
) -> Iterator[tuple[str, bool]]:
    """The greedy answer to one question as it grows: (the text so far, whether it stopped at the token limit), each
    time the text changes; the second True only in the last piece, when the answer ended there without its end token.

    A piece whose last character's bytes have not all come yet (byte-level tokens: a Cyrillic letter is two, an
    emoji four) is held back until the character is whole, so no piece ends in "\ufffd"; an answer cut inside a
    character loses that part. Each step runs under the base model's autocast of its own: autocast is per thread,
    and a consumer (Gradio) may take each piece from another thread.
    """
    encoder = Encoder(base.tokenizer, base.eos_id, max_prompt_tokens, max_new_tokens)
    ids, mask = (t.to(base.device) for t in encoder.prompts([question]))
    tokens: list[int] = []
    shown = None
    with method.enabled(1) if method is not None else nullcontext(base.model) as model:
        steps = decode_steps(model, ids, mask, base.eos_id, encoder.pad_id, max_new_tokens, may_compile=False)
        while True:
            with base.autocast():
                step = next(steps, None)
            if step is None:
                break
            chosen, _ = step
            tokens.append(int(chosen[0]))
            text = base.tokenizer.decode(tokens, skip_special_tokens=True).strip()
            if text != shown and not text.endswith(INCOMPLETE):
                shown = text
                yield text, False
    cut = len(tokens) == max_new_tokens and tokens[-1] != base.eos_id
    text = base.tokenizer.decode(tokens, skip_special_tokens=True).strip()
    if cut:
        text = text.rstrip(INCOMPLETE).rstrip()  # a character the limit cut in two is no character
    if cut or text != shown:
        yield text, cut

