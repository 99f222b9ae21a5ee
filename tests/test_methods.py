"""The baselines (lora, prompt-tuning, prefix-tuning, full) beside adapter-mle, on the tiny random Llama.

Each method: registered, learns by MLE with clipped gradients, saves and loads to the same model,
resumes from its state tensors, never changes the shared base model (not even while it runs), and
runs through the unchanged trainer. The peft ones also: log-probs of the right positions,
generate()'s output layout, and left padding. Most tests use a "lively" copy of conftest's model (its matrices scaled ×5), whose
answers depend on the question, so greedy answers are a real comparison and not all empty.
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings

import pytest
import torch
from conftest import make_base
from safetensors.torch import load_file, save_file
from transformers import GenerationConfig

import gantune.methods.full as full_module
from gantune.config import SECTIONS, RunSettings, TrainConfig, preset_config
from gantune.data import Encoder, QAPair
from gantune.errors import GantuneError
from gantune.generation import decode
from gantune.inference import answer_questions, load_method
from gantune.methods import METHODS, get_method
from gantune.methods.adapter_mle import AdapterMleMethod
from gantune.methods.base import TuningMethod, fused
from gantune.methods.full import FullMethod, estimate_full_finetune_bytes
from gantune.methods.gan.method import GanMethod
from gantune.methods.peft_methods import LoraMethod, PrefixTuningMethod, PromptTuningMethod, init_token_ids
from gantune.runs import RunFolder
from gantune.scoring import answer_logprobs, joined, mle_loss
from gantune.trainer import train

PAIRS = [  # prompts of different lengths: batches are left-padded
    QAPair("who ?", "the author ."),
    QAPair("who is the author of a book born in city ?", "her father was a writer and her mother was a writer ."),
    QAPair("what did his mother write ?", "fiction ."),
    QAPair("what genre did the writer of the novel write ?", "she wrote fiction and was known for it ."),
]
QUESTIONS = [p.question for p in PAIRS]
PEFT = ["lora", "prompt-tuning", "prefix-tuning"]
ALL = [*PEFT, "full", "adapter-mle"]
LR = {"lora": 1e-2, "prompt-tuning": 1e-1, "prefix-tuning": 1e-1, "full": 1e-3, "adapter-mle": 1e-2}
VIRTUAL = 4
SMALL = dict(virtual_tokens=VIRTUAL, lora_r=4, lora_alpha=8, noise_dim=8, d_hidden=[16, 8, 4])


def _config(method: str, **overrides) -> TrainConfig:
    values = dict(n=None, batch_size=4, max_new_tokens=12, max_prompt_tokens=32, lr=LR[method], **SMALL)
    values.update(overrides)
    return preset_config(method, **values).validate()


def _lively_base(seed: int = 0):
    base = make_base(seed)
    with torch.no_grad():
        for p in base.model.parameters():
            if p.dim() == 2:
                p.mul_(5.0)
    return base


def _batch(base, pairs=PAIRS):
    enc = Encoder(base.tokenizer, base.eos_id, 32, 12)
    return enc.collate(enc.encode(pairs))


def _make(method: str, base, **overrides) -> TuningMethod:
    torch.manual_seed(0)
    return get_method(method)(base, _config(method, **overrides))


def _trained(method: str, base, steps: int = 10) -> TuningMethod:
    m = _make(method, base)
    batch = _batch(base)
    for _ in range(steps):
        m.train_step(batch)
    return m


def _score(m: TuningMethod, batch) -> torch.Tensor:
    with m.enabled(len(batch)) as model:
        return answer_logprobs(model, batch.prompt_ids, batch.prompt_mask, batch.answer_ids, batch.answer_mask)


def _nll(m: TuningMethod, batch) -> float:
    return float(mle_loss(_score(m, batch), batch.answer_mask))


def _clone_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _contents(value: object) -> object:
    """What a module attribute holds: the identity of each entry of a dict (parameters, submodules,
    hooks …) or the members of a set, else the object's own identity."""
    if isinstance(value, dict):
        return {str(k): id(v) for k, v in value.items()}
    if isinstance(value, set):
        return sorted(map(str, value))
    return id(value)


