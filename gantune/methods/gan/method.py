"""The GAN method: G = frozen LM + M_tunable, D = a small discriminator, trained SeqGAN-style.

One iteration (see shared/design/gan-method.md):
  1. sample answers y from G once, with the KV cache, stopping at EOS
  2. D step: BCE on real (q+r → 1) and generated (q+y → 0)
  3. reward R = D(q+y) after the D step; advantage A = R − baseline
  4. G step: ONE teacher-forced pass over [q ; y] gives log π of the sampled tokens;
     loss = −A·Σ log π / N (+ λ · MLE on [q ; r], same pass when λ > 0)
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from safetensors.torch import load_file, save_file
from torch import nn

from ...config import TrainConfig
from ...data import Batch, pad
from ...generation import generate_answers
from ...models import BaseModel
from ...scoring import answer_logprobs, mle_loss
from ..base import (
    load_module_tensors,
    load_optimizer_tensors,
    module_tensors,
    optimizer_tensors,
    register,
)
from .adapter import MTunable
from .discriminator import EmbeddingDiscriminator, ThesisDiscriminator
from .generator import AdapterMethod
from .policy import advantages, policy_gradient_loss, thesis_logprobs

D_CONFIG = "discriminator_config.json"
D_WEIGHTS = "discriminator.safetensors"


def build_discriminator(base: BaseModel, config: TrainConfig) -> nn.Module:
    if config.discriminator == "thesis":
        pad_id = base.tokenizer.pad_token_id
        return ThesisDiscriminator(config.max_prompt_tokens + config.max_new_tokens, config.d_hidden, pad_id)
    return EmbeddingDiscriminator(base.model.get_input_embeddings(), config.d_hidden, config.max_new_tokens)


@register
class GanMethod(AdapterMethod):
    name = "gan"

    def __init__(self, base: BaseModel, config: TrainConfig, accelerator: Accelerator | None = None,
                 adapter: MTunable | None = None):
        super().__init__(base, config, accelerator, adapter)
        self.discriminator = build_discriminator(base, config).to(base.device)
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=config.d_lr)
        self.reward_mean: float | None = None  # running mean, the baseline of one-row batches
        self._last_fake: tuple[torch.Tensor, torch.Tensor] | None = None

    # --- one iteration ---------------------------------------------------------------------------
    def _sample(self, batch: Batch, noise: torch.Tensor, max_new: int) -> tuple[torch.Tensor, torch.Tensor]:
        with self._attached(noise), self.accelerator.autocast():
            return generate_answers(self.base.model, batch.prompt_ids, batch.prompt_mask, self.base.eos_id,
                                    self.pad_id, max_new, sample=True)

    def _d(self, batch: Batch, answers: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        with self.accelerator.autocast():
            return self.discriminator(batch.prompt_ids, batch.prompt_mask, answers, mask).float()

    def train_step(self, batch: Batch) -> dict[str, float]:
        cfg = self.config
        b = len(batch)
        # cap sampling at the longest reference answer in the batch: nothing longer is ever real
        max_new = min(cfg.max_new_tokens, batch.answer_ids.shape[1])
        noise = self.adapter.sample_noise(b)
        self.adapter.train()
        t0 = time.perf_counter()
        fake, fake_mask = self._sample(batch, noise, max_new)
        t1 = time.perf_counter()

        # D step(s): real → 1 − smoothing, generated → 0
        bce = nn.functional.binary_cross_entropy
        real_label = torch.full((b,), 1.0 - cfg.label_smoothing, device=fake.device)
        for _ in range(cfg.d_steps):
            d_loss = bce(self._d(batch, batch.answer_ids, batch.answer_mask), real_label) + bce(
                self._d(batch, fake, fake_mask), torch.zeros(b, device=fake.device)
            )
            self.opt_d.zero_grad(set_to_none=True)
            self.backward(d_loss, list(self.discriminator.parameters()))
            self.opt_d.step()

        if cfg.resample_for_g:  # the thesis sampled again for the generator step
            noise = self.adapter.sample_noise(b)
            fake, fake_mask = self._sample(batch, noise, max_new)
        with torch.no_grad():
            d_real = self._d(batch, batch.answer_ids, batch.answer_mask)
            reward = self._d(batch, fake, fake_mask)
        self._last_fake = (fake, fake_mask)
        adv = advantages(reward, cfg.baseline, self.reward_mean, cfg.normalize_advantage)
        t2 = time.perf_counter()
        r = float(reward.mean())
        self.reward_mean = r if self.reward_mean is None else 0.9 * self.reward_mean + 0.1 * r

        # G step: one pass over [q ; y] (and [q ; r] when the MLE term is on)
        pg, mle = self._generator_losses(batch, noise, fake, fake_mask, adv)
        g_loss = pg + cfg.mle_weight * mle if cfg.mle_weight > 0 else pg
        self.opt_g.zero_grad(set_to_none=True)
        self.backward(g_loss, list(self.adapter.parameters()))
        self.opt_g.step()
        t3 = time.perf_counter()

        return {
            "g_loss": g_loss.item(),
            "pg_loss": pg.item(),
            "mle_loss": mle.item(),
            "d_loss": d_loss.item(),
            "reward_mean": r,
            "d_acc_real": float((d_real > 0.5).float().mean()),
            "d_acc_fake": float((reward < 0.5).float().mean()),
            "answer_tokens": float(fake_mask.sum()),
            "answer_len_mean": float(fake_mask.sum(1).float().mean()),
            # where the time goes (wall clock; the D part includes a resampling when --resample-for-g)
            "sample_seconds": t1 - t0,
            "d_seconds": t2 - t1,
            "g_seconds": t3 - t2,
        }

    def _generator_losses(self, batch, noise, fake, fake_mask, adv) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.config
        with self._attached(noise), self.accelerator.autocast():
            if cfg.pg_estimator == "thesis":
                logp = thesis_logprobs(self.base.model, batch.prompt_ids, batch.prompt_mask, fake, fake_mask)
                mle = torch.zeros((), device=fake.device)
                if cfg.mle_weight > 0:
                    real_logp = answer_logprobs(self.base.model, batch.prompt_ids, batch.prompt_mask,
                                                batch.answer_ids, batch.answer_mask)
                    mle = mle_loss(real_logp, batch.answer_mask)
                return policy_gradient_loss(logp, fake_mask, adv), mle
            if cfg.mle_weight <= 0:
                logp = answer_logprobs(self.base.model, batch.prompt_ids, batch.prompt_mask, fake, fake_mask)
                return policy_gradient_loss(logp, fake_mask, adv), torch.zeros((), device=fake.device)
            # real and generated rows side by side in one batch: one forward, one backward
            b = len(batch)
            rows = [*_rows(fake, fake_mask), *_rows(batch.answer_ids, batch.answer_mask)]
            ids, mask = (t.to(fake.device) for t in pad(rows, self.pad_id, left=False))
            with self.adapter.noise_set(torch.cat([noise, noise])):
                logp = answer_logprobs(self.base.model, batch.prompt_ids.repeat(2, 1),
                                       batch.prompt_mask.repeat(2, 1), ids, mask)
            return policy_gradient_loss(logp[:b], mask[:b], adv), mle_loss(logp[b:], mask[b:])

    def sampled_answers(self) -> list[str]:
        if self._last_fake is None:
            return []
        fake, mask = self._last_fake
        return [self.base.tokenizer.decode(row[m.bool()], skip_special_tokens=True).strip() for row, m in zip(fake, mask)]

    # --- bookkeeping: the adapter's, plus the discriminator's ----------------------------------------
    def trainable_parameters(self) -> list[nn.Parameter]:
        return [*super().trainable_parameters(), *self.discriminator.parameters()]

    def save_pretrained(self, folder: str | Path) -> None:
        super().save_pretrained(folder)
        folder = Path(folder)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.discriminator.state_dict().items()}, folder / D_WEIGHTS)
        (folder / D_CONFIG).write_text(json.dumps({"kind": self.config.discriminator, "hidden": self.config.d_hidden}))

    @classmethod
    def from_pretrained(cls, base: BaseModel, folder: str | Path, config: TrainConfig) -> "GanMethod":
        method = super().from_pretrained(base, folder, config)
        d_file = Path(folder) / D_WEIGHTS
        if d_file.is_file():
            method.discriminator.load_state_dict(load_file(d_file))
        return method

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {
            **super().state_tensors(),
            **module_tensors("discriminator", self.discriminator),
            **optimizer_tensors("opt_d", self.opt_d),
            "reward_mean": torch.tensor([self.reward_mean if self.reward_mean is not None else float("nan")]),
        }

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        super().load_state_tensors(tensors)
        load_module_tensors("discriminator", self.discriminator, tensors)
        load_optimizer_tensors("opt_d", self.opt_d, tensors)
        value = float(tensors["reward_mean"][0])
        self.reward_mean = None if value != value else value


def _rows(ids: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
    return [row[m.bool()].tolist() for row, m in zip(ids, mask)]
