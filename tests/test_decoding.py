"""The lean decoding loop against transformers' ``generate`` (token for token, greedy and sampled, for the base
model and every method's tuned model on every architecture), its sampler, its recorded log-probabilities, Stop
between tokens; grouped-query attention without copies; and ``--precision``."""

from __future__ import annotations

import copy
from contextlib import nullcontext
from unittest import mock

import pytest
import torch
from conftest import ARCHITECTURES, make_arch_base, make_arch_model, make_base, make_tokenizer
from transformers import DynamicCache, GenerationConfig

from gantune import generation
from gantune.config import preset_config
from gantune.cpu import ATTENTION
from gantune.data import Encoder, QAPair
from gantune.errors import GantuneError
from gantune.generation import Stopped, categorical, decode, reserved_cache
from gantune.inference import answers, stream_answer
from gantune.methods import get_method
from gantune.methods.base import StepInterrupted
from gantune.models import fast_bf16, make_accelerator, prepare_base_model, resolve_precision
from gantune.scoring import answer_logprobs

QUESTIONS = ["who ?", "who is the author of a book born in city ?", "what did his mother write ?",
             "the father was known for fiction and was born in a city what genre did he write ?"]
SMALL = dict(virtual_tokens=4, lora_r=4, lora_alpha=8, noise_dim=8, d_hidden=[16, 8, 4], max_new_tokens=10,
             max_prompt_tokens=32)


def _lively(base):
    """Weights ×5, so answers depend on the question and run for several tokens."""
    with torch.no_grad():
        for p in base.model.parameters():
            if p.dim() == 2:
                p.mul_(5.0)
    return base


def _prompts(base, questions=QUESTIONS):
    enc = Encoder(base.tokenizer, base.eos_id, 32, 10)
    ids, mask = enc.prompts(questions)
    return enc, ids, mask


def _hf(model, ids, mask, eos_id, pad_id, max_new, temperature):
    """``generate``'s answers; sampled ones drawn by gantune's sampler in place of ``torch.multinomial`` (the same
    distribution, another use of the random numbers), so that every other part of sampling is compared token for
    token: the logits, the temperature, the rows that have ended."""
    sampling = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0} if temperature else \
        {"do_sample": False}
    config = GenerationConfig(max_new_tokens=max_new, eos_token_id=eos_id, pad_token_id=pad_id, **sampling)
    with torch.no_grad(), mock.patch("torch.multinomial", lambda probs, num_samples: categorical(probs)[:, None]):
        out = model.generate(input_ids=ids, attention_mask=mask, generation_config=config, use_model_defaults=False)
    return out[:, ids.shape[1]:]


def _tuned(method: str, base):
    """``method`` on ``base``, its tuned part moved off its start so it changes the answers."""
    torch.manual_seed(0)
    m = get_method(method)(base, preset_config(method, **SMALL))
    with torch.no_grad():
        for p in m.trainable_parameters():
            p.add_(0.3 * torch.randn_like(p))
    return m


@pytest.mark.parametrize("temperature", [0.0, 1.0, 0.7])
@pytest.mark.parametrize("method", [None, "adapter-mle", "lora", "prompt-tuning", "prefix-tuning"])
def test_decode_gives_generates_tokens(method, temperature):
    """Greedy and sampled (same seed): the lean loop picks exactly the tokens ``generate`` picks."""
    base = _lively(make_base(1))
    enc, ids, mask = _prompts(base, QUESTIONS * 2)
    tuned = _tuned(method, base) if method else None
    with tuned.enabled(len(ids)) if tuned else nullcontext(base.model) as model:
        torch.manual_seed(3)
        ours = decode(model, ids, mask, base.eos_id, enc.pad_id, 10, temperature)
        torch.manual_seed(3)
        theirs = _hf(model, ids, mask, base.eos_id, enc.pad_id, 10, temperature)
    assert ours.ids.shape[1] >= 3, "the test needs answers of several tokens"
    assert torch.equal(ours.ids, theirs[:, :ours.ids.shape[1]])
    assert (theirs[:, ours.ids.shape[1]:] == enc.pad_id).all()  # generate only pads after the last answer ended


