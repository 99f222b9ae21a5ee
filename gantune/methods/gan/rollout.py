"""The rollout phase: answers sampled from G, with the log-probability of each sampled token.

One decoding call (KV cache, stop at EOS) serves a whole batch — or, with ``--rollout epoch``,
every question of an epoch at once, which on a memory-bound CPU or a launch-bound GPU costs little
more than one batch. The log-probs come from the sampling itself (``generation.decode``), so the
importance ratio π/π_rollout of a later update needs no extra pass. Also here: the frozen pass,
which scores the same answers with the untuned LM (adapter detached) for the KL penalty and gives
the discriminator its features.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Callable

import torch
from transformers import PreTrainedModel

from ...data import Batch, pad
from ...generation import decode
from ...scoring import joined, picked_logprobs, shared_prompt_pass


@dataclass
class Rollout:
    """Sampled answers of some questions, k rows a question (question-major), and how they were drawn."""

    prompt_ids: torch.Tensor  # (N·k)×P, left-padded
    prompt_mask: torch.Tensor
    answer_ids: torch.Tensor  # (N·k)×T, right-padded, EOS included
    answer_mask: torch.Tensor
    logp: torch.Tensor  # (N·k)×T log π_rollout of each sampled token (0 where masked)
    noise: torch.Tensor  # (N·k)×noise_dim, M_tunable's noise while sampling

    def rows(self, start: int, stop: int) -> "Rollout":
        """Rows ``start:stop``, trimmed to the longest answer among them."""
        part = {f.name: getattr(self, f.name)[start:stop] for f in fields(self)}
        width = max(int(part["answer_mask"].sum(1).max()), 1)
        for name in ("answer_ids", "answer_mask", "logp"):
            part[name] = part[name][:, :width]
        return Rollout(**part)

    def tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        return {f"{prefix}.{f.name}": getattr(self, f.name).detach().cpu().clone() for f in fields(self)}

    @classmethod
    def from_tensors(cls, prefix: str, tensors: dict[str, torch.Tensor], device: torch.device,
                     vocab: int) -> "Rollout":
        parts = {f.name: tensors[f"{prefix}.{f.name}"].to(device) for f in fields(cls)}
        check_saved(prefix, parts, (("prompt_ids", "prompt_mask"), ("answer_ids", "answer_mask", "logp"), ("noise",)),
                    vocab)
        return cls(**parts)


def check_saved(prefix: str, parts: dict[str, torch.Tensor], same_shape: tuple[tuple[str, ...], ...],
                vocab: int) -> None:
    """Refuse saved rows that do not fit together (a damaged checkpoint): each group of ``same_shape`` is of one
    2-D shape (1-D for a group named ``ref_*``), every group has the same number of rows, and token ids are
    integers below ``vocab``."""
    for group in same_shape:
        dims = 1 if group[0].startswith("ref_") else 2
        if len({tuple(parts[name].shape) for name in group}) > 1 or parts[group[0]].dim() != dims:
            raise ValueError(f"the saved {prefix}'s {', '.join(group)} do not fit together "
                             f"(shapes {', '.join(str(list(parts[n].shape)) for n in group)})")
    rows = {group[0]: parts[group[0]].shape[0] for group in same_shape}
    if len(set(rows.values())) > 1:
        raise ValueError(f"the saved {prefix}'s parts have different numbers of rows "
                         f"({', '.join(f'{name} {n}' for name, n in rows.items())})")
    for name, value in parts.items():
        if not name.endswith("_ids"):
            continue
        if value.dtype.is_floating_point or (value.numel() and not 0 <= value.min() <= value.max() < vocab):
            raise ValueError(f"the saved {prefix}.{name} holds no token ids of this model (ids 0 to {vocab - 1})")


def merge(batches: list[Batch], pad_id: int) -> Batch:
    """Several batches as one (prompts re-padded on the left, answers on the right)."""
    def rows(ids, mask):
        return [r[m.bool()].tolist() for b_ids, b_mask in zip(ids, mask) for r, m in zip(b_ids, b_mask)]
    p_ids, p_mask = pad(rows([b.prompt_ids for b in batches], [b.prompt_mask for b in batches]), pad_id, left=True)
    a_ids, a_mask = pad(rows([b.answer_ids for b in batches], [b.answer_mask for b in batches]), pad_id, left=False)
    return Batch(p_ids, p_mask, a_ids, a_mask)


@torch.no_grad()
def sample(model: PreTrainedModel, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, noise: torch.Tensor,
           eos_id: int, pad_id: int, max_new_tokens: int, temperature: float = 1.0,
           should_stop: Callable[[], bool] | None = None) -> Rollout:
    """Sample one answer per prompt row from ``model`` (G, adapter attached by the caller) at ``temperature``;
    ``logp`` is of that tempered distribution. ``should_stop`` is asked between tokens (``generation.Stopped``)."""
    out = decode(model, prompt_ids, prompt_mask, eos_id, pad_id, max_new_tokens, temperature, should_stop)
    return Rollout(prompt_ids, prompt_mask, out.ids, out.mask, out.logp, noise)


@torch.no_grad()
def frozen_pass(lm: PreTrainedModel, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, answer_ids: torch.Tensor,
                answer_mask: torch.Tensor, temperature: float = 1.0, rows: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """The untuned LM over [q ; a]: log π_ref of each answer token (B×T; softmax(logits / temperature)) and
    the last hidden states there (B×T×d). With ``rows``, answer i follows prompt ``rows[i]`` and each prompt's
    pass runs once (``scoring.shared_prompt_pass``)."""
    t = answer_ids.shape[1]
    if rows is not None:
        logits, states = shared_prompt_pass(lm, prompt_ids, prompt_mask, rows, answer_ids, answer_mask, states=True)
    else:
        ids, mask, positions = joined(prompt_ids, prompt_mask, answer_ids, answer_mask)
        out = lm(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=t + 1, use_cache=False,
                 output_hidden_states=True)
        logits, states = out.logits[:, :-1], out.hidden_states[-1][:, -t:] if t else out.hidden_states[-1][:, :0]
    return picked_logprobs(logits, answer_ids, answer_mask, temperature), states.float()
