"""Tuning methods, each a plug-in behind ``TuningMethod``; importing this package registers them."""

from . import adapter_mle, gan  # noqa: F401  (register "adapter-mle", "gan")
from .base import METHODS, TuningMethod, get_method, register

__all__ = ["METHODS", "TuningMethod", "get_method", "register"]
