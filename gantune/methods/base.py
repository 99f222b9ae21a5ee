"""The one interface every tuning method implements.

A method owns its trainable modules and optimisers and does a whole training step itself; the
trainer only feeds batches, records what a step returns, and asks the method to save. Adding a
method is a new module that subclasses ``TuningMethod``, named in ``methods.METHODS``.
"""

from __future__ import annotations

import copy
import itertools
from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Callable, ClassVar, Iterable

import torch
from accelerate import Accelerator
from transformers import PreTrainedModel

from ..config import TrainConfig
from ..data import Batch
from ..errors import GantuneError
from ..models import BaseModel, make_accelerator


class StepInterrupted(Exception):
    """A stop asked for inside a step (``TuningMethod.stop_point``): the step is not done, and the method is as it
    was before it."""


class TuningMethod(ABC):
    name: ClassVar[str]
    # asked inside a step's long loops (D steps, PPO epochs, after a rollout); the trainer sets it
    should_stop: Callable[[], bool] = staticmethod(lambda: False)

    def __init__(self, base: BaseModel, config: TrainConfig, accelerator: Accelerator | None = None):
        self.base, self.config = base, config
        self.accelerator = accelerator or make_accelerator(base.device, base.precision)

    @abstractmethod
    def train_step(self, batch: Batch) -> dict[str, float]:
        """One optimisation step on a batch; returns the numbers to record (losses, rewards …)."""

    def start_epoch(self, epoch: int, batches: list[Batch]) -> None:
        """Called before the first step of each epoch with its batches (the rest of them, on a resume)."""

    @abstractmethod
    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """Every parameter this method trains (and nothing of the frozen LM)."""

    @abstractmethod
    def adapter_norm(self) -> float:
        """L2 norm of the tuned part that changes the LM's answers (plotted live)."""

    @abstractmethod
    def enabled(self, batch_size: int | None = None) -> AbstractContextManager[PreTrainedModel]:
        """A block that yields the tuned model (eval-time settings) for calls of ``batch_size`` rows.

        ``None``: calls of varying size (scoring); a method that draws noise per sequence feeds zeros.
        """

    @abstractmethod
    def save_pretrained(self, folder: str | Path) -> None:
        """Write what inference needs (safetensors + a JSON config) to ``folder``."""

    @classmethod
    @abstractmethod
    def from_pretrained(cls, base: BaseModel, folder: str | Path, config: TrainConfig) -> "TuningMethod":
        """Load what ``save_pretrained`` wrote, for inference."""

    @abstractmethod
    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Everything needed to resume training (weights and optimiser state) as named tensors."""

    @abstractmethod
    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore what ``state_tensors`` returned."""

    def stop_point(self, undo: dict[str, torch.Tensor] | None = None) -> None:
        """Inside a step: when a stop is asked, put back ``undo`` (``state_tensors()`` taken before the step changed
        anything) and raise ``StepInterrupted``, so no half-done step is ever kept or saved."""
        if self.should_stop():
            if undo is not None:
                self.load_state_tensors(undo)
            raise StepInterrupted

    def init_from(self, folder: str | Path) -> None:
        """Start from the adapter another run saved in ``folder`` (what ``save_pretrained`` wrote, of this kind and
        shape); the optimiser's state starts fresh. A misfit raises (``load_state_tensors``'s errors)."""
        other = type(self).from_pretrained(self.base, folder, self.config)
        try:
            self.load_state_tensors(other.state_tensors())
        finally:
            other.close()

    def eval_noise(self) -> str | None:
        """What noise the tuned model is fed when answering (M_tunable's ``--eval-noise``); None: it takes none."""
        return None

    def sampled_answers(self) -> list[str]:
        """The answers the last step sampled, in batch order ([] for methods that do not sample)."""
        return []

    def close(self) -> None:
        """Free what this method holds; the shared base model is never changed (nothing by default)."""

    def backward(self, loss: torch.Tensor, params: list[torch.nn.Parameter]) -> float:
        """Backward, average, clip; returns the gradients' norm before clipping.

        Gradients are averaged over processes when several run (``accelerate launch``), then clipped
        to ``--max-grad-norm`` (0: not clipped; the norm is still measured).
        """
        self.accelerator.backward(loss)
        if self.accelerator.num_processes > 1:
            for p in params:
                if p.grad is not None:
                    p.grad = self.accelerator.reduce(p.grad, reduction="mean")
        limit = self.config.max_grad_norm or float("inf")
        return float(torch.nn.utils.clip_grad_norm_(params, limit))


