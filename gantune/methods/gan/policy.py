"""The generator's learning signal: trajectory log-probabilities, advantages, losses.

REINFORCE for a sampled answer y = (y_1 … y_T) with reward R (D's score) and baseline b:

    ∇J ≈ (R − b) · Σ_t ∇ log π(y_t | q, y_<t)

``answer_logprobs`` (gantune.scoring) gets every log π(y_t | …) of a batch in ONE teacher-forced pass over [q ; y].
``thesis_logprobs`` reproduces the thesis' estimator for comparison: one LM pass per position and
the log-prob of a token re-sampled from the softmax of logits summed over positions, which is
not the gradient of the trajectory's probability.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from ...scoring import joined


def thesis_logprobs(
    lm: PreTrainedModel,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    answer_ids: torch.Tensor,
    answer_mask: torch.Tensor,
) -> torch.Tensor:
    """The thesis' per-position estimator (B×T): T full forwards, each keeping its graph."""
    out = []
    for t in range(answer_ids.shape[1]):
        ids, mask, positions = joined(prompt_ids, prompt_mask, answer_ids[:, :t], answer_mask[:, :t])
        logits = lm(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False).logits
        logp = logits.sum(dim=1).float().log_softmax(dim=-1)
        token = torch.multinomial(logp.detach().exp(), 1)
        out.append(logp.gather(-1, token).squeeze(-1))
    return torch.stack(out, dim=1) * answer_mask


def advantages(rewards: torch.Tensor, baseline: str, running_mean: float | None, normalize: bool) -> torch.Tensor:
    """R − b. ``mean``: b is the batch mean (the running mean for a one-row batch); ``none``: b = 0."""
    if baseline == "mean":
        b = rewards.mean() if rewards.numel() > 1 else torch.tensor(running_mean or 0.0, device=rewards.device)
        adv = rewards - b
    else:
        adv = rewards.clone()
    if normalize and adv.numel() > 1:
        adv = adv / (adv.std() + 1e-8)
    return adv


def policy_gradient_loss(logp: torch.Tensor, mask: torch.Tensor, advantage: torch.Tensor) -> torch.Tensor:
    """−(1/N) Σ_b A_b Σ_t log π_bt over the N real (unmasked) answer tokens of the batch."""
    n = mask.sum().clamp(min=1)
    return -(advantage.detach().unsqueeze(1) * logp * mask).sum() / n
