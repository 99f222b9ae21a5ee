"""A compiled decode step: the frozen LM's one-token forward through ``torch.compile`` (inductor), on the CPU.

A decode step of one row is mostly eager PyTorch's per-operation work (docs/benchmarks.md: ~14 of ~33 ms outside
the matrix products). Inductor fuses that work into a few C++ kernels and, with weight freezing, keeps the weights
packed for the CPU's matrix units: a one-row step 1.30x faster here in bf16, 1.41x in fp32 (SmolLM2-135M,
``benchmarks/compiled_decode.py``), but 0.95x / 1.08x at 8 rows and 0.56x / 0.85x at 40, for ~50 s of compiling
each shape (rows x cache length) in each process (a frozen graph is not kept by inductor's on-disk graph cache; its
C++ kernels are, under gantune's cache folder). So it pays only for work of one or two rows that repeats for many
minutes: the thesis GAN's rollouts (1,500 calls of two rows, D's answer and G's), not an evaluation.

What is compiled is a plain copy of the LM that shares its weights (none of ``gantune.cpu``'s patches, no hooks,
transformers' ``sdpa`` attention) with ``StaticCache`` room for the prompt and the answer, its length rounded up to
``BUCKET`` tokens so that prompts of different lengths share a graph. The prompt's pass runs eagerly on the model
itself; each token's input embeddings too (through the model's embedding module, so a tuned adapter hooked there,
M_tunable, is applied at every token and can change between rollouts without a recompile). A model whose decode
step is not the frozen LM's alone (a peft model, trainable LM weights, a hook on any module but the input
embeddings) decodes eagerly, as does any device but the CPU.

The setting (``set_mode``; ``--decode`` on the command line, ``GANTUNE_DECODE`` in the environment):
``eager`` (default) never compiles; ``compiled`` compiles every eligible shape at its first decode; ``auto``
compiles a shape of at most ``AUTO_ROWS`` rows once this process has spent ``AUTO_AFTER_S`` seconds decoding it eagerly: work that has
repeated that long is a training loop that goes on. Eager is the default because the one long run measured with
``auto`` (the thesis bench, 1,500 two-row rollouts) trained its GAN in no less time than the eager run before it, though
a two-epoch A/B of the same run had its steps 1.19x faster compiled (docs/benchmarks.md). A compile that
fails (no C++ compiler, say) is said once on stderr and that model decodes eagerly from then on; under
``compiled`` the message says so. A stop asked for during a compile is honoured once it ends (~1 min).
"""

from __future__ import annotations

import copy
import itertools
import os
import sys
import threading
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from peft import PeftModel
from transformers import PreTrainedModel, StaticCache

from .errors import first_line

MODES = ("auto", "eager", "compiled")
AUTO_AFTER_S = 120.0  # eager decoding at one shape, in seconds, after which ``auto`` compiles it (~2 compiles' time)
# the widest batch ``auto`` compiles: the thesis GAN's rollouts (2 rows: D's and G's answers in one call) sampled 1.22x
# faster compiled here; 8 and 40 rows ran slower (0.95x, 0.56x in bf16)
AUTO_ROWS = 2
BUCKET = 64  # the cache length is rounded up to a multiple of this
MAX_SHAPES = 8  # graphs a model keeps (torch's own recompile limit); a shape past them decodes eagerly

_mode = os.environ.get("GANTUNE_DECODE", "eager")
if _mode not in MODES:
    print(f"gantune: GANTUNE_DECODE={_mode!r} is not one of {', '.join(MODES)}: decoding eagerly", file=sys.stderr)
    _mode = "eager"
_lock = threading.Lock()
_said: set[str] = set()


def _say(text: str) -> None:
    """``text`` on stderr, once a process."""
    if text not in _said:
        _said.add(text)
        print(f"gantune: {text}", file=sys.stderr)


def set_mode(mode: str) -> None:
    """Decode ``auto`` (compile what repeats long), ``eager`` (never compile) or ``compiled`` (compile at once)."""
    global _mode
    if mode not in MODES:
        raise ValueError(f"--decode must be one of {', '.join(MODES)}, not {mode!r}")
    _mode = mode


def mode() -> str:
    """The decoding setting in force (``set_mode``; else ``GANTUNE_DECODE``; else ``eager``)."""
    return _mode


