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
3. **Packed bf16 weights** (``packed_linear``). A bf16 product through oneDNN packs (reorders) its weight for
   the CPU's matrix units at every call; decoding calls each frozen weight once a token with a few rows, and
   the packing costs more than the product. Packed once and kept, a passes without gradients (decoding, the
   frozen pass, evaluation) reads them as they are: the same values (up to the kernel's rounding).
4. **Freed memory** (``keep_freed_pages``). glibc hands every allocation over 32 MB back to the system when
   it is freed, so each training step's logits came back as fresh pages: ~140,000 page faults a step.

``prepare`` applies 1–3 to a model (``models.prepare_base_model`` does, on the CPU); the entry points
(``python -m gantune``, ``python app.py``) call ``keep_freed_pages`` once. benchmarks/cpu_floor.py measures
them; tests/test_decoding.py checks that they change no number (3: within bf16's rounding).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import types
import weakref
from contextlib import nullcontext

import torch
from transformers import AttentionInterface, PreTrainedModel
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

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


AttentionInterface.register(ATTENTION, grouped_sdpa)
ALL_MASK_ATTENTION_FUNCTIONS.register(ATTENTION, sdpa_mask)


def contiguous_input(_module: torch.nn.Module, args: tuple) -> tuple:
    """Forward pre-hook of the LM head: its input made contiguous (a copy of the kept positions' states only)."""
    return (args[0].contiguous(), *args[1:])


# each frozen bf16 weight's packed copy (by the weight's id, dropped with it), shared by every copy of the model
# that shares the weight
_PACKED: dict[int, torch.Tensor] = {}
_CAN_PACK = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def packed_linear(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """A linear layer's forward that, without gradients and in bf16, multiplies by its weight packed once."""
    weight = self.weight
    if torch.is_grad_enabled() or weight.requires_grad or x.dtype != torch.bfloat16 or weight.dtype != torch.bfloat16:
        return torch.nn.functional.linear(x, weight, self.bias)
    packed = _PACKED.get(id(weight))
    if packed is None:
        packed = _PACKED[id(weight)] = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), 8)
        weakref.finalize(weight, _PACKED.pop, id(weight), None)
    rows = x.reshape(-1, x.shape[-1]).contiguous()
    out = torch.ops.mkldnn._linear_pointwise(rows, packed, self.bias, "none", [], "")
    return out.reshape(*x.shape[:-1], out.shape[-1])


def prepare(model: PreTrainedModel) -> None:
    """Put a CPU model on the fast paths 1–3."""
    if getattr(model.config, "_attn_implementation", None) == "sdpa":
        model.set_attn_implementation(ATTENTION)
    head = model.get_output_embeddings()
    if head is not None:
        head.register_forward_pre_hook(contiguous_input)
    if _CAN_PACK:
        for module in model.modules():
            if type(module) is torch.nn.Linear:
                module.forward = types.MethodType(packed_linear, module)


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
