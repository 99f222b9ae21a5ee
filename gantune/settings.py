"""What every settings section is made of: a field with its flag's help text, and the range checks.

A section is a dataclass of such fields that lives beside the code that reads it (the GAN's in
``methods/gan/settings.py``, peft's in ``methods/peft_settings.py``); ``config.TrainConfig`` is all
the sections together. Nothing here imports torch: the CLI builds its flags from these.
"""

from __future__ import annotations

import math
from dataclasses import field
from typing import Any

from .errors import GantuneError


def setting(default: Any, help: str, choices: tuple | None = None) -> Any:
    """A settings field: its default, the flag's help text and, for a choice, the values it takes."""
    meta: dict[str, Any] = {"help": help}
    if choices:
        meta["choices"] = choices
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


def flag(name: str) -> str:
    """The CLI flag of a field, without its dashes: ``max_new_tokens`` → ``max-new-tokens``."""
    return name.replace("_", "-")


def require_at_least(section: Any, names: tuple[str, ...], least: int) -> None:
    """Refuse a whole-number field below ``least``."""
    for name in names:
        value = getattr(section, name)
        if value < least:
            raise GantuneError(f"--{flag(name)} must be {'at least 1' if least == 1 else f'>= {least}'} (got {value})",
                               key="at_least", setting=name, least=least, got=value)


def require_finite(section: Any, names: tuple[str, ...], low: float = 0.0, high: float = math.inf,
                   low_open: bool = False) -> None:
    """Refuse a number that is not finite or lies outside [low, high] ((low, high] with ``low_open``)."""
    for name in names:
        value = getattr(section, name)
        if not math.isfinite(value) or value < low or (low_open and value == low) or value > high:
            if low_open:
                raise GantuneError(f"--{flag(name)} must be a number in ({low:g}, {high:g}] (got {value})",
                                   key="in_range", setting=name, low=low, high=high, got=value)
            raise GantuneError(f"--{flag(name)} must be a finite number >= {low:g} (got {value})",
                               key="finite_at_least", setting=name, low=low, got=value)
