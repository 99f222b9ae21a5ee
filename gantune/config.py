"""A run's settings: the run's own section and each method's, together in ``TrainConfig``; the presets.

Each method keeps its settings section beside its code (``methods/gan/settings.py``,
``methods/peft_settings.py``) and ``methods.METHODS`` says which sections a method reads;
``TrainConfig`` is all of them as one flat dataclass, so a run's config.json, ``config.lr`` and
``config.kl_coef`` read the same whatever the method. Every field is a CLI flag (``--max-new-tokens``
for ``max_new_tokens``) with its ``help`` metadata as the flag's help text and the page's. A preset
is a dict of field values applied on top of the defaults; flags the user types win over the preset.
"""

from __future__ import annotations

import dataclasses
import shlex
import types
import typing
from dataclasses import dataclass
from typing import Any

from .errors import GantuneError
from .methods import METHODS, adapter_kind
from .methods.gan.settings import AdapterSettings, GanSettings
from .methods.peft_settings import PeftSettings
from .settings import COUNT_OR_ZERO, NONNEGATIVE, RATE, Bounds, check_bounds, setting
from .settings import flag as _flag

INT64_MAX = 2**63 - 1  # torch's long: a count or size beyond it overflows inside the libraries
FLOAT32_MAX = 3.4028234663852886e38  # tensors are fp32: a coefficient beyond the largest float32 overflows
FLOAT32_TINY = 1.1754943508222875e-38  # the smallest normal float32: a coefficient nearer 0 is 0 or loses its digits
SEED_MAX = 2**32 - 1  # numpy's and torch's seeds are 0 … 2**32 - 1


@dataclass
class RunSettings:
    """What every run has, whatever its method: model, data, schedule, validation."""

    # what and where
    method: str = setting("gan", "tuning method", tuple(METHODS))
    preset: str = setting("improved", "named preset the other values start from", ("improved", "thesis"))
    model: str = setting("default", "base model: 'default' (offline SmolLM2-135M-Instruct), hub id, folder or .gguf file")
    gguf_file: str | None = setting(None, "GGUF file name inside --model's folder")
    trust_remote_code: bool = setting(False, "allow the model's own Python code (off unless you trust it)")
    data: str | None = setting(None, "data: a folder of .jsonl (like shared/tofu), one .jsonl/.json/.csv file, or a hub "
                               "dataset id")
    subset: str = setting("forget10", "TOFU config / file name inside --data (forget05/forget01 nest in forget10)")
    n: int | None = setting(40, "how many pairs to use (train + test) after a seeded shuffle; 'all' for every pair",
                            bounds=Bounds(low=2, hosted=40, why="one pair to train on and one to test",
                                          key="too_few_pairs"))
    train_fraction: float = setting(0.5, "share of the n pairs used for training, the rest held out",
                                    bounds=Bounds(low=0.0, high=1.0, low_open=True, high_open=True))
    seed: int = setting(0, "seed for the split, noise, sampling and initialisation",
                        bounds=Bounds(low=0, high=SEED_MAX, why="the seeds numpy and torch take"))
    out: str | None = setting(None, "run folder (default: runs/<method>-<preset>-<time>)")
    device: str = setting("auto", "auto picks CUDA when present, else CPU", ("auto", "cpu", "cuda"))
    precision: str = setting("auto", "auto: bf16 where the chip computes it fast (a CUDA GPU, or a CPU with AMX or "
                             "AVX512-BF16), else fp32; bf16: the LM's passes in bf16 (on the CPU its frozen weights "
                             "too), with log-probs, losses, the tuned weights, D and the optimisers in fp32",
                             ("auto", "fp32", "bf16"))
    # schedule
    epochs: int = setting(3, "passes over the training pairs", bounds=Bounds(low=1, high=100_000, hosted=3))
    batch_size: int = setting(8, "pairs per step", bounds=Bounds(low=1, hosted=8))
    lr: float = setting(1e-3, "learning rate of the tuned part (for the GAN: of its MLE warm-up)", bounds=RATE)
    max_grad_norm: float = setting(1.0, "each update's gradients are clipped to this L2 norm (0: not clipped)",
                                   bounds=NONNEGATIVE)
    max_new_tokens: int = setting(48, "most tokens sampled per answer (also caps reference answers)",
                                  bounds=Bounds(low=1, hosted=48))
    max_prompt_tokens: int = setting(128, "most prompt tokens (longer prompts are cut from the left)",
                                     bounds=Bounds(low=1, hosted=128))
    checkpoint_every: int = setting(0, "steps between checkpoints (0: at each epoch's end)", bounds=COUNT_OR_ZERO)
    sample_every: int = setting(5, "steps between answers recorded in samples.jsonl (0: never)", bounds=COUNT_OR_ZERO)
    # validation: pick the best epoch
    val_pairs: int = setting(8, "training pairs held out to score each epoch's adapter (step 0 included) and keep the "
                             "best; 0: keep the last", bounds=Bounds(low=0, hosted=8))
    val_tolerance: float = setting(0.02, "keep the last adapter unless its validation score is worse than the best one's "
                                   "by more than this (4 pairs are noisy)", bounds=NONNEGATIVE)
    patience: int = setting(0, "stop once the validation score has not improved for this many epochs (MLE to its "
                            "plateau; --epochs is the cap); 0: run every epoch", bounds=COUNT_OR_ZERO)
    val_metric: str = setting("rougeL", "how a held-out adapter is scored: rougeL of its greedy answers (higher is "
                              "better) or nll of the reference answers (lower is better)", ("rougeL", "nll"))

    def check(self) -> None:
        if self.patience and not self.val_pairs:
            raise GantuneError("--patience needs validation pairs (--val-pairs) to tell when the score stops improving")