def ineligible(model: torch.nn.Module) -> str | None:
    """Why ``model``'s decode step cannot be the compiled frozen LM's, or None when it can."""
    if isinstance(model, PeftModel):
        return "a peft model (its layers or virtual tokens sit inside the LM)"
    if not isinstance(model, PreTrainedModel) or model.get_input_embeddings() is None:
        return "not a transformers language model"
    if model.device.type != "cpu":
        return f"compiled decoding is built for the CPU, not {model.device.type}"
    if any(p.requires_grad for p in model.parameters()):
        return "the LM's own weights are being trained"
    embeddings, head = model.get_input_embeddings(), model.get_output_embeddings()
    for module in model.modules():
        pre, post = module._forward_pre_hooks, module._forward_hooks
        if module is head:
            pre = {k: h for k, h in pre.items() if getattr(h, "__name__", "") != "contiguous_input"}
        if (pre or post) and module is not embeddings:
            return f"a hook on {type(module).__name__} (only the input embeddings may carry one)"
    return None


def _cache_folder() -> None:
    """Inductor's on-disk caches under gantune's cache folder, unless the user chose a folder."""
    root = Path(os.environ.get("GANTUNE_CACHE", str(Path.home() / ".cache" / "gantune")))
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(root / "inductor"))


def _plain_copy(model: PreTrainedModel) -> PreTrainedModel:
    """A copy of ``model`` sharing its weights and buffers, with transformers' own forwards: gantune's CPU patches
    (instance forwards, the head's hook) and any hook (an adapter) left out, ``sdpa`` attention."""
    shared = {id(t): t for t in itertools.chain(model.parameters(), model.buffers())}
    plain = copy.deepcopy(model, memo=shared)
    for module in plain.modules():
        module.__dict__.pop("forward", None)
        module._forward_pre_hooks.clear()
        module._forward_hooks.clear()
    plain.set_attn_implementation("sdpa")
    return plain.eval()


def _step(lm: PreTrainedModel, embeds: torch.Tensor, positions: torch.Tensor, cache_position: torch.Tensor,
          mask: torch.Tensor, cache: StaticCache) -> torch.Tensor:
    """One decode step of the plain LM: the next token's logits (fp32), its keys and values written into ``cache``."""
    return lm(inputs_embeds=embeds, position_ids=positions, cache_position=cache_position, attention_mask=mask,
              past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1].float()


@dataclass
class _Compiled:
    """One model's compiled step, its graphs' shapes, and the eager seconds spent on each shape not compiled."""

    plain: PreTrainedModel | None = None
    fn: Callable | None = None
    shapes: set = field(default_factory=set)
    caches: dict = field(default_factory=dict)  # shape -> the one StaticCache its graph reads and writes
    busy: dict = field(default_factory=dict)  # shape -> a lock held while a decode uses that cache
    eager_seconds: dict = field(default_factory=dict)
    failed: str | None = None  # why this model decodes eagerly from now on (a failed compile, changed weights)
    weights: int = 0  # the weights' version count when the plain copy was made (a frozen graph holds them)
    compile_seconds: float = 0.0


_STATE: "weakref.WeakKeyDictionary[torch.nn.Module, _Compiled]" = weakref.WeakKeyDictionary()