@pytest.mark.parametrize("temperature", [0.0, 1.0])
@pytest.mark.parametrize("method", [None, "adapter-mle", "lora", "prompt-tuning", "prefix-tuning"])
def test_rows_that_end_leave_the_batch_and_change_no_token(method, temperature, monkeypatch):
    """Ended rows are dropped from the forward (cache, mask, M_tunable's noise of each row) without changing a token
    or a log-prob of the others, greedy or sampled: M_tunable fed a different noise per row, as a GAN's rollout."""
    base = _lively(make_base(1))
    enc, ids, mask = _prompts(base, QUESTIONS * 2)
    tuned = _tuned(method, base) if method else None
    noise = tuned.sample_noise(len(ids)) if method == "adapter-mle" else None

    def run(eos_id: int, share: float):
        monkeypatch.setattr(generation, "ENDED_SHARE", share)
        widths = []  # the rows of each forward, as its embedding layer sees them
        with tuned.policy(noise) if noise is not None else tuned.enabled(len(ids)) if tuned else nullcontext(base.model) as model:
            hook = model.get_input_embeddings().register_forward_pre_hook(lambda _m, a: widths.append(a[0].shape[0]))
            torch.manual_seed(3)
            out = decode(model, ids, mask, eos_id, enc.pad_id, 10, temperature)
            hook.remove()
        return out, widths

    never = float("inf")
    eos = int(run(-1, never)[0].ids[0, 2])  # a token the answers use: row 0 ends at its third, others elsewhere
    kept, kept_widths = run(eos, never)
    dropped, dropped_widths = run(eos, 0.01)  # drop a row as soon as it ends
    lengths = kept.mask.sum(1)
    assert len(set(lengths.tolist())) > 1 and kept.ids.shape[1] > int(lengths.min()), "the rows must end apart"
    assert set(kept_widths) == {len(ids)} and min(dropped_widths) < len(ids)  # rows left the batch
    assert torch.equal(dropped.ids, kept.ids)
    torch.testing.assert_close(dropped.logp, kept.logp, rtol=1e-5, atol=1e-5)


def test_the_sampler_draws_each_token_at_its_probability():
    """``categorical`` samples what ``torch.multinomial`` samples: each token at its share (never one of share 0),
    whatever the other rows hold, and a row's draw uses one number of torch's generator."""
    probs = torch.tensor([[0.1, 0.2, 0.7, 0.0], [0.0, 0.0, 0.0, 1.0], [0.5, 0.0, 0.0, 0.5], [0.25] * 4])
    torch.manual_seed(0)
    drawn = categorical(probs.repeat(50_000, 1)).view(-1, 4)
    for row in range(4):
        shares = torch.bincount(drawn[:, row], minlength=4) / len(drawn)
        assert torch.allclose(shares, probs[row], atol=0.008), (row, shares)  # 4 standard errors at 50,000 draws
        assert (shares[probs[row] == 0] == 0).all()
    torch.manual_seed(1)
    first = categorical(probs)
    torch.manual_seed(1)
    assert torch.equal(categorical(probs[:2]), first[:2])  # a row's draw does not depend on the rows after it
    assert torch.equal(categorical(torch.tensor([[0.0, 0.0, 1.0]] * 3)), torch.tensor([2, 2, 2]))
    assert 0 <= int(categorical(torch.tensor([[0.5, float("nan")]]))[0]) < 2  # a diverged row: still a token id


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_decode_gives_generates_greedy_tokens_on_every_architecture(arch):
    base = _lively(make_arch_base(arch))
    enc, ids, mask = _prompts(base)
    ours = decode(base.model, ids, mask, base.eos_id, enc.pad_id, 10)
    theirs = _hf(base.model, ids, mask, base.eos_id, enc.pad_id, 10, 0.0)
    assert torch.equal(ours.ids, theirs[:, :ours.ids.shape[1]])


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_recorded_logprobs_are_the_tempered_policys(temperature):
    """What decode records for each sampled token is log softmax(logits / T) of a teacher-forced pass."""
    base = _lively(make_base(2))
    enc, ids, mask = _prompts(base)
    torch.manual_seed(0)
    out = decode(base.model, ids, mask, base.eos_id, enc.pad_id, 10, temperature)
    with torch.no_grad():
        forced = answer_logprobs(base.model, ids, mask, out.ids, out.mask, temperature)
    assert torch.allclose(out.logp, forced, atol=1e-5)
    assert (out.logp[out.mask == 0] == 0).all()


