"""Every method on every architecture a user may pick: Llama (SmolLM2), GPT-2, Qwen2, Phi and Gemma.

Tiny random models of each configuration (conftest's ARCHITECTURES), built offline. Each method
trains through the unchanged trainer with its default settings (no --lora-targets), never changes
the shared LM (weights, modules, attributes, hooks), and its run loads back and answers. LoRA's default targets follow the
architecture; a bad target list names the model's real linear layers (nn.Linear and GPT-2's
Conv1D). M_tunable acts on the token embeddings only: before GPT-2 adds its learned position
embeddings and before Gemma scales by sqrt(hidden), and never on a tied output head.
"""

from __future__ import annotations

import json
import math
import warnings

import pytest
import torch
from conftest import ARCHITECTURES, make_arch_base, make_arch_model, make_tokenizer
from test_methods import _module_layout
from transformers.pytorch_utils import Conv1D

import gantune.methods.lora_targets as lora_targets
from gantune.cli import main
from gantune.config import TrainConfig, preset_config
from gantune.data import Encoder, QAPair
from gantune.errors import GantuneError
from gantune.inference import answer_questions, load_method, stream_answer
from gantune.methods import get_method
from gantune.methods.gan.adapter import AdapterConfig, MTunable
from gantune.methods.gan.settings import GENERATOR_METHODS
from gantune.methods.lora_targets import default_lora_targets, linear_modules
from gantune.methods.peft_methods import LoraMethod, init_token_ids
from gantune.runs import RunFolder
from gantune.scoring import answer_logprobs, mle_loss
from gantune.trainer import train

ARCHS = list(ARCHITECTURES)
METHODS = ["gan", "adapter-mle", "lora", "prompt-tuning", "prefix-tuning", "full"]
SMALL = dict(virtual_tokens=4, lora_r=4, lora_alpha=8, noise_dim=8, d_hidden=[16, 8, 4])
# peft's LoRA defaults for each model type (TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING)
LORA_DEFAULTS = {"llama": ["q_proj", "v_proj"], "gpt2": ["c_attn"], "qwen2": ["q_proj", "v_proj"],
                 "phi": ["q_proj", "v_proj", "fc1", "fc2"], "gemma": ["q_proj", "v_proj"]}
QUESTIONS = ["who is the author of novel ?", "what did his mother write ?"]
PAIRS = [QAPair("who ?", "the author ."),
         QAPair("who is the author of a book born in city ?", "her father was a writer and her mother was a writer ."),
         QAPair("what genre did the writer of the novel write ?", "she wrote fiction and was known for it .")]


def _unvalidated(method: str, **overrides) -> TrainConfig:
    """A method's settings built directly (the trainer validates; the methods themselves do not)."""
    return preset_config(method, **{"n": None, "batch_size": 3, "max_new_tokens": 12, "max_prompt_tokens": 32,
                                    **SMALL, **overrides})


def _batch(base, pairs=PAIRS):
    enc = Encoder(base.tokenizer, base.eos_id, 32, 12)
    return enc.collate(enc.encode(pairs))


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_same_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    now = model.state_dict()
    assert list(now) == list(state)
    for k, v in state.items():
        assert torch.equal(now[k], v), f"{k} changed"


def _lora_layers(model: torch.nn.Module) -> set[str]:
    """Full names of the modules peft gave a LoRA adapter."""
    return {n for n, m in model.named_modules() if hasattr(m, "lora_A") and len(m.lora_A) > 0}


def _in_out(module: torch.nn.Module) -> tuple[int, int]:
    if isinstance(module, Conv1D):  # weight stored (in, out)
        return module.weight.shape[0], module.weight.shape[1]
    return module.in_features, module.out_features


