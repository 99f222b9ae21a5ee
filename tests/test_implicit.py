"""GAN v3 on the tiny model: the generator on any adapter, and the implicit discriminator (DDO, SPIN).

The implicit D's loss and gradient against a hand computation (each row scored alone), π_ref frozen
within a round and renewed between rounds, the GAN's warm-up being its adapter's own MLE step, the
default path's checkpoint names, and resumes of the new paths bit-identical to straight runs.
"""

from __future__ import annotations

import math

import pytest
import torch
from conftest import make_base
from safetensors.torch import load_file

from gantune.config import preset_config
from gantune.data import Encoder, QAPair
from gantune.errors import GantuneError
from gantune.methods import get_method
from gantune.methods.gan.implicit import implicit_d_loss, sequence_logprobs
from gantune.methods.gan.method import GanMethod
from gantune.runs import RunFolder
from gantune.scoring import answer_logprobs
from gantune.trainer import train

PAIRS = [
    QAPair("who ?", "the author ."),
    QAPair("who is the author of a book born in city ?", "her father was a writer and her mother was a writer ."),
    QAPair("what did his mother write ?", "fiction ."),
    QAPair("what genre did the writer of the novel write ?", "she wrote fiction and was known for it ."),
]
SMALL = dict(noise_dim=8, d_hidden=[16, 8, 4], virtual_tokens=4, lora_r=4, lora_alpha=8)


def _config(**overrides):
    values = dict(n=None, batch_size=4, max_new_tokens=8, max_prompt_tokens=32, warmup_epochs=0,
                  discriminator="implicit", **SMALL)
    values.update(overrides)
    return preset_config("gan", "improved", **values).validate()


def _batch(base, cfg, pairs=PAIRS):
    enc = Encoder(base.tokenizer, base.eos_id, cfg.max_prompt_tokens, cfg.max_new_tokens)
    return enc.collate(enc.encode(pairs))


def _no_autocast():
    return torch.autocast("cpu", enabled=False)


