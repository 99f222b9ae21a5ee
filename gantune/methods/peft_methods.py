"""Baselines from ``peft``: LoRA, prompt tuning and prefix tuning, each trained by plain MLE — and the GAN's
generator when ``--adapter`` names one of them (``policy``, ``sample_noise``, ``optimizer``: ``gan.generator.Generator``).

Every step is one teacher-forced pass over [question ; reference answer] (``answer_logprobs``) and
the mean negative log-likelihood of the answer tokens, like ``adapter-mle``, so their curves line up.

peft changes the model it wraps in place: LoRA swaps adapted layers for its own, every kind sets
``peft_config`` on the LM, and ``PeftModel.generate`` replaces the LM's ``prepare_inputs_for_generation``
and its inner model's ``generation_config``. So peft never sees the shared base model: it wraps a
copy of the module tree that shares every weight (``weight_sharing_copy``), and ``close`` just drops
it. The only shared thing peft writes is ``requires_grad = False`` on the LM's weights, which the base
model has already. What peft does with positions:

- LoRA: a plain forward; ``position_ids`` and ``logits_to_keep`` pass through. With no target
  names given it adapts peft's default modules for the model type (``q_proj, v_proj`` on Llama
  and Qwen2, ``c_attn`` on GPT-2 …); a type peft has no default for gets every linear layer but
  the output head (peft's ``all-linear``). GPT-2's layers are transformers' ``Conv1D`` (weights
  stored in × out), so the config says ``fan_in_fan_out`` when every target is one.
- prefix tuning: peft adds ``num_virtual_tokens`` to the ``position_ids`` it is given, in training
  and in generation alike, and hands the learned keys and values to the LM as its KV cache (no
  rotary embedding is applied to them), so a row's log-probs do not depend on how much left
  padding its batch has.
- prompt tuning: peft drops ``position_ids`` (with a warning) and the LM numbers the sequence
  [virtual tokens ; left padding ; prompt ; answer] 0, 1, 2 … padding included, so the distance
  between the virtual tokens and the text would depend on the batch's padding. A forward pre-hook
  on the copy numbers positions from the attention mask instead (virtual tokens 0 … V-1, then the
  real tokens, padding skipped), in scoring and in generation.
"""

from __future__ import annotations

import math
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, Iterator

import torch
from accelerate import Accelerator
from peft import (
    LoraConfig,
    PeftConfig,
    PeftModel,
    PeftType,
    PrefixTuningConfig,
    PromptTuningConfig,
    get_peft_model,
)
from transformers import PreTrainedModel
from transformers.pytorch_utils import Conv1D

from ..config import TrainConfig
from ..data import Batch
from ..errors import GantuneError, first_line
from ..models import BaseModel
from ..scoring import answer_logprobs, mle_loss
from .base import (
    TuningMethod,
    fused,
    l2_norm,
    load_optimizer_tensors,
    load_param_tensors,
    optimizer_tensors,
    param_tensors,
    weight_sharing_copy,
)
from .lora_targets import matches, resolve_lora_targets


def mle_step(method: TuningMethod, model: torch.nn.Module, params: list[torch.nn.Parameter],
             optimizer: torch.optim.Optimizer, batch: Batch) -> dict[str, float]:
    """One MLE step on the reference answers: one teacher-forced pass, backward (clipped), optimiser step."""
    with method.accelerator.autocast():
        logp = answer_logprobs(model, batch.prompt_ids, batch.prompt_mask, batch.answer_ids, batch.answer_mask)
        loss = mle_loss(logp, batch.answer_mask)
    optimizer.zero_grad(set_to_none=True)
    grad_norm = method.backward(loss, params)
    optimizer.step()
    return {"g_loss": loss.item(), "mle_loss": loss.item(), "grad_norm": grad_norm}


