"""A watch for collapse in the answers sampled while training: pure functions over answer strings.

A generator that collapses (mode collapse, degenerate repetition) shows it in its samples long
before an evaluation: answers that repeat themselves ("I-N-I-N-I-N-…"), answers that are all alike,
answers that all run to the token cap. Each signal is measured against the reference answers of
the same questions, so a dataset of short or formulaic answers does not raise a false alarm.

- repetition: seq-rep-n (Welleck et al., "Neural text degeneration with unlikelihood training",
  ICLR 2020), the share of an answer's word n-grams that repeat an earlier n-gram of the same answer;
- diversity: distinct-2 over the answers (unique word bigrams / all bigrams), as in the bench;
- length: the share of answers as long as the token cap;
- made-up words: the share of an answer's longer words that the model's own vocabulary does not hold
  as one token in any casing ("Wdetermino", "OJPMAES"): a generator pushed off the language writes
  fragments of words. Names are made of several tokens too, so it is read against the references.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Sequence

from .metrics import distinct_n

_WORD = re.compile(r"\w+")
_LONG_WORD = re.compile(r"[^\W\d_]{4,}")  # words of 4 letters or more: short ones are nearly all single tokens

REPETITION_N = 4
MIN_ANSWERS = 4  # fewer answers than this say too little to warn about
REPETITION_AT_LEAST = 0.2  # mean seq-rep-4 of the answers …
REPETITION_MARGIN = 0.15  # … and this much above the references'
DIVERSITY_RATIO = 0.5  # distinct-2 below this share of the references'
AT_CAP_AT_LEAST = 0.75  # share of answers at the cap …
AT_CAP_MARGIN = 0.5  # … and this much above the references'
MADE_UP_AT_LEAST = 0.3  # mean share of made-up words (references of TOFU: 0.13 on average) …
MADE_UP_MARGIN = 0.15  # … and this much above the references'


@dataclass(frozen=True)
class Finding:
    """One sign of collapse: the answers' value and the references' value of the same measure."""

    signal: str  # "repetition" | "diversity" | "length" | "made_up"
    value: float
    reference: float


def repetition(text: str, n: int = REPETITION_N) -> float:
    """Share of the word n-grams of ``text`` that repeat an earlier n-gram of it (0: none; near 1: a loop)."""
    words = _WORD.findall(text.lower())
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def mean_repetition(texts: Sequence[str], n: int = REPETITION_N) -> float:
    """Mean ``repetition`` over ``texts`` (0.0 for none)."""
    return sum(repetition(t, n) for t in texts) / len(texts) if texts else 0.0


def at_cap(lengths: Sequence[int], cap: int) -> float:
    """Share of ``lengths`` that reach ``cap`` (0.0 for none)."""
    return sum(length >= cap for length in lengths) / len(lengths) if lengths else 0.0


def made_up(text: str, count_tokens: Callable[[str], int]) -> float:
    """Share of the longer words of ``text`` that are no single token of the vocabulary in any casing (0.0 for none).

    ``count_tokens``: the model's tokenizer, counting the tokens of a text (a word is tried after a space,
    as it stands inside a sentence).
    """
    words = _LONG_WORD.findall(text)
    if not words:
        return 0.0
    unknown = [w for w in words if min(count_tokens(" " + form) for form in {w, w.lower(), w.capitalize()}) > 1]
    return len(unknown) / len(words)


def mean_made_up(texts: Sequence[str], count_tokens: Callable[[str], int]) -> float:
    """Mean ``made_up`` over ``texts`` (0.0 for none)."""
    return sum(made_up(t, count_tokens) for t in texts) / len(texts) if texts else 0.0


def watch(answers: Sequence[str], references: Sequence[str], count_tokens: Callable[[str], int] | None = None,
          cap: int | None = None) -> list[Finding]:
    """Signs of collapse in ``answers`` against ``references`` (the same questions' reference answers).

    The length signal needs ``count_tokens`` (the model's tokenizer) and ``cap`` (tokens an answer may
    take), the made-up words ``count_tokens``; without them they are not checked. Fewer than
    ``MIN_ANSWERS`` answers give no findings.
    """
    if len(answers) < MIN_ANSWERS or len(references) < MIN_ANSWERS:
        return []
    found = []
    rep, rep_ref = mean_repetition(answers), mean_repetition(references)
    if rep >= REPETITION_AT_LEAST and rep >= rep_ref + REPETITION_MARGIN:
        found.append(Finding("repetition", rep, rep_ref))
    div, div_ref = distinct_n(answers, 2), distinct_n(references, 2)
    if div_ref > 0 and div < DIVERSITY_RATIO * div_ref:
        found.append(Finding("diversity", div, div_ref))
    if count_tokens is not None and cap:
        full = at_cap([count_tokens(a) for a in answers], cap)
        full_ref = at_cap([count_tokens(r) for r in references], cap)
        if full >= AT_CAP_AT_LEAST and full >= full_ref + AT_CAP_MARGIN:
            found.append(Finding("length", full, full_ref))
    if count_tokens is not None:
        odd, odd_ref = mean_made_up(answers, count_tokens), mean_made_up(references, count_tokens)
        if odd >= MADE_UP_AT_LEAST and odd >= odd_ref + MADE_UP_MARGIN:
            found.append(Finding("made_up", odd, odd_ref))
    return found