def test_the_reserved_cache_holds_what_transformers_cache_holds_even_past_its_room():
    config = make_base().model.config
    reserved, dynamic = reserved_cache(config, capacity=6), DynamicCache(config=config)
    torch.manual_seed(0)
    places = []
    for length in (4, 1, 1, 1, 1):  # a prompt of 4, then a token at a time: the third token is past the room
        k, v = torch.randn(2, 1, length, 8), torch.randn(2, 1, length, 8)
        got, want = reserved.update(k, v, 0), dynamic.update(k.clone(), v.clone(), 0)
        assert all(torch.equal(g, w) for g, w in zip(got, want))
        places.append(got[0].data_ptr())
    assert reserved.get_seq_length() == dynamic.get_seq_length() == 8
    assert places[0] == places[1] == places[2] != places[3] == places[4]  # written in place until the room ran out


def test_stop_is_honoured_between_tokens():
    base = _lively(make_base(1))
    enc, ids, mask = _prompts(base)
    calls = []

    def stop() -> bool:
        calls.append(1)
        return len(calls) > 3

    with pytest.raises(Stopped):
        decode(base.model, ids, mask, base.eos_id, enc.pad_id, 10, should_stop=stop)
    assert len(calls) == 4  # three tokens decoded, stopped before the fourth


def test_answers_sorted_by_length_come_back_in_order():
    """Decoded shortest first and in one wide batch, each answer is the one the question gets alone."""
    base = _lively(make_base(1))
    together = answers(base, QUESTIONS[::-1], 10)
    alone = [answers(base, [q], 10).texts[0] for q in QUESTIONS[::-1]]
    assert together.texts == alone
    assert any(together.texts) and len(set(together.texts)) > 1


def test_stream_answer_grows_into_the_greedy_answer():
    base = _lively(make_base(1))
    pieces = list(stream_answer(base, QUESTIONS[1], 10))
    assert pieces[-1] == answers(base, [QUESTIONS[1]], 10).texts[0]
    assert len(pieces) >= 2 and all(b.startswith(a.rstrip()) for a, b in zip(pieces, pieces[1:]))


# --- grouped-query attention without copies ----------------------------------------------------------------

@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_grouped_attention_gives_sdpas_numbers(arch):
    """A CPU model is switched to gantune's attention; logits and gradients are transformers' sdpa's."""
    model = make_arch_model(arch)
    reference = copy.deepcopy(model).eval()
    base = prepare_base_model(model, make_tokenizer(), "cpu", {"name": arch})
    assert base.model.config._attn_implementation == ATTENTION
    assert reference.config._attn_implementation == "sdpa"
    enc, ids, mask = _prompts(base)
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    embeds = [m.get_input_embeddings()(ids).detach().requires_grad_(True) for m in (base.model, reference)]
    logits = [m(inputs_embeds=e, attention_mask=mask, position_ids=positions).logits for m, e in zip((base.model, reference), embeds)]
    real = mask.bool()
    # fp32 with another kernel order: equal to rounding, relative to the values' size (gradients reach ~15)
    torch.testing.assert_close(logits[0][real], logits[1][real], rtol=1e-4, atol=1e-5)
    for out in logits:
        out[real].sum().backward()
    torch.testing.assert_close(embeds[0].grad, embeds[1].grad, rtol=1e-4, atol=1e-5)


# --- precision -------------------------------------------------------------------------------------------

def test_auto_precision_follows_the_chip(monkeypatch):
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) == "fp32" and resolve_precision("bf16", cpu) == "bf16"
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    assert not fast_bf16(cpu) and resolve_precision("auto", cpu) == "fp32"
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    assert fast_bf16(cpu) and resolve_precision("auto", cpu) == "bf16"
    with pytest.raises(GantuneError, match="--precision must be one of"):
        resolve_precision("fp16", cpu)


def _bf16_base(seed: int = 1):
    base = _lively(make_base(seed))
    return prepare_base_model(base.model, base.tokenizer, "cpu", base.source, "bf16")


def test_a_bf16_base_holds_bf16_weights_and_autocasts():
    base = _bf16_base()
    assert base.precision == "bf16"
    assert {p.dtype for p in base.model.parameters()} == {torch.bfloat16}
    with base.autocast():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    assert make_accelerator(base.device, "bf16").mixed_precision == "bf16"
    assert make_accelerator(base.device, "fp32").mixed_precision == "no"


