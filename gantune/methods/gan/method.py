"""The GAN method: G = frozen LM + an adapter, D = a small discriminator, a policy gradient on D's reward.

The generator's adapter (``--adapter``) is M_tunable (the thesis') or a peft adapter (LoRA, prompt or
prefix tuning): the GAN holds the MLE method that trains that adapter (``adapter-mle``, ``lora`` …) as
its ``generator`` and reuses its code for the warm-up, saving, loading and checkpoints; the phases
below only ask it for a model to sample from and score (``gan.generator.Generator``).

Training (see docs/method.md and shared/design/gan-method.md):
  warm-up   the first ``warmup_epochs`` epochs train the adapter by MLE on the reference answers
  then, each step, four phases:
  1. rollout     answers y sampled from G (stop at EOS) with log π_rollout of each token — once per
                 epoch for all its questions (``--rollout epoch``) or once per step (``batch``)
  2. D step      the untuned LM reads [q ; y] and [q ; r] once (no grad): D's features and log π_ref;
                 D learns to rank r above y (relativistic) or real → 1, generated → 0 (bce)
  3. reward      R = D's reward − β · KL(π_rollout ‖ π_ref) summed over y; advantage A = R − baseline
                 (``--reward dense``: D scores every prefix, and token t's advantage is the final score
                 minus the score before t, less β · the KL from t on)
  4. G step      ONE teacher-forced pass over [q ; y] gives log π; PPO-clipped surrogate with the
                 ratio π/π_rollout (plain REINFORCE when ``clip`` is 0), + λ · MLE when λ > 0 (the reference
                 after the same pass of q, fed the noise of q's first sample)
The ``thesis`` preset keeps the plain SeqGAN step of the thesis: no warm-up, BCE on token ids,
no baseline, no KL, a second sampling for G.

``--discriminator implicit`` replaces D and phases 1–4 by the likelihood-ratio discriminator of DDO and
SPIN (``implicit.py``): once a round, answers sampled from the generator as it is (π_ref) for every
training question and π_ref's log-likelihoods of them and of the references; then each step is one
teacher-forced pass of the generator over both (each prompt once) and one loss (+ λ · MLE), no sampling.

Why one module of ~490 lines: a step's four phases, the warm-up and the checkpoint are one object's state
(the rollout, D, the optimisers) and read top to bottom as TRL's trainers do; the parts that stand alone
are their own modules (``policy``, ``discriminator``, ``generator``, ``implicit``).
"""

from __future__ import annotations

import json
import time
from contextlib import AbstractContextManager
from pathlib import Path

import torch
from accelerate import Accelerator
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PreTrainedModel

from ...config import TrainConfig
from ...data import Batch
from ...generation import Stopped
from ...models import BaseModel
from ...scoring import answer_logprobs, mle_loss, right_padded, shared_prompt_logprobs
from .. import get_method
from ..base import (
    StepInterrupted,
    TuningMethod,
    fused,
    load_module_tensors,
    load_optimizer_tensors,
    module_tensors,
    optimizer_tensors,
)
from .discriminator import (
    EmbeddingDiscriminator,
    HiddenStateDiscriminator,
    ThesisDiscriminator,
    aligned_reference_scores,
    d_loss,
    d_reward,
    dense_d_loss,
    last_score,
)
from .implicit import Round, implicit_d_loss, sequence_logprobs
from .policy import advantages, clipped_policy_loss, policy_gradient_loss, prefix_advantages, sequence_kl, thesis_logprobs
from .rollout import Rollout, frozen_pass, merge, sample
from .settings import GENERATOR_METHODS

D_CONFIG = "discriminator_config.json"
D_WEIGHTS = "discriminator.safetensors"


def build_discriminator(base: BaseModel, config: TrainConfig) -> nn.Module | None:
    """The D network ``--discriminator`` names (None for the implicit one, which is the generator itself)."""
    if config.discriminator == "implicit":
        return None
    if config.discriminator == "thesis":
        pad_id = base.tokenizer.pad_token_id
        return ThesisDiscriminator(config.max_prompt_tokens + config.max_new_tokens, config.d_hidden, pad_id)
    if config.discriminator == "hidden":
        return HiddenStateDiscriminator(base.model.config.get_text_config().hidden_size, config.d_hidden,
                                        config.d_dropout)
    return EmbeddingDiscriminator(base.model.get_input_embeddings(), config.d_hidden, config.max_new_tokens,
                                  config.d_dropout)


