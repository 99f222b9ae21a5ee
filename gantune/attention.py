"""Grouped-query attention without copying the key/value heads, for models on the CPU.

transformers' ``sdpa`` attention repeats each key/value head for its group of query heads whenever an
attention mask is given (its ``use_gqa_in_sdpa`` allows torch's grouped heads only without a mask). Left
padding always gives one, so every layer of every decoding step copied the whole key/value cache
(SmolLM2: 3 key/value heads for 9 query heads, three copies). torch's kernel takes the grouped heads
itself (``enable_gqa``): the same numbers (tests compare), without the copies. Registered with
transformers' ``AttentionInterface`` under ``ATTENTION``; ``models.prepare_base_model`` switches a CPU
model from ``sdpa`` to it.
"""

from __future__ import annotations

import torch
from transformers import AttentionInterface
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
    out = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling, is_causal=is_causal,
        enable_gqa=key.shape[1] != query.shape[1])
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register(ATTENTION, grouped_sdpa)
ALL_MASK_ATTENTION_FUNCTIONS.register(ATTENTION, sdpa_mask)