def _row_logprob(generator, batch, i: int, ids: torch.Tensor, mask: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """log π(answer | question) of row i alone (no padding anywhere), fed its own noise; with gradients."""
    prompt = batch.prompt_ids[i][batch.prompt_mask[i].bool()][None]
    answer = ids[i][mask[i].bool()][None]
    with generator.policy(noise[i:i + 1]) as model:
        return answer_logprobs(model, prompt, torch.ones_like(prompt), answer, torch.ones_like(answer)).sum()


# --- the implicit discriminator -------------------------------------------------------------------------

@pytest.mark.parametrize("loss", ["ddo", "spin"])
@pytest.mark.parametrize("adapter", ["m-tunable", "lora"])
def test_implicit_loss_and_gradient_match_a_hand_computation(adapter, loss):
    base = make_base()
    beta = 0.5
    cfg = _config(adapter=adapter, implicit_loss=loss, implicit_beta=beta, mle_weight=0.0, max_grad_norm=0.0,
                  adapter_init="default")
    torch.manual_seed(0)
    method = GanMethod(base, cfg)
    gen, batch = method.generator, _batch(base, cfg)
    method.start_epoch(0, [batch])  # round 1: π_ref is the generator as it is now
    rnd = method._round
    rows = rnd.rows_of(batch)
    assert rows.tolist() == [0, 1, 2, 3]
    fake_ids, fake_mask = rnd.fakes(rows)
    n = len(batch)
    with torch.no_grad():  # π_ref by hand, each row alone: what the round stored (y's recorded while sampling)
        ref_r = torch.stack([_row_logprob(gen, batch, i, batch.answer_ids, batch.answer_mask, rnd.noise) for i in range(n)])
        ref_y = torch.stack([_row_logprob(gen, batch, i, fake_ids, fake_mask, rnd.noise) for i in range(n)])
    torch.testing.assert_close(rnd.ref_real, ref_r, atol=1e-4, rtol=0)
    torch.testing.assert_close(rnd.ref_fake, ref_y, atol=1e-4, rtol=0)

    params = gen.trainable_parameters()
    torch.manual_seed(7)
    with torch.no_grad():  # π_θ moves away from π_ref, so that D is not zero
        for p in params:
            p.add_(0.3 * torch.randn_like(p))
    lp_r = [_row_logprob(gen, batch, i, batch.answer_ids, batch.answer_mask, rnd.noise) for i in range(n)]
    lp_y = [_row_logprob(gen, batch, i, fake_ids, fake_mask, rnd.noise) for i in range(n)]
    d_r = [beta * (float(a.detach()) - float(b)) for a, b in zip(lp_r, ref_r)]
    d_y = [beta * (float(a.detach()) - float(b)) for a, b in zip(lp_y, ref_y)]

    def sig(x: float) -> float:
        return 1.0 / (1.0 + math.exp(-x))

    if loss == "ddo":  # −log σ(D(q,r)) − log(1 − σ(D(q,y))), its derivatives by D(q,r) and D(q,y)
        want = sum(-math.log(sig(r)) - math.log(1.0 - sig(y)) for r, y in zip(d_r, d_y)) / n
        c_r = [-(1.0 - sig(r)) / n for r in d_r]
        c_y = [sig(y) / n for y in d_y]
    else:  # −log σ(D(q,r) − D(q,y))
        want = sum(-math.log(sig(r - y)) for r, y in zip(d_r, d_y)) / n
        c_r = [-(1.0 - sig(r - y)) / n for r, y in zip(d_r, d_y)]
        c_y = [-c for c in c_r]
    assert abs(want - math.log(2)) > 1e-3  # D is away from zero: the check has teeth
    grads = [torch.zeros_like(p) for p in params]
    for i in range(n):  # ∇L = Σ_i β · (∂L/∂D(q_i,r_i) ∇ log π(r_i) + ∂L/∂D(q_i,y_i) ∇ log π(y_i))
        for term, coeff in ((lp_r[i], c_r[i]), (lp_y[i], c_y[i])):
            for g, dg in zip(grads, torch.autograd.grad(term, params)):
                g += beta * coeff * dg

    stats = method.implicit_step(batch)  # the method's own step on the same θ (its gradients stay on the params)
    assert stats["d_loss"] == pytest.approx(want, rel=1e-4, abs=1e-5)
    assert stats["g_loss"] == stats["d_loss"] and "mle_loss" not in stats  # --mle-weight 0
    assert stats["d_margin"] == pytest.approx(sum(r - y for r, y in zip(d_r, d_y)) / n, rel=1e-4, abs=1e-5)
    assert stats["d_acc_pairs"] == sum(r > y for r, y in zip(d_r, d_y)) / n
    assert stats["round"] == 1
    for p, g in zip(params, grads):
        torch.testing.assert_close(p.grad, g, rtol=1e-3, atol=1e-6)
    assert any(float(g.abs().max()) > 1e-4 for g in grads)


def test_implicit_loss_by_hand_on_numbers():
    real, fake = torch.tensor([0.5, -1.0]), torch.tensor([0.2, 0.3])
    s = torch.sigmoid
    ddo = (-torch.log(s(real)) - torch.log(1 - s(fake))).mean()
    spin = (-torch.log(s(real - fake))).mean()
    torch.testing.assert_close(implicit_d_loss("ddo", real, fake), ddo)
    torch.testing.assert_close(implicit_d_loss("spin", real, fake), spin)
    assert implicit_d_loss("spin", torch.zeros(3), torch.zeros(3)) == pytest.approx(math.log(2))


@pytest.mark.parametrize("adapter", ["m-tunable", "prompt-tuning"])
def test_pi_ref_is_frozen_within_a_round_and_renewed_between_rounds(adapter):
    """Round 1 starts at the warm-up's end; its samples and π_ref's log-likelihoods stay put for its two epochs
    while the generator moves; round 2 takes π_ref ← π_θ and samples anew."""
    base = make_base()
    cfg = _config(adapter=adapter, warmup_epochs=1, epochs=4, round_epochs=2, adapter_init="default", lr=0.05,
                  adv_lr=0.05, batch_size=2)
    torch.manual_seed(0)
    method = GanMethod(base, cfg)
    gen = method.generator
    halves = [_batch(base, cfg, PAIRS[:2]), _batch(base, cfg, PAIRS[2:])]

    def now(rnd, ids, mask):  # the generator's log-likelihoods as it is now, over the round's rows
        return sequence_logprobs(gen, _no_autocast, rnd.prompt_ids, rnd.prompt_mask, [(ids, mask)], rnd.noise, 4)[0]

    method.start_epoch(0, halves)  # the warm-up: MLE, no round
    assert method._round is None
    assert method.train_step(halves[0])["phase"] == "mle" and method.sampled_answers() == []
    method.train_step(halves[1])
    method.start_epoch(1, halves)
    first = method._round
    assert first.index == 0 and len(first.fake_ids) == 4
    torch.testing.assert_close(first.ref_real, now(first, first.answer_ids, first.answer_mask), atol=1e-4, rtol=0)
    torch.testing.assert_close(first.ref_fake, now(first, first.fake_ids, first.fake_mask), atol=1e-4, rtol=0)
    frozen = {k: v.clone() for k, v in first.tensors("r").items()}

    s = method.train_step(halves[0])
    assert s["phase"] == "adversarial" and s["round"] == 1
    assert abs(s["d_real"]) < 1e-4 and abs(s["d_fake"]) < 1e-4  # θ = π_ref at the round's start: D is 0
    assert len(method.sampled_answers()) == 2
    method.train_step(halves[1])
    method.start_epoch(2, halves[::-1])  # the round's second epoch, its batches in another order
    assert method._round is first
    s = method.train_step(halves[1])
    assert s["round"] == 1 and abs(s["d_real"]) > 1e-3  # θ has moved; π_ref has not
    assert all(torch.equal(v, frozen[k]) for k, v in first.tensors("r").items())
    assert not torch.allclose(first.ref_real, now(first, first.answer_ids, first.answer_mask), atol=1e-3)
    method.train_step(halves[0])

    method.start_epoch(3, halves)  # round 2: π_ref ← π_θ, every question sampled again
    second = method._round
    assert second is not first and second.index == 1
    torch.testing.assert_close(second.ref_real, now(second, second.answer_ids, second.answer_mask), atol=1e-4, rtol=0)
    torch.testing.assert_close(second.ref_fake, now(second, second.fake_ids, second.fake_mask), atol=1e-4, rtol=0)
    assert not torch.allclose(second.ref_real, first.ref_real, atol=1e-3)
    s = method.train_step(halves[0])
    assert s["round"] == 2 and abs(s["d_real"]) < 1e-4


def test_a_question_outside_the_round_is_a_bug():
    base = make_base()
    cfg = _config()
    method = GanMethod(base, cfg)
    method.start_epoch(0, [_batch(base, cfg, PAIRS[:2])])
    with pytest.raises(RuntimeError, match="no answer sampled in this round"):
        method.train_step(_batch(base, cfg, PAIRS[2:]))


@pytest.mark.parametrize("bad", [dict(samples_per_question=2, baseline="mean"), dict(implicit_beta=0.0),
                                 dict(implicit_beta=float("nan")), dict(round_epochs=0), dict(implicit_loss="dpo"),
                                 dict(adapter="full")])
def test_implicit_and_adapter_refusals(bad):
    with pytest.raises(GantuneError):
        _config(**bad)


# --- the generator on any adapter ------------------------------------------------------------------------

@pytest.mark.parametrize("adapter, method", [("m-tunable", "adapter-mle"), ("lora", "lora"),
                                             ("prompt-tuning", "prompt-tuning"), ("prefix-tuning", "prefix-tuning")])
def test_the_gans_warm_up_is_its_adapters_own_mle_step(adapter, method):
    """The GAN holds the MLE method of its adapter as its generator: built, initialised and stepped by that code."""
    cfg = _config(adapter=adapter, discriminator="hidden", warmup_epochs=1, epochs=2, adapter_init="default")
    batch = _batch(make_base(), cfg)
    torch.manual_seed(0)
    gan = GanMethod(make_base(), cfg)
    torch.manual_seed(0)
    alone = get_method(method)(make_base(), cfg)
    assert type(gan.generator) is get_method(method)
    gan.start_epoch(0, [batch])
    torch.manual_seed(1)
    s_gan = gan.train_step(batch)
    torch.manual_seed(1)
    s_alone = alone.train_step(batch)
    assert s_gan == {**s_alone, "phase": "mle"}
    a, b = gan.generator.state_tensors(), alone.state_tensors()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    d_params = list(gan.discriminator.parameters())
    assert [id(p) for p in gan.trainable_parameters()] == [id(p) for p in [*gan.generator.trainable_parameters(),
                                                                            *d_params]]
    assert gan.adapter_norm() == gan.generator.adapter_norm() > 0
    gan.close()
    alone.close()


@pytest.mark.parametrize("adapter", ["lora", "prompt-tuning"])
@pytest.mark.parametrize("discriminator", ["hidden", "implicit"])
def test_a_peft_generator_saves_loads_and_answers_as_it_trained(adapter, discriminator, tmp_path):
    base = make_base()
    cfg = _config(adapter=adapter, discriminator=discriminator, lr=0.05, adv_lr=0.05)
    torch.manual_seed(0)
    method = GanMethod(base, cfg)
    batch = _batch(base, cfg)
    method.start_epoch(0, [batch])
    before = {k: v.clone() for k, v in method.generator.state_tensors().items() if k.startswith("peft.")}
    for _ in range(2):
        method.train_step(batch)
    after = method.generator.state_tensors()
    assert any(not torch.equal(after[k], v) for k, v in before.items())  # the adversarial steps moved the adapter
    method.save_pretrained(tmp_path)
    assert (tmp_path / "discriminator.safetensors").is_file() == (discriminator != "implicit")
    fresh = make_base()
    loaded = GanMethod.from_pretrained(fresh, tmp_path, cfg)
    with method.enabled(len(batch)) as model:
        want = answer_logprobs(model, batch.prompt_ids, batch.prompt_mask, batch.answer_ids, batch.answer_mask)
    with loaded.enabled(len(batch)) as model:
        got = answer_logprobs(model, batch.prompt_ids, batch.prompt_mask, batch.answer_ids, batch.answer_mask)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    assert loaded.eval_noise() is None and method.eval_noise() is None  # a peft adapter takes no noise
    method.close()
    loaded.close()


def test_the_default_gans_checkpoint_keeps_its_names():
    """M_tunable and the explicit D write the checkpoint tensors they always did: older runs resume."""
    base = make_base()
    cfg = _config(discriminator="hidden", rollout="epoch")
    method = GanMethod(base, cfg)
    halves = [_batch(base, cfg, PAIRS[:2]), _batch(base, cfg, PAIRS[2:])]
    method.start_epoch(0, halves)
    method.train_step(halves[0])
    names = method.state_tensors()
    assert {k.split(".")[0] for k in names} == {"adapter", "opt_g", "discriminator", "opt_d", "reward_mean", "rollout"}
    assert method.eval_noise() == "zeros"


def test_the_adversarial_rate_follows_a_warm_up_here_or_in_the_run_started_from():
    base = make_base()
    cfg = _config(lr=0.01, adv_lr=0.001)
    batches = [_batch(base, cfg)]
    plain = GanMethod(base, cfg)
    plain.start_epoch(0, batches)
    assert plain.generator.optimizer.param_groups[0]["lr"] == 0.01  # no warm-up anywhere: the one rate
    started = GanMethod(base, _config(lr=0.01, adv_lr=0.001, init_from="runs/warm-up"))
    started.start_epoch(0, batches)
    assert started.generator.optimizer.param_groups[0]["lr"] == 0.001


# --- resumes of the new paths ----------------------------------------------------------------------------

def _run_config(data, out, **overrides):
    # 6 training pairs in batches of 4: 2 steps an epoch, no validation (too few pairs)
    values = dict(data=str(data), n=12, train_fraction=0.5, seed=3, out=str(out), device="cpu", epochs=3,
                  batch_size=4, max_new_tokens=8, max_prompt_tokens=32, warmup_epochs=1, **SMALL)
    values.update(overrides)
    return preset_config("gan", "improved", **values)


def _no_timing(record: dict) -> dict:
    return {k: v for k, v in record.items()
            if not (k.endswith("seconds") or k in ("tokens_per_s", "memory_mb", "peak_memory_mb"))}


@pytest.mark.parametrize("settings", [
    dict(discriminator="implicit", round_epochs=2, warmup_epochs=0),
    dict(discriminator="implicit", implicit_loss="spin", adapter="prompt-tuning", lr=0.01, adv_lr=0.005),
    dict(adapter="lora", lr=5e-4, adv_lr=2.5e-4),
    dict(adapter="prefix-tuning", discriminator="implicit", rollout_temperature=0.7),
], ids=["implicit-two-epoch-rounds", "spin-prompt", "explicit-lora", "implicit-prefix-cold"])
def test_the_new_paths_resume_bit_identically(settings, tiny_data, tmp_path):
    """Stopped mid-epoch (mid-round for the implicit D) and resumed: the same weights and records as a straight run."""
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(_run_config(tiny_data, straight, **settings), base=make_base())
    done = []
    first = train(_run_config(tiny_data, resumed, **settings), base=make_base(), on_step=done.append,
                  should_stop=lambda: len(done) >= 3)
    assert first.status == "stopped" and first.steps == 3
    second = train(_run_config(tiny_data, resumed, **settings), base=make_base(), resume=True)
    assert second.status == "completed" and second.steps == 6
    a, b = (load_file(RunFolder(r).adapter_dir / "adapter_model.safetensors") for r in (straight, resumed))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ma, mb = (RunFolder(r).read_metrics() for r in (straight, resumed))
    assert [_no_timing(m) for m in ma] == [_no_timing(m) for m in mb]
    assert any(m["phase"] == "adversarial" for m in ma)
    if settings.get("discriminator") == "implicit":
        rounds = [1, 1, 1, 1, 2, 2] if settings.get("round_epochs") == 2 else [1, 1, 2, 2]  # a round an epoch
        assert [m.get("round") for m in ma if m["phase"] == "adversarial"] == rounds
