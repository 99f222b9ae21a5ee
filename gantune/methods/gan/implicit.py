"""The implicit discriminator: a GAN with no D network and no sampling inside the step (DDO, SPIN).

    D(q, y) = β · [log π_θ(y | q) − log π_ref(y | q)]        (log-likelihoods summed over the answer's tokens)

π_θ is the generator being tuned, π_ref the same generator frozen at the round's start (the warm-up's
end for the first round). D is high where the generator has made an answer likelier than π_ref had it.
Its loss on a reference r and an answer y sampled from π_ref for the same question q:

    ddo   −log σ(D(q, r)) − log(1 − σ(D(q, y)))       Zheng et al. 2025, "Direct Discriminative Optimization"
    spin  −log σ(D(q, r) − D(q, y))                    Chen et al. 2024, "Self-Play Fine-Tuning"

D's only parameters are the generator's, so training D to tell r from y is moving the generator: up on
the data, down on its own earlier samples. DDO shows that the optimum of this D-loss is the data
distribution itself — it is still a GAN, with the likelihood ratio as its discriminator.

A round: at its start every training question's y is sampled from π_ref in one batched rollout, and
π_ref's log-likelihoods of r and y are computed once (no grad, by the same teacher-forced pass as π_θ's in
a step, so that D is 0 at the round's start up to rounding) — the ``Round`` below. Each step then
reads its questions' rows from the round and makes one teacher-forced pass of π_θ over [q ; r] and [q ; y]
(q's pass once, its keys and values serving both answers, where the adapter allows; the first answer also gives
the MLE term). At the next round π_ref ← π_θ.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, fields
from typing import Callable

import torch
from torch import nn

from ...data import Batch
from ...scoring import right_padded, shared_prompt_logprobs
from .generator import Generator
from .rollout import check_saved


def implicit_d_loss(kind: str, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """The implicit D's loss from D(q, r) and D(q, y) of the same questions (B each), averaged over them."""
    if kind == "spin":
        return nn.functional.softplus(fake - real).mean()  # −log σ(D(q,r) − D(q,y))
    return (nn.functional.softplus(-real) + nn.functional.softplus(fake)).mean()  # −log σ(D(q,r)) − log(1 − σ(D(q,y)))


def sequence_logprobs(generator: Generator, autocast: Callable[[], AbstractContextManager], prompt_ids: torch.Tensor,
                      prompt_mask: torch.Tensor, answers: list[tuple[torch.Tensor, torch.Tensor]], noise: torch.Tensor,
                      chunk: int) -> list[torch.Tensor]:
    """log π(a | q) summed over each answer's tokens (B, one tensor an answer set of ``answers``: each set's ids and
    mask, B rows), no grad, ``chunk`` questions a pass, each row fed its noise: the sets' answers to a question after
    one pass of its prompt where the model allows (``scoring.shared_prompt_logprobs``)."""
    out = []
    for start in range(0, len(prompt_ids), chunk):
        rows = slice(start, start + chunk)
        parts = []
        for ids, mask in answers:
            width = max(int(mask[rows].sum(1).max()), 1)
            parts.append((ids[rows, :width], mask[rows, :width]))
        n = len(prompt_ids[rows])
        each = torch.arange(n, device=prompt_ids.device).repeat(len(parts))
        with torch.no_grad(), generator.policy(noise[rows]) as model, autocast():
            logp = shared_prompt_logprobs(model, prompt_ids[rows], prompt_mask[rows], each, *right_padded(parts))
        out.append(logp.sum(1).split(n))
    return [torch.cat(column) for column in zip(*out)]


def _row_keys(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, answer_ids: torch.Tensor,
              answer_mask: torch.Tensor) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """Each row's question and reference as token tuples, padding left out: what finds a question's row."""
    return [(tuple(p[pm.bool()].tolist()), tuple(a[am.bool()].tolist()))
            for p, pm, a, am in zip(prompt_ids, prompt_mask, answer_ids, answer_mask)]


@dataclass
class Round:
    """One round's fixed part, made at its start: each training question (N rows, in any order) with its
    reference, the answer y sampled from π_ref, the noise both were scored with, and π_ref's log-likelihoods."""

    prompt_ids: torch.Tensor  # N×P, left-padded
    prompt_mask: torch.Tensor
    answer_ids: torch.Tensor  # N×Tr, the references
    answer_mask: torch.Tensor
    fake_ids: torch.Tensor  # N×Ty, sampled from π_ref, EOS included
    fake_mask: torch.Tensor
    noise: torch.Tensor  # N×noise_dim (N×0 for a generator with no noise)
    ref_real: torch.Tensor  # N, log π_ref(r | q)
    ref_fake: torch.Tensor  # N, log π_ref(y | q)
    number: torch.Tensor  # the round's index from 0 (a 1-element tensor, so it is saved with the rest)

    def __post_init__(self) -> None:
        keys = _row_keys(self.prompt_ids, self.prompt_mask, self.answer_ids, self.answer_mask)
        self._index = {key: i for i, key in enumerate(keys)}

    @property
    def index(self) -> int:
        return int(self.number[0])

    def rows_of(self, batch: Batch) -> torch.Tensor:
        """The round's row of each of ``batch``'s questions (a question the round lacks is a bug: it raises)."""
        keys = _row_keys(batch.prompt_ids, batch.prompt_mask, batch.answer_ids, batch.answer_mask)
        missing = [k for k in keys if k not in self._index]
        if missing:
            raise RuntimeError("a training question has no answer sampled in this round")
        return torch.tensor([self._index[k] for k in keys], device=self.fake_ids.device)

    def fakes(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The sampled answers of ``rows`` (ids, mask), trimmed to the longest among them."""
        ids, mask = self.fake_ids[rows], self.fake_mask[rows]
        width = max(int(mask.sum(1).max()), 1)
        return ids[:, :width], mask[:, :width]

    def tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        return {f"{prefix}.{f.name}": getattr(self, f.name).detach().cpu().clone() for f in fields(self)}

    @classmethod
    def from_tensors(cls, prefix: str, tensors: dict[str, torch.Tensor], device: torch.device, vocab: int) -> "Round":
        parts = {f.name: tensors[f"{prefix}.{f.name}"].to(device) for f in fields(cls)}
        check_saved(prefix, parts, (("prompt_ids", "prompt_mask"), ("answer_ids", "answer_mask"),
                                    ("fake_ids", "fake_mask"), ("noise",), ("ref_real", "ref_fake")), vocab)
        return cls(**parts)
