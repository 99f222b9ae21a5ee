"""The settings of M_tunable (the thesis' generator, also what adapter-mle trains) and of the adversarial game."""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import GantuneError
from ...settings import COUNT_OR_ZERO, NONNEGATIVE, RATE, Bounds, setting

# What the GAN's generator tunes (--adapter), and the MLE method that trains the same part: its code builds,
# initialises, saves and loads the generator, and that method continued is the adversarial row's twin.
GENERATOR_METHODS = {"m-tunable": "adapter-mle", "lora": "lora", "prompt-tuning": "prompt-tuning",
                     "prefix-tuning": "prefix-tuning"}


@dataclass
class AdapterSettings:
    """M_tunable: embeddings + N(0,1) noise → 4 linear layers → added to the embeddings."""

    noise_dim: int = setting(100, "size of the N(0,1) noise vector fed to M_tunable", bounds=Bounds(low=1, hosted=1024))
    adapter_hidden: list[int] = setting([], "M_tunable's two hidden widths (empty: embedding width /2 and /4)",
                                       bounds=Bounds(low=1, hosted=4096))
    adapter_init: str = setting("zero", "zero: last layer starts at 0 so G starts as the base LM; default: PyTorch's init",
                                ("zero", "default"))
    eval_noise: str = setting("zeros", "noise fed to M_tunable when generating after training", ("zeros", "sample"))

    def check(self) -> None:
        if self.adapter_hidden and len(self.adapter_hidden) != 2:
            raise GantuneError("--adapter-hidden takes two positive widths, e.g. --adapter-hidden 256 64")


