"""Teacher-forced scoring: log-probabilities of given answers in one forward pass, and the MLE loss.

Shared by every method's training step and by evaluation (likelihood of true vs perturbed answers, where
several answers follow one prompt: ``shared_prompt_logprobs`` runs each prompt once).
"""

from __future__ import annotations

from typing import Sequence

import torch
from peft import PeftModel
from transformers import PreTrainedModel

from .generation import rows_given

Rows = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]  # prompt ids, prompt mask, answer ids, answer mask


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
    temperature: float | torch.Tensor = 1.0,
) -> torch.Tensor:
    """log π(answer_t | prompt, answer_<t) for every answer position (B×T, fp32, 0 where masked);
    π is softmax(logits / temperature), ``temperature`` one for all rows or one a row (B,)."""
    ids, mask, positions = joined(prompt_ids, prompt_mask, answer_ids, answer_mask)
    t = answer_ids.shape[1]
    # logits only for positions P-1 … P+T-1 (the answer slice); drop the last, which predicts past the end
    logits = lm(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=t + 1, use_cache=False).logits
    return picked_logprobs(logits[:, :-1], answer_ids, answer_mask, temperature)


def picked_logprobs(logits: torch.Tensor, answer_ids: torch.Tensor, answer_mask: torch.Tensor,
                    temperature: float | torch.Tensor) -> torch.Tensor:
    """log softmax(logits / temperature) of each answer token (fp32, 0 where masked)."""
    logits = logits.float()
    if isinstance(temperature, torch.Tensor):
        logits = logits / temperature.to(logits.device).view(-1, 1, 1)
    elif temperature != 1.0:
        logits = logits / temperature
    logp = logits.log_softmax(dim=-1)
    del logits
    picked = logp.gather(-1, answer_ids.unsqueeze(-1)).squeeze(-1)
    return picked * answer_mask


def prompt_reusable(lm: torch.nn.Module) -> bool:
    """Whether a prompt's keys and values can serve the answers after it: not for peft's prompt learning, whose
    virtual tokens go into every pass."""
    return not (isinstance(lm, PeftModel) and lm.active_peft_config.is_prompt_learning)


def shared_prompt_pass(lm: PreTrainedModel, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, rows: torch.Tensor,
                       answer_ids: torch.Tensor, answer_mask: torch.Tensor, states: bool = False
                       ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """N answers of which answer i follows prompt ``rows[i]`` (Q prompts, left-padded), each prompt's pass run once
    and its keys and values serving every answer after it (gradients flow through them to the prompt's pass): the
    logits predicting each answer token (N×T×V) and, with ``states``, the last hidden states at the answer tokens
    (N×T×d). State set per sequence (M_tunable's noise) is the Q prompts'; the answers' pass is given their rows of
    it (``generation.rows_given``)."""
    positions = (prompt_mask.cumsum(dim=1) - 1).clamp(min=0)
    first = lm(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=positions, use_cache=True, logits_to_keep=1)
    cache = first.past_key_values
    cache.batch_select_indices(rows)
    p, t = prompt_ids.shape[1], answer_ids.shape[1]
    mask = torch.cat([prompt_mask[rows], answer_mask], dim=1)
    after = prompt_mask.sum(dim=1)[rows, None] + torch.arange(t, device=answer_ids.device)
    with rows_given(rows):
        rest = lm(input_ids=answer_ids, attention_mask=mask, position_ids=after, past_key_values=cache, use_cache=True,
                  cache_position=torch.arange(p, p + t, device=answer_ids.device), output_hidden_states=states)
    logits = torch.cat([first.logits[rows, -1:], rest.logits[:, :-1]], dim=1)
    return logits, rest.hidden_states[-1] if states else None


def shared_prompt_logprobs(lm: PreTrainedModel, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, rows: torch.Tensor,
                           answer_ids: torch.Tensor, answer_mask: torch.Tensor, temperature: float | torch.Tensor = 1.0
                           ) -> torch.Tensor:
    """``answer_logprobs`` of N answers of which answer i follows prompt ``rows[i]``, by ``shared_prompt_pass``:
    TOFU's retention scores four answers of ~5 tokens after a ~45-token prompt (a third of the tokens), the GANs a
    reference and a sample of ~40 after one of ~60. A model whose prompts cannot be reused (``prompt_reusable``)
    scores whole rows, each given its prompt's state."""
    if not prompt_reusable(lm):
        with rows_given(rows):
            return answer_logprobs(lm, prompt_ids[rows], prompt_mask[rows], answer_ids, answer_mask, temperature)
    logits, _ = shared_prompt_pass(lm, prompt_ids, prompt_mask, rows, answer_ids, answer_mask)
    return picked_logprobs(logits, answer_ids, answer_mask, temperature)


def right_padded(parts: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Answers' (ids, mask) of several sets, one after the other, right-padded to the widest."""
    width = max(ids.shape[1] for ids, _ in parts)
    return tuple(torch.cat([torch.nn.functional.pad(part[i], (0, width - part[i].shape[1])) for part in parts])
                 for i in (0, 1))


def mle_loss(logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood of the real answer tokens."""
    return -(logp * mask).sum() / mask.sum().clamp(min=1)


def stacked(parts: Sequence[Rows]) -> Rows:
    """Several batches' rows as one batch (prompts left-padded, answers right-padded to the widest): one pass
    over it, and one backward through it, costs less than a pass a batch. ``unstacked`` takes it apart."""
    width_p, width_a = max(p[0].shape[1] for p in parts), max(p[2].shape[1] for p in parts)

    def left(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.pad(x, (width_p - x.shape[1], 0))  # masked positions: their ids do not matter

    def right(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.pad(x, (0, width_a - x.shape[1]))

    return (torch.cat([left(p[0]) for p in parts]), torch.cat([left(p[1]) for p in parts]),
            torch.cat([right(p[2]) for p in parts]), torch.cat([right(p[3]) for p in parts]))


def unstacked(values: torch.Tensor, parts: Sequence[Rows]) -> list[torch.Tensor]:
    """Per-answer-token ``values`` (N×T…) of a ``stacked`` batch, back as each part's (its rows, its answers' width)."""
    out, start = [], 0
    for p in parts:
        out.append(values[start:start + len(p[0]), :p[2].shape[1]])
        start += len(p[0])
    return out