class PeftMethod(TuningMethod):
    """A peft adapter around a weight-sharing copy of the base model, trained by MLE; subclasses say which one."""

    peft_type: ClassVar[PeftType]

    def __init__(self, base: BaseModel, config: TrainConfig, accelerator: Accelerator | None = None,
                 folder: str | Path | None = None):
        super().__init__(base, config, accelerator)
        self.lm = weight_sharing_copy(base.model)  # what peft changes; the frozen weights are shared
        if folder is None:
            self.peft_model: PeftModel = get_peft_model(self.lm, self.peft_config(base, config))
            self._init_weights()
        else:
            # peft refuses to load a prompt-learning adapter as trainable; it loads in inference mode,
            # where get_prompt() uses the saved embedding table directly: the same values as our
            # (projection-free) encoders give, and trainable once its requires_grad is back on
            saved = PeftConfig.from_pretrained(str(folder))
            self.peft_model = PeftModel.from_pretrained(self.lm, str(folder), is_trainable=not saved.is_prompt_learning)
            if saved.is_prompt_learning:
                self.peft_model.prompt_encoder.requires_grad_(True)
        self.peft_model.eval()  # the LM stays in eval mode, as for every method; the adapters have no dropout
        self.named_params = [(n, p) for n, p in self.peft_model.named_parameters() if p.requires_grad]
        self.params = [p for _, p in self.named_params]
        self.opt = torch.optim.AdamW(self.params, lr=config.lr, **fused(self.params))
        self._closed = False

    # --- what a subclass provides -----------------------------------------------------------------
    def peft_config(self, base: BaseModel, config: TrainConfig) -> PeftConfig:
        raise NotImplementedError

    def _init_weights(self) -> None:
        """Change peft's initialisation after the adapter is created (nothing by default)."""

    @contextmanager
    def _running(self) -> Iterator[None]:
        """Wraps every call of the peft model this method makes or hands out."""
        yield

    # --- the interface ------------------------------------------------------------------------------
    @contextmanager
    def _active(self) -> Iterator[None]:
        if self._closed:
            raise RuntimeError(f"this {self.name} method was closed; create a new one")
        with self._running():
            yield

    def train_step(self, batch: Batch) -> dict[str, float]:
        with self._active():
            return mle_step(self, self.peft_model, self.params, self.opt, batch)

    # --- as the GAN's generator (``gan.generator.Generator``) ------------------------------------------
    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.opt

    def sample_noise(self, n: int) -> torch.Tensor:
        """A peft adapter takes no noise: n × 0."""
        return torch.zeros(n, 0, device=self.base.device)

    @contextmanager
    def policy(self, noise: torch.Tensor | None) -> Iterator[PreTrainedModel]:
        """The peft model (adapter on), gradients on; ``noise`` is ignored."""
        with self._active():
            yield self.peft_model

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return list(self.params)

    def adapter_norm(self) -> float:
        return l2_norm(self.params)

    @contextmanager
    def enabled(self, batch_size: int | None = None) -> Iterator[PreTrainedModel]:
        """The peft model (adapter on), eval mode, no gradients; the batch size does not matter."""
        with torch.no_grad(), self._active():
            self.peft_model.eval()
            yield self.peft_model

    def save_pretrained(self, folder: str | Path) -> None:
        # save_embedding_layers=False: never look the base model up on the hub to decide
        self.peft_model.save_pretrained(str(folder), safe_serialization=True, save_embedding_layers=False)

    @classmethod
    def from_pretrained(cls, base: BaseModel, folder: str | Path, config: TrainConfig) -> "PeftMethod":
        try:
            saved = PeftConfig.from_pretrained(str(folder))
        except (OSError, ValueError) as exc:
            raise GantuneError(f"{folder} holds no peft adapter: {first_line(exc)}") from exc
        if saved.peft_type != cls.peft_type:
            raise GantuneError(f"{folder} holds a {saved.peft_type.value} adapter, not one for --method {cls.name}")
        return cls(base, config, folder=folder)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {**param_tensors("peft", self.named_params), **optimizer_tensors("opt", self.opt)}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        load_param_tensors("peft", self.named_params, tensors, f"{self.name} adapter")
        load_optimizer_tensors("opt", self.opt, tensors)

    def close(self) -> None:
        """Drop the adapter, the copy peft changed and the optimiser; the shared base model was never touched."""
        if not self._closed:
            self._closed = True
            del self.lm, self.peft_model, self.named_params, self.params, self.opt


class LoraMethod(PeftMethod):
    """LoRA on the named modules, or on the architecture's default ones when none are named."""

    name = "lora"
    peft_type = PeftType.LORA

    def peft_config(self, base: BaseModel, config: TrainConfig) -> PeftConfig:
        targets = resolve_lora_targets(base.model, config.lora_targets)
        if not targets:
            raise GantuneError("LoRA found no linear layers (nn.Linear or Conv1D) to adapt in this model")
        chosen = [m for n, m in base.model.named_modules() if any(matches(n, t) for t in targets)]
        return LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, target_modules=targets, lora_dropout=0.0,
                          fan_in_fan_out=all(isinstance(m, Conv1D) for m in chosen), task_type="CAUSAL_LM")