def _own_forward(module: torch.nn.Module, key: str, value: object) -> bool:
    """The class's own forward as an instance attribute: what transformers leaves on a layer after any
    ``output_hidden_states`` pass (it wraps ``forward`` to capture states and sets the original back)."""
    return key == "forward" and getattr(value, "__func__", None) is type(module).forward


def _module_layout(model: torch.nn.Module) -> dict:
    """Every module's attributes (set, replaced or removed), its parameters, submodules and hooks,
    every weight's flags, and the configs: whatever a method might leave behind on the shared model."""
    layout: dict = {name: {k: _contents(v) for k, v in vars(module).items() if not _own_forward(module, k, v)}
                    for name, module in model.named_modules()}
    layout["<requires_grad>"] = [(n, p.requires_grad, p.grad is None) for n, p in model.named_parameters()]
    layout["<config>"] = model.config.to_dict()
    layout["<generation_config>"] = model.generation_config.to_dict()
    return layout


def _plain_logits(base, batch) -> torch.Tensor:
    ids, mask, positions = joined(batch.prompt_ids, batch.prompt_mask, batch.answer_ids, batch.answer_mask)
    with torch.no_grad():
        return base.model(input_ids=ids, attention_mask=mask, position_ids=positions).logits


# --- registry ------------------------------------------------------------------------------------

@pytest.mark.parametrize("method, cls", [("lora", LoraMethod), ("prompt-tuning", PromptTuningMethod),
                                         ("prefix-tuning", PrefixTuningMethod), ("full", FullMethod),
                                         ("adapter-mle", AdapterMleMethod), ("gan", GanMethod)])
def test_every_method_is_registered_and_a_config_choice(method, cls):
    assert get_method(method) is cls and cls.name == method
    assert issubclass(cls, TuningMethod)
    choices = {f.name: f for f in TrainConfig.__dataclass_fields__.values()}["method"].metadata["choices"]
    assert choices == tuple(METHODS) and method in choices


def test_train_config_is_the_run_section_and_each_method_s_sections():
    """Every field belongs to exactly one section; each method names the sections it reads, and its own defaults
    are settings of the run or of those sections."""
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    by_section = [f.name for section in SECTIONS for f in dataclasses.fields(section)]
    assert names == by_section and len(set(names)) == len(names)
    for name, spec in METHODS.items():
        assert set(spec.sections) <= set(SECTIONS[1:]), name
        readable = {f.name for section in (RunSettings, *spec.sections) for f in dataclasses.fields(section)}
        assert set(spec.defaults) <= readable, name
        assert preset_config(name).lr == spec.defaults.get("lr", RunSettings.lr)


def test_getting_an_unknown_method_names_the_known_ones():
    with pytest.raises(GantuneError, match="unknown method 'lorax'; choose one of gan, adapter-mle, lora"):
        get_method("lorax")


def test_trainable_parameter_counts(base):
    """Tiny Llama: hidden 32, 2 layers, 4 query heads and 2 key/value heads of width 8 (k/v width 16)."""
    expected = {
        "lora": 2 * ((4 * 32 + 32 * 4) + (4 * 32 + 16 * 4)),   # r=4 on q_proj (32→32) and v_proj (32→16)
        "prompt-tuning": VIRTUAL * 32,                         # one embedding per virtual token
        "prefix-tuning": VIRTUAL * 2 * 2 * 16,                 # a key and a value per layer per virtual token
        "full": sum(p.numel() for p in base.model.parameters()),  # tied embedding counted once
    }
    for method, n in expected.items():
        m = _make(method, base)
        try:
            assert sum(p.numel() for p in m.trainable_parameters()) == n, method
            assert all(p.requires_grad for p in m.trainable_parameters())
        finally:
            m.close()


