"""Tuning methods, each a plug-in behind ``TuningMethod``; importing this package registers them."""

from . import adapter_mle, full, gan, peft_methods  # noqa: F401  (register every method)
from .base import METHODS, TuningMethod, get_method, register

__all__ = ["METHODS", "TuningMethod", "get_method", "register"]
