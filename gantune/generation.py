"""Batched generation from left-padded prompts with the KV cache, stopping at EOS."""

from __future__ import annotations

import threading
from contextlib import nullcontext
from typing import TYPE_CHECKING, Iterator

import torch
from transformers import GenerationConfig, LogitsProcessorList, PreTrainedModel, TextIteratorStreamer

from .data import Encoder

if TYPE_CHECKING:
    from .methods import TuningMethod
    from .models import BaseModel


def answer_mask(answer_ids: torch.Tensor, eos_id: int) -> torch.Tensor:
    """1 up to and including the first EOS of each row, 0 after it (all 1 when a row never ends)."""
    is_eos = (answer_ids == eos_id).long()
    ended_before = is_eos.cumsum(dim=1) - is_eos  # EOS tokens strictly before each position
    return (ended_before == 0).long()


@torch.no_grad()
def generate_answers(
    model: PreTrainedModel,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    eos_id: int,
    pad_id: int,
    max_new_tokens: int,
    sample: bool,
    logits_processor: LogitsProcessorList | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generate answers; returns their ids (B×T, T ≤ max_new_tokens) and mask.

    Sampling draws from the plain softmax (temperature 1, no top-k/top-p), the distribution whose
    log-probabilities the policy gradient uses. ``logits_processor`` sees each step's final scores.
    """
    sampling = {"do_sample": True, "temperature": 1.0, "top_k": 0, "top_p": 1.0} if sample else {"do_sample": False}
    config = GenerationConfig(max_new_tokens=max_new_tokens, eos_token_id=eos_id, pad_token_id=pad_id, **sampling)
    # use_model_defaults=False: a model's own generation_config.json (temperature, top_p …) must not
    # replace these values, or the samples would not come from the policy the gradient assumes
    out = model.generate(input_ids=prompt_ids, attention_mask=prompt_mask, generation_config=config,
                         logits_processor=logits_processor, use_model_defaults=False)
    answers = out[:, prompt_ids.shape[1] :]
    mask = answer_mask(answers, eos_id)
    width = int(mask.sum(dim=1).max()) if answers.shape[1] else 0
    return answers[:, :width], mask[:, :width]


def answer_questions(
    base: "BaseModel",
    questions: list[str],
    max_new_tokens: int,
    max_prompt_tokens: int = 512,
    method: "TuningMethod | None" = None,
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
    base: "BaseModel",
    question: str,
    max_new_tokens: int,
    max_prompt_tokens: int = 512,
    method: "TuningMethod | None" = None,
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