@dataclass
class StartSettings:
    """Where the tuned part starts: another run's adapter (a folder on disk: set from the command line and the bench,
    not offered on the page)."""

    init_from: str | None = setting(None, "a finished run whose kept adapter this run starts from (its MLE warm-up: "
                                    "the same model and the same kind and shape of adapter); the optimiser starts fresh")

    def check(self) -> None:
        if self.init_from is not None and not (isinstance(self.init_from, str) and self.init_from.strip()):
            raise GantuneError(f"--init-from must name a run folder (got {self.init_from!r})")


SECTIONS: tuple[type, ...] = (RunSettings, StartSettings, AdapterSettings, GanSettings, PeftSettings)


@dataclass
class TrainConfig(PeftSettings, GanSettings, AdapterSettings, StartSettings, RunSettings):
    """Every setting of a run: the sections of ``SECTIONS``, in that order, as one flat dataclass."""

    def __post_init__(self) -> None:
        self.adapter_hidden = list(self.adapter_hidden)
        self.d_hidden = list(self.d_hidden)
        self.lora_targets = list(self.lora_targets)

    def validate(self) -> "TrainConfig":
        """Refuse values that cannot make a run, with one line a user can act on.

        Sizes that depend on the model (the context, memory) are checked once it is loaded:
        ``gantune.budget.check_settings_fit``.
        """
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            choices = f.metadata.get("choices")
            if choices and value not in choices:
                raise GantuneError(f"--{_flag(f.name)} must be one of {', '.join(choices)} (got {value!r})",
                                   key="one_of", setting=f.name, choices=", ".join(choices), got=repr(value))
            for v in value if isinstance(value, list) else [value]:
                if isinstance(v, int) and not isinstance(v, bool) and v > INT64_MAX:
                    raise GantuneError(f"--{_flag(f.name)} must be at most {INT64_MAX} (got {v})",
                                       key="at_most", setting=f.name, most=INT64_MAX, got=v)
                if isinstance(v, float) and abs(v) > FLOAT32_MAX:
                    raise GantuneError(f"--{_flag(f.name)} must be at most {FLOAT32_MAX:.4g}, the largest float32 (got {v:g})",
                                       key="at_most", setting=f.name, most=f"{FLOAT32_MAX:.4g}", got=f"{v:g}")
                if isinstance(v, float) and 0 < abs(v) < FLOAT32_TINY:
                    raise GantuneError(f"--{_flag(f.name)} must be 0 or at least {FLOAT32_TINY:.4g} in size, the "
                                       f"smallest normal float32 (got {v!r})", key="at_least", setting=f.name,
                                       least=f"{FLOAT32_TINY:.4g}", got=repr(v))
        check_bounds(self)  # each field's range
        for section in SECTIONS:  # what one field's range cannot say
            if hasattr(section, "check"):
                section.check(self)
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        """Settings as saved (``to_dict``, a run's config.json): each value of its field's type, else a GantuneError
        naming the field; missing ones take their defaults (``precision``: fp32, what runs ran in before it was a
        setting). Ranges are ``validate``'s."""
        if not isinstance(values, dict):
            raise GantuneError(f"the settings must be a JSON object of named values (got {_shown(values)})")
        values = {"precision": "fp32", **values}  # runs saved before the setting existed ran in fp32
        hints = typing.get_type_hints(cls)
        unknown = sorted(set(values) - set(hints))
        if unknown:
            raise GantuneError(f"unknown setting(s): {', '.join(map(str, unknown))}")
        checked = {}
        for name, value in values.items():
            if not _is_a(hints[name], value):
                raise GantuneError(f"setting {name!r} must be {_in_words(hints[name])} (got {_shown(value)})")
            if hints[name] is float and isinstance(value, int):
                if abs(value) > FLOAT32_MAX:
                    raise GantuneError(f"setting {name!r} must be at most {FLOAT32_MAX:.4g} (got {_shown(value)})")
                value = float(value)
            checked[name] = value
        return cls(**checked)

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


