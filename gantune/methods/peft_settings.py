"""The settings of the peft baselines (LoRA, prompt tuning, prefix tuning)."""

from __future__ import annotations

from dataclasses import dataclass

from ..settings import require_at_least, setting


@dataclass
class PeftSettings:
    """The peft baselines: LoRA's rank, scale and target modules; prompt and prefix tuning's virtual tokens."""

    lora_r: int = setting(8, "LoRA rank")
    lora_alpha: int = setting(16, "LoRA scaling alpha")
    lora_targets: list[str] = setting([], "module names LoRA adapts (none: peft's default for the model's architecture: "
                                      "q_proj v_proj on Llama/Qwen2, c_attn on GPT-2 …)")
    virtual_tokens: int = setting(20, "virtual tokens of prompt-tuning and prefix-tuning")

    def check(self) -> None:
        require_at_least(self, ("lora_r", "lora_alpha", "virtual_tokens"), 1)