# What prompt and prefix tuning start from: this text's tokens, repeated to fill the virtual tokens.
# Prompt tuning's virtual tokens start as their embeddings (peft's TEXT init, done here because
# peft's reloads the tokenizer by name, which a GGUF or in-memory tokenizer does not allow); prefix
# tuning's keys and values start as the LM's own keys and values of them (Li & Liang's init from real
# words' activations). Either way the tuned model starts exactly as the LM with this text in front
# of every prompt. peft's defaults draw N(0, 1) tables instead: prefix tuning then starts far
# off (SmolLM2-135M: MLE loss ~7.7 instead of ~2.5).
INIT_TEXT = "Answer the question about the author with the facts you know."


def init_token_ids(tokenizer, n: int) -> list[int]:
    ids = tokenizer(INIT_TEXT, add_special_tokens=False).input_ids or [0]
    return (ids * math.ceil(n / len(ids)))[:n]


def _positions_from_mask(_module: torch.nn.Module, args: tuple, kwargs: dict[str, Any]):
    """Forward pre-hook: position ids from the 2-D attention mask when none are given (skips padding)."""
    mask = kwargs.get("attention_mask")
    if kwargs.get("position_ids") is not None or not isinstance(mask, torch.Tensor) or mask.dim() != 2:
        return None
    x = kwargs.get("inputs_embeds")
    if x is None:
        x = kwargs.get("input_ids")
    if x is None:
        return None
    positions = (mask.long().cumsum(dim=1) - 1).clamp(min=0)
    kwargs["position_ids"] = positions[:, -x.shape[1]:]
    return args, kwargs


class PromptTuningMethod(PeftMethod):
    name = "prompt-tuning"
    peft_type = PeftType.PROMPT_TUNING

    def peft_config(self, base: BaseModel, config: TrainConfig) -> PeftConfig:
        return PromptTuningConfig(num_virtual_tokens=config.virtual_tokens, task_type="CAUSAL_LM")

    def _init_weights(self) -> None:
        embedding = self.peft_model.prompt_encoder[self.peft_model.active_adapter].embedding
        with torch.no_grad():
            vocab = self.base.model.get_input_embeddings().weight
            ids = torch.tensor(init_token_ids(self.base.tokenizer, self.config.virtual_tokens), device=vocab.device)
            embedding.weight.copy_(vocab[ids].to(embedding.weight.dtype))

    def __init__(self, base: BaseModel, config: TrainConfig, accelerator: Accelerator | None = None,
                 folder: str | Path | None = None):
        super().__init__(base, config, accelerator, folder)
        self.lm.register_forward_pre_hook(_positions_from_mask, with_kwargs=True)  # on the copy: for good

    @contextmanager
    def _running(self) -> Iterator[None]:
        with warnings.catch_warnings():  # peft's warning that it drops position ids: the hook sets them
            warnings.filterwarnings("ignore", message="Position ids are not supported")
            yield


class PrefixTuningMethod(PeftMethod):
    name = "prefix-tuning"
    peft_type = PeftType.PREFIX_TUNING

    def peft_config(self, base: BaseModel, config: TrainConfig) -> PeftConfig:
        return PrefixTuningConfig(num_virtual_tokens=config.virtual_tokens, task_type="CAUSAL_LM")

    def _init_weights(self) -> None:
        """Row v of peft's table is [K_0 ; V_0 ; K_1 ; V_1 …] of virtual token v, each (kv heads × head dim)."""
        embedding = self.peft_model.prompt_encoder[self.peft_model.active_adapter].embedding
        n = self.config.virtual_tokens
        with torch.no_grad():
            ids = torch.tensor([init_token_ids(self.base.tokenizer, n)], device=embedding.weight.device)
            cache = self.base.model(input_ids=ids, use_cache=True).past_key_values  # keys carry rotary positions 0 … n-1
            layers = getattr(cache, "layers", None) or []
            kv = [t for layer in layers for t in (getattr(layer, "keys", None), getattr(layer, "values", None))]
            if not kv or any(t is None or t.shape != kv[0].shape for t in kv):
                warnings.warn("prefix-tuning: this model's KV cache has an unexpected layout; "
                              "keeping peft's random N(0, 1) initialisation", stacklevel=2)
                return
            table = torch.stack(kv).squeeze(1).permute(2, 0, 1, 3).reshape(n, -1)  # 2·layers × (1, heads, n, dim)
            if table.shape != embedding.weight.shape:
                warnings.warn(f"prefix-tuning: the model's keys and values {tuple(table.shape)} do not fit peft's "
                              f"table {tuple(embedding.weight.shape)}; keeping peft's random N(0, 1) initialisation",
                              stacklevel=2)
                return
            embedding.weight.copy_(table.to(embedding.weight.dtype))


__all__ = ["PeftMethod", "LoraMethod", "PromptTuningMethod", "PrefixTuningMethod", "mle_step"]
