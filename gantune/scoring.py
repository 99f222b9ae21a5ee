"""Teacher-forced scoring: log-probabilities of given answers in one forward pass, and the MLE loss.

Shared by every method's training step and by evaluation (likelihood of true vs perturbed answers).
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel


def joined(prompt_ids, prompt_mask, answer_ids, answer_mask):
    """[prompt ; answer] ids and mask, and position ids that skip left padding."""
    ids = torch.cat([prompt_ids, answer_ids], dim=1)
    mask = torch.cat([prompt_mask, answer_mask], dim=1)
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)  # as generate() numbers left-padded rows
    return ids, mask, positions


def answer_logprobs(
    lm: PreTrainedModel,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    answer_ids: torch.Tensor,
    answer_mask: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    """log π(answer_t | prompt, answer_<t) for every answer position (B×T, fp32, 0 where masked);
    π is softmax(logits / temperature)."""
    ids, mask, positions = joined(prompt_ids, prompt_mask, answer_ids, answer_mask)
    t = answer_ids.shape[1]
    # logits only for positions P-1 … P+T-1 (the answer slice); drop the last, which predicts past the end
    logits = lm(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=t + 1, use_cache=False).logits
    logp = (logits[:, :-1].float() / temperature).log_softmax(dim=-1)
    del logits
    picked = logp.gather(-1, answer_ids.unsqueeze(-1)).squeeze(-1)
    return picked * answer_mask


def mle_loss(logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood of the real answer tokens."""
    return -(logp * mask).sum() / mask.sum().clamp(min=1)
