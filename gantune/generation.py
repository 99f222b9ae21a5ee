"""Batched decoding from left-padded prompts with the KV cache, stopping at EOS.

``decode_steps`` is a lean loop over the model's forward: each step prepares the inputs the way the
model itself does for generation (its ``prepare_inputs_for_generation``: peft's, for prompt learning),
runs one forward over the new token with the cache (its keys and values written into room reserved for
the whole answer, not concatenated at every token), and picks the next token greedily or samples it
from softmax(logits / T), with that token's log-probability. It is what ``model.generate`` does for
these settings, token for token (tests compare the two), without its logits processors, stopping
criteria and configuration checks, and it can be stopped between tokens. The sampler knows nothing of
tuning methods: it runs whatever model it is given (``gantune.inference`` answers with a run's model).
"""

from __future__ import annotations

import inspect
import time
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from peft import PeftModel
from transformers import DynamicCache, PretrainedConfig, PreTrainedModel
from transformers.cache_utils import DynamicLayer

from . import compiled

# the share of a batch's rows that must have ended before the loop drops them: each drop copies the cache of the
# rows still going, so it waits until enough rows' steps are saved (benchmarks/decode_calls.py)
ENDED_SHARE = 0.25
_rows: ContextVar[torch.Tensor | None] = ContextVar("gantune_rows_in_flight", default=None)


def rows_in_flight() -> torch.Tensor | None:
    """Which rows of the batch whose per-sequence state was set (M_tunable's noise) the forward running now is
    given: the rows still decoded once the loop has dropped ended ones, or the rows of the prompts a shared-prompt
    pass's answers follow (``scoring.shared_prompt_logprobs``); None when it is given the batch as it was set."""
    return _rows.get()


@contextmanager
def rows_given(rows: torch.Tensor | None) -> Iterator[None]:
    """Within the block, a forward is given the batch's rows ``rows`` (``rows_in_flight``)."""
    token = _rows.set(rows)
    try:
        yield
    finally:
        _rows.reset(token)


class Stopped(Exception):
    """A stop was asked for: the work under way ends without a result for what was cut short."""


def answer_mask(answer_ids: torch.Tensor, eos_id: int) -> torch.Tensor:
    """1 up to and including the first EOS of each row, 0 after it (all 1 when a row never ends)."""
    is_eos = (answer_ids == eos_id).long()
    ended_before = is_eos.cumsum(dim=1) - is_eos  # EOS tokens strictly before each position
    return (ended_before == 0).long()