# --- LoRA's targets --------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ARCHS)
def test_lora_without_targets_adapts_the_architectures_default_modules(arch):
    base = make_arch_base(arch)
    state = _state(base.model)
    assert default_lora_targets(base.model) == LORA_DEFAULTS[arch]
    layers = linear_modules(base.model)
    want = {n for n in layers if n.rsplit(".", 1)[-1] in LORA_DEFAULTS[arch]}
    assert len(want) == 2 * len(LORA_DEFAULTS[arch])  # each target once per layer, 2 layers
    r = SMALL["lora_r"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # GPT-2's Conv1D: fan_in_fan_out is set, so peft has nothing to correct
        m = LoraMethod(base, _unvalidated("lora", lora_targets=[]))
    try:
        assert {n.removeprefix("base_model.model.") for n in _lora_layers(m.peft_model)} == want
        assert sum(p.numel() for p in m.trainable_parameters()) == sum(r * sum(_in_out(layers[n])) for n in want)
        assert m.peft_model.peft_config["default"].fan_in_fan_out == (arch == "gpt2")
        batch = _batch(base)
        with m.enabled() as model:
            before = float(mle_loss(answer_logprobs(model, batch.prompt_ids, batch.prompt_mask,
                                                    batch.answer_ids, batch.answer_mask), batch.answer_mask))
        for _ in range(5):
            stats = m.train_step(batch)
        assert math.isfinite(stats["g_loss"]) and stats["g_loss"] < before  # the adapted layers learn
    finally:
        m.close()
    _assert_same_state(base.model, state)


@pytest.mark.parametrize("mapping", [{}, {"llama": ["c_attn"]}], ids=["type-unknown-to-peft", "names-not-in-model"])
def test_lora_falls_back_to_every_linear_layer_but_the_head(mapping, monkeypatch):
    monkeypatch.setattr(lora_targets, "TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING", mapping)
    base = make_arch_base("llama")
    targets = default_lora_targets(base.model)
    assert targets == ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]
    m = LoraMethod(base, _unvalidated("lora", lora_targets=[]))
    try:
        adapted = _lora_layers(m.peft_model)
        assert len(adapted) == 2 * 7 and not any("lm_head" in n for n in adapted)
        assert math.isfinite(m.train_step(_batch(base))["g_loss"])
    finally:
        m.close()


@pytest.mark.parametrize("targets, bad", [(["q_proj", "v_proj"], "q_proj, v_proj"),  # Llama's names
                                          (["c_attn", "q_proj"], "q_proj"),           # one of two missing
                                          (["attn"], "attn")])                        # a block, not a layer
def test_a_bad_lora_target_list_names_the_models_linear_layers(targets, bad):
    base = make_arch_base("gpt2")
    state = _state(base.model)
    with pytest.raises(GantuneError) as err:
        LoraMethod(base, _unvalidated("lora", lora_targets=targets))
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"--lora-targets {' '.join(targets)}: no such modules in this model")
    assert "its linear layers are named c_attn, c_fc, c_proj " in message  # Conv1D layers, the head left out
    assert "lm_head" not in message
    assert f"({bad} {'are' if ',' in bad else 'is'} not one of them)" in message
    assert message.endswith("leave --lora-targets empty for the gpt2 default: c_attn")
    _assert_same_state(base.model, state)
    assert not any(p.requires_grad for p in base.model.parameters())
    assert not _lora_layers(base.model)


def test_lora_on_gpt2s_conv1d_layers_by_name():
    base = make_arch_base("gpt2")
    batch = _batch(base)
    with torch.no_grad():
        plain = answer_logprobs(base.model, batch.prompt_ids, batch.prompt_mask, batch.answer_ids, batch.answer_mask)
    m = LoraMethod(base, _unvalidated("lora", lora_targets=["c_attn", "c_fc", "mlp.c_proj"], lr=1e-2))
    try:
        assert len(_lora_layers(m.peft_model)) == 2 * 3  # mlp.c_proj, not attn.c_proj
        with m.enabled() as model:  # LoRA's B starts at zero: the model starts as the LM
            start = answer_logprobs(model, batch.prompt_ids, batch.prompt_mask, batch.answer_ids, batch.answer_mask)
        torch.testing.assert_close(start, plain, atol=1e-6, rtol=0)
        losses = [m.train_step(batch)["g_loss"] for _ in range(5)]
        assert losses[-1] < losses[0]
    finally:
        m.close()


# --- every method through the trainer --------------------------------------------------------------