def _is_a(hint: Any, value: Any) -> bool:
    """Whether ``value`` (as read from JSON) is of type ``hint`` (an int counts as a float; a bool is no number)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_is_a(h, value) for h in typing.get_args(hint))
    if typing.get_origin(hint) is list:
        return isinstance(value, list) and all(_is_a(typing.get_args(hint)[0], v) for v in value)
    if hint in (int, float) and isinstance(value, bool):
        return False
    return isinstance(value, (int, float) if hint is float else hint)


def _in_words(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_in_words(h) for h in typing.get_args(hint))
    if typing.get_origin(hint) is list:
        return "a list of " + {int: "whole numbers", str: "texts"}[typing.get_args(hint)[0]]
    return {bool: "true or false", int: "a whole number", float: "a number", str: "text", type(None): "null"}[hint]


def _shown(value: Any, most: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= most else text[:most - 1] + "…"


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
# no gradient clipping,
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
        "max_grad_norm": 0.0,
        "n": 100,
        "precision": "fp32",
    },
}




def preset_config(method: str = "gan", preset: str = "improved", **overrides: Any) -> TrainConfig:
    """Defaults, then the preset, then the method's own defaults, then the overrides."""
    if preset not in PRESETS:
        raise GantuneError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return TrainConfig(**{"method": method, "preset": preset, **PRESETS[preset],
                          **(METHODS[method].defaults if method in METHODS else {}),
                          **overrides})



def virtual_tokens(config: TrainConfig) -> int:
    """The tokens a run's adapter puts before every prompt: its prompt or prefix tuning's ``--virtual-tokens``,
    whichever flag chose that adapter (``--method``, or the GAN's ``--adapter``); 0 for the others."""
    kind = adapter_kind(config.method, config.adapter)
    return config.virtual_tokens if kind in ("prompt-tuning", "prefix-tuning") else 0


def step_cost(config: TrainConfig, n_train: int) -> list[tuple[int, str]]:
    """The heaviest training step's work, in token passes through the LM (a token's forward: 1, its backward: 2),
    by part: (passes, the setting that sizes it most). For the GAN, an adversarial step with its rollout (with
    ``--rollout epoch``, all of an epoch's answers are sampled in its first step), its frozen pass, D steps and
    generator updates. A rough count, for a hosted workbench's budget: a step ends only at its own stop points."""
    tokens = config.max_prompt_tokens + config.max_new_tokens + virtual_tokens(config)  # the adapter's, any method's
    batch = max(1, min(config.batch_size, n_train))
    if config.method != "gan":
        return [(3 * batch * tokens, "batch_size")]
    k = config.samples_per_question
    rows = batch * k
    sampled = max(1, n_train - min(config.val_pairs, n_train // 10)) * k if config.rollout == "epoch" else rows
    update = 3 * rows * tokens * (config.max_new_tokens if config.pg_estimator == "thesis" else 1)
    mle = 3 * batch * tokens if config.mle_weight > 0 else 0
    twice = 2 if config.resample_for_g else 1
    return [(sampled * tokens * twice, "samples_per_question"), ((rows + batch) * tokens * twice, "batch_size"),
            (config.d_steps * (rows + batch) * config.max_new_tokens, "d_steps"),
            (config.ppo_epochs * (update + mle), "ppo_epochs")]


# What a resume may change: what only extends the run or says where and how it runs (the rest defines it)
RESUME_MAY_CHANGE = ("epochs", "checkpoint_every", "sample_every", "device", "trust_remote_code", "out")


def resumed_config(saved: TrainConfig, asked: TrainConfig) -> tuple[TrainConfig, dict[str, list[Any]]]:
    """The settings a resume of a run saved as ``saved`` goes on with, and what it changes ({name: [was, now]}).

    Only ``RESUME_MAY_CHANGE`` may differ; anything else that defines the run is refused with the list of
    what differs. More epochs keep the warm-up the run had (the epochs it did keep their phase).
    """
    differ = [f.name for f in dataclasses.fields(TrainConfig)
              if f.name not in RESUME_MAY_CHANGE and getattr(saved, f.name) != getattr(asked, f.name)]
    if differ:
        shown = ", ".join(f"--{_flag(n)} ({_plain(getattr(saved, n))} → {_plain(getattr(asked, n))})" for n in differ)
        raise GantuneError(f"a resume continues the same run, so it cannot change {shown}; start a new run (another "
                           "--out) to change them (a resume may change --epochs and --checkpoint-every)")
    config = dataclasses.replace(asked)
    if config.epochs != saved.epochs and saved.method == "gan":
        config.warmup_epochs = max(0, min(saved.warmup_epochs, saved.epochs - 1))
    changed = {f.name: [getattr(saved, f.name), getattr(config, f.name)] for f in dataclasses.fields(TrainConfig)
               if f.name not in ("out", "trust_remote_code") and getattr(saved, f.name) != getattr(config, f.name)}
    return config, changed


def _plain(value: Any, most: int = 60) -> str:
    """A setting's value as its flag takes it (a list's items by spaces, 'all' for n's None), cut to ``most``."""
    text = " ".join(map(str, value)) if isinstance(value, list) else "none" if value is None else str(value)
    return text if len(text) <= most else "…" + text[-(most - 1):]
