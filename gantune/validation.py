"""Validation: held-out training pairs that score each epoch's adapter, so a run can keep the best one."""

from __future__ import annotations

import torch

from .data import Encoder, QAPair
from .inference import answer_questions
from .methods.base import TuningMethod
from .metrics import rouge
from .models import BaseModel
from .scoring import answer_logprobs, mle_loss

MIN_VAL_PAIRS = 8  # fewer validation pairs are noise: their scores are recorded and plotted, the last adapter is kept


def split_validation(train: list[QAPair], val_pairs: int) -> tuple[list[QAPair], list[QAPair]]:
    """The last ``val_pairs`` training pairs (at most a tenth of them) held out for validation."""
    n = min(val_pairs, len(train) // 10)
    return (train[:-n], train[-n:]) if n else (train, [])


class Validation:
    """Scores a method's adapter on held-out training pairs: ROUGE-L of its greedy answers, or the NLL of the references."""

    def __init__(self, base: BaseModel, encoder: Encoder, pairs: list[QAPair], metric: str, device: torch.device):
        self.base, self.encoder, self.pairs, self.metric = base, encoder, pairs, metric
        self.batch = encoder.collate(encoder.encode(pairs)).to(device)

    def better(self, score: float, than: float) -> bool:
        return score > than if self.metric == "rougeL" else score < than

    @torch.no_grad()
    def score(self, method: TuningMethod) -> float:
        if self.metric == "rougeL":
            answers = answer_questions(self.base, [p.question for p in self.pairs], self.encoder.max_answer,
                                       self.encoder.max_prompt, method=method)
            return rouge(answers, [p.answer for p in self.pairs])["rougeL"]
        b = self.batch
        with method.enabled(None) as model, method.accelerator.autocast():
            logp = answer_logprobs(model, b.prompt_ids, b.prompt_mask, b.answer_ids, b.answer_mask)
        return float(mle_loss(logp, b.answer_mask))
