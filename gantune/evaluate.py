"""Evaluate a model (base, or base + a tuned method) on held-out pairs and on knowledge retention.

Answers are batched and stop at EOS: greedy (temperature 0, the default) or sampled at a
temperature from a seeded generator. Scores: ROUGE-1/2/L/Lsum, BLEURT (or why it is unavailable),
MiniLM cosine similarity, the distribution of the answers against the references' (length,
truncation, distinct n-grams, a real-vs-generated two-sample AUC) and retention on TOFU's
real_authors / world_facts sets: the share of questions whose true answer is more likely
(length-normalised) than every perturbed one, plus ROUGE-L of the greedy answers there. Every
per-question score is kept (``per_question``) so that the bench can put intervals on the means.
"""

from __future__ import annotations

import hashlib
import json
import random
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import mean
from typing import Any, Callable, Sequence

import torch

from . import metrics
from .data import Encoder, QAPair, load_pairs
from .errors import GantuneError
from .generation import Stopped
from .inference import Answers, answers, scoring_rows
from .methods.base import TuningMethod
from .models import BaseModel, check_context

RETENTION_SETS = ("real_authors", "world_facts")
EVALUATION_VERSION = 2  # raised whenever what an evaluation computes changes: stored results of another are not reused
MIN_TEMPERATURE = 0.01  # below it logits / temperature can overflow and sampling fails; 0 is greedy
ShouldStop = Callable[[], bool]
# told as each batch of answers begins: (the evaluation's share done, its share done once the batch ends), shares of
# the answer tokens it may decode (``answer_tokens``)
EvalProgress = Callable[[float, float], None]


def check_temperature(temperature: float, name: str = "a temperature") -> None:
    """Refuse a sampling temperature the decoder cannot use: 0 (greedy) or at least ``MIN_TEMPERATURE``."""
    if temperature != 0 and not temperature >= MIN_TEMPERATURE:  # NaN fails both
        raise GantuneError(f"{name} must be 0 (greedy) or at least {MIN_TEMPERATURE:g} (got {temperature:g})")


def _check_stop(should_stop: ShouldStop | None) -> None:
    if should_stop is not None and should_stop():
        raise Stopped


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
    retention_n: int | None = None  # questions per retention set (seeded sample); None = all
    retention_max_new_tokens: int = 32
    seed: int = 0  # seeds the retention sample, sampled answers and the two-sample test's folds
    temperature: float = 0.0  # 0: greedy answers; above 0: sampled at this temperature (no top-k/top-p)


def evaluation_key(base: BaseModel, test: list[QAPair], retention_sets: dict[str, list[QAPair]] | None,
                   scorers: Scorers, settings: EvalSettings, temperatures: Sequence[float] = (),
                   adapter: Path | None = None) -> str:
    """A digest of everything an evaluation's result depends on: this code's version, the model (where it came
    from, its precision, its weights), a run's adapter files, the questions, the settings and the scorers.
    An evaluation with the same key gives the same result, so a stored one is reused (``gantune.compare``)."""
    digest = hashlib.sha256()
    with torch.no_grad():  # every weight's sum and sum of squares: a change anywhere changes the key
        for name, p in base.model.state_dict().items():
            t = p.detach().double()
            digest.update(f"{name}{tuple(p.shape)}{p.dtype}{float(t.sum())!r}{float((t * t).sum())!r}".encode())
    if adapter is not None:
        for f in sorted(Path(adapter).rglob("*")):
            if f.is_file() and f.name != "README.md":  # the model card (gantune.share) changes no answer
                digest.update(f.name.encode() + hashlib.sha256(f.read_bytes()).digest())
    described = {"version": EVALUATION_VERSION, "model": base.source, "precision": base.precision,
                 "test": [(p.question, p.answer) for p in test],
                 "retention": None if retention_sets is None else
                 {k: [(p.question, p.answer, list(p.perturbed)) for p in v] for k, v in retention_sets.items()},
                 "settings": asdict(settings), "temperatures": [float(t) for t in temperatures],
                 "scorers": [scorers.bleurt.checkpoint, scorers.bleurt.available, scorers.semantic.available]}
    digest.update(json.dumps(described, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:32]


def answer_tokens(test: Sequence[QAPair], retention_sets: dict[str, list[QAPair]] | None,
                  settings: EvalSettings) -> int:
    """The answer tokens an evaluation may decode (each question times its token limit): its progress's unit."""
    retention = sum(len(pairs) for pairs in (retention_sets or {}).values())
    return len(test) * settings.max_new_tokens + retention * settings.retention_max_new_tokens


def progress_part(progress: EvalProgress | None, before: float, each: float, whole: float
                  ) -> Callable[[float, float], None] | None:
    """A part's progress (done, done once its batch ends; counts of something worth ``each`` unit) told to ``progress``
    as shares of a ``whole`` whose first ``before`` units come before the part (None without ``progress``)."""
    if progress is None:
        return None
    return lambda done, upto: progress((before + done * each) / whole, (before + upto * each) / whole)


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
    retention_sets: dict[str, list[QAPair]] | None,
    scorers: Scorers,
    settings: EvalSettings,
    should_stop: ShouldStop | None = None,
    progress: EvalProgress | None = None,
) -> dict[str, Any]:
    """Scores of one model; ``method=None`` is the base model, ``retention_sets=None`` skips retention.

    ``should_stop`` is asked between answer tokens, scoring batches and scorers; when it says so,
    ``Stopped`` is raised and nothing is returned. ``progress`` hears of each batch of answers as it begins.
    """
    check_temperature(settings.temperature)
    check_context(base.model, settings.max_prompt_tokens, settings.max_new_tokens)
    questions, references = [p.question for p in test], [p.answer for p in test]
    whole, tested = max(answer_tokens(test, retention_sets, settings), 1), len(test) * settings.max_new_tokens
    answered = answers(base, questions, settings.max_new_tokens, settings.max_prompt_tokens, method,
                       settings.temperature, settings.seed, should_stop,
                       progress_part(progress, 0, settings.max_new_tokens, whole))
    _check_stop(should_stop)
    rouge = metrics.rouge_per_example(answered.texts, references)
    per_question: dict[str, list] = {k: [r[k] for r in rouge] for k in metrics.ROUGE_KEYS}
    result: dict[str, Any] = {k: mean(v) for k, v in per_question.items()}
    result["rouge_note"] = metrics.ROUGE_NOTE
    bleurt = scorers.bleurt.score(answered.texts, references)
    result["bleurt"] = mean(bleurt) if bleurt is not None else None
    result["bleurt_note"] = scorers.bleurt.reason or f"BLEURT checkpoint {scorers.bleurt.checkpoint}"
    if bleurt is not None:
        per_question["bleurt"] = bleurt
    _check_stop(should_stop)
    result.update(_distribution(base, answered, references, scorers.semantic, settings.seed, per_question))
    result["semantic_note"] = scorers.semantic.reason or "cosine of all-MiniLM-L6-v2 sentence embeddings"
    if retention_sets is not None:
        result.update(_retention(base, method, retention_sets, settings, should_stop,
                                 progress_part(progress, tested, settings.retention_max_new_tokens, whole)))
    result["temperature"] = settings.temperature
    result["noise"] = method.eval_noise() if method is not None else None
    result["per_question"] = per_question
    result["generations"] = [{"question": q, "reference": r, "answer": a, "tokens": n, "truncated": t}
                             for q, r, a, n, t in zip(questions, references, answered.texts, answered.lengths,
                                                      answered.truncated)]
    return result


