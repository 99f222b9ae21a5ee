"""The generator's learning signal: trajectory log-probabilities, advantages, KL, losses.

REINFORCE for a sampled answer y = (y_1 … y_T) with reward R (D's score) and baseline b:

    ∇J ≈ (R − b) · Σ_t ∇ log π(y_t | q, y_<t)

R is D's reward minus β·KL(π_rollout ‖ π_untuned) summed over the answer's tokens (the penalty of
TRL / InstructGPT), and answers sampled earlier in the epoch are corrected by PPO's clipped ratio.

``answer_logprobs`` (gantune.scoring) gets every log π(y_t | …) of a batch in ONE teacher-forced pass over [q ; y].
``thesis_logprobs`` reproduces the thesis' estimator for comparison: one LM pass per position and
the log-prob of a token re-sampled from the softmax of logits summed over positions, which is
not the gradient of the trajectory's probability.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from ...scoring import joined
from .discriminator import last_score


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


def advantages(rewards: torch.Tensor, baseline: str, running_mean: float | None, normalize: bool,
               k: int = 1) -> torch.Tensor:
    """R − b. ``mean``: b is the batch mean (the running mean for a one-row batch); ``none``: b = 0;
    ``loo`` (RLOO): b is the mean of the other k − 1 samples of the same question (rows question-major)."""
    if baseline == "loo":
        groups = rewards.view(-1, k)
        adv = (groups - (groups.sum(1, keepdim=True) - groups) / (k - 1)).reshape(-1)
    elif baseline == "mean":
        b = rewards.mean() if rewards.numel() > 1 else torch.tensor(running_mean or 0.0, device=rewards.device)
        adv = rewards - b
    else:
        adv = rewards.clone()
    if normalize and adv.numel() > 1:
        adv = adv / (adv.std() + 1e-8)
    return adv


def prefix_advantages(relative: torch.Tensor, mask: torch.Tensor, kl_per_token: torch.Tensor | None, kl_coef: float,
                      normalize: bool) -> torch.Tensor:
    """Per-token advantages from D's per-prefix scores, D acting as a critic (B×T, 0 where masked).

    ``relative``: D(q, y_≤t) − D(q, r_≤t) at each position. Token t's advantage is what the answer
    from t on did to that score: its final value minus the value before t (the whole answer's reward
    for the first token), less β times the KL to the untuned model from t on. Then centred and, with
    ``normalize``, scaled over the batch's tokens.
    """
    m = mask.float()
    final = last_score(relative, mask).unsqueeze(1)
    before = torch.cat([torch.zeros_like(relative[:, :1]), relative[:, :-1]], dim=1)
    adv = final - before
    if kl_per_token is not None and kl_coef > 0:
        kl_to_go = (kl_per_token * m).flip(1).cumsum(1).flip(1)
        adv = adv - kl_coef * kl_to_go
    n = m.sum().clamp(min=1.0)
    adv = (adv - (adv * m).sum() / n) * m
    if normalize and n > 1:
        adv = adv / (((adv ** 2) * m).sum() / (n - 1)).sqrt().clamp(min=1e-8)
    return adv


def _per_token(advantage: torch.Tensor) -> torch.Tensor:
    """A per-answer advantage (B,) broadcast over its tokens; a per-token one (B×T) as it is."""
    return advantage.detach() if advantage.dim() == 2 else advantage.detach().unsqueeze(1)


def policy_gradient_loss(logp: torch.Tensor, mask: torch.Tensor, advantage: torch.Tensor) -> torch.Tensor:
    """−(1/N) Σ_b Σ_t A_bt log π_bt over the N real (unmasked) answer tokens of the batch (A_bt = A_b for a
    per-answer advantage)."""
    n = mask.sum().clamp(min=1)
    return -(_per_token(advantage) * logp * mask).sum() / n


def clipped_policy_loss(logp: torch.Tensor, old_logp: torch.Tensor, mask: torch.Tensor, advantage: torch.Tensor,
                        clip: float) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate per token, −min(ρA, clip(ρ, 1 ± ε)A) with ρ = π/π_rollout, over the N real tokens.

    Its gradient at ρ = 1 equals ``policy_gradient_loss``'s. Returns the loss and the share of clipped tokens.
    """
    ratio = torch.exp(logp - old_logp.detach())
    a = _per_token(advantage)
    surrogate = torch.minimum(ratio * a, ratio.clamp(1.0 - clip, 1.0 + clip) * a)
    n = mask.sum().clamp(min=1)
    clipped = (((ratio - 1.0).abs() > clip).float() * mask).sum() / n
    return -(surrogate * mask).sum() / n, clipped.detach()


def sequence_kl(logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Σ_t (log π(y_t) − log π_ref(y_t)) per answer: the sampled (k1) estimate of KL(π ‖ π_ref) (B,).

    Its expectation over y ~ π is the exact KL of the answer distributions."""
    return ((logp - ref_logp) * mask).sum(1)
