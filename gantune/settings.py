"""What every settings section is made of: a field with its flag's help text and its bounds.

A section is a dataclass of such fields that lives beside the code that reads it (the GAN's in
``methods/gan/settings.py``, peft's in ``methods/peft_settings.py``); ``config.TrainConfig`` is all
the sections together. A field's ``Bounds`` are the one place its range is said: ``check_bounds``
refuses a value outside it, and a hosted workbench refuses one over its ``hosted`` cap. Nothing
here imports torch: the CLI builds its flags from these.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from .errors import GantuneError


@dataclass(frozen=True)
class Bounds:
    """A number's range (each item's, for a list of widths) and what a hosted workbench allows at most."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False  # ``low`` itself is refused
    high_open: bool = False  # ``high`` itself is refused
    hosted: float | None = None  # the most a hosted workbench (a Space) allows: the setting sizes a job's cost
    why: str = ""  # said with the range (the seed's: "the seeds numpy and torch take")
    key: str = ""  # what a page calls this refusal, when not the range's own kind (n's: "too_few_pairs")


def setting(default: Any, help: str, choices: tuple | None = None, bounds: Bounds | None = None) -> Any:
    """A settings field: its default, the flag's help text, for a choice the values it takes, for a number its bounds."""
    meta: dict[str, Any] = {"help": help}
    if choices:
        meta["choices"] = choices
    if bounds is not None:
        meta["bounds"] = bounds
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


def flag(name: str) -> str:
    """The CLI flag of a field, without its dashes: ``max_new_tokens`` → ``max-new-tokens``."""
    return name.replace("_", "-")


def check_bounds(settings: Any) -> None:
    """Refuse a value outside its field's bounds, naming the flag (``None``: 'all', not checked)."""
    for f in dataclasses.fields(settings):
        bounds: Bounds | None = f.metadata.get("bounds")
        value = getattr(settings, f.name)
        if bounds is None or value is None:
            continue
        for v in value if isinstance(value, list) else [value]:
            problem = _outside(bounds, v)
            if problem:
                text, key, values = problem
                raise GantuneError(f"--{flag(f.name)} must be {text} (got {v})", key=key, setting=f.name, got=v,
                                   **values)


def hosted_caps(section: type) -> dict[str, float]:
    """The hosted workbench's cap of each field of ``section`` that has one."""
    return {f.name: f.metadata["bounds"].hosted for f in dataclasses.fields(section)
            if f.metadata.get("bounds") is not None and f.metadata["bounds"].hosted is not None}


def _outside(b: Bounds, v: float) -> tuple[str, str, dict[str, Any]] | None:
    """What ``v`` must be, when it lies outside ``b``: the words, and their kind and values for a page to say them in
    its own language (``GantuneError.key``); None when it fits."""
    if isinstance(v, float) and not math.isfinite(v):
        return "a finite number", "finite", {}
    too_low = b.low is not None and (v < b.low or (b.low_open and v == b.low))
    too_high = b.high is not None and (v > b.high or (b.high_open and v == b.high))
    if not (too_low or too_high):
        return None
    low, high = _shown(b.low), _shown(b.high)
    values = {"low": _plain(b.low), "high": _plain(b.high), "least": _plain(b.low), "most": _plain(b.high), "have": v}
    if isinstance(v, int) and not isinstance(v, bool):
        if b.why and b.low is not None and b.high is not None:
            return f"between {low} and {high}, {b.why}", b.key or "between", values
        if too_low:
            return f"at least {low}" + (f": {b.why}" if b.why else ""), b.key or "at_least", values
        return f"at most {high}", b.key or "at_most", values
    if b.low is not None and b.high is not None:
        if b.low_open and b.high_open:
            return f"between {low} and {high}, exclusive", "between_open", values
        interval = f"{'(' if b.low_open else '['}{low}, {high}{')' if b.high_open else ']'}"
        return f"a number in {interval}", "in_range" if b.low_open and not b.high_open else "in_interval", \
            {**values, "interval": interval}
    if too_low:
        return f"a finite number {'>' if b.low_open else '>='} {low}", "finite_at_least", values
    return f"a number <= {high}", "at_most", values


def _plain(x: float | None) -> float | int | None:
    """A bound as a number a page formats in its own way (a whole one as an int)."""
    return int(x) if x is not None and float(x).is_integer() else x


def _shown(x: float | None) -> str:
    if x is None:
        return ""
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


# the bounds most fields share
COUNT = Bounds(low=1)  # a whole number >= 1
COUNT_OR_ZERO = Bounds(low=0)  # a whole number >= 0 (0: off)
NONNEGATIVE = Bounds(low=0.0)  # a finite number >= 0
RATE = Bounds(low=0.0, high=1.0, low_open=True)  # a learning rate: (0, 1]