class _ReservedLayer(DynamicLayer):
    """A cache layer that holds its keys and values in room reserved for the whole answer, where transformers'
    ``DynamicLayer`` concatenates (copies) the whole cache at every token; it gives the same tensors' values."""

    def __init__(self, capacity: int):
        super().__init__()
        self.capacity, self.length = capacity, 0

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, cache_kwargs: dict | None = None):
        if not self.is_initialized:
            self.lazy_initialization(key_states)
            self.room_k = self.room_v = None
        end = self.length + key_states.shape[-2]
        # the prompt's pass, or past the room (peft's prompt tuning also caches its virtual tokens): more room
        if self.room_k is None or end > self.room_k.shape[-2]:
            size = max(self.capacity, end) if self.room_k is None else 2 * end
            shape = (*key_states.shape[:2], size, key_states.shape[-1])
            room_k, room_v = key_states.new_empty(shape), value_states.new_empty(shape)
            if self.length:
                room_k[..., : self.length, :], room_v[..., : self.length, :] = self.keys, self.values
            self.room_k, self.room_v = room_k, room_v
        self.room_k[..., self.length : end, :] = key_states
        self.room_v[..., self.length : end, :] = value_states
        self.length = end
        self.keys, self.values = self.room_k[..., :end, :], self.room_v[..., :end, :]
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep the rows ``indices`` (the decode loop drops ended rows)."""
        if self.is_initialized and self.room_k is not None:
            self.room_k, self.room_v = self.room_k[indices], self.room_v[indices]
            self.keys, self.values = self.room_k[..., : self.length, :], self.room_v[..., : self.length, :]


def reserved_cache(config: PretrainedConfig, capacity: int) -> DynamicCache:
    """The model's ``DynamicCache`` with each full-attention layer's room reserved for ``capacity`` tokens."""
    cache = DynamicCache(config=config)
    cache.layers = [_ReservedLayer(capacity) if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache


@dataclass
class Decoded:
    """Answers decoded for a batch of prompts."""

    ids: torch.Tensor  # B×T, right-padded after each row's EOS, T = the longest answer
    mask: torch.Tensor  # B×T, 1 up to and including EOS
    logp: torch.Tensor  # B×T, log-probability of each chosen token under softmax(logits / T); 0 where masked


@torch.no_grad()
def decode_steps(
    model: PreTrainedModel,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    eos_id: int,
    pad_id: int,
    max_new_tokens: int,
    temperature: float = 0.0,
    should_stop: Callable[[], bool] | None = None,
    may_compile: bool = True,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield each step's tokens (B,) and their log-probabilities (B,, fp32), until every row has ended.

    ``temperature`` 0 is greedy; above 0 the token is drawn from softmax(logits / temperature) with
    torch's global generator (as ``generate`` draws it). A row that has ended gets ``pad_id`` (log-prob 0).
    ``should_stop`` is asked before each forward; when it says so, ``Stopped`` is raised. The steps run
    compiled where ``gantune.compiled``'s setting says so; ``may_compile`` False (the Chat, which must not
    wait a minute) takes a graph compiled already but compiles none and counts nothing towards one.
    """
    rows, length = prompt_ids.shape[0], prompt_ids.shape[1] + max_new_tokens
    step = compiled.decoder(model, rows, length, may_compile)
    if step is not None:
        yield from _compiled_steps(step, prompt_ids, prompt_mask, eos_id, pad_id, max_new_tokens, temperature,
                                   should_stop)
        return
    t0 = time.perf_counter()
    try:
        yield from _eager_steps(model, prompt_ids, prompt_mask, eos_id, pad_id, max_new_tokens, temperature,
                                should_stop)
    finally:
        if may_compile:
            compiled.spent(model, rows, length, time.perf_counter() - t0)


def categorical(probs: torch.Tensor) -> torch.Tensor:
    """One token per row of ``probs`` (B×V, each row a distribution, fp32), drawn by inverting the row's cumulative
    distribution at a uniform draw (one from torch's global generator a row): the distribution ``torch.multinomial``
    samples, at a fraction of its cost. multinomial draws an exponential number for every entry, ~50 ms for 40 rows
    of a 49k vocabulary on a 2-core CPU (as long as the rest of a decode step); this takes ~1.5 ms."""
    cdf = probs.cumsum(dim=-1)
    total = cdf[:, -1:]
    # strictly below the total, so the token found is one whose share is above zero
    u = (torch.rand(total.shape, device=probs.device, dtype=cdf.dtype) * total).minimum(total.nextafter(total.new_zeros(())))
    # a row that is no distribution (NaN, from a diverged model) still gets a token of the vocabulary, as greedy
    # decoding's argmax does; its log-probability is NaN, which the trainer's divergence check reads
    return torch.searchsorted(cdf, u, right=True).squeeze(1).clamp(max=probs.shape[1] - 1)


