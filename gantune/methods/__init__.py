"""The tuning methods: the one list of their names, the settings sections each reads, and its code.

A method is a ``TuningMethod`` subclass (``methods/base.py``) in its own module, with its settings
section beside it (as PEFT keeps ``LoraConfig`` beside the LoRA layers). This module stays light
(no torch): the CLI and the page build their choices and flags from ``METHODS``, and a method's
code is imported the first time ``get_method`` asks for it. Adding a method is one entry here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import GantuneError
from .gan.settings import GENERATOR_METHODS, AdapterSettings, GanSettings
from .peft_settings import PeftSettings

if TYPE_CHECKING:
    from ..config import TrainConfig
    from .base import TuningMethod


@dataclass(frozen=True)
class MethodSpec:
    code: str  # "module:Class" of its TuningMethod
    sections: tuple[type, ...]  # the settings sections it reads besides the run's (config.RunSettings)
    defaults: dict[str, Any] = field(default_factory=dict)  # its own values over the preset's (a learning rate that suits it)


METHODS: dict[str, MethodSpec] = {
    # the GAN's generator is M_tunable or a peft adapter (--adapter): it reads the settings of both
    "gan": MethodSpec("gantune.methods.gan.method:GanMethod", (AdapterSettings, GanSettings, PeftSettings)),
    "adapter-mle": MethodSpec("gantune.methods.adapter_mle:AdapterMleMethod", (AdapterSettings,)),
    "lora": MethodSpec("gantune.methods.peft_methods:LoraMethod", (PeftSettings,), {"lr": 5e-4}),
    "prompt-tuning": MethodSpec("gantune.methods.peft_methods:PromptTuningMethod", (PeftSettings,), {"lr": 1e-2}),
    "prefix-tuning": MethodSpec("gantune.methods.peft_methods:PrefixTuningMethod", (PeftSettings,), {"lr": 1e-2}),
    "full": MethodSpec("gantune.methods.full:FullMethod", (), {"lr": 2e-5}),
}


# the settings that shape each adapter's weights: a run starts from another run's adapter only when these agree
ADAPTER_SHAPE: dict[str, tuple[str, ...]] = {"m-tunable": ("noise_dim", "adapter_hidden"),
                                             "lora": ("lora_r", "lora_alpha", "lora_targets"),
                                             "prompt-tuning": ("virtual_tokens",), "prefix-tuning": ("virtual_tokens",)}


def adapter_kind(method: str, adapter: str = "m-tunable") -> str:
    """The tuned part a run of ``method`` trains: the GAN's ``--adapter``, an MLE method's own, or ``full``."""
    if method == "gan":
        return adapter
    return next((kind for kind, name in GENERATOR_METHODS.items() if name == method), method)


def virtual_tokens(config: TrainConfig) -> int:
    """The tokens a run's adapter puts before every prompt: its prompt or prefix tuning's ``--virtual-tokens``,
    whichever flag chose that adapter (``--method``, or the GAN's ``--adapter``); 0 for the others."""
    kind = adapter_kind(config.method, config.adapter)
    return config.virtual_tokens if kind in ("prompt-tuning", "prefix-tuning") else 0


def get_method(name: str) -> type[TuningMethod]:
    """The method class named ``name`` (its module is imported now, the first time)."""
    if name not in METHODS:
        raise GantuneError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    module, cls = METHODS[name].code.split(":")
    return getattr(importlib.import_module(module), cls)