@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("arch", ARCHS)
def test_every_method_trains_loads_and_answers(arch, method, sixteen_pairs, tmp_path):
    base = make_arch_base(arch)
    state, layout = _state(base.model), _module_layout(base.model)
    originals = [(p, p.detach().clone()) for p in base.model.parameters()]
    out = tmp_path / "run"
    config = preset_config(method, data=str(sixteen_pairs), n=16, train_fraction=0.75, seed=1, out=str(out),
                           device="cpu", epochs=1, batch_size=4, max_new_tokens=8, max_prompt_tokens=32, **SMALL)
    moved = []  # per step: did any LM weight move?

    def on_step(_record: dict) -> None:
        moved.append(any(not torch.equal(p, p0) for p, p0 in originals) or _module_layout(base.model) != layout)

    summary = train(config, base=base, on_step=on_step)
    assert summary.status == "completed" and summary.steps == summary.total_steps >= 1
    assert summary.trainable_params > 0
    records = RunFolder(out).read_metrics()
    assert len(records) == summary.steps
    assert all(math.isfinite(r["g_loss"]) and math.isfinite(r["grad_norm"]) for r in records)
    assert len({r["frozen_norm"] for r in records}) == 1 and records[0]["frozen_norm"] > 0  # the flat line
    if method == "gan":  # the adversarial phase ran: the discriminator was trained and scored on this model
        assert all(math.isfinite(r["d_loss"]) for r in records)
    assert moved == [False] * len(records)  # no method changes the shared LM, full fine-tuning included
    _assert_same_state(base.model, state)
    if method == "lora":  # no --lora-targets: the architecture's own attention projections
        saved = json.loads((RunFolder(out).adapter_dir / "adapter_config.json").read_text())
        assert sorted(saved["target_modules"]) == sorted(LORA_DEFAULTS[arch])

    loaded = load_method(str(out), base=base)
    try:
        assert isinstance(loaded, get_method(method))
        answers = answer_questions(base, QUESTIONS, 6, method=loaded)
        assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
        assert [answer_questions(base, [q], 6, method=loaded)[0] for q in QUESTIONS] == answers
        streamed = list(stream_answer(base, QUESTIONS[0], 6, method=loaded))
        assert (streamed[-1] if streamed else "") == answers[0]
    finally:
        loaded.close()
    _assert_same_state(base.model, state)
    assert _module_layout(base.model) == layout


@pytest.mark.parametrize("discriminator", ["hidden", "implicit"])
@pytest.mark.parametrize("adapter", ["m-tunable", "lora", "prompt-tuning", "prefix-tuning"])
@pytest.mark.parametrize("arch", ARCHS)
def test_the_adversarial_objective_trains_every_adapter(arch, adapter, discriminator, sixteen_pairs, tmp_path):
    """--adapter: the GAN's warm-up, adversarial phase (explicit or implicit D) and save/load on each adapter."""
    base = make_arch_base(arch)
    state, layout = _state(base.model), _module_layout(base.model)
    out = tmp_path / "run"
    config = preset_config("gan", adapter=adapter, discriminator=discriminator, data=str(sixteen_pairs), n=16,
                           train_fraction=0.75, seed=1, out=str(out), device="cpu", epochs=2, warmup_epochs=1,
                           batch_size=4, max_new_tokens=8, max_prompt_tokens=32, **SMALL)
    summary = train(config, base=base)
    assert summary.status == "completed" and summary.steps == 6
    records = RunFolder(out).read_metrics()
    assert [r["phase"] for r in records] == ["mle"] * 3 + ["adversarial"] * 3
    for r in records[3:]:
        assert math.isfinite(r["g_loss"]) and math.isfinite(r["d_loss"]) and math.isfinite(r["grad_norm"])
        assert ("round" in r and "d_acc_pairs" in r) == (discriminator == "implicit")
    norms = [r["adapter_norm"] for r in records]
    assert norms[3] != norms[2] and norms[5] != norms[4]  # the adversarial steps move the adapter
    assert len({r["frozen_norm"] for r in records}) == 1
    _assert_same_state(base.model, state)
    assert _module_layout(base.model) == layout

    loaded = load_method(str(out), base=base)
    try:
        assert type(loaded.generator) is get_method(GENERATOR_METHODS[adapter])
        assert (loaded.discriminator is None) == (discriminator == "implicit")
        answers = answer_questions(base, QUESTIONS, 6, method=loaded)
        assert len(answers) == 2 and [answer_questions(base, [q], 6, method=loaded)[0] for q in QUESTIONS] == answers
    finally:
        loaded.close()
    _assert_same_state(base.model, state)
    assert _module_layout(base.model) == layout