# --- learning ------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ALL)
def test_mle_steps_lower_the_loss_and_leave_frozen_weights_alone(method):
    base = _lively_base()
    original = _clone_state(base.model)
    batch = _batch(base)
    m = _make(method, base)
    before = _nll(m, batch)
    stats = [m.train_step(batch) for _ in range(20)]
    after = _nll(m, batch)

    assert {"g_loss", "mle_loss", "grad_norm"} <= set(stats[0])
    assert all(math.isfinite(s["grad_norm"]) and s["grad_norm"] > 0 for s in stats)
    assert stats[0]["mle_loss"] == pytest.approx(before, abs=1e-4)  # the step's loss is the loss before it
    assert stats[-1]["mle_loss"] < stats[0]["mle_loss"]
    assert after < before - 0.1, (before, after)
    norm = m.adapter_norm()
    assert math.isfinite(norm) and norm > 0
    if method == "full":  # every weight of the copy trains; adapter_norm is how far they moved
        trained = m.model.state_dict()
        moved = math.sqrt(sum(float((trained[k] - v).double().pow(2).sum())
                              for k, v in original.items() if k != "lm_head.weight"))  # tied to embed_tokens
        assert moved > 0 and norm == pytest.approx(moved, rel=1e-4)
    after_state = base.model.state_dict()  # the shared LM's own weights are bit-identical, whatever the method
    assert after_state.keys() == original.keys()
    assert all(torch.equal(after_state[k], original[k]) for k in original)
    m.close()


def test_backward_clips_gradients_and_returns_their_norm_before_clipping(base):
    m = _make("lora", base)
    w = torch.nn.Parameter(torch.ones(4))
    norm = m.backward((10.0 * w).sum(), [w])  # gradient 10 in each of 4 places: norm 20
    assert norm == pytest.approx(20.0)
    assert float(torch.linalg.vector_norm(w.grad)) == pytest.approx(m.config.max_grad_norm) == pytest.approx(1.0)
    small = torch.nn.Parameter(torch.ones(4))
    assert m.backward((0.1 * small).sum(), [small]) == pytest.approx(0.2)
    assert torch.allclose(small.grad, torch.full((4,), 0.1))  # under the limit: left as it is
    m.close()
    unclipped = _make("lora", base, max_grad_norm=0.0)  # the thesis preset's: measured, not clipped
    w = torch.nn.Parameter(torch.ones(4))
    assert unclipped.backward((10.0 * w).sum(), [w]) == pytest.approx(20.0)
    assert float(torch.linalg.vector_norm(w.grad)) == pytest.approx(20.0)
    unclipped.close()


@pytest.mark.parametrize("method", [*ALL, "gan"])
def test_every_optimiser_takes_the_fused_kernel_on_the_cpu(method, base):
    m = _make(method, base) if method != "gan" else GanMethod(base, preset_config("gan", n=None, noise_dim=8,
                                                                                  d_hidden=[16, 8, 4]).validate())
    owners = [m, getattr(m, "generator", None)]  # the GAN's generator holds its optimiser, the method D's
    optimisers = [v for o in owners if o is not None for v in vars(o).values() if isinstance(v, torch.optim.Optimizer)]
    assert len(optimisers) == (2 if method == "gan" else 1)
    assert all(opt.defaults["fused"] for opt in optimisers)
    m.close()


def test_the_fused_update_is_the_loop_s_update():
    torch.manual_seed(0)
    start = torch.randn(64, 32)
    loop, fast = torch.nn.Parameter(start.clone()), torch.nn.Parameter(start.clone())
    opts = [torch.optim.AdamW([loop], lr=1e-2), torch.optim.AdamW([fast], lr=1e-2, **fused([fast]))]
    for _ in range(5):
        grad = torch.randn(64, 32)
        for p, opt in zip((loop, fast), opts):
            p.grad = grad.clone()
            opt.step()
    assert not torch.equal(loop, start) and torch.allclose(loop, fast, rtol=0, atol=1e-6)
    assert fused([torch.nn.Parameter(torch.zeros(2, device="meta"))]) == {}  # no fused kernel there: the loop


# --- what peft does with positions, logits_to_keep and generate() -----------------------------------

