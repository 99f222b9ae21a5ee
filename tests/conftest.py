"""Shared fixtures: a tiny random Llama and a tiny word-level tokenizer, built offline in memory."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers / huggingface_hub read it at import

import json  # noqa: E402
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

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


@pytest.fixture
def base() -> BaseModel:
    return make_base()


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
    from gantune.methods.gan import GanMethod

    original = GanMethod.train_step

    def step(self, batch):
        stats = original(self, batch)
        self._calls = getattr(self, "_calls", 0) + 1
        if self._calls == n:
            stats["g_loss"] = float("nan")
        return stats

    monkeypatch.setattr(GanMethod, "train_step", step)
