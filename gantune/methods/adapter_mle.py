"""The ablation: the same M_tunable trained by plain MLE on the reference answers (no D, no sampling).

Beside ``gan`` it shows what the adversarial part adds.
"""

from __future__ import annotations

from ..data import Batch
from .gan.generator import AdapterMethod


class AdapterMleMethod(AdapterMethod):
    name = "adapter-mle"

    def train_step(self, batch: Batch) -> dict[str, float]:
        return self.mle_step(batch)
