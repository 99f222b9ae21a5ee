"""M_tunable: the trainable part of the generator, between the embedding layer and the blocks.

    e = embed(ids)                      (B, L, d)       frozen
    h = [e ; z]  with z ~ N(0, I_100)   (B, L, d+100)   one noise vector per sequence
    h = LeakyReLU(W1 h) → LeakyReLU(W2 h) → LeakyReLU(W3 h) → W4 h      d+100 → h1 → h2 → h1 → d
    e' = e + h                          residual, like an adapter

It is attached with a forward hook on the LM's input embedding module, so the model's code is not
edited and generation with the KV cache goes through it token by token.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ...generation import rows_in_flight
from ...runs import read_json_file

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"


@dataclass
class AdapterConfig:
    embed_dim: int
    noise_dim: int = 100
    hidden: list[int] = field(default_factory=list)  # empty: (embed_dim // 2, embed_dim // 4)
    init: str = "zero"
    kind: str = "gan-m-tunable"

    def widths(self) -> tuple[int, int]:
        if self.hidden:
            return self.hidden[0], self.hidden[1]
        return max(1, self.embed_dim // 2), max(1, self.embed_dim // 4)


class MTunable(nn.Module):
    def __init__(self, config: AdapterConfig):
        super().__init__()
        self.config = config
        h1, h2 = config.widths()
        d = config.embed_dim
        self.layers = nn.ModuleList(
            [nn.Linear(d + config.noise_dim, h1), nn.Linear(h1, h2), nn.Linear(h2, h1), nn.Linear(h1, d)]
        )
        if config.init == "zero":  # G starts exactly as the base LM
            nn.init.zeros_(self.layers[-1].weight)
            nn.init.zeros_(self.layers[-1].bias)
        self.noise: torch.Tensor | None = None  # (B, noise_dim) for the sequences in flight; None = zeros

    def forward(self, embeds: torch.Tensor) -> torch.Tensor:
        b, length, _ = embeds.shape
        z = self.noise
        if z is None:
            z = embeds.new_zeros(b, self.config.noise_dim)
        elif (rows := rows_in_flight()) is not None:  # a decode loop whose ended rows have left the batch
            z = z[rows]
        if z.shape[0] != b:
            raise ValueError(f"noise is set for {z.shape[0]} sequences but {b} came in")
        x = torch.cat([embeds, z.to(embeds.dtype)[:, None, :].expand(b, length, -1)], dim=-1)
        for layer in self.layers[:-1]:
            x = nn.functional.leaky_relu(layer(x), 0.01)
        return embeds + self.layers[-1](x).to(embeds.dtype)

    def sample_noise(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        w = self.layers[0].weight
        return torch.randn(batch_size, self.config.noise_dim, generator=generator).to(w.device)

    @contextmanager
    def noise_set(self, noise: torch.Tensor | None) -> Iterator[None]:
        """Feed ``noise`` (B×noise_dim, or None for zeros) to every forward inside the block."""
        previous, self.noise = self.noise, noise
        try:
            yield
        finally:
            self.noise = previous

    def attach(self, lm: nn.Module) -> torch.utils.hooks.RemovableHandle:
        """Route the LM's input embeddings through this module; remove the handle to detach."""
        return lm.get_input_embeddings().register_forward_hook(lambda _m, _i, out: self(out))

    def save_pretrained(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}, folder / WEIGHTS_NAME)
        (folder / CONFIG_NAME).write_text(json.dumps(asdict(self.config), indent=2))

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: torch.device | str = "cpu") -> "MTunable":
        folder = Path(folder)
        config = AdapterConfig(**read_json_file(folder / CONFIG_NAME))
        module = cls(config)
        module.load_state_dict(load_file(folder / WEIGHTS_NAME))
        return module.to(device)
