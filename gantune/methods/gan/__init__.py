"""The thesis' method: generative adversarial prompt tuning (M_tunable + a discriminator)."""

from .adapter import AdapterConfig, MTunable
from .discriminator import EmbeddingDiscriminator, HiddenStateDiscriminator, ThesisDiscriminator
from .method import GanMethod

__all__ = ["AdapterConfig", "MTunable", "EmbeddingDiscriminator", "HiddenStateDiscriminator", "ThesisDiscriminator",
           "GanMethod"]