@pytest.mark.parametrize("method", PEFT)
def test_answer_logprobs_on_the_peft_model_pick_the_answer_positions(method):
    """answer_logprobs (logits_to_keep, position_ids) against full logits indexed by hand."""
    base = _lively_base()
    batch = _batch(base)
    m = _trained(method, base, steps=5)
    virtual = VIRTUAL if method == "prompt-tuning" else 0
    ids, mask, positions = joined(batch.prompt_ids, batch.prompt_mask, batch.answer_ids, batch.answer_mask)
    p_len, t_len = batch.prompt_ids.shape[1], batch.answer_ids.shape[1]
    with m.enabled(len(batch)) as model:
        got = answer_logprobs(model, batch.prompt_ids, batch.prompt_mask, batch.answer_ids, batch.answer_mask)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False).logits
    assert logits.shape[1] == virtual + p_len + t_len  # prompt tuning puts its virtual tokens in front
    # the token at answer position t is predicted by the logits at (virtual tokens +) prompt + t - 1
    logp = logits[:, virtual + p_len - 1 : virtual + p_len - 1 + t_len].float().log_softmax(-1)
    want = logp.gather(-1, batch.answer_ids.unsqueeze(-1)).squeeze(-1) * batch.answer_mask
    assert got.shape == batch.answer_ids.shape
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    m.close()


@pytest.mark.parametrize("method", PEFT)
def test_no_position_ids_warning_escapes(method):
    base = _lively_base()
    batch = _batch(base)
    m = _make(method, base)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m.train_step(batch)
        _score(m, batch)
        answer_questions(base, QUESTIONS[:2], 3, method=m)
    assert not [w for w in caught if "Position ids" in str(w.message)]
    m.close()


@pytest.mark.parametrize("method", PEFT)
def test_peft_generate_returns_the_prompt_then_the_answer(method):
    """PeftModel.generate keeps the prompt in front (no virtual-token columns): tests/test_decoding.py compares
    gantune's decoding with it, answer columns to answer columns."""
    base = _lively_base()
    batch = _batch(base)
    m = _trained(method, base, steps=5)
    config = GenerationConfig(max_new_tokens=6, do_sample=False, eos_token_id=base.eos_id,
                              pad_token_id=base.tokenizer.pad_token_id)
    with m.enabled(len(batch)) as model:
        out = model.generate(input_ids=batch.prompt_ids, attention_mask=batch.prompt_mask, generation_config=config,
                             use_model_defaults=False)
    p_len = batch.prompt_ids.shape[1]
    assert torch.equal(out[:, :p_len], batch.prompt_ids)  # no virtual-token columns, no missing prompt
    assert p_len < out.shape[1] <= p_len + 6
    m.close()


