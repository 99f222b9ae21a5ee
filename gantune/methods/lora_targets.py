"""The LoRA target rule: which modules LoRA adapts in a model (peft's default for its type, or the names given).

Beside the peft settings (``peft_settings.py``) and read by LoRA (``peft_methods.py``) and by the memory
estimate (``gantune.budget``), which must count the same layers.
"""

from __future__ import annotations

import torch
from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
from transformers import PreTrainedModel
from transformers.pytorch_utils import Conv1D

from ..errors import GantuneError

LINEAR_TYPES = (torch.nn.Linear, Conv1D)  # what LoRA adapts here: GPT-2's layers are Conv1D


def linear_modules(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """The model's linear layers (nn.Linear and transformers' Conv1D) by full name, the output head left out."""
    head = model.get_output_embeddings() if isinstance(model, PreTrainedModel) else None
    return {n: m for n, m in model.named_modules() if isinstance(m, LINEAR_TYPES) and m is not head}


def matches(name: str, target: str) -> bool:
    """peft's rule for a list of target names: the full module name, or its last dotted parts."""
    return name == target or name.endswith("." + target)


def default_lora_targets(model: PreTrainedModel) -> list[str]:
    """peft's default LoRA targets for this model type; every linear layer's name where it has none (or none fit)."""
    layers = linear_modules(model)
    mapped = TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(getattr(model.config, "model_type", None)) or []
    found = [t for t in mapped if any(matches(n, t) for n in layers)]
    return found or sorted({n.rsplit(".", 1)[-1] for n in layers})


def resolve_lora_targets(model: PreTrainedModel, targets: list[str]) -> list[str]:
    """The module names LoRA adapts: ``targets`` when given, else the architecture's default.

    A given name must match at least one module, and only layers LoRA can adapt (linear layers,
    Conv1D, embeddings); otherwise the one-line error names the model's linear layers.
    """
    if not targets:
        return default_lora_targets(model)
    adaptable = (*LINEAR_TYPES, torch.nn.Embedding)

    def fits(target: str) -> bool:
        hits = [m for n, m in model.named_modules() if matches(n, target)]
        return bool(hits) and all(isinstance(m, adaptable) for m in hits)

    bad = [t for t in targets if not fits(t)]
    if bad:
        names = sorted({n.rsplit(".", 1)[-1] for n in linear_modules(model)})
        raise GantuneError(
            f"--lora-targets {' '.join(targets)}: no such modules in this model; its linear layers are named "
            f"{', '.join(names) or '(none)'} ({', '.join(bad)} {'is' if len(bad) == 1 else 'are'} not one of them); "
            f"leave --lora-targets empty for the {model.config.model_type} default: "
            f"{', '.join(default_lora_targets(model)) or '(none)'}")
    return list(targets)
