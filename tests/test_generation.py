"""Batched decoding: the EOS mask, left padding, sampling from the policy's own distribution, and the lean loop
against transformers' ``generate``, token for token."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import make_base

from gantune.data import Encoder
from gantune.generation import answer_mask, decode
from gantune.inference import answer_questions

QUESTIONS = ["who ?", "who is the author of a book born in city ?", "what did his mother write ?",
             "the father was known for fiction and was born in a city what genre did he write ?"]


# --- answer_mask ----------------------------------------------------------------------------------

def test_answer_mask_ends_at_the_first_eos():
    eos = 2
    ids = torch.tensor([
        [5, 6, 2, 7, 2],   # EOS in the middle: 1 up to and including it
        [2, 5, 5, 5, 5],   # EOS first
        [5, 6, 7, 8, 9],   # never ends: all ones
        [5, 6, 7, 8, 2],   # EOS last
        [2, 2, 2, 2, 2],   # padded with EOS after EOS
    ])
    assert answer_mask(ids, eos).tolist() == [
        [1, 1, 1, 0, 0],
        [1, 0, 0, 0, 0],
        [1, 1, 1, 1, 1],
        [1, 1, 1, 1, 1],
        [1, 0, 0, 0, 0],
    ]


def test_answer_mask_is_long_and_handles_an_empty_width():
    mask = answer_mask(torch.zeros((3, 0), dtype=torch.long), 2)
    assert mask.shape == (3, 0)
    assert answer_mask(torch.tensor([[1, 2]]), 2).dtype == torch.long


# --- decode -----------------------------------------------------------------------------------------

def generate_answers(model, ids, mask, eos_id, pad_id, max_new, sample):
    out = decode(model, ids, mask, eos_id, pad_id, max_new, 1.0 if sample else 0.0)
    return out.ids, out.mask


def _prompts(base, questions, max_prompt=64, max_new=10):
    enc = Encoder(base.tokenizer, base.eos_id, max_prompt, max_new)
    return enc, [enc.prompt_ids(q) for q in questions]


def _real(ids: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
    return [row[m.bool()].tolist() for row, m in zip(ids, mask)]


@pytest.mark.parametrize("seed", [0, 1])
def test_left_padded_rows_answer_as_if_alone(seed):
    base = make_base(seed)
    enc, prompt_lists = _prompts(base, QUESTIONS)
    assert len({len(p) for p in prompt_lists}) == len(QUESTIONS)  # really different lengths
    ids, mask = enc.prompts(QUESTIONS)
    out, out_mask = generate_answers(base.model, ids, mask, base.eos_id, enc.pad_id, 10, sample=False)
    batched = _real(out, out_mask)
    for row, p in enumerate(prompt_lists):
        alone_ids = torch.tensor([p])
        alone, alone_mask = generate_answers(base.model, alone_ids, torch.ones_like(alone_ids), base.eos_id,
                                             enc.pad_id, 10, sample=False)
        assert batched[row] == _real(alone, alone_mask)[0], f"row {row} differs when padded"
        assert len(batched[row]) >= 1


def test_greedy_answer_is_the_argmax_continuation():
    base = make_base(2)
    enc, (p,) = _prompts(base, [QUESTIONS[1]])
    ids = torch.tensor([p])
    out, mask = generate_answers(base.model, ids, torch.ones_like(ids), base.eos_id, enc.pad_id, 6, sample=False)
    seq = p[:]
    for tok in out[0][mask[0].bool()].tolist():
        with torch.no_grad():
            logits = base.model(torch.tensor([seq])).logits[0, -1]
        assert tok == int(logits.argmax())
        seq.append(tok)


@pytest.mark.parametrize("max_new", [1, 3, 8])
def test_width_is_at_most_max_new_tokens(max_new):
    base = make_base()
    enc, _ = _prompts(base, QUESTIONS)
    ids, mask = enc.prompts(QUESTIONS)
    torch.manual_seed(0)
    for sample in (False, True):
        out, out_mask = generate_answers(base.model, ids, mask, base.eos_id, enc.pad_id, max_new, sample=sample)
        assert out.shape == out_mask.shape
        assert out.shape[0] == len(QUESTIONS)
        assert 1 <= out.shape[1] <= max_new
        # the mask is 1 up to and including the first EOS, and the width is the longest answer
        assert torch.equal(out_mask, answer_mask(out, base.eos_id))
        assert int(out_mask.sum(1).max()) == out.shape[1]


def test_rows_stop_at_eos():
    """Make EOS the model's only choice after the first token: answers are [tok, EOS]."""
    base = make_base()
    enc, _ = _prompts(base, QUESTIONS)
    ids, mask = enc.prompts(QUESTIONS)
    lm_head_bias = torch.full((base.model.config.vocab_size,), -1e4)
    lm_head_bias[base.eos_id] = 1e4
    handle = base.model.lm_head.register_forward_hook(lambda _m, _i, out: out + lm_head_bias)
    try:
        out, out_mask = generate_answers(base.model, ids, mask, base.eos_id, enc.pad_id, 8, sample=False)
    finally:
        handle.remove()
    assert out.shape == (len(QUESTIONS), 1)
    assert (out == base.eos_id).all() and (out_mask == 1).all()


