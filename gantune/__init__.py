"""gantune: generative adversarial prompt tuning of small language models (the library; no UI)."""

__version__ = "0.1.0"
