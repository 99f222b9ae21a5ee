"""Streamed answers: a character split over byte-level tokens is held back until whole; an answer the token limit cut
ends with "…" in Chat, with a note saying so (issue 29, item 9)."""

from __future__ import annotations

import pytest
import torch
from conftest import CHAT_TEMPLATE, make_base
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

import gantune.inference as inference
from gantune.inference import INCOMPLETE, stream_answer, stream_reply
from gantune.models import BaseModel, prepare_base_model
from ui.engine import Engine, Settings
from ui.tabs import chat

SPECIALS = ["<unk>", "<|im_start|>", "<|im_end|>", "<pad>"]
RUSSIAN = "Да, Пушкин."  # 2 bytes a Cyrillic letter, 1 an ASCII character: 19 bytes


def byte_level_base() -> BaseModel:
    """A tiny Llama over a byte-level tokenizer (each byte one token, as GPT-2's and SmolLM2's pieces can be)."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {tok: i for i, tok in enumerate(SPECIALS + alphabet)}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", eos_token="<|im_end|>",
                                  bos_token="<|im_start|>", pad_token="<pad>")
    tok.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=4, num_key_value_heads=2, bos_token_id=1, eos_token_id=2,
                                         pad_token_id=3))
    return prepare_base_model(model, tok, "cpu", {"name": "tiny-byte-level", "kind": "memory"})


def script(monkeypatch, tokens: list[int]) -> None:
    """The model 'answers' these tokens, one a step (the decoding loop's own steps, replaced)."""
    def steps(model, ids, mask, eos_id, pad_id, max_new_tokens, *args, **kwargs):
        for token in tokens[:max_new_tokens]:
            yield torch.tensor([token]), torch.tensor([0.0])
            if token == eos_id:
                return

    monkeypatch.setattr(inference, "decode_steps", steps)


def test_a_cyrillic_answer_streams_without_replacement_characters(monkeypatch):
    base = byte_level_base()
    tokens = base.tokenizer(RUSSIAN, add_special_tokens=False).input_ids
    assert len(tokens) == len(RUSSIAN.encode()) == 19  # one token a byte
    assert base.tokenizer.decode(tokens[:3]).endswith(INCOMPLETE)  # "Д" and half of "а": what the page showed
    script(monkeypatch, [*tokens, base.eos_id])
    pieces = list(stream_reply(base, "кто написал?", 32))
    texts = [text for text, _ in pieces]
    assert not any(INCOMPLETE in t for t in texts), texts
    assert texts[-1] == RUSSIAN and not any(cut for _, cut in pieces)  # it ended with its end token
    assert texts == list(dict.fromkeys(RUSSIAN[:n].strip() for n in range(1, len(RUSSIAN) + 1)))  # a character a piece
    assert list(stream_answer(base, "кто написал?", 32)) == texts


def test_an_answer_the_limit_cuts_says_so_and_never_ends_in_half_a_character(monkeypatch):
    base = byte_level_base()
    tokens = base.tokenizer(RUSSIAN, add_special_tokens=False).input_ids
    script(monkeypatch, tokens)  # no end token: the limit stops it
    *_, (text, cut) = stream_reply(base, "кто?", len(tokens))
    assert (text, cut) == (RUSSIAN, True)
    *_, (text, cut) = stream_reply(base, "кто?", 3)  # "Д" and half of "а"
    assert (text, cut) == ("Д", True)


@pytest.fixture
def engine(tmp_path):
    return Engine(Settings(runs_dir=tmp_path / "runs"), load_model=lambda *a: make_base(seed=1))


def test_chat_marks_a_cut_answer_and_notes_where_to_raise_the_limit(engine, monkeypatch):
    script(monkeypatch, [20, 21, 22, 23])  # four words, no end token
    cut = [False, False, False]
    *_, (base_answer, gan, lora) = chat.answers(engine, "default", "who is the author ?", None, None, 3, cut=cut)
    assert base_answer.endswith("…") and base_answer.count(" ") == 2  # three words, then the mark
    assert cut == [True, False, False] and gan == lora == "(pick a run)"
    assert chat.cut_note(cut, 3, "en") == ("“…” marks an answer cut at the limit of new tokens (3): Base model. "
                                           "Raise “Max new tokens” above for a longer answer.")
    assert chat.cut_note(cut, 3, "ru") == ("«…» отмечает ответ, обрезанный на пределе новых токенов (3): Базовая модель. "
                                           "Увеличьте «Макс. новых токенов» выше, чтобы ответ был длиннее.")
    assert chat.cut_note([False] * 3, 3, "en") == ""

    script(monkeypatch, [20, 2])  # a word, then the end token: whole, no mark
    cut = [False, False, False]
    *_, (base_answer, _, _) = chat.answers(engine, "default", "who is the author ?", None, None, 3, cut=cut)
    assert not base_answer.endswith("…") and cut == [False, False, False]