def test_train_a_gpt2_folder_from_the_command_line_without_extra_flags(sixteen_pairs, tmp_path, capsys):
    """The issue's case: `train --method lora --model A_GPT2_FOLDER` needs no --lora-targets."""
    folder = tmp_path / "gpt2"
    make_arch_model("gpt2").save_pretrained(folder)
    make_tokenizer().save_pretrained(folder)
    out = tmp_path / "run"
    code = main(["train", "--method", "lora", "--model", str(folder), "--data", str(sixteen_pairs), "--n", "16",
                 "--train-fraction", "0.75", "--epochs", "1", "--batch-size", "4", "--max-new-tokens", "8",
                 "--max-prompt-tokens", "32", "--device", "cpu", "--out", str(out), "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert json.loads((RunFolder(out).adapter_dir / "adapter_config.json").read_text())["target_modules"] == ["c_attn"]
    assert main(["generate", "--run", str(out), "--question", QUESTIONS[0], "--max-new-tokens", "4"]) == 0


# --- M_tunable: where it acts -----------------------------------------------------------------------

def _first_block_input(model: torch.nn.Module, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(what the first transformer block receives, the logits) for one unpadded row."""
    inner = model.base_model
    blocks = inner.h if hasattr(inner, "h") else inner.layers
    seen = {}

    def grab(_module, args, kwargs):
        seen["x"] = (args[0] if args else kwargs["hidden_states"]).detach().clone()

    handle = blocks[0].register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with torch.no_grad():
            logits = model(input_ids=ids, position_ids=torch.arange(ids.shape[1])[None], use_cache=False).logits
    finally:
        handle.remove()
    return seen["x"], logits


@pytest.mark.parametrize("arch", ARCHS)
def test_m_tunable_acts_on_the_token_embeddings_only(arch):
    base = make_arch_base(arch)
    lm = base.model
    embed = lm.get_input_embeddings()
    torch.manual_seed(1)
    adapter = MTunable(AdapterConfig(embed.embedding_dim, noise_dim=8, init="default"))  # non-zero from the start
    ids = torch.tensor([base.tokenizer("who is the author of a book ?", add_special_tokens=False).input_ids])
    positions = torch.arange(ids.shape[1])[None]
    noise = torch.randn(1, 8)
    plain_x, plain_logits = _first_block_input(lm, ids)
    handle = adapter.attach(lm)
    try:
        with adapter.noise_set(noise):
            x, logits = _first_block_input(lm, ids)
            head_in = {}
            head = lm.get_output_embeddings()
            h = head.register_forward_hook(lambda _m, args, _out: head_in.setdefault("h", args[0].detach().clone()))
            with torch.no_grad():
                lm(input_ids=ids, position_ids=positions, use_cache=False)
            h.remove()
    finally:
        handle.remove()
    with torch.no_grad():
        with adapter.noise_set(noise):
            tuned = adapter(embed(ids))  # M_tunable of the token embeddings
        want = {
            "gpt2": lambda e: e + lm.transformer.wpe(positions),  # position embeddings added after M_tunable
            "gemma": lambda e: e * torch.tensor(lm.config.hidden_size ** 0.5, dtype=e.dtype),  # scaled after it
        }.get(arch, lambda e: e)(tuned)
    torch.testing.assert_close(x, want, atol=1e-6, rtol=0)
    assert not torch.allclose(x, plain_x, atol=1e-4)  # the adapter does change what the blocks see
    assert not torch.allclose(logits, plain_logits, atol=1e-4)
    # the output head is untouched: logits are the head's plain weights applied to the final states
    torch.testing.assert_close(logits, torch.nn.functional.linear(head_in["h"], head.weight, head.bias),
                               atol=1e-5, rtol=0)
    if lm.config.tie_word_embeddings:  # a tied head shares the embedding's weight, which the hook leaves alone
        assert head.weight is embed.weight
    # detached again: the LM is as before
    x_after, logits_after = _first_block_input(lm, ids)
    assert torch.equal(x_after, plain_x) and torch.equal(logits_after, plain_logits)


# --- prompt and prefix tuning start as the LM with the init text in front, on every layout ----------

@pytest.mark.parametrize("method", ["prompt-tuning", "prefix-tuning"])
@pytest.mark.parametrize("arch", [a for a in ARCHS if a != "llama"])  # llama: tests/test_methods.py
def test_prompt_and_prefix_tuning_start_as_the_lm_with_the_init_text_in_front(arch, method):
    base = make_arch_base(arch)
    with torch.no_grad():  # a livelier model, whose log-probs depend on the text in front
        for p in base.model.parameters():
            if p.dim() == 2:
                p.mul_(5.0)
    batch = _batch(base)
    m = get_method(method)(base, _unvalidated(method, virtual_tokens=6))
    try:
        with m.enabled(len(batch)) as model:
            got = answer_logprobs(model, batch.prompt_ids, batch.prompt_mask, batch.answer_ids, batch.answer_mask)
    finally:
        m.close()
    text = torch.tensor(init_token_ids(base.tokenizer, 6)).expand(len(batch), -1)
    with torch.no_grad():  # the plain LM over [init text ; left-padded prompt ; answer]
        want = answer_logprobs(base.model, torch.cat([text, batch.prompt_ids], 1),
                               torch.cat([torch.ones_like(text), batch.prompt_mask], 1),
                               batch.answer_ids, batch.answer_mask)
        plain = answer_logprobs(base.model, batch.prompt_ids, batch.prompt_mask, batch.answer_ids, batch.answer_mask)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert not torch.allclose(got, plain, atol=1e-3)