def bucket(length: int) -> int:
    """The static cache length for ``length`` tokens: rounded up to a multiple of ``BUCKET``."""
    return -(-length // BUCKET) * BUCKET


class CompiledDecoder:
    """The compiled decode step of one model at one shape (rows x ``bucket(prompt + answer)``)."""

    def __init__(self, model: PreTrainedModel, state: _Compiled, rows: int, length: int):
        self.model, self.state, self.rows, self.length = model, state, rows, length

    def prefill(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> tuple[torch.Tensor, StaticCache, torch.Tensor]:
        """The prompt's pass (eager, on the model itself): the last position's logits (fp32), the cache, and the
        rows' attention mask over the whole cache (the prompt's, zeros after it).

        A shape has one cache for good: a frozen graph keeps the cache tensors it was compiled with (transformers
        marks them as static addresses), so every decode of that shape writes into those same tensors."""
        shape = (self.rows, self.length)
        cache = self.state.caches.get(shape)
        if cache is None:
            cache = self.state.caches[shape] = StaticCache(config=self.model.config, max_cache_len=self.length)
        else:
            cache.reset()
        seen = prompt_mask.new_zeros(prompt_mask.shape[0], self.length)
        seen[:, : prompt_mask.shape[1]] = prompt_mask
        positions = (prompt_mask.long().cumsum(-1) - 1).masked_fill_(prompt_mask == 0, 1)
        logits = self.model(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=positions,
                            past_key_values=cache, cache_position=torch.arange(prompt_ids.shape[1]), use_cache=True,
                            logits_to_keep=1).logits[:, -1].float()
        return logits, cache, seen

    def release(self) -> None:
        """This decode is over: its shape's cache is free for the next."""
        self.state.busy[(self.rows, self.length)].release()

    def step(self, tokens: torch.Tensor, where: int, seen: torch.Tensor, cache: StaticCache) -> torch.Tensor:
        """The logits (fp32) after ``tokens`` (B,) written at cache position ``where``; ``seen`` is updated."""
        seen[:, where] = 1
        embeds = self.model.get_input_embeddings()(tokens[:, None])  # the adapter's hook, if any, applies here
        args = (self.state.plain, embeds, seen.sum(-1, keepdim=True) - 1, torch.tensor([where]), seen, cache)
        state, shape = self.state, (self.rows, self.length)
        with torch.autocast("cpu", enabled=False):
            if state.failed:  # this decode began compiled: it ends on the plain copy, uncompiled
                return _step(*args)
            if shape in state.shapes:
                return state.fn(*args)
            import torch._inductor.config as inductor

            t0 = time.perf_counter()
            try:
                with _lock, inductor.patch(freezing=True):
                    logits = state.fn(*args)
            except Exception as error:  # noqa: BLE001 - any compiler failure: said, and decoded eagerly
                state.failed = f"the compile failed ({type(error).__name__}: {first_line(error)})"
                _say(f"decoding eagerly from now on: {state.failed}")
                return _step(*args)
            state.shapes.add(shape)
            state.compile_seconds += time.perf_counter() - t0
            return logits


def decoder(model: torch.nn.Module, rows: int, length: int, may_compile: bool = True) -> CompiledDecoder | None:
    """The compiled step to decode ``rows`` rows of ``length`` tokens (prompt + answer) of ``model`` with, under the
    setting in force, or None to decode eagerly (and tell ``spent`` how long that took). ``may_compile`` False:
    only a graph compiled already. The caller ``release``s the decoder when its decode is over."""
    setting = mode()
    if setting == "eager":
        return None
    reason = ineligible(model)
    if reason:
        if setting == "compiled":
            _say(f"decoding eagerly: {reason}")
        return None
    state = _STATE.get(model)
    if state is None:
        state = _STATE[model] = _Compiled()
    if state.fn is not None and not state.failed and _versions(model) != state.weights:
        state.failed = "the LM's weights changed after its decode step was compiled"
        _say(f"decoding eagerly from now on: {state.failed}")
    if state.failed:
        return None
    shape = (rows, bucket(length))
    if shape not in state.shapes:
        if not may_compile or len(state.shapes) >= MAX_SHAPES:
            return None
        if setting == "auto" and (rows > AUTO_ROWS or state.eager_seconds.get(shape, 0.0) < AUTO_AFTER_S):
            return None
    with _lock:
        busy = state.busy.setdefault(shape, threading.Lock())
    if not busy.acquire(blocking=False):  # another thread decodes this shape (its one cache) now
        return None
    if state.fn is None:
        _cache_folder()
        state.plain, state.weights = _plain_copy(model), _versions(model)
        state.fn = torch.compile(_step, dynamic=False)
    return CompiledDecoder(model, state, *shape)


def _versions(model: torch.nn.Module) -> int:
    """How many in-place changes the model's weights have had (a frozen graph keeps the values it was made from)."""
    return sum(p._version for p in model.parameters())


def spent(model: torch.nn.Module, rows: int, length: int, seconds: float) -> None:
    """Count ``seconds`` of eager decoding of ``model`` at this shape towards ``auto``'s compile."""
    state = _STATE.get(model)
    if state is not None:
        shape = (rows, bucket(length))
        state.eager_seconds[shape] = state.eager_seconds.get(shape, 0.0) + seconds


def compile_seconds(model: torch.nn.Module) -> float:
    """Seconds this process has spent compiling ``model``'s decode step."""
    state = _STATE.get(model)
    return state.compile_seconds if state is not None else 0.0