@pytest.mark.parametrize("method", ["adapter-mle", "lora"])
def test_a_bf16_stream_taken_piece_by_piece_from_other_threads_answers_as_in_one(method):
    """Gradio takes each piece of a chat answer from a worker thread of its own, and autocast is per thread:
    a bf16 base with a tuned method streams the same answer that way as in one thread (it raised a dtype error)."""
    from concurrent.futures import ThreadPoolExecutor

    base = _bf16_base()
    m = _tuned(method, base)
    whole = list(stream_answer(base, QUESTIONS[1], 8, method=m))
    stream, pieces = stream_answer(base, QUESTIONS[1], 8, method=m), []
    with ThreadPoolExecutor(max_workers=1) as first, ThreadPoolExecutor(max_workers=1) as second:
        for i in range(len(whole) + 1):
            piece = (first if i % 2 else second).submit(next, stream, None).result()
            if piece is None:
                break
            pieces.append(piece)
    assert pieces == whole and whole


def test_bf16_answers_mostly_agree_with_fp32():
    """bf16 changes numbers a little, not the model: greedy first tokens agree with fp32's on most questions."""
    fp32 = _lively(make_base(1))
    bf16 = _bf16_base(1)
    qs = QUESTIONS * 3
    a, b = answers(fp32, qs, 6).texts, answers(bf16, qs, 6).texts
    firsts = [x.split()[:1] == y.split()[:1] for x, y in zip(a, b)]
    assert sum(firsts) >= 0.75 * len(qs)


@pytest.mark.parametrize("method", ["gan", "adapter-mle", "lora", "prompt-tuning", "prefix-tuning", "full"])
def test_every_method_trains_in_bf16_with_fp32_tuned_weights(method):
    """Under bf16 the LM is bf16 while every tuned weight, its gradient and the loss stay fp32."""
    base = _bf16_base()
    config = preset_config(method, **SMALL, batch_size=4, warmup_epochs=0, precision="bf16").validate()
    torch.manual_seed(0)
    m = get_method(method)(base, config)
    assert m.accelerator.mixed_precision == "bf16"
    enc = Encoder(base.tokenizer, base.eos_id, 32, 10)
    batch = enc.collate(enc.encode([QAPair(q, "the author wrote fiction .") for q in QUESTIONS]))
    before = [p.detach().clone() for p in m.trainable_parameters()]
    stats = m.train_step(batch)
    assert all(isinstance(v, str) or v == v for v in stats.values())  # no NaN
    assert all(p.dtype == torch.float32 for p in m.trainable_parameters())
    assert any(not torch.equal(a, p) for a, p in zip(before, m.trainable_parameters()))
    assert {p.dtype for p in base.model.parameters()} == {torch.bfloat16}  # the shared LM is untouched
    with m.enabled(len(QUESTIONS)) as model, base.autocast():
        out = decode(model, *enc.prompts(QUESTIONS), base.eos_id, enc.pad_id, 5)
    assert out.ids.shape[0] == len(QUESTIONS)
    m.close()


def test_a_stop_while_the_gan_samples_ends_the_step_as_it_began():
    """Stop is honoured between the rollout's tokens: the step ends there, and the method is as it was before it."""
    base = _lively(make_base(1))
    config = preset_config("gan", **SMALL, batch_size=4, warmup_epochs=0, rollout="batch").validate()
    torch.manual_seed(0)
    m = get_method("gan")(base, config)
    enc = Encoder(base.tokenizer, base.eos_id, 32, 10)
    batch = enc.collate(enc.encode([QAPair(q, "the author wrote fiction .") for q in QUESTIONS]))
    passes: list[int] = []
    handle = base.model.register_forward_hook(lambda *_: passes.append(1))
    m.should_stop = lambda: len(passes) >= 3
    before = {k: v.clone() for k, v in m.state_tensors().items()}
    try:
        with pytest.raises(StepInterrupted):
            m.train_step(batch)
    finally:
        handle.remove()
    assert len(passes) == 3  # the prompts' pass and two tokens, then the stop: no fourth forward
    after = m.state_tensors()
    assert after.keys() == before.keys()
    for k, v in before.items():  # exactly as before (reward_mean is NaN before the first adversarial step)
        torch.testing.assert_close(after[k], v, rtol=0, atol=0, equal_nan=True)