def _distribution(base: BaseModel, answers: Answers, references: list[str], semantic: metrics.Semantic, seed: int,
                  per_question: dict[str, list]) -> dict[str, Any]:
    """Semantic similarity and the answers' distribution against the references' (fills ``per_question``)."""
    reference_lengths = metrics.token_lengths(base.tokenizer, references)
    per_question.update(length=answers.lengths, reference_length=reference_lengths,
                        truncated=[float(t) for t in answers.truncated])
    out: dict[str, Any] = {
        "length_mean": mean(answers.lengths), "length_w1": metrics.length_w1(answers.lengths, reference_lengths),
        "truncated": mean(per_question["truncated"]),
        "distinct1": metrics.distinct_n(answers.texts, 1), "distinct2": metrics.distinct_n(answers.texts, 2),
        "reference": {"length_mean": mean(reference_lengths), "distinct1": metrics.distinct_n(references, 1),
                      "distinct2": metrics.distinct_n(references, 2)},
        "semantic": None, "real_vs_generated_auc": None,
    }
    real, generated = semantic.embed(references), semantic.embed(answers.texts)
    if real is None or generated is None:
        return out
    per_question["semantic"] = metrics.cosine(generated, real)
    out["semantic"] = mean(per_question["semantic"])
    scores = metrics.two_sample_scores(real, generated, seed=seed)
    if scores is not None:
        per_question["real_score"], per_question["generated_score"] = scores[0].tolist(), scores[1].tolist()
        out["real_vs_generated_auc"] = metrics.auc(*scores)
    return out


def _retention(base: BaseModel, method: TuningMethod | None, sets: dict[str, list[QAPair]],
               settings: EvalSettings, should_stop: ShouldStop | None = None,
               on_batch: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Likelihood retention and ROUGE-L of the greedy answers on each set; every set's questions are answered,
    and their true and perturbed answers scored, together in the widest batches (fewer passes). ``on_batch``:
    ``answers``'."""
    if not sets:
        return {"retention": None, "retention_rougeL": None, "retention_answered": None,
                "retention_note": "no real_authors / world_facts data"}
    encoder = Encoder(base.tokenizer, base.eos_id, settings.max_prompt_tokens, settings.max_new_tokens)
    every = [p for pairs in sets.values() for p in pairs]
    texts = answers(base, [p.question for p in every], settings.retention_max_new_tokens, settings.max_prompt_tokens,
                    method, should_stop=should_stop, on_batch=on_batch).texts
    rows = scoring_rows(base, settings.max_new_tokens)
    with method.enabled(None) if method is not None else nullcontext(base.model) as model, base.autocast():  # zero noise
        retained_all = metrics.likelihood_retention(model, encoder, every, rows, should_stop)["retained"]
    per_set, rouge_l, start = {}, [], 0
    for name, pairs in sets.items():
        retained = retained_all[start:start + len(pairs)]
        mine = texts[start:start + len(pairs)]
        scores = [r["rougeL"] for r in metrics.rouge_per_example(mine, [p.answer for p in pairs])]
        answered = [metrics.gives_answer(a, p.answer, p.perturbed) for a, p in zip(mine, pairs)]
        start += len(pairs)
        per_set[name] = {"retention": sum(retained) / len(retained), "n": len(retained), "retained": retained,
                         "rougeL": mean(scores), "rougeL_per_question": scores, "answered_per_question": answered}
        rouge_l.append(mean(scores))
    answered = [x for s in per_set.values() for x in s["answered_per_question"]]
    return {"retention": mean(retained_all), "retention_rougeL": mean(rouge_l), "retention_sets": per_set,
            "retention_answered": mean(answered), "retention_n": len(answered),
            "retention_note": "share of questions whose true answer is likelier (mean log-prob per token, "
                              "zero adapter noise) than each perturbed answer",
            "retention_answered_note": metrics.ANSWERED_NOTE}
