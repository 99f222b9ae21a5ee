"""The comparison's rows: each row's method, preset and settings, and what follows from them: the adapter it tunes,
the objective it optimises (its cell in the objective × adapter table) and its twin (an adversarial row's MLE row
of the same adapter)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import TrainConfig, preset_config
from ..errors import GantuneError
from ..methods import METHODS, adapter_kind
from ..methods.gan.settings import GENERATOR_METHODS


def _on(method: str) -> dict[str, Any]:
    """The GAN on the adapter ``method`` trains: its warm-up at that method's rate, the adversarial phase at half of it
    (as ``improved`` has M_tunable's)."""
    lr = METHODS[method].defaults["lr"]
    kind = next(k for k, m in GENERATOR_METHODS.items() if m == method)
    return {"adapter": kind, "lr": lr, "adv_lr": lr / 2}


IMPLICIT = {"discriminator": "implicit"}
# row name -> (method, TrainConfig preset, settings on top of the preset)
ROWS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "gan": ("gan", "improved", {}),
    # ablations of the improved GAN: without the MLE term in the adversarial phase; the plain SeqGAN step (v1)
    "gan-no-mle": ("gan", "improved", {"mle_weight": 0.0}),
    "gan-seqgan": ("gan", "improved", {"warmup_epochs": 0, "rollout": "batch", "discriminator": "embedding",
                                       "d_loss": "bce", "d_dropout": 0.0, "d_weight_decay": 0.0, "kl_coef": 0.0,
                                       "clip": 0.0, "normalize_advantage": False, "mle_weight": 0.0, "adv_lr": 1e-3,
                                       "val_pairs": 0}),
    # levers on top of the improved GAN: 4 samples a question with a leave-one-out baseline (RLOO);
    # two adversarial epochs of the three instead of one (warm-up 1)
    "gan-rloo": ("gan", "improved", {"samples_per_question": 4, "baseline": "loo"}),
    "gan-adv2": ("gan", "improved", {"warmup_epochs": 1}),
    # each part of the rollout used for 4 generator updates (PPO's epochs); sampled cold (T 0.7, ColdGANs), with
    # and without the 4 updates
    "gan-ppo4": ("gan", "improved", {"ppo_epochs": 4}),
    "gan-cold": ("gan", "improved", {"ppo_epochs": 4, "rollout_temperature": 0.7}),
    "gan-t07": ("gan", "improved", {"rollout_temperature": 0.7}),
    # D scores every prefix; per-token advantages with D as the critic (ScratchGAN's dense rewards)
    "gan-dense": ("gan", "improved", {"reward": "dense"}),
    "gan-thesis": ("gan", "thesis", {}),
    # the objective on other adapters (--adapter): each row's twin is the MLE method of its adapter (lora …)
    "gan-lora": ("gan", "improved", _on("lora")),
    "gan-prompt": ("gan", "improved", _on("prompt-tuning")),
    "gan-prefix": ("gan", "improved", _on("prefix-tuning")),
    # the implicit discriminator D = β·(log π − log π_ref) (DDO's loss; SPIN's), on each adapter
    "gan-implicit": ("gan", "improved", IMPLICIT),
    "gan-spin": ("gan", "improved", {**IMPLICIT, "implicit_loss": "spin"}),
    "gan-lora-implicit": ("gan", "improved", {**_on("lora"), **IMPLICIT}),
    "gan-prompt-implicit": ("gan", "improved", {**_on("prompt-tuning"), **IMPLICIT}),
    "gan-prefix-implicit": ("gan", "improved", {**_on("prefix-tuning"), **IMPLICIT}),
    "adapter-mle": ("adapter-mle", "improved", {}),
    "lora": ("lora", "improved", {}),
    "prompt-tuning": ("prompt-tuning", "improved", {}),
    "prefix-tuning": ("prefix-tuning", "improved", {}),
    "full": ("full", "improved", {}),
}
# what a trained row shares with the others of its comparison (the seed is each split's)
SHARED_SETTINGS = ("model", "gguf_file", "trust_remote_code", "data", "subset", "n", "train_fraction", "seed",
                   "device", "precision", "epochs", "batch_size", "max_new_tokens", "max_prompt_tokens")


def shared_settings(config: TrainConfig) -> dict[str, Any]:
    """The settings of ``config`` that every row compared with it shares."""
    return {k: getattr(config, k) for k in SHARED_SETTINGS}


def row_config(row: str, shared: dict[str, Any], seed: int, out: str | Path, **more: Any) -> TrainConfig:
    """The TrainConfig of method row ``row`` with the shared settings (then ``more``), at ``seed``, writing to ``out``."""
    if row not in ROWS:
        raise GantuneError(f"unknown method(s) {row}; choose from {', '.join(ROWS)}")
    method, preset, extra = ROWS[row]
    return preset_config(method, preset, **{**extra, **shared, **more, "seed": seed, "out": str(out)})


def row_adapter(row: str) -> str:
    """The kind of adapter a row tunes (``m-tunable``, ``lora`` …; ``full`` for full fine-tuning)."""
    method, _, extra = ROWS[row]
    return adapter_kind(method, extra.get("adapter", "m-tunable"))




def objective(method: str, discriminator: str) -> str | None:
    """What a run of ``method`` optimises: ``mle``, the ``explicit`` GAN or the ``implicit`` one (None: full)."""
    if method == "gan":
        return "implicit" if discriminator == "implicit" else "explicit"
    return "mle" if method in GENERATOR_METHODS.values() else None


def row_cell(row: str) -> tuple[str, str] | None:
    """(objective, adapter) of a comparison row: its cell in the objective × adapter table."""
    method, preset, extra = ROWS[row]
    kind = objective(method, extra.get("discriminator", preset_config(method, preset).discriminator))
    return (kind, row_adapter(row)) if kind else None


def twin(row: str) -> str | None:
    """An adversarial row's twin: the MLE row of the same adapter (``gan-lora`` → ``lora``); None for the others."""
    return GENERATOR_METHODS[row_adapter(row)] if ROWS[row][0] == "gan" else None


def baseline_config(reference: TrainConfig, row: str, out: str | Path) -> TrainConfig:
    """The ``row`` method on the same model, data, split, schedule and token limits as ``reference``."""
    return row_config(row, shared_settings(reference), reference.seed, out)
