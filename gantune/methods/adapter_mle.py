"""The ablation: the same M_tunable trained by plain MLE on the reference answers (no D, no sampling).

Beside ``gan`` it shows what the adversarial part adds.
"""

from __future__ import annotations

from ..data import Batch
from ..scoring import answer_logprobs, mle_loss
from .base import register
from .gan.generator import AdapterMethod


@register
class AdapterMleMethod(AdapterMethod):
    name = "adapter-mle"

    def train_step(self, batch: Batch) -> dict[str, float]:
        self.adapter.train()
        with self._attached(self.adapter.sample_noise(len(batch))), self.accelerator.autocast():
            logp = answer_logprobs(self.base.model, batch.prompt_ids, batch.prompt_mask, batch.answer_ids, batch.answer_mask)
            loss = mle_loss(logp, batch.answer_mask)
        self.opt_g.zero_grad(set_to_none=True)
        self.backward(loss, self.trainable_parameters())
        self.opt_g.step()
        return {"g_loss": loss.item(), "mle_loss": loss.item()}