def warmup_epochs(config: TrainConfig) -> int:
    """MLE epochs before the adversarial phase; at least one epoch is always adversarial."""
    return max(0, min(config.warmup_epochs, config.epochs - 1))


def make_generator(base: BaseModel, config: TrainConfig, accelerator: Accelerator | None = None) -> TuningMethod:
    """The MLE method of ``--adapter``'s kind, which the GAN trains as its generator (a ``Generator`` too)."""
    return get_method(GENERATOR_METHODS[config.adapter])(base, config, accelerator)


class GanMethod(TuningMethod):
    name = "gan"

    def __init__(self, base: BaseModel, config: TrainConfig, accelerator: Accelerator | None = None,
                 generator: TuningMethod | None = None):
        super().__init__(base, config, accelerator)
        self.generator = generator or make_generator(base, config, self.accelerator)  # also a gan.generator.Generator
        self.pad_id = base.tokenizer.pad_token_id
        self.discriminator = build_discriminator(base, config)
        self.opt_d = None
        if self.discriminator is not None:
            self.discriminator.to(base.device)
            params = list(self.discriminator.parameters())
            self.opt_d = torch.optim.AdamW(params, lr=config.d_lr, weight_decay=config.d_weight_decay, **fused(params))
        self.reward_mean: float | None = None  # running mean, the baseline of one-row batches
        self.adversarial = warmup_epochs(config) == 0
        self._pending: list[Rollout] = []  # this epoch's rollout, one part per remaining step
        self._rollout_seconds = 0.0
        self._last_answers: tuple[torch.Tensor, torch.Tensor] | None = None  # the last step's samples (ids, mask)
        self._round: Round | None = None  # the implicit discriminator's current round

    @property
    def implicit(self) -> bool:
        return self.discriminator is None

    # --- the schedule ------------------------------------------------------------------------------
    def start_epoch(self, epoch: int, batches: list[Batch]) -> None:
        """Pick the phase and its learning rate; with ``--rollout epoch``, sample answers for all the epoch's
        questions at once; with the implicit D, start a round when one is due.

        The adversarial rate (``--adv-lr``) follows an MLE warm-up, in this run or in the run it started from
        (``--init-from``); with neither, the whole run trains at ``--lr`` (the thesis' one rate).
        """
        cfg, warm = self.config, warmup_epochs(self.config)
        self.adversarial = epoch >= warm
        lr = cfg.adv_lr if self.adversarial and (warm or cfg.init_from) else cfg.lr
        for group in self.generator.optimizer.param_groups:
            group["lr"] = lr
        if self.adversarial and self.implicit:
            number = (epoch - warm) // cfg.round_epochs
            if self._round is None or self._round.index != number:  # else: restored from a checkpoint mid-round
                self._start_round(number, batches)
            return
        if not (self.adversarial and self.config.rollout == "epoch"):
            self._pending = []
            return
        if len(self._pending) == len(batches):  # restored from a checkpoint taken mid-epoch
            return
        t0 = time.perf_counter()
        whole = self._rollout(merge(batches, self.pad_id).to(self.base.device))
        self._pending = []
        self.stop_point()  # sampled, nothing trained yet: a stop here loses only the sampling
        self._rollout_seconds = time.perf_counter() - t0  # reported with the epoch's first step
        k, starts = self.config.samples_per_question, [0]
        for b in batches:
            starts.append(starts[-1] + len(b) * k)
        self._pending = [whole.rows(a, z) for a, z in zip(starts, starts[1:])]

    def train_step(self, batch: Batch) -> dict[str, float]:
        if not self.adversarial:
            return {**self.generator.train_step(batch), "phase": "mle"}
        step = self.implicit_step if self.implicit else self.adversarial_step
        return {**step(batch), "phase": "adversarial"}

    # --- the four phases ---------------------------------------------------------------------------
    def _rollout(self, batch: Batch, undo: dict[str, torch.Tensor] | None = None, draws: int = 1) -> Rollout:
        """Phase 1: sample k answers per question from G (capped at the longest reference: nothing longer is real);
        ``draws`` independent sets of them in one decoding call, set after set (a decode step of a few rows costs
        about what one row's does on these chips).

        A stop asked for while sampling ends the step there (``stop_point``: ``undo`` put back)."""
        k = self.config.samples_per_question
        prompt_ids = batch.prompt_ids.repeat_interleave(k, 0).repeat(draws, 1)
        prompt_mask = batch.prompt_mask.repeat_interleave(k, 0).repeat(draws, 1)
        noise = self.generator.sample_noise(prompt_ids.shape[0])
        max_new = min(self.config.max_new_tokens, batch.answer_ids.shape[1])
        try:
            with self.generator.policy(noise) as model, self.accelerator.autocast():
                return sample(model, prompt_ids, prompt_mask, noise, self.base.eos_id, self.pad_id, max_new,
                              self.config.rollout_temperature, self.should_stop)
        except Stopped:  # the step ends here, the method as it was before it
            if undo is not None:
                self.load_state_tensors(undo)
            raise StepInterrupted from None

    def _features(self, prompt_ids, prompt_mask, answer_ids, answer_mask, rows=None
                  ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The untuned LM over [q ; a] (no grad): log π_ref of the answer and, for D, its hidden states (``rows``:
        answer i follows prompt ``rows[i]``, each prompt's pass once)."""
        if not (self.discriminator.needs_states or self.config.kl_coef > 0):
            return None, None
        with self.accelerator.autocast():
            return frozen_pass(self.base.model, prompt_ids, prompt_mask, answer_ids, answer_mask,
                               self.config.rollout_temperature, rows)

    def _frozen(self, roll: Rollout, batch: Batch | None) -> tuple[torch.Tensor | None, ...]:
        """The untuned LM over the samples [q ; y] and, when D reads states and ``batch`` is given, the references
        [q ; r], in one pass (each question's prompt once): log π_ref of the samples, and the samples' and the
        references' states for D."""
        fake = (roll.prompt_ids, roll.prompt_mask, roll.answer_ids, roll.answer_mask)
        if batch is None or not self.discriminator.needs_states:
            return (*self._features(*fake), None)
        n, width = len(roll.prompt_ids), roll.answer_ids.shape[1]
        rows = self._with_references(n)
        answers = right_padded([(roll.answer_ids, roll.answer_mask), (batch.answer_ids, batch.answer_mask)])
        logp, states = self._features(roll.prompt_ids, roll.prompt_mask, *answers, rows)
        return logp[:n, :width], states[:n, :width], states[n:, : batch.answer_ids.shape[1]]

    def _with_references(self, n: int) -> torch.Tensor:
        """The prompt rows of a rollout's ``n`` samples (question-major, k a question), then of each question's
        reference: its first sample's row (``roll.prompt_ids`` holds every question's prompt k times)."""
        k = self.config.samples_per_question
        return torch.cat([torch.arange(n), torch.arange(0, n, k)]).to(self.base.device)

    def _d(self, prompt_ids, prompt_mask, answer_ids, answer_mask, states) -> torch.Tensor:
        with self.accelerator.autocast():
            return self.discriminator(prompt_ids, prompt_mask, answer_ids, answer_mask, states).float()

    def _prefixes(self, answer_mask: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        with self.accelerator.autocast():
            return self.discriminator.prefix_scores(answer_mask, states).float()

    def adversarial_step(self, batch: Batch) -> dict[str, float]:
        cfg, k = self.config, self.config.samples_per_question
        undo = self.state_tensors()  # a stop inside this step puts the method back as it is now
        t0 = time.perf_counter() - self._rollout_seconds
        self._rollout_seconds = 0.0
        # the thesis samples again for the generator step: G is the same until then (D's steps leave it), so both
        # draws come from one decoding call
        again = None
        if self._pending:
            roll = self._pending.pop(0)
        elif cfg.resample_for_g:
            both = self._rollout(batch, undo, draws=2)
            rows = both.prompt_ids.shape[0] // 2
            roll, again = both.rows(0, rows), both.rows(rows, 2 * rows)
        else:
            roll = self._rollout(batch, undo)
        t1 = time.perf_counter()

        # phase 2: D learns to tell the references from the samples, given the question (the untuned LM reads both
        # in one pass)
        ref_logp, fake_states, real_states = self._frozen(roll, batch)
        real_rows = (batch.prompt_ids, batch.prompt_mask, batch.answer_ids, batch.answer_mask, real_states)
        fake_rows = (roll.prompt_ids, roll.prompt_mask, roll.answer_ids, roll.answer_mask, fake_states)
        self.discriminator.train()
        for _ in range(cfg.d_steps):
            self.stop_point(undo)
            if cfg.reward == "dense":
                loss_d = dense_d_loss(self._prefixes(batch.answer_mask, real_states), batch.answer_mask,
                                      self._prefixes(roll.answer_mask, fake_states), roll.answer_mask)
            else:
                loss_d = d_loss(cfg.d_loss, self._d(*real_rows), self._d(*fake_rows), cfg.label_smoothing)
            self.opt_d.zero_grad(set_to_none=True)
            d_grad_norm = self.backward(loss_d, list(self.discriminator.parameters()))
            self.opt_d.step()

        if cfg.resample_for_g:  # the thesis sampled again for the generator step
            self.stop_point(undo)
            roll = again if again is not None else self._rollout(batch, undo)
            ref_logp, fake_states, _ = self._frozen(roll, None)
            fake_rows = (roll.prompt_ids, roll.prompt_mask, roll.answer_ids, roll.answer_mask, fake_states)

        # phase 3: reward and advantage, with D after its step (dropout off)
        self.discriminator.eval()
        with torch.no_grad():
            if cfg.reward == "dense":  # every prefix in one pass; the last one is the whole answer's score
                real_p, fake_p = self._prefixes(batch.answer_mask, real_states), self._prefixes(roll.answer_mask, fake_states)
                real, fake = last_score(real_p, batch.answer_mask), last_score(fake_p, roll.answer_mask)
                relative = fake_p - aligned_reference_scores(real_p, batch.answer_mask, roll.answer_mask)
            else:
                real, fake = self._d(*real_rows), self._d(*fake_rows)
        reward = d_reward(cfg.d_loss, real, fake)
        kl = sequence_kl(roll.logp, ref_logp, roll.answer_mask) if ref_logp is not None else None
        if cfg.reward == "dense":
            kl_tokens = roll.logp - ref_logp if ref_logp is not None else None
            adv = prefix_advantages(relative, roll.answer_mask, kl_tokens, cfg.kl_coef, cfg.normalize_advantage)
        else:
            total = reward - cfg.kl_coef * kl if cfg.kl_coef > 0 else reward
            adv = advantages(total, cfg.baseline, self.reward_mean, cfg.normalize_advantage, k)
        r = float(reward.mean())
        self.reward_mean = r if self.reward_mean is None else 0.9 * self.reward_mean + 0.1 * r
        self._last_answers = roll.answer_ids[::k], roll.answer_mask[::k]
        t2 = time.perf_counter()

        # phase 4: the generator, ``ppo_epochs`` updates on this rollout, each ONE teacher-forced pass over
        # [q ; y] (and [q ; r] for the MLE term, after the same pass of q)
        for _ in range(cfg.ppo_epochs):
            self.stop_point(undo)
            g_loss, pg, clipped, stats, grad_norm = self._generator_update(batch, roll, adv)
        t3 = time.perf_counter()

        tokens = roll.answer_mask.sum(1).float()
        pairs = real.repeat_interleave(k)
        if kl is not None:
            stats["kl"] = float(kl.sum() / tokens.sum().clamp(min=1))  # per sampled token
        return {
            **stats,
            "g_loss": g_loss.item(),
            "pg_loss": pg.item(),
            "d_loss": loss_d.item(),
            "grad_norm": grad_norm,  # G's and D's (its last step's) gradient norms, before clipping
            "d_grad_norm": d_grad_norm,
            "reward_mean": r,
            "clipped": float(clipped),
            # relativistic: D ranks the reference above the sample; bce: D's verdict on each side
            "d_acc_real": float((pairs > fake).float().mean() if cfg.d_loss == "relativistic" else (real > 0).float().mean()),
            "d_acc_fake": float((pairs > fake).float().mean() if cfg.d_loss == "relativistic" else (fake < 0).float().mean()),
            "answer_tokens": float(tokens.sum()),
            "answer_len_mean": float(tokens.mean()),
            # where the time goes (wall clock): an epoch's rollout is counted in its first step
            "sample_seconds": t1 - t0,
            "d_seconds": t2 - t1,
            "g_seconds": t3 - t2,
        }

    def _generator_update(self, batch: Batch, roll: Rollout, adv: torch.Tensor
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, float], float]:
        """One G step on a rollout's answers with their advantages: the policy-gradient loss (+ λ · MLE on the
        references, whose rows go through the same pass as the samples'). Returns G's loss, its policy-gradient
        part, the clipped share, the MLE loss and the gradient norm."""
        cfg, gen = self.config, self.generator
        clipped = torch.zeros(())
        samples = (roll.prompt_ids, roll.prompt_mask, roll.answer_ids, roll.answer_mask)
        if cfg.pg_estimator == "thesis":
            with gen.policy(roll.noise) as model, self.accelerator.autocast():
                logp = thesis_logprobs(model, *samples)
            pg = policy_gradient_loss(logp, roll.answer_mask, adv)
        else:
            # the samples at the rollout's temperature, then (for the MLE term) the references at 1, each after its
            # question's prompt, fed the noise of the question's first sample; each prompt's pass once where the
            # adapter allows (``shared_prompt_logprobs``)
            n, mle = len(roll.prompt_ids), cfg.mle_weight > 0
            rows = self._with_references(n) if mle else torch.arange(n, device=roll.prompt_ids.device)
            parts = [(roll.answer_ids, roll.answer_mask)] + [(batch.answer_ids, batch.answer_mask)] * mle
            temperature = torch.cat([torch.full((n,), cfg.rollout_temperature), torch.ones(len(rows) - n)])
            answers = right_padded(parts)
            with gen.policy(roll.noise) as model, self.accelerator.autocast():
                logp = shared_prompt_logprobs(model, roll.prompt_ids, roll.prompt_mask, rows, *answers, temperature)
            logps = [logp[:n, : roll.answer_ids.shape[1]], logp[n:, : batch.answer_ids.shape[1]]]
            logp = logps[0]
            if cfg.clip > 0:
                pg, clipped = clipped_policy_loss(logp, roll.logp, roll.answer_mask, adv, cfg.clip)
            else:
                pg = policy_gradient_loss(logp, roll.answer_mask, adv)
        real_logp = None
        if cfg.mle_weight > 0:
            if cfg.pg_estimator == "thesis":
                with gen.policy(gen.sample_noise(len(batch))) as model, self.accelerator.autocast():
                    real_logp = answer_logprobs(model, batch.prompt_ids, batch.prompt_mask, batch.answer_ids,
                                                batch.answer_mask)
            else:
                real_logp = logps[1]
        g_loss, stats, grad_norm = self._update(pg, real_logp if cfg.mle_weight > 0 else None, batch)
        return g_loss, pg, clipped, stats, grad_norm

    def _update(self, loss: torch.Tensor, real_logp: torch.Tensor | None, batch: Batch
                ) -> tuple[torch.Tensor, dict[str, float], float]:
        """The generator's update on ``loss`` (+ λ · MLE of the references' log-probs ``real_logp``, when given):
        one backward (clipped) and optimiser step. Returns the whole loss, its MLE part and the gradient norm."""
        gen, stats = self.generator, {}
        if real_logp is not None:
            mle = mle_loss(real_logp, batch.answer_mask)
            loss = loss + self.config.mle_weight * mle
            stats["mle_loss"] = mle.item()
        gen.optimizer.zero_grad(set_to_none=True)
        grad_norm = self.backward(loss, gen.trainable_parameters())
        gen.optimizer.step()
        return loss, stats, grad_norm

    # --- the implicit discriminator (implicit.py) ------------------------------------------------------
    def _start_round(self, number: int, batches: list[Batch]) -> None:
        """π_ref is the generator as it is now: sample every question's y from it in one rollout (capped at the
        longest reference, at ``--rollout-temperature``), and take its log-likelihoods of r and y (no grad, at
        temperature 1), once for the round."""
        cfg, gen = self.config, self.generator
        t0 = time.perf_counter()
        whole = merge(batches, self.pad_id).to(self.base.device)
        noise = gen.sample_noise(len(whole))
        max_new = min(cfg.max_new_tokens, whole.answer_ids.shape[1])
        try:
            with gen.policy(noise) as model, self.accelerator.autocast():
                roll = sample(model, whole.prompt_ids, whole.prompt_mask, noise, self.base.eos_id, self.pad_id, max_new,
                              cfg.rollout_temperature, self.should_stop)
        except Stopped:  # nothing of the round kept
            raise StepInterrupted from None

        # π_ref of the samples by the same teacher-forced pass as π_θ's in each step: in fp32 the sampler's own record
        # (at temperature 1) is the same, but in bf16 decoding rounds differently, which would bias D(q, y)
        ref_real, ref_fake = sequence_logprobs(gen, self.accelerator.autocast, whole.prompt_ids, whole.prompt_mask,
                                               [(whole.answer_ids, whole.answer_mask), (roll.answer_ids, roll.answer_mask)],
                                               noise, cfg.batch_size)
        self._round = Round(whole.prompt_ids, whole.prompt_mask, whole.answer_ids, whole.answer_mask, roll.answer_ids,
                            roll.answer_mask, noise, ref_real, ref_fake, torch.tensor([number]))
        self._rollout_seconds = time.perf_counter() - t0  # reported with the round's first step

    def implicit_scores(self, model: PreTrainedModel, batch: Batch, rows: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """π_θ (``model``, fed each question's noise) teacher-forced over the references and the samples in one pass
        (each question's prompt once, where the adapter allows): D(q, r), D(q, y) (B each, with gradients), log π_θ of
        each reference token (B×T, for the MLE term), and the samples' mask."""
        rnd, beta = self._round, self.config.implicit_beta
        fake_ids, fake_mask = rnd.fakes(rows)
        answers = [(batch.answer_ids, batch.answer_mask), (fake_ids, fake_mask)]
        twice = torch.arange(len(batch), device=fake_ids.device).repeat(2)
        logp = shared_prompt_logprobs(model, batch.prompt_ids, batch.prompt_mask, twice, *right_padded(answers))
        real_logp, fake_logp = logp[: len(batch), : batch.answer_ids.shape[1]], logp[len(batch):, : fake_ids.shape[1]]
        real = beta * (real_logp.sum(1) - rnd.ref_real[rows])
        fake = beta * (fake_logp.sum(1) - rnd.ref_fake[rows])
        return real, fake, real_logp, fake_mask

    def implicit_step(self, batch: Batch) -> dict[str, float]:
        """One step: D's loss on the batch's references and their round's samples (+ λ · MLE), one update."""
        cfg, gen, rnd = self.config, self.generator, self._round
        t0 = time.perf_counter() - self._rollout_seconds
        self._rollout_seconds = 0.0
        rows = rnd.rows_of(batch)
        t1 = time.perf_counter()
        with gen.policy(rnd.noise[rows]) as model, self.accelerator.autocast():
            real, fake, real_logp, fake_mask = self.implicit_scores(model, batch, rows)
        loss_d = implicit_d_loss(cfg.implicit_loss, real, fake)
        loss, stats, grad_norm = self._update(loss_d, real_logp if cfg.mle_weight > 0 else None, batch)
        t2 = time.perf_counter()

        real, fake = real.detach(), fake.detach()
        pairs = float((real > fake).float().mean())
        tokens = fake_mask.sum(1).float()
        self._last_answers = rnd.fakes(rows)
        return {
            **stats,
            "g_loss": loss.item(),
            "d_loss": loss_d.item(),
            "grad_norm": grad_norm,
            # spin: D ranks the reference above the sample (as the relativistic D); ddo: D's verdict on each side
            "d_acc_real": pairs if cfg.implicit_loss == "spin" else float((real > 0).float().mean()),
            "d_acc_fake": pairs if cfg.implicit_loss == "spin" else float((fake < 0).float().mean()),
            "d_acc_pairs": pairs,  # the share of pairs with D(q, r) > D(q, y), whatever the loss
            "d_margin": float((real - fake).mean()),
            "d_real": float(real.mean()),  # β · how much likelier π_θ makes the references than π_ref did
            "d_fake": float(fake.mean()),
            "round": rnd.index + 1,
            "answer_tokens": float(tokens.sum()),
            "answer_len_mean": float(tokens.mean()),
            "sample_seconds": t1 - t0,  # the round's rollout and π_ref passes, counted in its first step
            "g_seconds": t2 - t1,
        }

    def sampled_answers(self) -> list[str]:
        """One sampled answer per question of the last adversarial step ([] during the warm-up)."""
        if self._last_answers is None or not self.adversarial:
            return []
        ids, mask = self._last_answers
        return [self.base.tokenizer.decode(row[m.bool()], skip_special_tokens=True).strip() for row, m in zip(ids, mask)]

    # --- the generator's, as a tuning method ---------------------------------------------------------
    def trainable_parameters(self) -> list[nn.Parameter]:
        own = list(self.discriminator.parameters()) if self.discriminator is not None else []
        return [*self.generator.trainable_parameters(), *own]

    def adapter_norm(self) -> float:
        return self.generator.adapter_norm()

    def enabled(self, batch_size: int | None = None) -> AbstractContextManager[PreTrainedModel]:
        return self.generator.enabled(batch_size)

    def eval_noise(self) -> str | None:
        return self.generator.eval_noise()

    def init_from(self, folder: str | Path) -> None:
        """Start the generator from another run's adapter of its kind (an MLE warm-up); D starts afresh."""
        self.generator.init_from(folder)

    def close(self) -> None:
        self.generator.close()

    # --- saving: the generator's, plus the discriminator's and the pending rollout or round ----------
    def save_pretrained(self, folder: str | Path) -> None:
        self.generator.save_pretrained(folder)
        if self.discriminator is not None:
            folder = Path(folder)
            save_file({k: v.detach().cpu().contiguous() for k, v in self.discriminator.state_dict().items()},
                      folder / D_WEIGHTS)
            (folder / D_CONFIG).write_text(json.dumps({"kind": self.config.discriminator, "hidden": self.config.d_hidden}))

    @classmethod
    def from_pretrained(cls, base: BaseModel, folder: str | Path, config: TrainConfig) -> "GanMethod":
        generator = get_method(GENERATOR_METHODS[config.adapter]).from_pretrained(base, folder, config)
        method = cls(base, config, generator=generator)
        d_file = Path(folder) / D_WEIGHTS
        if method.discriminator is not None and d_file.is_file():
            method.discriminator.load_state_dict(load_file(d_file))
        return method

    def state_tensors(self) -> dict[str, torch.Tensor]:
        pending = {t: v for i, part in enumerate(self._pending) for t, v in part.tensors(f"rollout.{i}").items()}
        d = {**module_tensors("discriminator", self.discriminator), **optimizer_tensors("opt_d", self.opt_d)} \
            if self.discriminator is not None else {}
        return {
            **self.generator.state_tensors(),
            **d,
            "reward_mean": torch.tensor([self.reward_mean if self.reward_mean is not None else float("nan")]),
            **pending,
            **(self._round.tensors("round") if self._round is not None else {}),
        }

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.generator.load_state_tensors(tensors)
        if self.discriminator is not None:
            load_module_tensors("discriminator", self.discriminator, tensors)
            load_optimizer_tensors("opt_d", self.opt_d, tensors)
        value = float(tensors["reward_mean"][0])
        self.reward_mean = None if value != value else value
        parts = sorted({int(name.split(".")[1]) for name in tensors if name.startswith("rollout.")})
        vocab = self.base.model.get_input_embeddings().num_embeddings
        self._pending = [Rollout.from_tensors(f"rollout.{i}", tensors, self.base.device, vocab) for i in parts]
        self._round = Round.from_tensors("round", tensors, self.base.device, vocab) if "round.number" in tensors else None