@pytest.mark.parametrize("method", ALL)
def test_greedy_answers_are_the_argmax_continuation(method):
    """KV-cached decoding (through the method's model) against a step-by-step argmax over full forwards."""
    base = _lively_base()
    batch = _batch(base)
    m = _trained(method, base, steps=10)
    steps = 6
    with m.enabled(len(batch)) as model:
        decoded = decode(model, batch.prompt_ids, batch.prompt_mask, base.eos_id, base.tokenizer.pad_token_id, steps)
        answers, answer_mask = decoded.ids, decoded.mask
        tokens = torch.zeros(len(batch), 0, dtype=torch.long)
        for _ in range(steps):
            ids, mask, positions = joined(batch.prompt_ids, batch.prompt_mask, tokens, torch.ones_like(tokens))
            logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False).logits
            tokens = torch.cat([tokens, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    texts = answer_questions(base, QUESTIONS, steps, method=m)
    for i in range(len(batch)):
        n = int(answer_mask[i].sum())
        assert n > 0
        assert answers[i, :n].tolist() == tokens[i, :n].tolist(), (i, answers[i], tokens[i])
        assert texts[i] == base.tokenizer.decode(tokens[i, :n], skip_special_tokens=True).strip()
    assert any(texts), texts
    m.close()


@pytest.mark.parametrize("method", ALL)
def test_left_padding_does_not_change_a_row(method):
    """Each row of a left-padded batch scores and answers as it does alone (prompt tuning needs its position hook)."""
    base = _lively_base()
    batch = _batch(base)
    assert (batch.prompt_mask == 0).any()  # the batch is padded
    m = _trained(method, base, steps=10)
    together = _score(m, batch)
    for i, pair in enumerate(PAIRS):
        alone = _score(m, _batch(base, [pair]))
        torch.testing.assert_close(together[i, : alone.shape[1]], alone[0], atol=1e-5, rtol=0)
    assert answer_questions(base, QUESTIONS, 8, method=m) == \
        [answer_questions(base, [q], 8, method=m)[0] for q in QUESTIONS]
    m.close()


# --- saving, loading, resuming ---------------------------------------------------------------------

SAVED_FILES = {
    "lora": {"adapter_model.safetensors", "adapter_config.json"},
    "prompt-tuning": {"adapter_model.safetensors", "adapter_config.json"},
    "prefix-tuning": {"adapter_model.safetensors", "adapter_config.json"},
    "full": {"model.safetensors", "config.json", "tokenizer.json"},
    "adapter-mle": {"adapter_model.safetensors", "adapter_config.json"},
}


@pytest.mark.parametrize("method", ALL)
def test_save_then_load_on_a_fresh_base_gives_the_same_model(method, tmp_path):
    base = _lively_base()
    batch = _batch(base)
    m = _trained(method, base, steps=10)
    answers = answer_questions(base, QUESTIONS, 8, method=m)
    logp = _score(m, batch)
    m.save_pretrained(tmp_path / "adapter")
    assert SAVED_FILES[method] <= {p.name for p in (tmp_path / "adapter").iterdir()}
    if method in PEFT:
        saved = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
        assert saved["peft_type"] == get_method(method).peft_type.value
    m.close()

    fresh = _lively_base()
    untuned = answer_logprobs(fresh.model, batch.prompt_ids, batch.prompt_mask, batch.answer_ids, batch.answer_mask)
    assert not torch.allclose(untuned, logp, atol=1e-3)  # training changed the model, so loading must matter
    loaded = get_method(method).from_pretrained(fresh, tmp_path / "adapter", _config(method))
    assert answer_questions(fresh, QUESTIONS, 8, method=loaded) == answers
    assert any(answers)
    torch.testing.assert_close(_score(loaded, batch), logp, atol=1e-6, rtol=0)
    loaded.close()


@pytest.mark.parametrize("method", ALL)
def test_state_tensors_resume_training_exactly(method, tmp_path):
    base = _lively_base()
    batch = _batch(base)
    first = _trained(method, base, steps=3)
    tensors = first.state_tensors()
    assert all(t.device.type == "cpu" for t in tensors.values())
    save_file(tensors, tmp_path / "state.safetensors")  # what the trainer's checkpoint does
    torch.manual_seed(1)
    want = first.train_step(batch)["mle_loss"]
    want_logp = _score(first, batch)
    first.close()

    second = _make(method, _lively_base())
    second.load_state_tensors(load_file(tmp_path / "state.safetensors"))
    torch.manual_seed(1)
    got = second.train_step(batch)["mle_loss"]  # same weights AND same Adam moments and step count
    assert got == pytest.approx(want, abs=1e-6)
    torch.testing.assert_close(_score(second, batch), want_logp, atol=1e-6, rtol=0)
    second.close()


@pytest.mark.parametrize("method", PEFT + ["full"])
def test_state_tensors_refuse_a_checkpoint_of_another_method(method):
    other = "prefix-tuning" if method == "prompt-tuning" else "prompt-tuning"
    source = _make(other, make_base())
    tensors = source.state_tensors()
    source.close()
    m = _make(method, make_base())
    with pytest.raises(GantuneError, match="checkpoint does not fit"):
        m.load_state_tensors(tensors)
    m.close()


def test_peft_from_pretrained_refuses_another_kind_of_adapter(tmp_path):
    m = _make("prompt-tuning", make_base())
    m.save_pretrained(tmp_path / "adapter")
    m.close()
    with pytest.raises(GantuneError, match="PROMPT_TUNING adapter, not one for --method lora"):
        LoraMethod.from_pretrained(make_base(), tmp_path / "adapter", _config("lora"))
    with pytest.raises(GantuneError, match="holds no peft adapter"):
        LoraMethod.from_pretrained(make_base(), tmp_path / "nothing-here", _config("lora"))


def test_full_from_pretrained_refuses_weights_of_another_model(tmp_path):
    base = make_base()
    (tmp_path / "empty").mkdir()
    with pytest.raises(GantuneError, match="no full model"):
        FullMethod.from_pretrained(base, tmp_path / "empty", _config("full"))
    (tmp_path / "other").mkdir()
    save_file({"something.else": torch.zeros(2)}, tmp_path / "other" / "model.safetensors")
    original = _clone_state(base.model)
    with pytest.raises(GantuneError, match="does not hold weights of this base model"):
        FullMethod.from_pretrained(base, tmp_path / "other", _config("full"))
    assert all(torch.equal(v, original[k]) for k, v in base.model.state_dict().items())
    assert not any(p.requires_grad for p in base.model.parameters())  # the failed method closed itself


# --- the shared base model as it was, while a method runs and after it closes ------------------------

def _assert_untouched(base, state: dict, layout: dict, logits: torch.Tensor, batch) -> None:
    after = base.model.state_dict()
    assert list(after) == list(state)
    assert all(torch.equal(after[k], state[k]) for k in state)
    assert _module_layout(base.model) == layout
    assert torch.equal(_plain_logits(base, batch), logits)


@pytest.mark.parametrize("method", ALL)
def test_the_shared_base_model_is_never_changed(method):
    base = make_base()
    batch = _batch(base)
    state, layout, logits = _clone_state(base.model), _module_layout(base.model), _plain_logits(base, batch)
    m = _make(method, base)
    for _ in range(3):
        m.train_step(batch)
    answer_questions(base, QUESTIONS, 4, method=m)  # PeftModel.generate sets attributes on the LM it wraps
    _score(m, batch)
    if method == "lora":  # the layers went into peft's copy of the module tree
        assert any("lora_" in k for k in m.peft_model.state_dict())
    if method == "full":  # the weights that moved are the copy's
        assert any(not torch.equal(v, state[k]) for k, v in m.model.state_dict().items())
    _assert_untouched(base, state, layout, logits, batch)  # while the method is open, too
    m.close()
    m.close()  # twice is harmless

    _assert_untouched(base, state, layout, logits, batch)
    assert answer_questions(base, QUESTIONS, 4) == answer_questions(make_base(), QUESTIONS, 4)
    if method != "adapter-mle":
        with pytest.raises(RuntimeError, match="closed"):
            with m.enabled(1):
                pass


@pytest.mark.parametrize("method", ["prompt-tuning", "prefix-tuning"])
@pytest.mark.parametrize("virtual", [4, 20])  # shorter than the init text, and repeating it
def test_prompt_and_prefix_tuning_start_as_the_lm_with_the_init_text_in_front(method, virtual):
    base = _lively_base()
    batch = _batch(base)
    m = _make(method, base, virtual_tokens=virtual)
    got = _score(m, batch)
    text = torch.tensor(init_token_ids(base.tokenizer, virtual)).expand(len(batch), -1)
    with torch.no_grad():  # the plain LM over [init text ; left-padded prompt ; answer]
        want = answer_logprobs(base.model, torch.cat([text, batch.prompt_ids], 1),
                               torch.cat([torch.ones_like(text), batch.prompt_mask], 1),
                               batch.answer_ids, batch.answer_mask)
        plain = answer_logprobs(base.model, batch.prompt_ids, batch.prompt_mask, batch.answer_ids, batch.answer_mask)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert not torch.allclose(got, plain, atol=1e-3)  # the text does change the answers' log-probs
    m.close()


def test_lora_refuses_target_modules_the_model_lacks(base):
    state, layout = _clone_state(base.model), _module_layout(base.model)
    with pytest.raises(GantuneError, match="no such modules in this model; its linear layers are named .*q_proj"):
        _make("lora", base, lora_targets=["c_attn"])
    assert list(base.model.state_dict()) == list(state)
    assert _module_layout(base.model) == layout


# --- full fine-tuning's memory check --------------------------------------------------------------

def test_full_finetune_estimate_counts_tied_weights_once(base):
    n = sum(p.numel() for p in base.model.parameters())
    assert n < sum(p.numel() for _, p in base.model.named_parameters(remove_duplicate=False))  # the tiny model ties
    assert estimate_full_finetune_bytes(base.model) == n * (4 + 4 + 8)  # fp32: the copy, its gradients, 2 moments


def test_full_refuses_when_memory_is_short(base, monkeypatch):
    monkeypatch.setattr(full_module, "available_memory_bytes", lambda device: 100_000)
    with pytest.raises(GantuneError) as err:
        FullMethod(base, _config("full"))
    message = str(err.value)
    assert "\n" not in message
    assert "M-parameter model" in message and "GB" in message and "--method lora" in message
    assert not any(p.requires_grad for p in base.model.parameters())  # refused before touching the model
    # injectable too; plenty of memory passes
    with pytest.raises(GantuneError, match="CPU memory is available"):
        FullMethod(base, _config("full"), available_memory=lambda device: 10)
    FullMethod(base, _config("full"), available_memory=lambda device: 10**12).close()


def test_the_trainer_refuses_full_when_memory_is_short(base, tiny_data, tmp_path, monkeypatch):
    monkeypatch.setattr(full_module, "available_memory_bytes", lambda device: 100_000)
    config = preset_config("full", n=8, data=str(tiny_data), out=str(tmp_path / "run"), batch_size=4,
                           max_new_tokens=8, max_prompt_tokens=32, epochs=1, device="cpu")
    with pytest.raises(GantuneError, match="use --method lora instead"):
        train(config, base=base)


# --- through the trainer, unchanged ----------------------------------------------------------------

@pytest.mark.parametrize("method", ALL)
def test_the_trainer_runs_each_method(method, base, tiny_data, tmp_path):
    state = _clone_state(base.model)
    out = tmp_path / "run"
    config = preset_config(method, n=8, data=str(tiny_data), out=str(out), batch_size=4, max_new_tokens=8,
                           max_prompt_tokens=32, epochs=1, device="cpu", **SMALL)
    summary = train(config, base=base)

    assert summary.status == "completed" and summary.steps == 1
    probe = get_method(method)(make_base(), config)
    assert summary.trainable_params == sum(p.numel() for p in probe.trainable_parameters())
    probe.close()
    run = RunFolder(out)
    assert SAVED_FILES[method] <= {p.name for p in run.adapter_dir.iterdir()}
    (record,) = run.read_metrics()
    assert math.isfinite(record["g_loss"]) and record["mle_loss"] == record["g_loss"]
    assert math.isfinite(record["adapter_norm"]) and math.isfinite(record["grad_norm"])
    assert record["frozen_norm"] > 0  # every method leaves the whole LM frozen, full fine-tuning included
    # the shared base model is as it was
    after = base.model.state_dict()
    assert list(after) == list(state) and all(torch.equal(after[k], state[k]) for k in state)

    loaded = load_method(str(out), base=base)
    assert isinstance(loaded, get_method(method))
    assert len(answer_questions(base, QUESTIONS, 4, method=loaded)) == len(QUESTIONS)
    loaded.close()


@pytest.mark.parametrize("method", PEFT + ["full"])
def test_a_resumed_run_is_bit_identical_to_a_straight_run(method, tiny_data, tmp_path):
    def config(out, epochs):
        return preset_config(method, n=12, data=str(tiny_data), out=str(out), batch_size=4, max_new_tokens=8,
                             max_prompt_tokens=32, epochs=epochs, device="cpu", **SMALL)

    train(config(tmp_path / "straight", 2), base=make_base())
    train(config(tmp_path / "resumed", 1), base=make_base())
    train(config(tmp_path / "resumed", 2), base=make_base(), resume=True)
    name = "model.safetensors" if method == "full" else "adapter_model.safetensors"
    a, b = (load_file(RunFolder(tmp_path / run).adapter_dir / name) for run in ("straight", "resumed"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    losses = [[r["mle_loss"] for r in RunFolder(tmp_path / run).read_metrics()] for run in ("straight", "resumed")]
    assert len(losses[0]) == 4 and losses[0] == losses[1]
