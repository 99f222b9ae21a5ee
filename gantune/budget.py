"""Whether a run's settings fit its base model: context and memory, checked before anything is allocated.

A lower bound of what training holds in memory, per tuned part, so only what surely does not fit is
refused, naming the flags to lower.
"""

from __future__ import annotations

from .config import TrainConfig, virtual_tokens
from .errors import GantuneError
from .memory import available_memory_bytes
from .methods import adapter_kind
from .methods.lora_targets import matches, resolve_lora_targets
from .models import GB, BaseModel, check_context


def check_settings_fit(config: TrainConfig, base: BaseModel, n_train: int) -> None:
    """Refuse settings this model cannot train with, before anything is allocated or written for them.

    The prompt, the answer and any virtual tokens must fit the model's context; the tuned parts (with
    their gradients and Adam states) and a step's activations must fit in free memory. The estimate
    is a lower bound: only what surely does not fit is refused, naming the settings to lower.
    """
    virtual = virtual_tokens(config)  # prompt or prefix tuning's, the GAN's adapter's too
    check_context(base.model, config.max_prompt_tokens, config.max_new_tokens, virtual)
    need = training_memory(config, base, n_train)
    have = available_memory_bytes(base.device)
    total = sum(size for size, _, _ in need)
    if total > have:
        size, what, flags = max(need)
        raise GantuneError(f"these settings need at least {total / GB:,.1f} GB of memory to train, {size / GB:,.1f} GB "
                           f"of it for {what}, but only {have / GB:,.1f} GB is free; lower {flags}")


def training_memory(config: TrainConfig, base: BaseModel, n_train: int) -> list[tuple[int, str, str]]:
    """A lower bound of what training ``config`` on ``base`` holds in memory: (bytes, what, the flags that size it).

    The tuned parts with their gradients and Adam states (full fine-tuning checks its own), the
    answers' fp32 log-probs and each layer's states for a batch, and a GAN epoch's rollout cache.
    """
    emb = base.model.get_input_embeddings()
    d, vocab = emb.embedding_dim, emb.num_embeddings
    text = base.model.config.get_text_config()
    hidden, layers = getattr(text, "hidden_size", d), getattr(text, "num_hidden_layers", 1)
    heads = getattr(text, "num_attention_heads", 1)
    kv_width = (getattr(text, "num_key_value_heads", None) or heads) * (getattr(text, "head_dim", None) or hidden // heads)
    scalar = 2 if base.precision == "bf16" else 4  # bf16 activations under autocast
    k = config.samples_per_question if config.method == "gan" else 1
    virtual = virtual_tokens(config)  # prompt or prefix tuning's, the GAN's adapter's too
    tokens = config.max_prompt_tokens + config.max_new_tokens + virtual
    rows = min(config.batch_size, n_train) * k

    def params(n: int, whose: str, flags: str) -> tuple[int, str, str]:  # fp32 weights, gradients, Adam's two moments
        count = f"{n / 1e6:,.1f}M" if n >= 1e6 else f"{n:,}"
        return n * 4 * 4, f"{whose} {count} parameters (with their gradients and Adam states)", flags

    batch = "--batch-size" + (", --samples-per-question" if k > 1 else "")
    need = [(rows * (config.max_new_tokens * vocab * 4 + tokens * layers * hidden * scalar),
             f"a step's activations ({rows:,} answer{'s' * (rows != 1)} × {tokens:,} tokens)", f"{batch}, --max-prompt-tokens or --max-new-tokens")]
    if config.method in ("gan", "adapter-mle"):
        h1, h2 = config.adapter_hidden or (max(1, d // 2), max(1, d // 4))
        z = config.noise_dim
        need.append(params((d + z) * h1 + 2 * h1 * h2 + h1 * d + 2 * h1 + h2 + d, "M_tunable's",
                           "--noise-dim or --adapter-hidden"))
        need.append((rows * tokens * (2 * d + z + 2 * h1 + h2) * 4, "M_tunable's activations",
                     f"{batch}, --noise-dim or --adapter-hidden"))
    if config.method == "gan":
        width = {"hidden": 2 * hidden, "embedding": 2 * d + 1}.get(config.discriminator,
                                                                     config.max_prompt_tokens + config.max_new_tokens)
        widths = [width, *config.d_hidden, 1]
        need.append(params(sum(a * b + b for a, b in zip(widths, widths[1:])) + 2 * width, "the discriminator's",
                           "--d-hidden"))
        if config.rollout == "epoch":
            answers = max(1, n_train - config.val_pairs) * k  # the pairs held out for validation are not sampled
            need.append((answers * tokens * layers * 2 * kv_width * scalar,
                         f"sampling an epoch's {answers:,} answers at once (their key/value cache)",
                         "--samples-per-question, --max-new-tokens, or use --rollout batch"))
    if config.method == "lora":
        targets = resolve_lora_targets(base.model, config.lora_targets)
        adapted = [m for name, m in base.model.named_modules()
                   if any(matches(name, t) for t in targets) and getattr(m, "weight", None) is not None]
        need.append(params(config.lora_r * sum(sum(m.weight.shape) for m in adapted), "LoRA's", "--lora-r"))
    kind = adapter_kind(config.method, config.adapter)
    if kind == "prompt-tuning":
        need.append(params(config.virtual_tokens * d, "the virtual tokens'", "--virtual-tokens"))
    if kind == "prefix-tuning":
        need.append(params(config.virtual_tokens * layers * 2 * kv_width, "the prefix's", "--virtual-tokens"))
    return need
