"""The GAN method: M_tunable, the discriminators, the policy-gradient pieces and GanMethod itself."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from conftest import make_base
from safetensors.torch import load_file

from gantune.config import preset_config
from gantune.data import Encoder, QAPair
from gantune.errors import GantuneError
from gantune.inference import answer_questions
from gantune.methods import get_method
from gantune.methods.gan.adapter import CONFIG_NAME, AdapterConfig, MTunable
from gantune.methods.gan.discriminator import EmbeddingDiscriminator, ThesisDiscriminator
from gantune.methods.gan.method import GanMethod
from gantune.methods.gan.policy import advantages, policy_gradient_loss, thesis_logprobs
from gantune.scoring import answer_logprobs, mle_loss

PAIRS = [
    QAPair("who ?", "the author ."),
    QAPair("who is the author of a book born in city ?", "her father was a writer and her mother was a writer ."),
    QAPair("what did his mother write ?", "fiction ."),
    QAPair("what genre did the writer of the novel write ?", "she wrote fiction and was known for it ."),
]
QUESTIONS = [p.question for p in PAIRS]


def _config(**overrides):
    # the adversarial step from the first step (no MLE warm-up), sampled per step: what these unit tests drive
    values = dict(n=None, batch_size=4, max_new_tokens=8, max_prompt_tokens=32, noise_dim=8, d_hidden=[16, 8, 4],
                  warmup_epochs=0, rollout="batch")
    values.update(overrides)
    preset = values.pop("preset", "improved")
    return preset_config("gan", preset, **values).validate()


def _batch(base, cfg, pairs=PAIRS):
    enc = Encoder(base.tokenizer, base.eos_id, cfg.max_prompt_tokens, cfg.max_new_tokens)
    return enc.collate(enc.encode(pairs))


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _plain_logits(lm, ids, mask):
    with torch.no_grad():
        return lm(input_ids=ids, attention_mask=mask).logits


# --- M_tunable ------------------------------------------------------------------------------------

def _adapter(init="default", d=32, noise=8, seed=0):
    torch.manual_seed(seed)
    return MTunable(AdapterConfig(embed_dim=d, noise_dim=noise, init=init))


def test_adapter_output_shape_equals_input():
    ad = _adapter()
    x = torch.randn(3, 5, 32)
    assert ad(x).shape == x.shape
    with ad.noise_set(ad.sample_noise(3)):
        assert ad(x).shape == x.shape


def test_adapter_default_widths_and_hidden_override():
    ad = _adapter()
    assert [(x.in_features, x.out_features) for x in ad.layers] == [(40, 16), (16, 8), (8, 16), (16, 32)]
    ad = MTunable(AdapterConfig(embed_dim=32, noise_dim=8, hidden=[12, 6]))
    assert [(x.in_features, x.out_features) for x in ad.layers] == [(40, 12), (12, 6), (6, 12), (12, 32)]


def test_zero_init_adapter_is_the_identity():
    ad = _adapter(init="zero")
    x = torch.randn(2, 4, 32)
    with ad.noise_set(ad.sample_noise(2)):
        assert torch.equal(ad(x), x)
    assert not torch.equal(_adapter(init="default")(x), x)


def test_noise_batch_mismatch_raises():
    ad = _adapter()
    with ad.noise_set(ad.sample_noise(3)):
        with pytest.raises(ValueError, match="noise is set for 3 sequences but 2 came in"):
            ad(torch.randn(2, 4, 32))


def test_noise_width_mismatch_raises():
    ad = _adapter(noise=8)
    with ad.noise_set(torch.randn(2, 5)):
        with pytest.raises(RuntimeError):
            ad(torch.randn(2, 4, 32))


def test_noise_set_restores_the_previous_noise():
    ad = _adapter()
    outer, inner = ad.sample_noise(2), ad.sample_noise(2)
    with ad.noise_set(outer):
        with ad.noise_set(inner):
            assert ad.noise is inner
        assert ad.noise is outer
    assert ad.noise is None


def test_the_same_noise_vector_is_used_at_every_position():
    ad = _adapter()
    x = torch.randn(2, 6, 32)
    x[:, 4] = x[:, 1]  # two positions with the same embedding
    z = ad.sample_noise(2)
    with ad.noise_set(z):
        full = ad(x)
        # each position alone (as generation with the KV cache feeds it) gives the same result
        for t in range(6):
            assert torch.allclose(ad(x[:, t : t + 1])[:, 0], full[:, t], atol=1e-6)
    assert torch.allclose(full[:, 4], full[:, 1], atol=1e-6)
    # by hand: e + W4 φ(W3 φ(W2 φ(W1 [e ; z_b])))
    h = torch.cat([x, z[:, None, :].expand(2, 6, 8)], dim=-1)
    for layer in ad.layers[:-1]:
        h = torch.nn.functional.leaky_relu(layer(h), 0.01)
    assert torch.allclose(full, x + ad.layers[-1](h), atol=1e-6)
    # different rows' noise matters: the same embeddings with swapped noise give swapped outputs
    with ad.noise_set(z.flip(0)):
        swapped = ad(x.flip(0))
    assert torch.allclose(swapped, full.flip(0), atol=1e-6)
    with ad.noise_set(torch.zeros_like(z)):
        assert not torch.allclose(ad(x), full)


def test_no_noise_means_zero_noise():
    ad = _adapter()
    x = torch.randn(2, 3, 32)
    with ad.noise_set(torch.zeros(2, 8)):
        zeros = ad(x)
    assert torch.equal(ad(x), zeros)


def test_attach_changes_the_lm_and_removal_restores_it(base):
    ids = torch.tensor([[1, 7, 8, 9, 10, 4]])
    mask = torch.ones_like(ids)
    before = _plain_logits(base.model, ids, mask)
    weights = copy.deepcopy(base.model.state_dict())
    ad = _adapter(init="default")
    handle = ad.attach(base.model)
    try:
        attached = _plain_logits(base.model, ids, mask)
    finally:
        handle.remove()
    after = _plain_logits(base.model, ids, mask)
    assert not torch.allclose(attached, before)
    assert torch.equal(after, before)
    assert len(base.model.get_input_embeddings()._forward_hooks) == 0
    assert all(torch.equal(v, weights[k]) for k, v in base.model.state_dict().items())


def test_attached_adapter_sees_the_embeddings(base):
    """The hooked LM equals the LM fed (embeddings + adapter(embeddings)) as inputs_embeds."""
    ids = torch.tensor([[1, 7, 8, 9, 10, 4]])
    ad = _adapter(init="default")
    with torch.no_grad():
        e = base.model.get_input_embeddings()(ids)
        expected = base.model(inputs_embeds=ad(e)).logits
        handle = ad.attach(base.model)
        try:
            got = base.model(input_ids=ids).logits
        finally:
            handle.remove()
    assert torch.allclose(got, expected, atol=1e-6)


def test_adapter_save_and_load_alone(tmp_path):
    ad = MTunable(AdapterConfig(embed_dim=32, noise_dim=8, hidden=[12, 6], init="default"))
    ad.save_pretrained(tmp_path / "a")
    assert json.loads((tmp_path / "a" / CONFIG_NAME).read_text())["hidden"] == [12, 6]
    loaded = MTunable.from_pretrained(tmp_path / "a")
    assert loaded.config == ad.config
    assert all(torch.equal(v, ad.state_dict()[k]) for k, v in loaded.state_dict().items())


# --- discriminators -------------------------------------------------------------------------------

def _discriminators(base):
    torch.manual_seed(0)
    emb = EmbeddingDiscriminator(base.model.get_input_embeddings(), [16, 8, 4], max_answer_tokens=8)
    thesis = ThesisDiscriminator(seq_len=40, hidden=[16, 8, 4], pad_id=base.tokenizer.pad_token_id)
    return [emb, thesis]


@pytest.mark.parametrize("which", [0, 1], ids=["embedding", "thesis"])
def test_discriminator_returns_one_logit_a_row(base, which):
    d = _discriminators(base)[which]
    batch = _batch(base, _config())
    with torch.no_grad():
        p = d(batch.prompt_ids, batch.prompt_mask, batch.answer_ids, batch.answer_mask)
    assert p.shape == (len(PAIRS),) and torch.isfinite(p).all()
    assert len(set(p.tolist())) > 1  # rows differ


@pytest.mark.parametrize("which", [0, 1], ids=["embedding", "thesis"])
def test_discriminator_ignores_padding(base, which):
    d = _discriminators(base)[which]
    batch = _batch(base, _config())
    assert (batch.prompt_mask == 0).any() and (batch.answer_mask == 0).any()
    with torch.no_grad():
        p = d(batch.prompt_ids, batch.prompt_mask, batch.answer_ids, batch.answer_mask)
        g = torch.Generator().manual_seed(1)
        vocab = base.model.config.vocab_size
        noisy_p = torch.where(batch.prompt_mask.bool(), batch.prompt_ids,
                              torch.randint(0, vocab, batch.prompt_ids.shape, generator=g))
        noisy_a = torch.where(batch.answer_mask.bool(), batch.answer_ids,
                              torch.randint(0, vocab, batch.answer_ids.shape, generator=g))
        assert not torch.equal(noisy_p, batch.prompt_ids) and not torch.equal(noisy_a, batch.answer_ids)
        q = d(noisy_p, batch.prompt_mask, noisy_a, batch.answer_mask)
        # ... but a real token change does change the score
        changed = batch.answer_ids.clone()
        changed[0, 0] = (changed[0, 0] + 5) % vocab
        r = d(batch.prompt_ids, batch.prompt_mask, changed, batch.answer_mask)
    assert torch.allclose(p, q, atol=1e-6)
    assert not torch.allclose(p[0], r[0])


def test_embedding_discriminator_does_not_own_the_lm_embedding(base):
    d = _discriminators(base)[0]
    emb_weight = base.model.get_input_embeddings().weight
    assert all(p is not emb_weight for p in d.parameters())
    assert sum(p.numel() for p in d.parameters()) == sum(p.numel() for p in d.net.parameters())
    assert all(k.startswith("net.") for k in d.state_dict())


def test_embedding_discriminator_does_not_fire_the_adapter_hook(base):
    d = _discriminators(base)[0]
    batch = _batch(base, _config())
    calls = []
    handle = base.model.get_input_embeddings().register_forward_hook(lambda *a: calls.append(1))
    try:
        d(batch.prompt_ids, batch.prompt_mask, batch.answer_ids, batch.answer_mask)
    finally:
        handle.remove()
    assert calls == []


# --- policy pieces --------------------------------------------------------------------------------

def test_answer_logprobs_match_each_row_alone(base):
    cfg = _config()
    batch = _batch(base, cfg)
    assert len(set(batch.prompt_mask.sum(1).tolist())) > 1 and len(set(batch.answer_mask.sum(1).tolist())) > 1
    with torch.no_grad():
        logp = answer_logprobs(base.model, batch.prompt_ids, batch.prompt_mask, batch.answer_ids, batch.answer_mask)
    assert logp.shape == batch.answer_ids.shape and logp.dtype == torch.float32
    for row in range(len(PAIRS)):
        p = batch.prompt_ids[row][batch.prompt_mask[row].bool()]
        a = batch.answer_ids[row][batch.answer_mask[row].bool()]
        with torch.no_grad():
            alone = base.model(torch.cat([p, a])[None]).logits[0].log_softmax(-1)
        expected = alone[len(p) - 1 : len(p) - 1 + len(a)].gather(-1, a[:, None])[:, 0]
        assert torch.allclose(logp[row, : len(a)], expected, atol=1e-5), f"row {row}"
        assert (logp[row, len(a):] == 0).all()


def test_answer_logprobs_carry_gradients_to_the_adapter(base):
    cfg = _config(adapter_init="default")
    batch = _batch(base, cfg)
    ad = _adapter(init="default", noise=cfg.noise_dim)
    handle = ad.attach(base.model)
    try:
        with ad.noise_set(ad.sample_noise(len(batch))):
            logp = answer_logprobs(base.model, batch.prompt_ids, batch.prompt_mask, batch.answer_ids, batch.answer_mask)
    finally:
        handle.remove()
    logp.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in ad.parameters())
    assert all(p.grad is None for p in base.model.parameters())


def test_policy_gradient_loss_gradient_by_hand():
    logp = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -0.7, -9.0]], requires_grad=True)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    adv = torch.tensor([0.5, -2.0], requires_grad=True)
    loss = policy_gradient_loss(logp, mask, adv)
    n = 5
    expected_loss = -(0.5 * (-1 - 2 - 0.5) + -2.0 * (-0.3 - 0.7)) / n
    assert loss.item() == pytest.approx(expected_loss)
    loss.backward()
    expected_grad = -adv.detach()[:, None] * mask / n
    assert torch.allclose(logp.grad, expected_grad)
    assert adv.grad is None  # the advantage is a constant


def test_policy_gradient_loss_with_empty_mask_is_zero():
    logp = torch.randn(2, 3, requires_grad=True)
    loss = policy_gradient_loss(logp, torch.zeros(2, 3, dtype=torch.long), torch.ones(2))
    assert loss.item() == 0.0


def test_mean_baseline_advantages_sum_to_zero():
    r = torch.tensor([0.1, 0.9, 0.4, 0.6])
    adv = advantages(r, "mean", running_mean=0.3, normalize=False)
    assert abs(float(adv.sum())) < 1e-6
    assert torch.allclose(adv, r - r.mean())


def test_no_baseline_keeps_rewards():
    r = torch.tensor([0.1, 0.9, 0.4])
    adv = advantages(r, "none", running_mean=0.5, normalize=False)
    assert torch.equal(adv, r)
    adv[0] = 5.0
    assert r[0] == pytest.approx(0.1)  # a copy, not the rewards themselves


def test_one_row_batch_uses_the_running_mean():
    r = torch.tensor([0.8])
    assert torch.allclose(advantages(r, "mean", running_mean=0.3, normalize=False), torch.tensor([0.5]))
    assert torch.allclose(advantages(r, "mean", running_mean=None, normalize=False), torch.tensor([0.8]))


def test_normalized_advantages_have_unit_std():
    r = torch.tensor([0.1, 0.9, 0.4, 0.6])
    adv = advantages(r, "mean", None, normalize=True)
    assert float(adv.std()) == pytest.approx(1.0, abs=1e-5)
    assert abs(float(adv.sum())) < 1e-5


def test_mle_loss_is_mean_nll_of_masked_tokens():
    logp = torch.tensor([[-1.0, -2.0, -7.0], [-0.5, -11.0, -13.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert mle_loss(logp, mask).item() == pytest.approx((1.0 + 2.0 + 0.5) / 3)


def test_thesis_logprobs_shape_and_mask(base):
    batch = _batch(base, _config())
    torch.manual_seed(0)
    with torch.no_grad():
        logp = thesis_logprobs(base.model, batch.prompt_ids, batch.prompt_mask, batch.answer_ids, batch.answer_mask)
    assert logp.shape == batch.answer_ids.shape
    assert (logp[batch.answer_mask == 0] == 0).all()
    assert (logp[batch.answer_mask == 1] <= 0).all()


# --- GanMethod ------------------------------------------------------------------------------------

def _method(base, **overrides) -> tuple[GanMethod, object]:
    cfg = _config(**overrides)
    torch.manual_seed(0)
    return GanMethod(base, cfg), _batch(base, cfg)


def test_gan_is_registered():
    assert get_method("gan") is GanMethod


def test_zero_init_method_answers_exactly_like_the_base(base):
    method, batch = _method(base)
    ids = torch.cat([batch.prompt_ids, batch.answer_ids], 1)
    mask = torch.cat([batch.prompt_mask, batch.answer_mask], 1)
    plain = _plain_logits(base.model, ids, mask)
    with method.enabled(len(batch)):
        tuned = _plain_logits(base.model, ids, mask)
    assert torch.equal(tuned, plain)
    assert answer_questions(base, QUESTIONS, 8, method=method) == answer_questions(base, QUESTIONS, 8)


def test_train_steps_leave_the_lm_bit_identical(base):
    method, batch = _method(base, lr=0.01, d_lr=0.01)
    lm_before = copy.deepcopy(base.model.state_dict())
    adapter_before, d_before = _snapshot(method.generator.adapter), _snapshot(method.discriminator)
    stats = [method.train_step(batch) for _ in range(3)]
    lm_after = base.model.state_dict()
    assert lm_after.keys() == lm_before.keys()
    for k, v in lm_before.items():
        assert torch.equal(lm_after[k], v), f"LM tensor {k} changed"
    for k, v in method.generator.adapter.state_dict().items():
        assert not torch.equal(v, adapter_before[k]), f"adapter tensor {k} did not change"
    for k, v in method.discriminator.state_dict().items():
        assert not torch.equal(v, d_before[k]), f"discriminator tensor {k} did not change"
    assert len(base.model.get_input_embeddings()._forward_hooks) == 0  # the hook is gone after a step
    for module in (method.generator.adapter, method.discriminator):  # the last updates' gradients, clipped
        norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in module.parameters() if p.grad is not None]))
        assert float(norm) <= method.config.max_grad_norm + 1e-5
    for s in stats:
        for key in ("g_loss", "d_loss", "pg_loss", "reward_mean", "d_acc_real", "d_acc_fake", "grad_norm", "d_grad_norm"):
            assert isinstance(s[key], float) and s[key] == s[key] and abs(s[key]) != float("inf"), key
        assert s["grad_norm"] > 0 and s["d_grad_norm"] > 0
        assert 0.0 <= s["d_acc_real"] <= 1.0 and 0.0 <= s["d_acc_fake"] <= 1.0
        assert s["d_loss"] > 0 and s["kl"] == s["kl"]
        assert 1 <= s["answer_len_mean"] <= 8
        assert s["phase"] == "adversarial" and s["mle_loss"] > 0  # the MLE term is kept (imitation replay)
        assert s["g_loss"] == pytest.approx(s["pg_loss"] + s["mle_loss"], rel=1e-5, abs=1e-6)


def test_only_adapter_and_discriminator_are_trainable(base):
    method, batch = _method(base)
    method.train_step(batch)
    trainable = {id(p) for p in method.trainable_parameters()}
    assert trainable == {id(p) for p in [*method.generator.adapter.parameters(), *method.discriminator.parameters()]}
    assert not any(p.requires_grad for p in base.model.parameters())
    assert all(p.requires_grad for p in method.trainable_parameters())
    lm_ids = {id(p) for p in base.model.parameters()}
    assert not trainable & lm_ids
    g_ids = {id(p) for group in method.generator.opt_g.param_groups for p in group["params"]}
    d_ids = {id(p) for group in method.opt_d.param_groups for p in group["params"]}
    assert g_ids == {id(p) for p in method.generator.adapter.parameters()}
    assert d_ids == {id(p) for p in method.discriminator.parameters()}
    assert method.generator.opt_g.param_groups[0]["lr"] == method.config.lr  # no warm-up: one learning rate throughout
    assert method.opt_d.param_groups[0]["lr"] == method.config.d_lr


def test_adapter_norm_is_the_l2_norm_of_the_adapter(base):
    method, batch = _method(base, adapter_init="default")
    with torch.no_grad():
        expected = torch.sqrt(sum((p.double() ** 2).sum() for p in method.generator.adapter.parameters()))
    assert method.adapter_norm() == pytest.approx(float(expected))


def test_mle_weight_adds_the_mle_term(base):
    method, batch = _method(base, mle_weight=0.5)
    s = method.train_step(batch)
    assert s["mle_loss"] > 0
    assert s["g_loss"] == pytest.approx(s["pg_loss"] + 0.5 * s["mle_loss"], rel=1e-5, abs=1e-7)


def test_one_row_batches_update_the_running_mean(base):
    method, batch = _method(base, batch_size=1)
    one = _batch(base, method.config, PAIRS[:1])
    assert method.reward_mean is None
    s1 = method.train_step(one)
    assert method.reward_mean == pytest.approx(s1["reward_mean"])
    s2 = method.train_step(one)
    assert method.reward_mean == pytest.approx(0.9 * s1["reward_mean"] + 0.1 * s2["reward_mean"])


def test_thesis_preset_runs_a_step(base):
    method, batch = _method(base, preset="thesis", batch_size=2, max_new_tokens=8, max_prompt_tokens=32)
    cfg = method.config
    assert cfg.discriminator == "thesis" and cfg.resample_for_g and cfg.baseline == "none"
    assert isinstance(method.discriminator, ThesisDiscriminator)
    assert method.discriminator.seq_len == 40
    lm_before = copy.deepcopy(base.model.state_dict())
    before = _snapshot(method.generator.adapter)
    s = method.train_step(batch)
    assert all(v == v and abs(v) != float("inf") for v in s.values() if isinstance(v, float))
    assert 0 <= s["reward_mean"] <= 1 and cfg.d_loss == "bce" and cfg.warmup_epochs == 0 and cfg.kl_coef == 0
    assert any(not torch.equal(v, before[k]) for k, v in method.generator.adapter.state_dict().items())
    assert all(torch.equal(v, lm_before[k]) for k, v in base.model.state_dict().items())


@pytest.mark.parametrize("mle_weight", [0.0, 0.5])
def test_thesis_estimator_runs_a_step(base, mle_weight):
    method, batch = _method(base, pg_estimator="thesis", mle_weight=mle_weight)
    assert method.config.mle_weight == mle_weight
    before = _snapshot(method.generator.adapter)
    s = method.train_step(batch)
    assert all(v == v and abs(v) != float("inf") for v in s.values() if isinstance(v, float))
    assert (s.get("mle_loss", 0) > 0) == (mle_weight > 0)
    assert any(not torch.equal(v, before[k]) for k, v in method.generator.adapter.state_dict().items())


def test_save_and_load_pretrained(base, tmp_path):
    method, batch = _method(base, lr=0.05, d_lr=0.01)
    for _ in range(3):
        method.train_step(batch)
    folder = tmp_path / "adapter"
    method.save_pretrained(folder)
    assert (folder / "adapter_config.json").is_file() and (folder / "adapter_model.safetensors").is_file()
    assert json.loads((folder / "adapter_config.json").read_text())["embed_dim"] == 32

    fresh_base = make_base()  # a separate copy of the same base model
    torch.manual_seed(123)  # a different init for everything the loader rebuilds
    loaded = GanMethod.from_pretrained(fresh_base, folder, method.config)
    for k, v in method.generator.adapter.state_dict().items():
        assert torch.equal(loaded.generator.adapter.state_dict()[k], v)
    for k, v in method.discriminator.state_dict().items():
        assert torch.equal(loaded.discriminator.state_dict()[k], v)
    tuned = answer_questions(base, QUESTIONS, 8, method=method)
    assert answer_questions(fresh_base, QUESTIONS, 8, method=loaded) == tuned

    alone = MTunable.from_pretrained(folder)
    assert alone.config == method.generator.adapter.config
    weights = load_file(folder / "adapter_model.safetensors")
    assert weights.keys() == method.generator.adapter.state_dict().keys()
    for k, v in alone.state_dict().items():
        assert torch.equal(v, method.generator.adapter.state_dict()[k])


def test_state_tensors_round_trip(base):
    method, batch = _method(base, lr=0.01)
    for _ in range(2):
        method.train_step(batch)
    tensors = method.state_tensors()
    assert any(k.startswith("opt_g.") for k in tensors) and any(k.startswith("opt_d.") for k in tensors)
    assert all(isinstance(v, torch.Tensor) for v in tensors.values())

    torch.manual_seed(99)
    other = GanMethod(make_base(), method.config)
    other.load_state_tensors(tensors)
    for a, b in ((method.generator.adapter, other.generator.adapter), (method.discriminator, other.discriminator)):
        a, b = a.state_dict(), b.state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)
    for oa, ob in ((method.generator.opt_g, other.generator.opt_g), (method.opt_d, other.opt_d)):
        sa, sb = oa.state_dict()["state"], ob.state_dict()["state"]
        assert sa.keys() == sb.keys() and len(sa) > 0
        for idx in sa:
            assert sa[idx].keys() == sb[idx].keys()
            for key in sa[idx]:
                assert torch.equal(torch.as_tensor(sa[idx][key]).float(), torch.as_tensor(sb[idx][key]).float())
    assert other.reward_mean == pytest.approx(method.reward_mean)
    assert other.state_tensors().keys() == tensors.keys()

    # and both continue identically from the same random state
    torch.manual_seed(5)
    s_a = method.train_step(batch)
    torch.manual_seed(5)
    s_b = other.train_step(batch)
    timing = {k for k in s_a if k.endswith("_seconds")}
    assert {k: v for k, v in s_a.items() if k not in timing} == {k: v for k, v in s_b.items() if k not in timing}
    a, b = method.generator.adapter.state_dict(), other.generator.adapter.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_state_tensors_before_any_step(base):
    method, _ = _method(base)
    tensors = method.state_tensors()
    other = GanMethod(make_base(), method.config)
    other.load_state_tensors(tensors)
    assert other.reward_mean is None


# --- GAN v2: the phases one by one ------------------------------------------------------------------

from gantune.methods.gan.discriminator import HiddenStateDiscriminator, d_loss, d_reward  # noqa: E402
from gantune.methods.gan.policy import clipped_policy_loss, sequence_kl  # noqa: E402
from gantune.methods.gan.rollout import frozen_pass, merge  # noqa: E402


def test_rollout_logprobs_are_the_policy_logprobs_of_the_sampled_tokens(base):
    """What the sampler records equals a teacher-forced pass over the same answers with the same noise."""
    method, batch = _method(base, adapter_init="default")
    torch.manual_seed(1)
    roll = method._rollout(batch)
    with method.generator._attached(roll.noise), torch.no_grad():
        again = answer_logprobs(base.model, roll.prompt_ids, roll.prompt_mask, roll.answer_ids, roll.answer_mask)
    assert roll.logp.shape == roll.answer_ids.shape and (roll.logp <= 0).all()
    assert torch.allclose(roll.logp, again, atol=1e-4)
    assert (roll.logp[roll.answer_mask == 0] == 0).all()


def test_k_samples_per_question_are_question_major(base):
    method, batch = _method(base, samples_per_question=3, baseline="loo")
    roll = method._rollout(batch)
    assert roll.answer_ids.shape[0] == 3 * len(batch)
    assert torch.equal(roll.prompt_ids[0::3], batch.prompt_ids) and torch.equal(roll.prompt_ids[2::3], batch.prompt_ids)
    s = method.train_step(batch)
    assert s["phase"] == "adversarial" and s["answer_tokens"] >= 3 * len(batch)


def test_loo_advantages_by_hand():
    rewards = torch.tensor([1.0, 2.0, 3.0, 4.0, 6.0, 8.0])
    adv = advantages(rewards, "loo", None, normalize=False, k=3)
    assert torch.allclose(adv, torch.tensor([-1.5, 0.0, 1.5, -3.0, 0.0, 3.0]))


def test_relativistic_loss_and_reward():
    real = torch.tensor([2.0, -1.0], requires_grad=True)
    fake = torch.tensor([0.5, 0.0, -3.0, 1.0], requires_grad=True)  # two samples per question
    loss = d_loss("relativistic", real, fake)
    loss.backward()
    diff = fake.detach() - real.detach().repeat_interleave(2)
    assert loss.item() == pytest.approx(float(torch.nn.functional.softplus(diff).mean()))
    # d/d fake of mean softplus(fake − real) is σ(fake − real) / n; real gets minus the sum over its samples
    assert torch.allclose(fake.grad, torch.sigmoid(diff) / 4)
    assert torch.allclose(real.grad, -(torch.sigmoid(diff) / 4).view(2, 2).sum(1))
    assert torch.allclose(d_reward("relativistic", real.detach(), fake.detach()), diff)
    assert torch.allclose(d_reward("bce", real.detach(), fake.detach()), torch.sigmoid(fake.detach()))


def test_sampled_kl_estimate_matches_the_exact_kl():
    """Σ_t log π − log π_ref over y ~ π estimates KL(π ‖ π_ref): checked on a 5-token vocabulary, 2 steps."""
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(5, generator=g) * 2, 0)
    q = torch.softmax(torch.randn(5, generator=g), 0)
    exact = 2 * float((p * (p / q).log()).sum())  # two independent positions
    y = torch.multinomial(p, 2 * 200_000, replacement=True, generator=g).view(-1, 2)
    estimate = sequence_kl(p.log()[y], q.log()[y], torch.ones_like(y)).mean()
    assert float(estimate) == pytest.approx(exact, rel=0.02)


def test_clipped_loss_equals_the_policy_gradient_on_policy_and_stops_beyond_the_clip():
    logp = torch.tensor([[-1.0, -2.0], [-0.5, -0.1]], requires_grad=True)
    mask = torch.tensor([[1, 1], [1, 0]])
    adv = torch.tensor([1.0, -2.0])
    loss, clipped = clipped_policy_loss(logp, logp.detach(), mask, adv, 0.2)
    (g_clip,) = torch.autograd.grad(loss, logp)
    (g_pg,) = torch.autograd.grad(policy_gradient_loss(logp, mask, adv), logp)
    assert torch.allclose(g_clip, g_pg) and float(clipped) == 0.0
    # ratio e^0.5 > 1.2 with a positive advantage: clipped, no gradient; ratio < 0.8 with a negative one: likewise
    old = logp.detach() - torch.tensor([[0.5, 0.0], [-0.5, 0.0]])
    loss, clipped = clipped_policy_loss(logp, old, mask, adv, 0.2)
    (g,) = torch.autograd.grad(loss, logp)
    assert g[0, 0] == 0 and g[1, 0] == 0 and g[0, 1] != 0
    assert float(clipped) == pytest.approx(2 / 3)


def test_hidden_state_discriminator_reads_the_frozen_lm_states(base):
    cfg = _config()
    batch = _batch(base, cfg)
    logp, states = frozen_pass(base.model, batch.prompt_ids, batch.prompt_mask, batch.answer_ids, batch.answer_mask)
    assert states.shape == (*batch.answer_ids.shape, base.model.config.hidden_size)
    with torch.no_grad():
        direct = answer_logprobs(base.model, batch.prompt_ids, batch.prompt_mask, batch.answer_ids, batch.answer_mask)
    assert torch.allclose(logp, direct, atol=1e-5)
    torch.manual_seed(0)
    d = HiddenStateDiscriminator(base.model.config.hidden_size, [16, 8, 4], dropout=0.0)
    out = d(batch.prompt_ids, batch.prompt_mask, batch.answer_ids, batch.answer_mask, states)
    assert out.shape == (len(batch),)
    # padding after the answer does not change the score
    wider = torch.cat([states, torch.randn(len(batch), 3, states.shape[-1])], 1)
    mask = torch.cat([batch.answer_mask, torch.zeros(len(batch), 3, dtype=torch.long)], 1)
    ids = torch.cat([batch.answer_ids, torch.zeros(len(batch), 3, dtype=torch.long)], 1)
    assert torch.allclose(out, d(batch.prompt_ids, batch.prompt_mask, ids, mask, wider), atol=1e-5)


def test_warmup_is_mle_then_the_adversarial_phase_at_its_own_rate(base):
    method, batch = _method(base, warmup_epochs=1, epochs=2, rollout="epoch", lr=0.01, adv_lr=0.001)
    halves = [_batch(base, method.config, PAIRS[:2]), _batch(base, method.config, PAIRS[2:])]
    method.start_epoch(0, halves)
    s = method.train_step(halves[0])
    assert s["phase"] == "mle" and s["mle_loss"] > 0 and method.sampled_answers() == []
    assert method.generator.opt_g.param_groups[0]["lr"] == 0.01
    method.start_epoch(1, halves)  # one rollout for the whole epoch, split per step
    assert [len(r.answer_ids) for r in method._pending] == [2, 2]
    assert method.generator.opt_g.param_groups[0]["lr"] == 0.001
    s = method.train_step(halves[0])
    assert s["phase"] == "adversarial" and len(method._pending) == 1 and method._rollout_seconds == 0.0
    assert len(method.sampled_answers()) == 2


def test_a_pending_rollout_survives_a_checkpoint(base):
    method, _ = _method(base, warmup_epochs=0, rollout="epoch")
    halves = [_batch(base, method.config, PAIRS[:2]), _batch(base, method.config, PAIRS[2:])]
    method.start_epoch(0, halves)
    method.train_step(halves[0])
    tensors = method.state_tensors()
    other = GanMethod(make_base(), method.config)
    other.load_state_tensors(tensors)
    other.start_epoch(0, halves[1:])  # a resumed run picks the epoch up midway: no new sampling
    assert torch.equal(other._pending[0].answer_ids, method._pending[0].answer_ids)
    assert torch.equal(other._pending[0].logp, method._pending[0].logp)


def test_merge_repads_batches(base):
    cfg = _config()
    a, b = _batch(base, cfg, PAIRS[:1]), _batch(base, cfg, PAIRS[1:])
    m = merge([a, b], base.tokenizer.pad_token_id)
    whole = _batch(base, cfg)
    assert torch.equal(m.prompt_ids, whole.prompt_ids) and torch.equal(m.answer_mask, whole.answer_mask)


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_cold_rollout_logprobs_are_the_tempered_policy_and_frozen_pass_matches(base, temperature):
    """At --rollout-temperature T the recorded log-probs are those of softmax(logits / T), as the G step and KL read them."""
    method, batch = _method(base, adapter_init="default", rollout_temperature=temperature)
    torch.manual_seed(1)
    roll = method._rollout(batch)
    with method.generator._attached(roll.noise), torch.no_grad():
        again = answer_logprobs(base.model, roll.prompt_ids, roll.prompt_mask, roll.answer_ids, roll.answer_mask,
                                temperature)
        plain = answer_logprobs(base.model, roll.prompt_ids, roll.prompt_mask, roll.answer_ids, roll.answer_mask)
    assert torch.allclose(roll.logp, again, atol=1e-4)
    assert torch.allclose(roll.logp, plain, atol=1e-4) == (temperature == 1.0)
    ref_logp, _ = method._features(roll.prompt_ids, roll.prompt_mask, roll.answer_ids, roll.answer_mask)
    with torch.no_grad():
        untuned = answer_logprobs(base.model, roll.prompt_ids, roll.prompt_mask, roll.answer_ids, roll.answer_mask,
                                  temperature)
    assert torch.allclose(ref_logp, untuned, atol=1e-4)


def test_cold_sampling_concentrates_on_the_likeliest_tokens(base):
    """Lower temperature → higher mean log-probability (under the plain policy) of what is sampled
    (the tiny model's logits are nearly flat, so a very cold T shows it)."""
    def mean_plain_logp(temperature):
        method, batch = _method(base, adapter_init="default", rollout_temperature=temperature, max_new_tokens=6)
        torch.manual_seed(3)
        big = _batch(base, method.config, PAIRS * 8)
        roll = method._rollout(big)
        with method.generator._attached(roll.noise), torch.no_grad():
            logp = answer_logprobs(base.model, roll.prompt_ids, roll.prompt_mask, roll.answer_ids, roll.answer_mask)
        return float(logp.sum() / roll.answer_mask.sum())
    assert mean_plain_logp(0.05) > mean_plain_logp(1.0) + 0.1


def test_ppo_epochs_update_the_generator_several_times_on_one_rollout(base):
    one, batch = _method(base, adapter_init="default")
    torch.manual_seed(5)
    one.train_step(batch)
    four, _ = _method(base, adapter_init="default", ppo_epochs=4)
    torch.manual_seed(5)
    s = four.train_step(batch)
    steps = [float(state["step"]) for state in four.generator.opt_g.state.values()]
    assert steps and set(steps) == {4.0}
    assert {float(state["step"]) for state in one.generator.opt_g.state.values()} == {1.0}
    # the same rollout and D step; only the generator moved further
    assert torch.equal(four._last_answers[0], one._last_answers[0])
    assert all(torch.equal(a, b) for a, b in zip(four.discriminator.parameters(), one.discriminator.parameters()))
    moved = [not torch.equal(a, b) for a, b in zip(four.generator.adapter.parameters(), one.generator.adapter.parameters())]
    assert any(moved) and 0.0 <= s["clipped"] <= 1.0


@pytest.mark.parametrize("bad", [dict(ppo_epochs=2, clip=0.0), dict(ppo_epochs=2, pg_estimator="thesis"),
                                 dict(ppo_epochs=0), dict(rollout_temperature=0.0),
                                 dict(rollout_temperature=float("nan"))])
def test_ppo_epochs_and_temperature_refusals(bad):
    with pytest.raises(GantuneError):
        _config(**bad)


# --- dense rewards: D scores every prefix --------------------------------------------------------

from gantune.methods.gan.discriminator import aligned_reference_scores, dense_d_loss, last_score  # noqa: E402
from gantune.methods.gan.policy import prefix_advantages  # noqa: E402


def test_prefix_scores_are_the_scores_of_each_prefix_in_one_pass(base):
    cfg = _config()
    batch = _batch(base, cfg)
    _, states = frozen_pass(base.model, batch.prompt_ids, batch.prompt_mask, batch.answer_ids, batch.answer_mask)
    torch.manual_seed(0)
    d = HiddenStateDiscriminator(base.model.config.hidden_size, [16, 8, 4], dropout=0.0)
    scores = d.prefix_scores(batch.answer_mask, states)
    lengths = batch.answer_mask.sum(1)
    for t in range(batch.answer_ids.shape[1]):
        cut = batch.answer_mask.clone()
        cut[:, t + 1:] = 0
        whole = d(batch.prompt_ids, batch.prompt_mask, batch.answer_ids, cut, states)
        inside = t < lengths
        assert torch.allclose(scores[inside, t], whole[inside], atol=1e-5)
        assert (scores[~inside, t] == 0).all()
    full = d(batch.prompt_ids, batch.prompt_mask, batch.answer_ids, batch.answer_mask, states)
    assert torch.allclose(last_score(scores, batch.answer_mask), full, atol=1e-5)


def test_aligned_reference_scores_hold_the_whole_reference_past_its_end():
    real = torch.tensor([[1.0, 2.0, 3.0, 0.0], [5.0, 0.0, 0.0, 0.0]])
    real_mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
    fake_mask = torch.ones(4, 5, dtype=torch.long)  # k = 2 samples a question
    got = aligned_reference_scores(real, real_mask, fake_mask)
    assert got.tolist() == [[1, 2, 3, 3, 3], [1, 2, 3, 3, 3], [5, 5, 5, 5, 5], [5, 5, 5, 5, 5]]


def test_dense_d_loss_by_hand():
    real, real_mask = torch.tensor([[1.0, 2.0]]), torch.tensor([[1, 1]])
    fake = torch.tensor([[0.5, 2.5, -1.0]], requires_grad=True)
    fake_mask = torch.tensor([[1, 1, 0]])
    loss = dense_d_loss(real, real_mask, fake, fake_mask)
    sp = torch.nn.functional.softplus
    want = (sp(torch.tensor(0.5 - 1.0)) + sp(torch.tensor(2.5 - 2.0))) / 2
    assert torch.allclose(loss, want)
    loss.backward()
    assert fake.grad[0, 2] == 0 and (fake.grad[0, :2] > 0).all()  # D pushes the samples' prefixes down


def test_prefix_advantages_by_hand():
    relative = torch.tensor([[1.0, 3.0, 2.0], [4.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    raw = torch.tensor([[2.0, 2.0 - 1.0, 2.0 - 3.0], [4.0, 0.0, 0.0]])  # final − score before t
    centred = (raw - raw[mask.bool()].mean()) * mask
    assert torch.allclose(prefix_advantages(relative, mask, None, 0.0, normalize=False), centred)
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.5, 9.0, 9.0]])
    with_kl = raw - 0.5 * torch.tensor([[0.6, 0.5, 0.3], [0.5, 0.0, 0.0]])  # β × the KL from t on
    want = (with_kl - with_kl[mask.bool()].mean()) * mask
    assert torch.allclose(prefix_advantages(relative, mask, kl, 0.5, normalize=False), want)
    normed = prefix_advantages(relative, mask, kl, 0.5, normalize=True)
    assert torch.allclose(normed[mask.bool()].std(), torch.tensor(1.0))


def test_per_token_advantages_weight_each_token():
    logp = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    mask = torch.tensor([[1, 1]])
    policy_gradient_loss(logp, mask, torch.tensor([[3.0, -1.0]])).backward()
    assert torch.allclose(logp.grad, torch.tensor([[-1.5, 0.5]]))


def test_dense_reward_step_trains_d_on_prefixes_and_g_on_per_token_advantages(base):
    method, batch = _method(base, reward="dense", adapter_init="default")
    d0, g0 = _snapshot(method.discriminator), _snapshot(method.generator.adapter)
    s = method.train_step(batch)
    assert s["phase"] == "adversarial" and s["d_loss"] > 0
    assert any(not torch.equal(v, method.discriminator.state_dict()[k]) for k, v in d0.items())
    assert any(not torch.equal(v, method.generator.adapter.state_dict()[k]) for k, v in g0.items())


@pytest.mark.parametrize("bad", [dict(reward="dense", discriminator="embedding"), dict(reward="dense", d_loss="bce"),
                                 dict(reward="dense", samples_per_question=2, baseline="loo")])
def test_dense_reward_refusals(bad):
    with pytest.raises(GantuneError):
        _config(**bad)


def test_thesis_draws_d_and_g_samples_in_one_decoding_call(base, monkeypatch):
    """The thesis samples again for G after D's step; G is unchanged by it, so both draws come from one call: D
    learns on the first set of rows, G on the second."""
    import gantune.methods.gan.method as gan_method

    method, batch = _method(base, preset="thesis", batch_size=2, max_new_tokens=8, max_prompt_tokens=32)
    calls, frozen, updated = [], [], []
    real_sample = gan_method.sample
    monkeypatch.setattr(gan_method, "sample", lambda *a, **kw: calls.append(real_sample(*a, **kw)) or calls[-1])
    real_frozen, real_update = method._frozen, method._generator_update
    monkeypatch.setattr(method, "_frozen", lambda roll, b: frozen.append(roll) or real_frozen(roll, b))
    monkeypatch.setattr(method, "_generator_update", lambda b, roll, adv: updated.append(roll) or real_update(b, roll, adv))
    method.train_step(batch)
    rows = batch.prompt_ids.shape[0] * method.config.samples_per_question
    assert len(calls) == 1 and calls[0].prompt_ids.shape[0] == 2 * rows
    first, second = calls[0].rows(0, rows), calls[0].rows(rows, 2 * rows)
    assert [r.answer_ids.tolist() for r in frozen] == [first.answer_ids.tolist(), second.answer_ids.tolist()]
    assert torch.equal(updated[0].answer_ids, second.answer_ids) and torch.equal(updated[0].noise, second.noise)
    assert not torch.equal(first.noise, second.noise)  # two independent draws of M_tunable's noise


@pytest.mark.parametrize("adapter", ["m-tunable", "lora", "prompt-tuning"])
def test_each_prompts_one_pass_gives_the_g_step_and_ds_features_of_whole_passes(base, adapter, monkeypatch):
    """The G step scores k samples and each question's reference after one pass of the question's prompt (fed the
    noise of its first sample); the frozen pass gives D the samples' and references' states the same way: gradients
    and features as one whole pass a row gives them (fp32). Prompt tuning, whose virtual tokens go into every pass,
    takes whole rows."""
    from gantune import scoring
    from gantune.methods.gan.rollout import frozen_pass

    method, batch = _method(base, adapter=adapter, samples_per_question=2, baseline="loo", adapter_init="default",
                            lora_r=4, lora_alpha=8, virtual_tokens=4)
    roll = method._rollout(batch)
    assert len(roll.prompt_ids) == 2 * len(batch)
    adv = torch.linspace(-1.0, 1.0, len(roll.prompt_ids))
    start = method.state_tensors()
    monkeypatch.setattr(method.generator.optimizer, "step", lambda *a, **k: None)  # keep θ: compare gradients
    grads, widths = {}, {}
    reusable = scoring.prompt_reusable
    for shared in (True, False):
        monkeypatch.setattr(scoring, "prompt_reusable", reusable if shared else (lambda _model: False))
        method.load_state_tensors(start)
        seen = []  # the rows each forward's embedding layer is given
        with method.generator.policy(None) as model:
            hook = model.get_input_embeddings().register_forward_pre_hook(lambda _m, a, seen=seen: seen.append(a[0].shape[0]))
        method._generator_update(batch, roll, adv)
        hook.remove()
        grads[shared], widths[shared] = [p.grad.clone() for p in method.generator.trainable_parameters()], seen
    for one, whole in zip(grads[True], grads[False]):
        torch.testing.assert_close(one, whole, rtol=1e-4, atol=1e-6)
    assert any(float(g.abs().max()) > 1e-4 for g in grads[True])
    rows = 3 * len(batch)  # 2 samples and 1 reference a question
    assert widths[False] == [rows] and widths[True] == ([rows] if adapter == "prompt-tuning" else [2 * len(batch), rows])

    logp, fake_states, real_states = method._frozen(roll, batch)
    fake = frozen_pass(base.model, roll.prompt_ids, roll.prompt_mask, roll.answer_ids, roll.answer_mask,
                       method.config.rollout_temperature)
    real = frozen_pass(base.model, batch.prompt_ids, batch.prompt_mask, batch.answer_ids, batch.answer_mask)
    torch.testing.assert_close(logp, fake[0], rtol=1e-4, atol=1e-5)
    for got, want, mask in ((fake_states, fake[1], roll.answer_mask), (real_states, real[1], batch.answer_mask)):
        torch.testing.assert_close(got[mask.bool()], want[mask.bool()], rtol=1e-4, atol=1e-5)