def weight_sharing_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model``'s modules, attributes, configs and hooks that shares its weights and buffers.

    Hand this copy to code that changes modules in place (peft injects layers, sets attributes,
    registers hooks): the model itself is never touched, and dropping the copy drops all of it.
    """
    shared = {id(t): t for t in itertools.chain(model.parameters(), model.buffers())}
    return copy.deepcopy(model, memo=shared)


def l2_norm(tensors: Iterable[torch.Tensor]) -> float:
    """The L2 norm of all the tensors together, in fp32, with one device sync."""
    with torch.no_grad():
        norms = [torch.linalg.vector_norm(t.detach(), dtype=torch.float32) for t in tensors]
        return float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0


def fused(params: Iterable[torch.nn.Parameter]) -> dict[str, bool]:
    """Keyword arguments for torch's Adam and AdamW: their fused kernel (one pass over each tensor where the loop
    makes a dozen) where every parameter is a floating tensor on a device that has it (CPU, CUDA)."""
    ok = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    return {"fused": True} if ok else {}


def optimizer_tensors(prefix: str, optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """An optimiser's per-parameter state as flat named tensors (safetensors holds no pickles)."""
    out = {}
    for idx, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            out[f"{prefix}.{idx}.{key}"] = torch.as_tensor(value).detach().cpu().clone()
    return out


def load_optimizer_tensors(prefix: str, optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    """Restore what ``optimizer_tensors`` saved; refuse a state that does not fit the optimiser's parameters (a
    moment of another shape, a ``step`` that is not one number, a value that is not finite)."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    state_dict = optimizer.state_dict()
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        if name.startswith(prefix + "."):
            idx, key = name[len(prefix) + 1 :].split(".", 1)
            idx = int(idx)
            fits = 0 <= idx < len(params) and (value.numel() == 1 if key == "step" else value.shape == params[idx].shape)
            if not fits:
                raise GantuneError(f"the checkpoint does not fit this optimiser ('{name}' is of shape {list(value.shape)}"
                                   + (f", its parameter's {list(params[idx].shape)})" if 0 <= idx < len(params) else
                                      ", and it has no such parameter)"))
            if value.is_floating_point() and not torch.isfinite(value).all():
                raise GantuneError(f"the checkpoint's '{name}' holds NaN or infinite values (it is damaged)")
            state.setdefault(idx, {})[key] = value
    state_dict["state"] = state
    optimizer.load_state_dict(state_dict)


def module_tensors(prefix: str, module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v.detach().cpu().clone() for k, v in module.state_dict().items()}


def load_module_tensors(prefix: str, module: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    n = len(prefix) + 1
    module.load_state_dict({k[n:]: v for k, v in tensors.items() if k.startswith(prefix + ".")})


def param_tensors(prefix: str, named_params: list[tuple[str, torch.nn.Parameter]]) -> dict[str, torch.Tensor]:
    """Named parameters (e.g. only the trainable ones) as flat named tensors."""
    return {f"{prefix}.{n}": p.detach().cpu().clone() for n, p in named_params}


def load_param_tensors(prefix: str, named_params: list[tuple[str, torch.nn.Parameter]],
                       tensors: dict[str, torch.Tensor], what: str) -> None:
    """Copy what ``param_tensors`` saved back in; refuse a checkpoint of another shape or method."""
    missing = [n for n, p in named_params if f"{prefix}.{n}" not in tensors or tensors[f"{prefix}.{n}"].shape != p.shape]
    if missing:
        raise GantuneError(f"the checkpoint does not fit this {what} ({missing[0]} is missing or of another shape)")
    with torch.no_grad():
        for n, p in named_params:
            p.copy_(tensors[f"{prefix}.{n}"].to(p.device, p.dtype))
