"""The settings of the peft baselines (LoRA, prompt tuning, prefix tuning)."""

from __future__ import annotations

from dataclasses import dataclass

from ..settings import COUNT, Bounds, setting


@dataclass
class PeftSettings:
    """The peft baselines: LoRA's rank, scale and target modules; prompt and prefix tuning's virtual tokens."""

    lora_r: int = setting(8, "LoRA rank", bounds=Bounds(low=1, hosted=64))
    lora_alpha: int = setting(16, "LoRA scaling alpha", bounds=COUNT)
    lora_targets: list[str] = setting([], "module names LoRA adapts (none: peft's default for the model's architecture: "
                                      "q_proj v_proj on Llama/Qwen2, c_attn on GPT-2 …)")
    virtual_tokens: int = setting(20, "virtual tokens of prompt-tuning and prefix-tuning", bounds=Bounds(low=1, hosted=64))