def test_a_differentiated_bf16_pass_computes_its_attention_in_fp32(monkeypatch):
    """bf16 attention with gradients runs in fp32 (torch's CPU kernel is faster there); without, it stays bf16."""
    base = _bf16_base()
    seen: list[torch.dtype] = []
    real = torch.nn.functional.scaled_dot_product_attention

    def spy(query, *args, **kwargs):
        seen.append(query.dtype)
        return real(query, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    enc, ids, mask = _prompts(base)
    embeds = base.model.get_input_embeddings()(ids).detach().requires_grad_(True)
    with base.autocast():
        out = base.model(inputs_embeds=embeds, attention_mask=mask).logits
        out.float().sum().backward()
        assert embeds.grad is not None and set(seen) == {torch.float32}
        seen.clear()
        with torch.no_grad():
            base.model(input_ids=ids, attention_mask=mask)
    assert set(seen) == {torch.bfloat16}


def test_the_lm_heads_input_is_made_contiguous_and_changes_no_number():
    """A CPU model's head takes its (sliced) input contiguous: the same logits as the model without the hook."""
    model = make_arch_model("llama")
    reference = copy.deepcopy(model).eval()
    base = prepare_base_model(model, make_tokenizer(), "cpu", {"name": "llama"})
    enc, ids, mask = _prompts(base)
    seen = []
    handle = base.model.get_output_embeddings().register_forward_hook(lambda _m, args, _o: seen.append(args[0]))
    try:
        ours = base.model(input_ids=ids, attention_mask=mask, logits_to_keep=4).logits
    finally:
        handle.remove()
    assert seen and seen[0].is_contiguous()
    reference.set_attn_implementation(ATTENTION)  # the attention is compared in test_grouped_attention_…
    assert torch.equal(ours, reference(input_ids=ids, attention_mask=mask, logits_to_keep=4).logits)


@pytest.mark.slow
def test_freed_memory_is_kept_for_the_next_allocation():
    """After keep_freed_pages, a freed 64 MB tensor's pages serve the next one: few page faults (none timed)."""
    script = """
import resource, sys, torch
from gantune.cpu import keep_freed_pages
if sys.argv[1] == "keep":
    keep_freed_pages()
torch.empty(16_000_000).fill_(1.0)  # the first: its pages are new either way
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    torch.empty(16_000_000).fill_(1.0)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
    import subprocess
    import sys

    faults = {mode: int(subprocess.run([sys.executable, "-c", script, mode], capture_output=True, text=True,
                                       check=True).stdout.split()[-1]) for mode in ("keep", "default")}
    assert faults["default"] > 100_000  # 10 × 64 MB of fresh 4 KB pages: glibc hands each one back when freed
    # measured 15,625 against 156,260 on a quiet machine, 46,875 once beside a bench: most pages are reused
    assert faults["keep"] < faults["default"] / 2


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_linear_layers_use_their_packed_weight_only_without_gradients(precision):
    """Without gradients a frozen linear layer (bf16 or fp32) multiplies by its packed weight (oneDNN's layout, made
    once, made again when the weight changes in place): the plain product up to the precision's rounding; with
    gradients it is the plain product itself, and so is an fp32 product under autocast (which computes it in bf16)."""
    from gantune import cpu

    if not cpu._CAN_PACK:
        pytest.skip("this torch has no oneDNN packed linear")
    torch.manual_seed(0)
    base = _bf16_base() if precision == "bf16" else _lively(make_base(1))
    layer = next(m for m in base.model.modules() if type(m) is torch.nn.Linear and not hasattr(m, "_gantune_siblings"))
    dtype, tol = layer.weight.dtype, (2e-2 if precision == "bf16" else 1e-5)
    x = torch.randn(5, 3, layer.in_features, dtype=dtype)
    with torch.no_grad():
        packed = layer(x)
        assert id(layer.weight) in cpu._PACKED
        assert _rel_close(packed, torch.nn.functional.linear(x, layer.weight, layer.bias), tol)
        layer.weight.mul_(-2.0)  # changed in place: packed again
        assert _rel_close(layer(x), torch.nn.functional.linear(x, layer.weight, layer.bias), tol)
        if precision == "fp32":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                assert torch.equal(layer(x), torch.nn.functional.linear(x, layer.weight, layer.bias))
    y = x.clone().requires_grad_(True)
    assert torch.equal(layer(y), torch.nn.functional.linear(y, layer.weight, layer.bias))


# --- fewer, fatter operations without gradients (gantune.cpu 5 and 6) ----------------------------------------

def _rel_close(a: torch.Tensor, b: torch.Tensor, rtol: float) -> bool:
    """``a`` within ``rtol`` of ``b``, relative to ``b``'s largest magnitude."""
    return (a.float() - b.float()).abs().max().item() <= rtol * b.float().abs().max().item()


@pytest.mark.parametrize("arch", ["llama", "qwen2", "phi", "gemma"])
def test_without_levers_greedy_answers_and_logprobs_are_transformers(arch):
    """A CPU-prepared model (fused q/k/v and gate/up, one-kernel norms, grouped attention) decodes greedily the
    tokens transformers' ``generate`` picks with the model as transformers builds it, fp32; log-probabilities agree
    to a relative 1e-5."""
    torch.manual_seed(0)
    raw = make_arch_model(arch)
    with torch.no_grad():
        for p in raw.parameters():
            if p.dim() == 2:
                p.mul_(5.0)
    reference = copy.deepcopy(raw).eval()
    base = prepare_base_model(raw, make_tokenizer(), "cpu", {"name": arch})
    assert any(hasattr(m, "_gantune_siblings") for m in base.model.modules())
    enc, ids, mask = _prompts(base, QUESTIONS * 2)
    ours = decode(base.model, ids, mask, base.eos_id, enc.pad_id, 10)
    theirs = _hf(reference, ids, mask, base.eos_id, enc.pad_id, 10, 0.0)
    assert ours.ids.shape[1] >= 3
    assert torch.equal(ours.ids, theirs[:, :ours.ids.shape[1]])
    with torch.no_grad():
        forced = answer_logprobs(reference, ids, mask, ours.ids, ours.mask, 1.0)
    assert _rel_close(ours.logp, forced, 1e-5)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_fused_projections_give_each_layers_product_and_leave_training_alone(precision):
    """Without gradients q/k/v and gate/up come from one product each, equal to the layers' own (bf16: within its
    rounding); with gradients each layer computes its own, bit for bit, and the gradients are the plain ones."""
    base = _bf16_base() if precision == "bf16" else _lively(make_base(1))
    layer = base.model.model.layers[0]
    x = torch.randn(3, 5, layer.self_attn.q_proj.in_features, dtype=next(base.model.parameters()).dtype)
    real = torch.nn.functional.linear
    for names, parent in ((("q_proj", "k_proj", "v_proj"), layer.self_attn), (("gate_proj", "up_proj"), layer.mlp)):
        layers = [getattr(parent, n) for n in names]
        with torch.no_grad():
            fused = [m(x) for m in layers]
            plain = [real(x, m.weight, m.bias) for m in layers]
        rtol = 1e-5 if precision == "fp32" else 2e-2
        assert all(f.shape == p.shape and _rel_close(f, p, rtol) for f, p in zip(fused, plain))
        y = x.clone().requires_grad_(True)
        assert all(torch.equal(m(y), real(y, m.weight, m.bias)) for m in layers)


def test_fused_projections_count_one_product_and_follow_a_changed_weight(monkeypatch):
    """One product for the three of q/k/v; after a weight changes in place, the fused product follows it; a weight
    that needs a gradient turns the fusion off."""
    from gantune import cpu

    base = _lively(make_base(1))
    attn = base.model.model.layers[0].self_attn
    q, k, v = attn.q_proj, attn.k_proj, attn.v_proj
    x = torch.randn(2, 3, q.in_features)
    products = []
    counted = cpu.product
    monkeypatch.setattr(cpu, "product", lambda *a: products.append(a[1].shape[0]) or counted(*a))
    real = torch.nn.functional.linear
    with torch.no_grad():
        outs = [q(x), k(x), v(x)]
        assert products == [q.out_features + k.out_features + v.out_features]
        k.weight.mul_(2.0)
        assert _rel_close(k(x), real(x, k.weight, k.bias), 1e-5) and _rel_close(k(x), 2 * outs[1], 1e-5)
        products.clear()
        v.weight.requires_grad_(True)
        assert _rel_close(q(x), real(x, q.weight, q.bias), 1e-5) and products == [q.out_features]


def test_a_weight_sharing_copy_shares_the_fused_weights():
    """A method's copy of the LM (peft injects into it) shares the LM's weights, and so their concatenation too."""
    from gantune import cpu
    from gantune.methods.base import weight_sharing_copy

    base = _lively(make_base(1))
    twin = weight_sharing_copy(base.model)
    _, ids, mask = _prompts(base)
    with torch.no_grad():
        ours = base.model(input_ids=ids, attention_mask=mask).logits
        mine = {id(p) for p in base.model.parameters()}
        made = {k: id(v[1]) for k, v in cpu._FUSED.items() if k[0] in mine}
        assert torch.equal(twin(input_ids=ids, attention_mask=mask).logits, ours)
    assert made and {k: id(v[1]) for k, v in cpu._FUSED.items() if k[0] in mine} == made


@pytest.mark.parametrize("method", ["lora", "adapter-mle", "prefix-tuning"])
def test_a_tuned_models_no_grad_logits_are_its_plain_ones(method):
    """LoRA wraps q/v: its update is added to the fused base product's slice. A tuned model's logits without gradients
    (fused, one-kernel norms) are those with gradients on (each layer its own product), to a relative 1e-5."""
    base = _lively(make_base(1))
    m = _tuned(method, base)
    enc, ids, mask = _prompts(base)
    with m.enabled(len(ids)) as model:
        with torch.no_grad():
            fast = model(input_ids=ids, attention_mask=mask).logits
        with torch.enable_grad():
            plain = model(input_ids=ids, attention_mask=mask).logits.detach()
    assert _rel_close(fast, plain, 1e-5)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_one_kernel_rms_norm_gives_transformers_numbers(precision):
    base = _bf16_base() if precision == "bf16" else _lively(make_base(1))
    norm = base.model.model.norm
    assert "forward" in norm.__dict__
    x = 3 * torch.randn(4, 7, norm.weight.shape[0]).to(norm.weight.dtype)
    with torch.no_grad():
        assert torch.equal(norm(x), type(norm).forward(norm, x))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_one_query_attention_gives_the_fused_kernels_numbers(dtype):
    """A decode step's attention (one query a row, grouped heads, left padding masked) by two products: torch's fused
    kernel's numbers, to a relative 1e-5 in fp32 and bf16's rounding in bf16."""
    from gantune.cpu import one_query_attention

    torch.manual_seed(0)
    q, k, v = torch.randn(3, 6, 1, 8, dtype=dtype), torch.randn(3, 2, 11, 8, dtype=dtype), torch.randn(3, 2, 11, 8, dtype=dtype)
    mask = torch.ones(3, 1, 1, 11, dtype=torch.bool)
    mask[1, ..., :4] = mask[2, ..., :9] = False  # left padding
    want = torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask, scale=0.3,
                                                            enable_gqa=True)
    got = one_query_attention(q, k, v, mask, 0.3)
    assert got.dtype == dtype and _rel_close(got, want, 1e-5 if dtype == torch.float32 else 1e-2)


def test_one_query_attention_under_autocast_computes_as_autocast_does():
    """Under bf16 autocast the products run in bf16 whatever their inputs (autocast casts them): bf16 keys and values
    are used as they are, not copied to fp32 first, and give the numbers of the fp32 copies bit for bit; the fused
    kernel's within bf16's rounding."""
    from gantune.cpu import one_query_attention

    torch.manual_seed(0)
    q, k, v = (torch.randn(3, 6, 1, 8).bfloat16(), torch.randn(3, 2, 11, 8).bfloat16(),
               torch.randn(3, 2, 11, 8).bfloat16())
    mask = torch.ones(3, 1, 1, 11, dtype=torch.bool)
    mask[1, ..., :4] = False
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = one_query_attention(q, k, v, mask, 0.3)
        scores = torch.matmul(q.float().reshape(3, 2, 3, 8), k.float().transpose(-1, -2)).mul_(0.3)
        copies = torch.matmul(scores.masked_fill_(~mask, float("-inf")).softmax(-1), v.float()).reshape(3, 6, 1, 8)
    assert got.dtype == torch.bfloat16 and torch.equal(got, copies)
    want = torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask, scale=0.3,
                                                            enable_gqa=True)
    assert _rel_close(got, want, 2e-2)
