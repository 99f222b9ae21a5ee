"""G = frozen LM + M_tunable, as a tuning method: attach, generate, save, resume.

``AdapterMethod`` holds everything about M_tunable that does not depend on how it is trained;
``AdapterMleMethod`` (the ablation) trains it by plain MLE, and ``GanMethod`` holds one as its
generator. A generator is a tuning method trained by MLE (its ``train_step``: the GAN's warm-up) that
also offers what the adversarial phases need — the ``Generator`` protocol below; M_tunable
(``AdapterMethod``) and the peft adapters (``PeftMethod``) both do.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Iterator, Protocol

import torch
from accelerate import Accelerator
from torch import nn
from transformers import PreTrainedModel

from ...config import TrainConfig
from ...data import Batch
from ...models import BaseModel
from ...scoring import answer_logprobs, mle_loss
from ..base import (
    TuningMethod,
    fused,
    load_module_tensors,
    load_optimizer_tensors,
    module_tensors,
    optimizer_tensors,
)
from .adapter import AdapterConfig, MTunable


class Generator(Protocol):
    """What the GAN's phases ask of its generator, besides a ``TuningMethod``'s own (MLE ``train_step``,
    ``enabled``, ``trainable_parameters``, save, load, state tensors, ``init_from``)."""

    optimizer: torch.optim.Optimizer  # steps the generator's weights (the GAN sets its learning rate per phase)

    def sample_noise(self, n: int) -> torch.Tensor:
        """The generator's noise for ``n`` sequences (n × 0 for one that takes none)."""

    def policy(self, noise: torch.Tensor | None) -> AbstractContextManager[PreTrainedModel]:
        """A block that yields the tuned model, gradients on, each row fed its ``noise``: what the GAN samples from
        and scores teacher-forced (the untuned LM, for frozen passes, stays ``base.model``)."""


class AdapterMethod(TuningMethod):
    def __init__(self, base: BaseModel, config: TrainConfig, accelerator: Accelerator | None = None,
                 adapter: MTunable | None = None):
        super().__init__(base, config, accelerator)
        embed_dim = base.model.get_input_embeddings().embedding_dim
        self.adapter = adapter or MTunable(
            AdapterConfig(embed_dim, config.noise_dim, list(config.adapter_hidden), config.adapter_init)
        )
        self.adapter.to(base.device)
        params = list(self.adapter.parameters())
        self.opt_g = torch.optim.Adam(params, lr=config.lr, **fused(params))
        self.pad_id = base.tokenizer.pad_token_id

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.opt_g

    def sample_noise(self, n: int) -> torch.Tensor:
        return self.adapter.sample_noise(n)

    @contextmanager
    def policy(self, noise: torch.Tensor | None) -> Iterator[PreTrainedModel]:
        """The LM with M_tunable attached (train mode), fed ``noise``: gradients flow to M_tunable."""
        self.adapter.train()
        with self._attached(noise):
            yield self.base.model

    def eval_noise(self) -> str | None:
        return self.config.eval_noise

    @contextmanager
    def _attached(self, noise: torch.Tensor | None) -> Iterator[None]:
        """M_tunable between the LM's embeddings and its blocks, fed ``noise``, for the block only."""
        handle = self.adapter.attach(self.base.model)
        try:
            with self.adapter.noise_set(noise):
                yield
        finally:
            handle.remove()

    @contextmanager
    def enabled(self, batch_size: int | None = None) -> Iterator[PreTrainedModel]:
        """The tuned model; noise is zeros, or sampled per sequence with --eval-noise sample."""
        self.adapter.eval()
        sample = self.config.eval_noise == "sample" and batch_size is not None
        noise = self.adapter.sample_noise(batch_size) if sample else None
        with torch.no_grad(), self._attached(noise):
            yield self.base.model

    def mle_step(self, batch: Batch) -> dict[str, float]:
        """One MLE step of M_tunable on the reference answers (noise sampled per sequence, gradients clipped)."""
        with self.policy(self.sample_noise(len(batch))) as model, self.accelerator.autocast():
            logp = answer_logprobs(model, batch.prompt_ids, batch.prompt_mask, batch.answer_ids, batch.answer_mask)
            loss = mle_loss(logp, batch.answer_mask)
        self.opt_g.zero_grad(set_to_none=True)
        grad_norm = self.backward(loss, list(self.adapter.parameters()))
        self.opt_g.step()
        return {"g_loss": loss.item(), "mle_loss": loss.item(), "grad_norm": grad_norm}

    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self.adapter.parameters())

    def adapter_norm(self) -> float:
        with torch.no_grad():
            return float(torch.sqrt(sum(p.double().pow(2).sum() for p in self.adapter.parameters())))

    def save_pretrained(self, folder: str | Path) -> None:
        self.adapter.save_pretrained(folder)

    @classmethod
    def from_pretrained(cls, base: BaseModel, folder: str | Path, config: TrainConfig) -> "AdapterMethod":
        return cls(base, config, adapter=MTunable.from_pretrained(folder, base.device))

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {**module_tensors("adapter", self.adapter), **optimizer_tensors("opt_g", self.opt_g)}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        load_module_tensors("adapter", self.adapter, tensors)
        load_optimizer_tensors("opt_g", self.opt_g, tensors)
