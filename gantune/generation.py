"""Batched generation from left-padded prompts with the KV cache, stopping at EOS.

The sampler knows nothing of tuning methods: it runs whatever model it is given (``gantune.inference``
answers questions with a run's tuned model).
"""

from __future__ import annotations

import torch
from transformers import GenerationConfig, LogitsProcessorList, PreTrainedModel


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