def _pick(scores: torch.Tensor, temperature: float, unfinished: torch.Tensor, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The next token of each row from its logits (fp32) and its log-probability; ``pad_id`` (0) for ended rows."""
    logp = (scores / temperature if temperature > 0 else scores).log_softmax(dim=-1)
    tokens = categorical(logp.exp()) if temperature > 0 else scores.argmax(dim=-1)
    picked = logp.gather(1, tokens[:, None]).squeeze(1) * unfinished
    return torch.where(unfinished, tokens, pad_id), picked


def _eager_steps(model, prompt_ids, prompt_mask, eos_id, pad_id, max_new_tokens, temperature, should_stop):
    """``decode_steps`` by the model's own forward, a token at a time; ended rows leave the batch (``ENDED_SHARE``)."""
    lm = model.get_base_model() if isinstance(model, PeftModel) else model  # peft's generate steps the LM too
    prepare = model.prepare_inputs_for_generation
    ids, mask = prompt_ids, prompt_mask
    kwargs = {"past_key_values": reserved_cache(lm.config, ids.shape[1] + max_new_tokens), "use_cache": True,
              "cache_position": torch.arange(ids.shape[1], device=ids.device)}
    if "logits_to_keep" in inspect.signature(lm.forward).parameters:  # only the last position's logits are needed
        kwargs["logits_to_keep"] = 1
    unfinished = torch.ones(ids.shape[0], dtype=torch.bool, device=ids.device)
    going = None  # the rows still in the batch (indices into the whole), None while all are
    for _ in range(max_new_tokens):
        if should_stop is not None and should_stop():
            raise Stopped
        # inference mode spares each operation autograd's bookkeeping (version counters, views' records): a step
        # 1.04-1.07x faster in bf16, 0.99-1.07x in fp32 (docs/benchmarks.md); what leaves it (tokens, log-probs) is
        # copied out, since an inference tensor may never be saved for a backward (a rollout's tokens feed G's forward)
        with torch.inference_mode():
            with rows_given(going):
                out = lm(**prepare(ids, attention_mask=mask, **kwargs), return_dict=True)
            kwargs["past_key_values"] = out.past_key_values  # peft's prefix tuning hands in a cache of its own
            scores = out.logits[:, -1, :].float()
            if going is not None:  # the whole batch's rows, as if none had left: a sample draws what it would have
                scores = scores.new_zeros(len(unfinished), scores.shape[1]).index_copy_(0, going, scores)
            tokens, picked = _pick(scores, temperature, unfinished, pad_id)
        tokens, picked = tokens.clone(), picked.clone()
        yield tokens, picked
        unfinished &= tokens != eos_id
        if not unfinished.any():
            return
        step_tokens = tokens if going is None else tokens[going]
        ids = torch.cat([ids, step_tokens[:, None]], dim=1)
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
        kwargs["cache_position"] = kwargs["cache_position"][-1:] + 1
        kept = unfinished if going is None else unfinished[going]
        if len(kept) - int(kept.sum()) >= max(1, ENDED_SHARE * len(kept)):  # drop the ended rows
            keep = kept.nonzero().squeeze(1)
            ids, mask = ids[keep], mask[keep]
            kwargs["past_key_values"].batch_select_indices(keep)
            going = unfinished.nonzero().squeeze(1)


def _compiled_steps(step, prompt_ids, prompt_mask, eos_id, pad_id, max_new_tokens, temperature, should_stop):
    """``decode_steps`` by the compiled frozen LM (``gantune.compiled``): the prompt's pass eager, each token compiled."""
    unfinished = torch.ones(prompt_ids.shape[0], dtype=torch.bool, device=prompt_ids.device)
    where, tokens = prompt_ids.shape[1], None
    try:
        for _ in range(max_new_tokens):
            if should_stop is not None and should_stop():
                raise Stopped
            if tokens is None:
                logits, cache, seen = step.prefill(prompt_ids, prompt_mask)
            else:
                logits = step.step(tokens, where, seen, cache)
                where += 1
            tokens, picked = _pick(logits, temperature, unfinished, pad_id)
            yield tokens, picked
            unfinished &= tokens != eos_id
            if not unfinished.any():
                return
    finally:
        step.release()


def decode(
    model: PreTrainedModel,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    eos_id: int,
    pad_id: int,
    max_new_tokens: int,
    temperature: float = 0.0,
    should_stop: Callable[[], bool] | None = None,
) -> Decoded:
    """The answers to a batch of prompts (``decode_steps`` run to the end), trimmed to the longest."""
    steps = list(decode_steps(model, prompt_ids, prompt_mask, eos_id, pad_id, max_new_tokens, temperature, should_stop))
    if not steps:
        empty = prompt_ids.new_zeros(prompt_ids.shape[0], 0)
        return Decoded(empty, empty, empty.float())
    ids = torch.stack([t for t, _ in steps], dim=1)
    mask = answer_mask(ids, eos_id)
    return Decoded(ids, mask, torch.stack([p for _, p in steps], dim=1) * mask)