@dataclass
class GanSettings:
    """The adversarial game: the generator's adapter, phases, rollout, discriminator, reward, generator update."""

    adapter: str = setting("m-tunable", "what the generator tunes: m-tunable (the thesis' M_tunable between the "
                           "embeddings and the blocks), or a peft adapter built, saved and loaded as --method lora / "
                           "prompt-tuning / prefix-tuning build theirs (their settings: --lora-r …, --virtual-tokens; "
                           "set --lr and --adv-lr to suit it, e.g. LoRA's 5e-4)", tuple(GENERATOR_METHODS))
    warmup_epochs: int = setting(2, "MLE epochs on the reference answers before the adversarial phase (at most epochs - 1)",
                                bounds=COUNT_OR_ZERO)
    adv_lr: float = setting(5e-4, "learning rate of M_tunable in the adversarial phase (the MLE warm-up uses --lr)",
                            bounds=RATE)
    rollout: str = setting("epoch", "epoch: sample answers for all of an epoch's questions in one call; batch: sample per "
                           "step (SeqGAN)", ("epoch", "batch"))
    rollout_temperature: float = setting(1.0, "temperature of the rollout's sampling; below 1 samples 'cold', nearer the "
                                         "greedy answers evaluation reads (ColdGANs); the policy gradient, PPO ratio and KL "
                                         "use the same tempered distribution",
                                         bounds=Bounds(low=0.0, high=10.0, low_open=True))
    samples_per_question: int = setting(1, "answers sampled per question (with --baseline loo: a leave-one-out baseline)",
                                        bounds=Bounds(low=1, high=64, hosted=4))
    discriminator: str = setting("hidden", "hidden: the frozen LM's last hidden states of the answer, given the question; "
                                 "embedding: frozen input embeddings, mean-pooled; thesis: token ids cast to float; "
                                 "implicit: no D network, D(q,y) = beta * (log pi(y|q) - log pi_ref(y|q)) with pi_ref the "
                                 "generator frozen at the round's start and y sampled from it once a round (DDO, SPIN): "
                                 "each step is two teacher-forced passes, no sampling (the policy-gradient and D-network "
                                 "settings do not apply)", ("hidden", "embedding", "thesis", "implicit"))
    d_loss: str = setting("relativistic", "relativistic: -log sigmoid(D(q,ref) - D(q,y)), reward D(q,y) - D(q,ref); "
                          "bce: real -> 1, generated -> 0, reward sigmoid(D(q,y))", ("relativistic", "bce"))
    implicit_loss: str = setting("ddo", "the implicit discriminator's loss on the reference r and the sample y: ddo: "
                                 "-log sigmoid(D(q,r)) - log(1 - sigmoid(D(q,y))) (Zheng et al. 2025); spin: "
                                 "-log sigmoid(D(q,r) - D(q,y)) (Chen et al. 2024)", ("ddo", "spin"))
    implicit_beta: float = setting(0.1, "beta of the implicit discriminator D(q,y) = beta * (log pi(y|q) - "
                                   "log pi_ref(y|q)), the log-likelihoods summed over the answer's tokens",
                                   bounds=Bounds(low=0.0, high=100.0, low_open=True))
    round_epochs: int = setting(1, "implicit discriminator: adversarial epochs per round; each round freezes pi_ref (the "
                                "generator as it is then) and samples every training question's y from it once",
                                bounds=Bounds(low=1, high=100_000))
    d_lr: float = setting(1e-3, "learning rate of the discriminator", bounds=RATE)
    d_hidden: list[int] = setting([256, 64, 16], "the discriminator's three shrinking hidden widths",
                                 bounds=Bounds(low=1, hosted=4096))
    d_dropout: float = setting(0.1, "dropout inside the discriminator (keeps it from overpowering G)",
                               bounds=Bounds(low=0.0, high=1.0, high_open=True))
    d_weight_decay: float = setting(0.01, "weight decay of the discriminator's optimiser (AdamW)", bounds=NONNEGATIVE)
    d_steps: int = setting(1, "discriminator steps per generator step", bounds=Bounds(low=1, high=100, hosted=5))
    label_smoothing: float = setting(0.0, "real label is 1 - this for D's BCE",
                                     bounds=Bounds(low=0.0, high=0.5, high_open=True))
    reward: str = setting("sequence", "sequence: one reward per answer, D's score of the whole answer; dense: D also "
                          "learns on every prefix, and each token's advantage is the answer's final score minus the score "
                          "of the prefix before it (D as a critic: ScratchGAN's per-step rewards, no Monte-Carlo rollouts)",
                          ("sequence", "dense"))
    kl_coef: float = setting(0.05, "penalty on the KL to the untuned model (adapter detached) on the sampled tokens, "
                             "subtracted from the reward", bounds=NONNEGATIVE)
    baseline: str = setting("mean", "reward baseline: mean of the batch, leave-one-out over a question's samples, or none",
                            ("mean", "loo", "none"))
    normalize_advantage: bool = setting(True, "divide advantages by the batch std")
    clip: float = setting(0.2, "PPO clip of the ratio pi/pi_rollout for answers sampled earlier in the epoch (0: plain "
                          "REINFORCE)", bounds=NONNEGATIVE)
    ppo_epochs: int = setting(1, "generator updates on each part of a rollout (PPO's epochs; more than 1 needs --clip)",
                              bounds=Bounds(low=1, high=100, hosted=4))
    pg_estimator: str = setting("trajectory", "trajectory: exact log-probs of the sampled tokens in one pass; thesis: the "
                                "thesis' per-position re-sampled estimator", ("trajectory", "thesis"))
    mle_weight: float = setting(1.0, "weight of an MLE term on the reference answers in the adversarial phase (imitation "
                                "replay)", bounds=NONNEGATIVE)
    resample_for_g: bool = setting(False, "sample a second time for the generator step (the thesis did; needs --rollout "
                                   "batch)")

    def check(self) -> None:
        if self.baseline == "loo" and self.samples_per_question < 2:
            raise GantuneError("--baseline loo needs --samples-per-question 2 or more (one answer has no others to "
                               "compare with)")
        if self.ppo_epochs > 1 and (self.clip <= 0 or self.pg_estimator != "trajectory"):
            raise GantuneError("--ppo-epochs above 1 needs --clip above 0 and --pg-estimator trajectory (a reused answer "
                               "needs the clipped ratio to the policy that sampled it)")
        if self.reward == "dense" and (self.discriminator != "hidden" or self.d_loss != "relativistic"
                                       or self.baseline == "loo"):
            raise GantuneError("--reward dense needs --discriminator hidden and --d-loss relativistic (it scores "
                               "every prefix against the reference's), and makes its own per-token baseline (not "
                               "--baseline loo)")
        if self.discriminator == "implicit" and self.samples_per_question != 1:
            raise GantuneError("--discriminator implicit samples one answer a question (--samples-per-question 1): "
                               "its loss pairs each reference with one sample")
        if self.resample_for_g and self.rollout != "batch":
            raise GantuneError("--resample-for-g needs --rollout batch (a second sampling per step)")
        if len(self.d_hidden) != 3:
            raise GantuneError("--d-hidden takes three positive widths, e.g. --d-hidden 256 64 16")
