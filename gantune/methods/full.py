"""The upper baseline: full fine-tuning of every LM weight by MLE on the reference answers.

It trains a deep copy of the base model and drops it in ``close``: the shared base model is never
written, and it is also the reference the weights' movement is measured from. It refuses to start
when the estimated training memory would not fit; LoRA is the way out then.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import torch
from accelerate import Accelerator
from safetensors.torch import load_file
from transformers import PreTrainedModel

from ..config import TrainConfig
from ..data import Batch
from ..errors import GantuneError
from ..memory import available_memory_bytes
from ..models import BaseModel
from ..runs import read_json_file
from .base import (
    TuningMethod,
    fused,
    l2_norm,
    load_optimizer_tensors,
    load_param_tensors,
    optimizer_tensors,
    param_tensors,
)
from .peft_methods import mle_step

MEMORY_FRACTION = 0.8  # refuse when the estimate exceeds this share of what is available
COPIES = 4  # the trained copy of the weights, its gradients, AdamW's two moments: each the weights' size


def estimate_full_finetune_bytes(model: torch.nn.Module) -> int:
    """Bytes full fine-tuning needs beyond the loaded model and activations: the copy, gradients, AdamW states (all fp32)."""
    return COPIES * 4 * sum(p.numel() for p in model.parameters())  # tied weights counted once


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB"


class FullMethod(TuningMethod):
    name = "full"

    def __init__(self, base: BaseModel, config: TrainConfig, accelerator: Accelerator | None = None,
                 available_memory: Callable[[torch.device], int] | None = None, check_memory: bool = True):
        super().__init__(base, config, accelerator)
        lm = base.model
        if check_memory:
            need = estimate_full_finetune_bytes(lm)
            have = (available_memory or available_memory_bytes)(base.device)
            if need > MEMORY_FRACTION * have:
                n = sum(p.numel() for p in lm.parameters())
                raise GantuneError(
                    f"full fine-tuning of this {n / 1e6:.1f}M-parameter model needs about {_gb(need)} "
                    f"(a copy of the weights, gradients, AdamW states; activations extra) but only {_gb(have)} of "
                    f"{base.device.type.upper()} memory is available ({MEMORY_FRACTION:.0%} of it may be used); "
                    "use --method lora instead")
        # trained in fp32 (from a bf16 base's rounded weights), then dropped; the shared base is never written
        self.model: PreTrainedModel = copy.deepcopy(lm).float()
        self.model.requires_grad_(True)
        self.named_params = list(self.model.named_parameters())  # tied weights once
        self.params = [p for _, p in self.named_params]
        self.opt = torch.optim.AdamW(self.params, lr=config.lr, **fused(self.params))
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this full fine-tuning method was closed; create a new one")

    def train_step(self, batch: Batch) -> dict[str, float]:
        self._check_open()
        return mle_step(self, self.model, self.params, self.opt, batch)

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return list(self.params)

    def adapter_norm(self) -> float:
        """‖W − W₀‖ over every weight: how far training moved the copy from the base model (same device)."""
        return l2_norm(p.detach() - p0 for p, p0 in zip(self.params, self.base.model.parameters()))

    @contextmanager
    def enabled(self, batch_size: int | None = None) -> Iterator[PreTrainedModel]:
        """The trained copy, eval mode, no gradients."""
        self._check_open()
        self.model.eval()
        with torch.no_grad():
            yield self.model

    def save_pretrained(self, folder: str | Path) -> None:
        folder = Path(folder)
        self.model.save_pretrained(folder, safe_serialization=True)
        self.base.tokenizer.save_pretrained(folder)

    @classmethod
    def from_pretrained(cls, base: BaseModel, folder: str | Path, config: TrainConfig) -> "FullMethod":
        """The saved weights loaded into a copy of the base model."""
        method = cls(base, config, check_memory=False)
        try:
            method._load_weights(Path(folder))
        except BaseException:
            method.close()
            raise
        return method

    def _load_weights(self, folder: Path) -> None:
        index = folder / "model.safetensors.index.json"
        if index.is_file():
            files = sorted(set(read_json_file(index)["weight_map"].values()))
        elif (folder / "model.safetensors").is_file():
            files = ["model.safetensors"]
        else:
            raise GantuneError(f"{folder} holds no full model (no model.safetensors)")
        state: dict[str, torch.Tensor] = {}
        for name in files:
            state.update(load_file(folder / name))
        lm = self.model
        # a tied weight is saved under one of its names: each parameter needs one of its names present
        names: dict[int, list[str]] = {}
        for n, p in lm.named_parameters(remove_duplicate=False):
            names.setdefault(id(p), []).append(n)
        missing = [ns[0] for ns in names.values() if not any(n in state for n in ns)]
        unexpected = sorted(set(state) - set(lm.state_dict()))
        if missing or unexpected:
            what = f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}"
            raise GantuneError(f"{folder} does not hold weights of this base model ({what} …)")
        try:
            with torch.no_grad():
                lm.load_state_dict(state, strict=False)
        except RuntimeError as exc:
            raise GantuneError(f"{folder} does not hold weights of this base model: "
                               f"{str(exc).strip().splitlines()[-1].strip()}") from exc

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {**param_tensors("model", self.named_params), **optimizer_tensors("opt", self.opt)}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        load_param_tensors("model", self.named_params, tensors, "model")
        load_optimizer_tensors("opt", self.opt, tensors)

    def close(self) -> None:
        """Drop the trained copy and the optimiser (the shared base model was never written)."""
        if not self._closed:
            self._closed = True
            del self.model, self.named_params, self.params, self.opt

