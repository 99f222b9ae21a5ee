"""Shared fixtures: a tiny random Llama and a tiny word-level tokenizer, built offline in memory.

``make_arch_base`` builds the same kind of tiny model for other architectures (GPT-2, Qwen2, Phi,
Gemma) from their transformers configurations, for the per-architecture tests.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers / huggingface_hub read it at import

import json  # noqa: E402
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    GemmaConfig,
    GemmaForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PhiConfig,
    PhiForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from gantune.models import BaseModel, prepare_base_model

TOFU = Path(__file__).resolve().parents[2] / "shared" / "tofu"
WORDS = ("who is the author of a book born in city wrote novel genre award father mother was what "
         "did does and her his their name known for fiction writer").split()
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }} {{ m['content'] }}<|im_end|> {% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant {% endif %}"
)


def make_tokenizer(chat_template: bool = True) -> PreTrainedTokenizerFast:
    vocab = {tok: i for i, tok in enumerate(["<unk>", "<|im_start|>", "<|im_end|>", "<pad>", "?", ".", ","] + WORDS)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", eos_token="<|im_end|>",
                                  bos_token="<|im_start|>", pad_token="<pad>")
    if chat_template:
        tok.chat_template = CHAT_TEMPLATE
    return tok


def make_base(seed: int = 0, chat_template: bool = True) -> BaseModel:
    tok = make_tokenizer(chat_template)
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         bos_token_id=1, eos_token_id=2, pad_token_id=3, tie_word_embeddings=True)
    model = LlamaForCausalLM(config)
    return prepare_base_model(model, tok, "cpu", {"name": "tiny-random-llama", "kind": "memory"})


# Tiny random models of each architecture: hidden 32, 2 layers, 4 heads, the tokenizer's vocabulary.
# llama is SmolLM2's layout (grouped KV heads, tied embeddings), as make_base; gpt2: learned position
# embeddings added after the token embeddings, Conv1D layers, tied head; qwen2: grouped KV heads,
# untied head, biased q/k/v; phi: partial rotary, parallel attention/MLP, fc1/fc2, untied head;
# gemma: embeddings scaled by sqrt(hidden) inside the model, tied head.
_IDS = dict(bos_token_id=1, eos_token_id=2, pad_token_id=3)
_SIZES = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
              max_position_embeddings=256)
ARCHITECTURES = {
    "llama": lambda v: LlamaForCausalLM(LlamaConfig(vocab_size=v, num_key_value_heads=2, tie_word_embeddings=True,
                                                    **_SIZES, **_IDS)),
    "gpt2": lambda v: GPT2LMHeadModel(GPT2Config(vocab_size=v, n_embd=32, n_layer=2, n_head=4, n_positions=256,
                                                 **_IDS)),
    "qwen2": lambda v: Qwen2ForCausalLM(Qwen2Config(vocab_size=v, num_key_value_heads=2, tie_word_embeddings=False,
                                                    **_SIZES, **_IDS)),
    "phi": lambda v: PhiForCausalLM(PhiConfig(vocab_size=v, **_SIZES, **_IDS)),
    "gemma": lambda v: GemmaForCausalLM(GemmaConfig(vocab_size=v, num_key_value_heads=2, head_dim=8,
                                                    tie_word_embeddings=True, **_SIZES, **_IDS)),
}


def make_arch_model(arch: str, seed: int = 0) -> PreTrainedModel:
    """A tiny random model of ``arch`` (a key of ARCHITECTURES) over make_tokenizer's vocabulary."""
    torch.manual_seed(seed)
    return ARCHITECTURES[arch](len(make_tokenizer()))


def make_arch_base(arch: str, seed: int = 0) -> BaseModel:
    """make_arch_model's model, frozen and ready as a base model, with the tiny tokenizer."""
    return prepare_base_model(make_arch_model(arch, seed), make_tokenizer(), "cpu",
                              {"name": f"tiny-random-{arch}", "kind": "memory"})


@pytest.fixture
def base() -> BaseModel:
    return make_base()


SLOW_KINDS = ("integration", "browser", "load", "cuda")  # each of these is slow too: ``-m "not slow"`` leaves them out


@pytest.hookimpl(tryfirst=True)  # before -m selects
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests of the slow kinds are marked ``slow``; tests marked ``cuda`` skip, with the reason, where no CUDA GPU is
    visible."""
    for item in items:
        if any(item.get_closest_marker(kind) for kind in SLOW_KINDS):
            item.add_marker(pytest.mark.slow)
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU: torch.cuda.is_available() is false here")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def sixteen_pairs(tmp_path: Path) -> Path:
    """A .jsonl of 16 question/answer pairs in the tiny tokenizer's words."""
    rows = [{"question": f"who is the author of {w} ?", "answer": f"the author was born in a city and wrote {w} ."}
            for w in WORDS[:16]]
    path = tmp_path / "sixteen.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


@pytest.fixture
def tiny_data(tmp_path: Path) -> Path:
    """A .jsonl of 12 question/answer pairs in the tiny tokenizer's words."""
    rows = [{"question": f"who is the author of {w} ?", "answer": f"the author was born in a city and wrote {w} fiction ."}
            for w in WORDS[:12]]
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def nan_on_step(monkeypatch, n: int) -> None:
    """Make the n-th GAN training step report a NaN loss (the weights are left as the step made them)."""
    from gantune.methods.gan.method import GanMethod

    original = GanMethod.train_step

    def step(self, batch):
        stats = original(self, batch)
        self._calls = getattr(self, "_calls", 0) + 1
        if self._calls == n:
            stats["g_loss"] = float("nan")
        return stats

    monkeypatch.setattr(GanMethod, "train_step", step)
