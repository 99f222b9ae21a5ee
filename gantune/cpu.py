"""The CPU's fast paths: what stock torch, transformers and glibc leave slow for these models, each measured.

1. **Attention** (``grouped_sdpa``). transformers' ``sdpa`` attention repeats each key/value head for its
   group of query heads whenever an attention mask is given (its ``use_gqa_in_sdpa`` allows torch's grouped
   heads only without a mask), and left padding always gives one: every layer of every decoding step copied
   the key/value cache (SmolLM2: 3 key/value heads for 9 query heads). torch's kernel takes the grouped heads
   itself (``enable_gqa``): the same numbers, without the copies. A bf16 pass that will be differentiated
   runs its attention in fp32, where torch's CPU kernel is 2.4× faster. Registered with transformers'
   ``AttentionInterface`` under ``ATTENTION``.
2. **The LM head's input** (``contiguous_input``). ``logits_to_keep`` slices the last hidden states, and a
   linear layer given a non-contiguous 3-D input falls back to a batched product with the weight expanded
   over the batch: in bf16 that copied the 57 MB head weight once a row, forward and backward.
3. **Packed weights** (``packed_linear``). A bf16 product through oneDNN packs (reorders) its weight for
   the CPU's matrix units at every call; decoding calls each frozen weight once a token with a few rows, and
   the packing costs more than the product. Packed once and kept, a passes without gradients (decoding, the
   frozen pass, evaluation) reads them as they are: the same values (up to the kernel's rounding). fp32 weights
   too: oneDNN's product by a packed fp32 weight beats torch's fp32 ``linear`` (MKL) at every row count, most at
   a decode step's few rows (2.9× at 8 rows, at the weights' memory floor); the same values to fp32's rounding
   (another order of summation). The price is memory: a packed copy of every frozen weight (SmolLM2 in fp32:
   +0.4 GB decoding, +0.6–1.0 GB at a training run's peak).
4. **Freed memory** (``keep_freed_pages``). glibc hands every allocation over 32 MB back to the system when
   it is freed, so each training step's logits came back as fresh pages: ~140,000 page faults a step.
5. **Fused sibling projections** (``Siblings``). A layer's q/k/v projections and its MLP's gate/up projections read
   the same input: without gradients, the first one called multiplies by their weights concatenated once (packed,
   in bf16) and the others take their slice: one product where there were three and two. The weights are concatenated
   again whenever one changes (in place or replaced) and the fused path is left whenever any of them needs a gradient;
   a LoRA layer wrapping a projection adds its update to its base layer's slice as before. Training's products and
   gradients are the plain ones.
6. **One-kernel RMS norms** (``rms_norm``). transformers' RMSNorm (Llama, Qwen2, Mistral, Qwen3) takes seven
   operations; without gradients torch's ``rms_norm`` does the normalisation in one, the same numbers.
7. **One query's attention** (``one_query_attention``). A decode step's attention without gradients is two matrix
   products over the grouped heads: torch's fused kernel, built for long queries, costs more per call. In fp32
   without autocast; under bf16 autocast the products run in bf16, as autocast casts them.

``prepare`` applies 1–3 and 5–7 to a model (``models.prepare_base_model`` does, on the CPU); the entry points
(``python -m gantune``, ``python app.py``) call ``keep_freed_pages`` once. benchmarks/cpu_floor.py measures
them (5–7: benchmarks/decode_levers.py); tests/test_decoding.py checks that they change no number (3 and 7:
within bf16's rounding; 5 and 7 in fp32: within a relative 1e-5).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import inspect
import threading
import types
import weakref
from contextlib import nullcontext

import torch
from transformers import AttentionInterface, PreTrainedModel
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask
from transformers.models.llama.modeling_llama import LlamaRMSNorm

ATTENTION = "gantune_sdpa"


def grouped_sdpa(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                 attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                 is_causal: bool | None = None, **kwargs) -> tuple[torch.Tensor, None]:
    """transformers' sdpa attention (B×heads×L×d query, B×kv heads×S×d key and value), the key/value heads
    grouped by torch instead of repeated."""
    if attention_mask is not None and attention_mask.ndim == 4:
        attention_mask = attention_mask[:, :, :, : key.shape[-2]]
    if is_causal is None:
        is_causal = query.shape[2] > 1 and attention_mask is None and getattr(module, "is_causal", True)
    dtype = query.dtype
    if query.shape[2] == 1 and not torch.is_grad_enabled() and not dropout:
        return one_query_attention(query, key, value, attention_mask, scaling).transpose(1, 2).contiguous(), None
    # a bf16 pass that will be differentiated runs its attention in fp32 (autocast, which would cast it back, is off
    # for the call)
    upcast = dtype == torch.bfloat16 and torch.is_grad_enabled() and query.requires_grad
    if upcast:
        query, key, value = query.float(), key.float(), value.float()
    with torch.autocast(query.device.type, enabled=False) if upcast else nullcontext():
        out = torch.nn.functional.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling, is_causal=is_causal,
            enable_gqa=key.shape[1] != query.shape[1])
    return out.to(dtype).transpose(1, 2).contiguous(), None


def one_query_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None,
                        scaling: float | None = None) -> torch.Tensor:
    """Attention of one query position a row (a decode step), B×heads×1×d, by two matrix products over the grouped
    heads (torch's fused kernel costs more for one position than the products); ``mask``: B×1×1×S, True (or 0)
    where a key is seen. In fp32; under autocast in its dtype, which autocast gives the products whatever their
    inputs (so the cache is not copied to fp32 first: the same numbers)."""
    b, heads, _, d = query.shape
    groups = key.shape[1]
    q = query.reshape(b, groups, heads // groups, d)
    if not torch.is_autocast_enabled(query.device.type):
        q, key, value = q.float(), key.float(), value.float()
    scores = torch.matmul(q, key.transpose(-1, -2)).mul_(d ** -0.5 if scaling is None else scaling)
    if mask is not None:
        scores = scores.masked_fill_(~mask, float("-inf")) if mask.dtype == torch.bool else scores.add_(mask)
    out = torch.matmul(scores.softmax(dim=-1), value)
    return out.to(query.dtype).reshape(b, heads, 1, d)


AttentionInterface.register(ATTENTION, grouped_sdpa)
ALL_MASK_ATTENTION_FUNCTIONS.register(ATTENTION, sdpa_mask)


def contiguous_input(_module: torch.nn.Module, args: tuple) -> tuple:
    """Forward pre-hook of the LM head: its input made contiguous (a copy of the kept positions' states only)."""
    return (args[0].contiguous(), *args[1:])


# each frozen weight's packed copy (by the weight's id, dropped with it) and what it was made from, shared by every
# copy of the model that shares the weight
_PACKED: dict[int, tuple[tuple, torch.Tensor]] = {}
_CAN_PACK = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def _packable(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether ``linear(x, weight)`` may take the packed weight: no gradient wanted, a CPU product in bf16 or in fp32
    (fp32 not under autocast, which would compute it in bf16)."""
    if not _CAN_PACK or torch.is_grad_enabled() or weight.requires_grad or x.dtype != weight.dtype:
        return False
    if x.dtype == torch.float32:
        return x.device.type == "cpu" and not torch.is_autocast_enabled("cpu")
    return x.dtype == torch.bfloat16 and x.device.type == "cpu"


def product(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``linear(x, weight, bias)``; without gradients, in bf16 or fp32, by the weight packed once (oneDNN's layout;
    packed again if the weight has changed in place)."""
    if not _packable(x, weight):
        return torch.nn.functional.linear(x, weight, bias)
    made = (weight.data_ptr(), 0 if weight.is_inference() else weight._version)  # inference tensors keep no version
    entry = _PACKED.get(id(weight))
    if entry is None or entry[0] != made:
        if entry is None:
            weakref.finalize(weight, _PACKED.pop, id(weight), None)
        entry = _PACKED[id(weight)] = (made, torch.ops.mkldnn._reorder_linear_weight(weight.detach(), 8))
    packed = entry[1]
    rows = x.reshape(-1, x.shape[-1]).contiguous()
    out = torch.ops.mkldnn._linear_pointwise(rows, packed, bias, "none", [], "")
    return out.reshape(*x.shape[:-1], out.shape[-1])


def packed_linear(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """A linear layer's forward that, without gradients and in bf16, multiplies by its weight packed once."""
    return product(x, self.weight, self.bias)


# the groups of projections that read the same input, by their attribute names in a layer
SIBLINGS = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))


# each group's concatenated weights (by its weights' ids, dropped with the first), shared by every copy of the model
# that shares the weights: (what they were made from, weight, bias)
_FUSED: dict[tuple[int, ...], tuple[tuple, torch.Tensor, torch.Tensor | None]] = {}


class Siblings:
    """Linear layers that read the same input. Without gradients the first one called computes all their products
    at once (their weights concatenated, kept until one changes) and the others, called next with the same input,
    take their slice of it; with gradients, or with any weight needing one, each computes its own."""

    def __init__(self, layers: list[torch.nn.Linear]):
        self.layers = layers
        self.sizes = [layer.out_features for layer in layers]
        self.pending = threading.local()  # per thread: the input last multiplied and the slices not yet taken

    def __getstate__(self) -> dict:  # a copied model gets fresh per-thread state
        return {**self.__dict__, "pending": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, pending=threading.local())

    def _fused(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        ids = tuple(id(layer.weight) for layer in self.layers)
        made = tuple((t.data_ptr(), t._version, t.dtype) for layer in self.layers
                     for t in (layer.weight, layer.bias) if t is not None)
        entry = _FUSED.get(ids)
        if entry is None or entry[0] != made:
            if entry is None:
                weakref.finalize(self.layers[0].weight, _FUSED.pop, ids, None)
            bias = None if self.layers[0].bias is None else torch.cat([layer.bias.detach() for layer in self.layers])
            entry = _FUSED[ids] = (made, torch.cat([layer.weight.detach() for layer in self.layers]), bias)
        return entry[1], entry[2]

    def forward(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """Layer ``index``'s product of ``x``."""
        layer = self.layers[index]
        if torch.is_grad_enabled() or any(m.weight.requires_grad for m in self.layers):
            return product(x, layer.weight, layer.bias)
        pending = self.pending
        if getattr(pending, "x", None) is x and index in pending.parts:
            part = pending.parts.pop(index)
            if not pending.parts:
                pending.x = None
            return part
        parts = product(x, *self._fused()).split(self.sizes, dim=-1)
        pending.x, pending.parts = x, {i: p for i, p in enumerate(parts) if i != index}
        return parts[index]


def sibling_linear(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """The forward of a linear layer in a ``Siblings`` group."""
    group, index = self._gantune_siblings
    return group.forward(index, x)


def _siblings(module: torch.nn.Module) -> list[list[torch.nn.Linear]]:
    groups = []
    for names in SIBLINGS:
        layers = [getattr(module, name, None) for name in names]
        if (all(type(layer) is torch.nn.Linear for layer in layers)
                and len({(layer.in_features, layer.weight.dtype, layer.weight.device, layer.bias is None)
                         for layer in layers}) == 1):
            groups.append(layers)
    return groups


def _forward_body(cls: type) -> str:
    return inspect.getsource(cls.forward).split(":\n", 1)[-1]


_RMS_NORM_BODY = _forward_body(LlamaRMSNorm)


def rms_norm(self: torch.nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
    """transformers' RMSNorm forward; without gradients, its normalisation in one kernel (the same numbers)."""
    if torch.is_grad_enabled():
        return type(self).forward(self, hidden_states)
    shape = hidden_states.shape[-1:]
    normed = torch.nn.functional.rms_norm(hidden_states.float(), shape, None, self.variance_epsilon)
    return self.weight * normed.to(hidden_states.dtype)


def prepare(model: PreTrainedModel) -> None:
    """Put a CPU model on the fast paths 1–3 and 5–7."""
    if getattr(model.config, "_attn_implementation", None) == "sdpa":
        model.set_attn_implementation(ATTENTION)
    head = model.get_output_embeddings()
    if head is not None:
        head.register_forward_pre_hook(contiguous_input)
    bodies: dict[type, bool] = {}
    for module in list(model.modules()):
        for layers in _siblings(module):
            group = Siblings(layers)
            for index, layer in enumerate(layers):
                layer._gantune_siblings = (group, index)
                layer.forward = types.MethodType(sibling_linear, layer)
        if type(module) is torch.nn.Linear and "forward" not in module.__dict__ and _CAN_PACK:
            module.forward = types.MethodType(packed_linear, module)
        cls = type(module)
        if cls.__name__.endswith("RMSNorm") and hasattr(module, "variance_epsilon"):
            if cls not in bodies:
                bodies[cls] = _forward_body(cls) == _RMS_NORM_BODY
            if bodies[cls]:
                module.forward = types.MethodType(rms_norm, module)


def keep_freed_pages() -> None:
    """Keep freed memory in the process for the next allocation instead of handing it back (glibc; elsewhere nothing).

    Large allocations are served from the heap rather than fresh mappings, and the heap is trimmed only by an
    explicit ``memory.release_freed_memory``. Process-wide: called once, by the entry points.
    """
    name = ctypes.util.find_library("c")
    if not name:
        return
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt(-4, 0)  # M_MMAP_MAX: no allocation from a mapping of its own
        libc.mallopt(-1, 2**30)  # M_TRIM_THRESHOLD: give back free heap top only past 1 GB
    except (OSError, AttributeError):  # not glibc
        pass