def test_sampling_draws_from_the_plain_softmax():
    """Empirical frequencies of 1-token samples match softmax(logits) of a plain forward pass."""
    base = make_base(3)
    with torch.no_grad():  # sharpen the tiny model so the distribution has a head and a tail
        base.model.model.norm.weight.mul_(5.0)
    enc, (p,) = _prompts(base, [QUESTIONS[1]])
    with torch.no_grad():
        probs = base.model(torch.tensor([p])).logits[0, -1].float().softmax(-1)
    top = probs.sort(descending=True)
    assert top.values[0] < 0.9, "the test needs a distribution that is not almost one-hot"
    assert (probs > 0.01).sum() >= 4, "the test needs several tokens with real probability"

    n = 4000
    ids = torch.tensor([p] * n)
    torch.manual_seed(1234)
    out, out_mask = generate_answers(base.model, ids, torch.ones_like(ids), base.eos_id, enc.pad_id, 1, sample=True)
    assert out.shape == (n, 1) and (out_mask == 1).all()
    counts = torch.bincount(out[:, 0], minlength=probs.numel()).double()
    freq = counts / n
    for tok in top.indices[top.values > 0.01].tolist():  # every token with at least 1% probability, tail included
        pr = float(probs[tok])
        se = math.sqrt(pr * (1 - pr) / n)
        assert abs(float(freq[tok]) - pr) < 5 * se + 1e-3, f"token {tok}: sampled {float(freq[tok]):.4f}, softmax {pr:.4f}"
    # the tail is not cut off (no top-k / top-p): tokens below the top few are still drawn
    tail = top.indices[4:].tolist()
    assert counts[tail].sum() > 0
    assert abs(float(freq[tail].sum()) - float(probs[tail].sum())) < 5 * math.sqrt(0.25 / n)


def test_sampling_is_not_greedy_and_follows_the_seed():
    base = make_base()
    enc, prompt_lists = _prompts(base, QUESTIONS)
    ids, mask = enc.prompts(QUESTIONS * 4)
    torch.manual_seed(7)
    a, am = generate_answers(base.model, ids, mask, base.eos_id, enc.pad_id, 6, sample=True)
    torch.manual_seed(7)
    b, bm = generate_answers(base.model, ids, mask, base.eos_id, enc.pad_id, 6, sample=True)
    assert torch.equal(a, b) and torch.equal(am, bm)
    assert len({tuple(r) for r in _real(a, am)[:: len(QUESTIONS)]}) > 1  # the same prompt, different samples


def test_answer_questions_returns_one_string_per_question(base):
    answers = answer_questions(base, QUESTIONS, max_new_tokens=8)
    assert len(answers) == len(QUESTIONS)
    assert all(isinstance(a, str) for a in answers)
    # batching does not change greedy answers
    assert answers == [answer_questions(base, [q], max_new_tokens=8)[0] for q in QUESTIONS]


def test_the_models_own_generation_config_does_not_change_sampling_or_greedy():
    base = make_base(3)
    with torch.no_grad():
        base.model.model.norm.weight.mul_(5.0)
    enc, (p,) = _prompts(base, [QUESTIONS[1]])
    with torch.no_grad():
        probs = base.model(torch.tensor([p])).logits[0, -1].float().softmax(-1)
    # a hub model's generation_config.json often sets these (e.g. chat models: sampling at temperature 0.6–0.7)
    base.model.generation_config.update(do_sample=True, temperature=0.5, top_p=0.7)
    n = 4000
    ids = torch.tensor([p] * n)
    torch.manual_seed(0)
    out, _ = generate_answers(base.model, ids, torch.ones_like(ids), base.eos_id, enc.pad_id, 1, sample=True)
    top = int(probs.argmax())
    pr = float(probs[top])
    assert abs(float((out[:, 0] == top).double().mean()) - pr) < 5 * math.sqrt(pr * (1 - pr) / n)
    # greedy stays greedy: every row of the same prompt gives the same answer
    torch.manual_seed(0)
    greedy, mask = generate_answers(base.model, ids[:64], torch.ones_like(ids[:64]), base.eos_id, enc.pad_id, 8,
                                    sample=False)
    assert len({tuple(r) for r in _real(greedy, mask)}) == 1
