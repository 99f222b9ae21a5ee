"""Evaluate a model (base, or base + a tuned method) on held-out pairs and on knowledge retention.

Answers are greedy, batched and stop at EOS. Scores: ROUGE-1/2/L/Lsum, BLEURT (or why it is
unavailable), MiniLM cosine similarity, and retention on TOFU's real_authors / world_facts sets:
the share of questions whose true answer is more likely (length-normalised) than every perturbed
one, plus ROUGE-L of the generated answers there.
"""

from __future__ import annotations

import random
from contextlib import nullcontext
from dataclasses import dataclass, field
from statistics import mean
from typing import Any

from . import metrics
from .data import Encoder, QAPair, load_pairs
from .errors import GantuneError
from .generation import answer_questions
from .methods import TuningMethod
from .models import BaseModel

RETENTION_SETS = ("real_authors", "world_facts")


@dataclass
class Scorers:
    """The learned metrics, loaded once and shared by every evaluation of a session."""

    bleurt: metrics.Bleurt
    semantic: metrics.Semantic

    @classmethod
    def load(cls, bleurt_checkpoint: str | None = metrics.Bleurt.DEFAULT_CHECKPOINT, device: str = "cpu") -> "Scorers":
        return cls(metrics.Bleurt.load(bleurt_checkpoint, device=device), metrics.Semantic.load(device=device))


@dataclass
class EvalSettings:
    max_new_tokens: int = 48
    max_prompt_tokens: int = 128
    batch_size: int = 16
    retention_n: int | None = None  # questions per retention set (seeded sample); None = all
    retention_max_new_tokens: int = 32
    seed: int = 0
    noise: str = "zeros"  # what M_tunable is fed while answering: zeros, or sampled ("sample")
    extra: dict[str, Any] = field(default_factory=dict)


def load_retention_sets(data: str | None, n: int | None, seed: int) -> dict[str, list[QAPair]]:
    """real_authors and world_facts (with perturbed answers), each cut to a seeded sample of ``n``."""
    sets = {}
    for name in RETENTION_SETS:
        try:
            pairs, _ = load_pairs(data, name)
        except GantuneError:
            continue  # a data folder without these files: retention is reported as unavailable
        pairs = [p for p in pairs if p.perturbed]  # a single user file has no perturbed answers
        if not pairs:
            continue
        if n is not None and n < len(pairs):
            pairs = random.Random(seed).sample(pairs, n)
        sets[name] = pairs
    return sets


def evaluate(
    base: BaseModel,
    method: TuningMethod | None,
    test: list[QAPair],
    retention_sets: dict[str, list[QAPair]],
    scorers: Scorers,
    settings: EvalSettings,
) -> dict[str, Any]:
    """Scores of one model; ``method=None`` is the base model."""
    questions, references = [p.question for p in test], [p.answer for p in test]
    answers = answer_questions(base, questions, settings.max_new_tokens, settings.max_prompt_tokens,
                               method=method, batch_size=settings.batch_size)
    result: dict[str, Any] = {**metrics.rouge(answers, references), "rouge_note": metrics.ROUGE_NOTE}
    bleurt = scorers.bleurt.score(answers, references)
    result["bleurt"] = mean(bleurt) if bleurt is not None else None
    result["bleurt_note"] = scorers.bleurt.reason or f"BLEURT checkpoint {scorers.bleurt.checkpoint}"
    semantic = scorers.semantic.score(answers, references)
    result["semantic"] = mean(semantic) if semantic is not None else None
    result["semantic_note"] = scorers.semantic.reason or "cosine of all-MiniLM-L6-v2 sentence embeddings"
    result.update(_retention(base, method, retention_sets, settings))
    result["noise"] = settings.noise if method is not None else None
    result["generations"] = [{"question": q, "reference": r, "answer": a} for q, r, a in zip(questions, references, answers)]
    return result


def _retention(base: BaseModel, method: TuningMethod | None, sets: dict[str, list[QAPair]],
               settings: EvalSettings) -> dict[str, Any]:
    if not sets:
        return {"retention": None, "retention_rougeL": None, "retention_note": "no real_authors / world_facts data"}
    encoder = Encoder(base.tokenizer, base.eos_id, settings.max_prompt_tokens, settings.max_new_tokens)
    per_set, hits, total, rouge_l = {}, 0.0, 0, []
    for name, pairs in sets.items():
        with method.enabled(None) if method is not None else nullcontext(base.model) as model:  # zero noise
            likelihood = metrics.likelihood_retention(model, encoder, pairs, batch_size=settings.batch_size)
        answers = answer_questions(base, [p.question for p in pairs], settings.retention_max_new_tokens,
                                   settings.max_prompt_tokens, method=method, batch_size=settings.batch_size)
        score = metrics.rouge(answers, [p.answer for p in pairs])["rougeL"]
        per_set[name] = {**likelihood, "rougeL": score}
        hits += likelihood["retention"] * likelihood["n"]
        total += likelihood["n"]
        rouge_l.append(score)
    return {"retention": hits / total, "retention_rougeL": mean(rouge_l), "retention_sets": per_set,
            "retention_note": "share of questions whose true answer is likelier (mean log-prob per token, "
                              "zero adapter noise) than each perturbed answer"}
