"""One flat set of named settings for a run, and the named presets over it.

Every field is a CLI flag (``--max-new-tokens`` for ``max_new_tokens``); its ``help`` metadata is
the flag's help text (and, later, the workbench's). A preset is a dict of field values applied on
top of the defaults; flags the user types win over the preset.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shlex
from dataclasses import dataclass, field
from typing import Any

from .errors import GantuneError


def _f(default: Any, help: str, choices: tuple | None = None) -> Any:
    meta = {"help": help}
    if choices:
        meta["choices"] = choices
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    # what and where
    method: str = _f("gan", "tuning method", ("gan", "adapter-mle", "lora", "prompt-tuning", "prefix-tuning", "full"))
    preset: str = _f("improved", "named preset the other values start from", ("improved", "thesis"))
    model: str = _f("default", "base model: 'default' (offline SmolLM2-135M-Instruct), hub id, folder or .gguf file")
    gguf_file: str | None = _f(None, "GGUF file name inside --model's folder")
    trust_remote_code: bool = _f(False, "allow the model's own Python code (off unless you trust it)")
    data: str | None = _f(None, "data: a folder of .jsonl (like shared/tofu), one .jsonl/.csv file, or a hub dataset id")
    subset: str = _f("forget10", "TOFU config / file name inside --data (forget05/forget01 nest in forget10)")
    n: int | None = _f(40, "how many pairs to use (train + test) after a seeded shuffle; 'all' for every pair")
    train_fraction: float = _f(0.5, "share of the n pairs used for training, the rest held out")
    seed: int = _f(0, "seed for the split, noise, sampling and initialisation")
    out: str | None = _f(None, "run folder (default: runs/<method>-<preset>-<time>)")
    device: str = _f("auto", "auto picks CUDA when present, else CPU", ("auto", "cpu", "cuda"))
    # schedule
    epochs: int = _f(3, "passes over the training pairs")
    batch_size: int = _f(8, "pairs per step")
    lr: float = _f(1e-3, "learning rate of the tuned part (for the GAN: of its MLE warm-up)")
    d_lr: float = _f(1e-3, "learning rate of the discriminator")
    max_new_tokens: int = _f(48, "most tokens sampled per answer (also caps reference answers)")
    max_prompt_tokens: int = _f(128, "most prompt tokens (longer prompts are cut from the left)")
    checkpoint_every: int = _f(0, "steps between checkpoints (0: at each epoch's end)")
    sample_every: int = _f(5, "steps between answers recorded in samples.jsonl (0: never)")
    # M_tunable
    noise_dim: int = _f(100, "size of the N(0,1) noise vector fed to M_tunable")
    adapter_hidden: list[int] = _f([], "M_tunable's two hidden widths (empty: embedding width /2 and /4)")
    adapter_init: str = _f("zero", "zero: last layer starts at 0 so G starts as the base LM; default: PyTorch's init", ("zero", "default"))
    eval_noise: str = _f("zeros", "noise fed to M_tunable when generating after training", ("zeros", "sample"))
    # validation: pick the best epoch (every method)
    val_pairs: int = _f(4, "training pairs held out to score each epoch's adapter (step 0 included) and keep the best; 0: keep the last")
    val_tolerance: float = _f(0.02, "keep the last adapter unless its validation score is worse than the best one's by more than this (4 pairs are noisy)")
    val_metric: str = _f("rougeL", "how a held-out adapter is scored: rougeL of its greedy answers (higher is better) or nll of the reference answers (lower is better)", ("rougeL", "nll"))
    # the adversarial game (GAN): phases, rollout, discriminator, reward, generator update
    warmup_epochs: int = _f(2, "MLE epochs on the reference answers before the adversarial phase (at most epochs - 1)")
    adv_lr: float = _f(5e-4, "learning rate of M_tunable in the adversarial phase (the MLE warm-up uses --lr)")
    rollout: str = _f("epoch", "epoch: sample answers for all of an epoch's questions in one call; batch: sample per step (SeqGAN)", ("epoch", "batch"))
    samples_per_question: int = _f(1, "answers sampled per question (with --baseline loo: a leave-one-out baseline)")
    discriminator: str = _f("hidden", "hidden: the frozen LM's last hidden states of the answer, given the question; embedding: frozen input embeddings, mean-pooled; thesis: token ids cast to float", ("hidden", "embedding", "thesis"))
    d_loss: str = _f("relativistic", "relativistic: -log sigmoid(D(q,ref) - D(q,y)), reward D(q,y) - D(q,ref); bce: real -> 1, generated -> 0, reward sigmoid(D(q,y))", ("relativistic", "bce"))
    d_hidden: list[int] = _f([256, 64, 16], "the discriminator's three shrinking hidden widths")
    d_dropout: float = _f(0.1, "dropout inside the discriminator (keeps it from overpowering G)")
    d_weight_decay: float = _f(0.01, "weight decay of the discriminator's optimiser (AdamW)")
    d_steps: int = _f(1, "discriminator steps per generator step")
    label_smoothing: float = _f(0.0, "real label is 1 - this for D's BCE")
    kl_coef: float = _f(0.05, "penalty on the KL to the untuned model (adapter detached) on the sampled tokens, subtracted from the reward")
    baseline: str = _f("mean", "reward baseline: mean of the batch, leave-one-out over a question's samples, or none", ("mean", "loo", "none"))
    normalize_advantage: bool = _f(True, "divide advantages by the batch std")
    clip: float = _f(0.2, "PPO clip of the ratio pi/pi_rollout for answers sampled earlier in the epoch (0: plain REINFORCE)")
    pg_estimator: str = _f("trajectory", "trajectory: exact log-probs of the sampled tokens in one pass; thesis: the thesis' per-position re-sampled estimator", ("trajectory", "thesis"))
    mle_weight: float = _f(1.0, "weight of an MLE term on the reference answers in the adversarial phase (imitation replay)")
    resample_for_g: bool = _f(False, "sample a second time for the generator step (the thesis did; needs --rollout batch)")
    # baselines (peft)
    lora_r: int = _f(8, "LoRA rank")
    lora_alpha: int = _f(16, "LoRA scaling alpha")
    lora_targets: list[str] = _f([], "module names LoRA adapts (none: peft's default for the model's architecture: q_proj v_proj on Llama/Qwen2, c_attn on GPT-2 …)")
    virtual_tokens: int = _f(20, "virtual tokens of prompt-tuning and prefix-tuning")

    def __post_init__(self) -> None:
        self.adapter_hidden = list(self.adapter_hidden)
        self.d_hidden = list(self.d_hidden)
        self.lora_targets = list(self.lora_targets)

    def validate(self) -> "TrainConfig":
        """Refuse values that cannot make a run, with one line a user can act on."""
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                raise GantuneError(f"--{_flag(f.name)} must be one of {', '.join(choices)} (got {getattr(self, f.name)!r})")
        positive_ints = ("epochs", "batch_size", "max_new_tokens", "max_prompt_tokens", "noise_dim", "d_steps",
                         "samples_per_question", "lora_r", "lora_alpha", "virtual_tokens")
        for name in positive_ints:
            if getattr(self, name) < 1:
                raise GantuneError(f"--{_flag(name)} must be at least 1 (got {getattr(self, name)})")
        if self.n is not None and self.n < 2:
            raise GantuneError(f"--n must be at least 2: one pair to train on and one to test (got {self.n})")
        if not 0.0 < self.train_fraction < 1.0:
            raise GantuneError(f"--train-fraction must be between 0 and 1, exclusive (got {self.train_fraction})")
        for name in ("lr", "d_lr", "adv_lr"):
            v = getattr(self, name)
            if not math.isfinite(v) or not 0.0 < v <= 1.0:
                raise GantuneError(f"--{_flag(name)} must be a number in (0, 1] (got {v})")
        for name in ("mle_weight", "label_smoothing", "kl_coef", "clip", "d_weight_decay", "val_tolerance"):
            v = getattr(self, name)
            if not math.isfinite(v) or v < 0:
                raise GantuneError(f"--{_flag(name)} must be a finite number >= 0 (got {v})")
        if self.label_smoothing >= 0.5:
            raise GantuneError(f"--label-smoothing must be below 0.5 (got {self.label_smoothing})")
        if not math.isfinite(self.d_dropout) or not 0.0 <= self.d_dropout < 1.0:
            raise GantuneError(f"--d-dropout must be in [0, 1) (got {self.d_dropout})")
        if self.baseline == "loo" and self.samples_per_question < 2:
            raise GantuneError("--baseline loo needs --samples-per-question 2 or more (one answer has no others to compare with)")
        if self.resample_for_g and self.rollout != "batch":
            raise GantuneError("--resample-for-g needs --rollout batch (a second sampling per step)")
        for name in ("checkpoint_every", "sample_every", "val_pairs", "warmup_epochs"):
            if getattr(self, name) < 0:
                raise GantuneError(f"--{_flag(name)} must be >= 0 (got {getattr(self, name)})")
        if self.adapter_hidden and (len(self.adapter_hidden) != 2 or min(self.adapter_hidden) < 1):
            raise GantuneError("--adapter-hidden takes two positive widths, e.g. --adapter-hidden 256 64")
        if len(self.d_hidden) != 3 or min(self.d_hidden) < 1:
            raise GantuneError("--d-hidden takes three positive widths, e.g. --d-hidden 256 64 16")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise GantuneError(f"unknown setting(s): {', '.join(unknown)}")
        return cls(**values)

    def command_preview(self) -> str:
        """The CLI line that repeats this run: method, preset, and every value the preset does not set."""
        preset = preset_config(self.method, self.preset)
        args = ["python", "-m", "gantune", "train", "--method", self.method, "--preset", self.preset]
        for f in dataclasses.fields(self):
            if f.name in ("method", "preset"):
                continue
            value = getattr(self, f.name)
            always = f.name in ("model", "data", "subset", "n", "seed", "out")
            if value == getattr(preset, f.name) and not always:
                continue
            args += _as_flag(f.name, value)
        return shlex.join(args)


def _flag(name: str) -> str:
    return name.replace("_", "-")


def _as_flag(name: str, value: Any) -> list[str]:
    if value is None:
        return ["--n", "all"] if name == "n" else []
    if isinstance(value, bool):
        return [f"--{_flag(name)}" if value else f"--no-{_flag(name)}"]
    if isinstance(value, list):
        return [f"--{_flag(name)}", *map(str, value)]
    return [f"--{_flag(name)}", str(value)]


# The thesis (GPT-2, batch 1, 30 epochs): prompts padded to 100 tokens, 50 new tokens, a
# discriminator over token ids cast to float (BCE), no baseline, no warm-up, no KL, no validation,
# a second sampling for the generator step, and its per-position re-sampled estimator available
# as --pg-estimator thesis. Its learning rates are not stated; 1e-4 (Adam) is our assumption.
PRESETS: dict[str, dict[str, Any]] = {
    "improved": {},
    "thesis": {
        "epochs": 30,
        "batch_size": 1,
        "lr": 1e-4,
        "d_lr": 1e-4,
        "max_new_tokens": 50,
        "max_prompt_tokens": 100,
        "adapter_init": "default",
        "discriminator": "thesis",
        "d_loss": "bce",
        "d_hidden": [128, 64, 32],
        "d_dropout": 0.0,
        "d_weight_decay": 0.0,
        "baseline": "none",
        "normalize_advantage": False,
        "mle_weight": 0.0,
        "resample_for_g": True,
        "rollout": "batch",
        "warmup_epochs": 0,
        "adv_lr": 1e-4,
        "kl_coef": 0.0,
        "clip": 0.0,
        "val_pairs": 0,
        "n": 100,
    },
}


# Learning rates that suit each method (a preset's schedule and token limits apply to all methods).
METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "lora": {"lr": 5e-4},
    "prompt-tuning": {"lr": 1e-2},
    "prefix-tuning": {"lr": 1e-2},
    "full": {"lr": 2e-5},
}


def preset_config(method: str = "gan", preset: str = "improved", **overrides: Any) -> TrainConfig:
    """Defaults, then the preset, then the method's own defaults, then the overrides."""
    if preset not in PRESETS:
        raise GantuneError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return TrainConfig(**{"method": method, "preset": preset, **PRESETS[preset], **METHOD_DEFAULTS.get(method, {}),
                          **overrides})


def load_config(path: str) -> TrainConfig:
    with open(path, encoding="utf-8") as fh:
        return TrainConfig.from_dict(json.load(fh)["config"])
