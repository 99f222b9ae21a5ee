"""Whole decoding calls, as evaluations and rollouts make them, with the loop's call-level levers off and on.

    python benchmarks/decode_calls.py [--runs RUN ...] [--no-base] [--n 40] [--max-new-tokens 48] [--rounds 3]

Loads SmolLM2-135M once (the offline default) and, for the base model and each run folder given (a trained
``bench``/``train`` run: LoRA, a GAN on M_tunable …), answers ``--n`` forget10 questions the way an evaluation does
(``inference.answers``: shortest prompts first, widest batches memory allows) greedily and at temperature 1, and,
for a run with M_tunable, samples them as a GAN's epoch rollout does (one call, each row its own noise). Three
settings run in turn, round after round: the loop before issue 30's levers (``torch.multinomial`` draws each
sampled token; every row rides along until the longest ends), then with ``generation.categorical`` drawing, then
also with ended rows dropped from the batch (``generation.ENDED_SHARE``). Prints the median seconds of each, the
ratios to the first, the share of row-steps spent on rows that had ended (what dropping can save) and whether the
answers are the same. Run it on a quiet machine; only the ratios measured in one run mean anything.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

NEVER = float("inf")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", nargs="*", default=[], help="run folders whose tuned models answer too")
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-base", action="store_true", help="only the runs' models")
    args = ap.parse_args()

    import torch

    from gantune import generation
    from gantune.cpu import keep_freed_pages
    from gantune.data import Encoder, load_pairs, pad
    from gantune.inference import answers, load_method
    from gantune.methods.gan.rollout import sample
    from gantune.models import load_base_model

    keep_freed_pages()
    pairs, _ = load_pairs(str(ROOT.parent / "shared" / "tofu"), "forget10")
    questions = [p.question for p in pairs[: args.n]]
    base = load_base_model("default")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {base.precision}, {args.n} questions, "
          f"≤{args.max_new_tokens} tokens, {args.rounds} rounds alternating")

    def rollout(method):
        """A GAN epoch rollout: every question in one call, each row its own noise, at temperature 1."""
        enc = Encoder(base.tokenizer, base.eos_id, 128, args.max_new_tokens)
        ids, mask = pad([enc.prompt_ids(q) for q in questions], enc.pad_id, left=True)
        gen = method.generator
        torch.manual_seed(0)
        noise = gen.sample_noise(len(questions))
        with gen.policy(noise) as model, base.autocast():
            roll = sample(model, ids, mask, noise, base.eos_id, enc.pad_id, args.max_new_tokens, 1.0)
        return [tuple(r[m.bool()].tolist()) for r, m in zip(roll.answer_ids, roll.answer_mask)]

    cases = [("base", None)] * (not args.no_base) + [(Path(r).name, load_method(r, base)) for r in args.runs]
    categorical, share = generation.categorical, generation.ENDED_SHARE

    def multinomial(probs):
        return torch.multinomial(probs, 1).squeeze(1)

    settings = {"before": (multinomial, NEVER), "sampler": (categorical, NEVER), "+ rows dropped": (categorical, share)}
    print("| model | decoding | ended row-steps | " + " | ".join(f"s, {s}" for s in settings)
          + " | " + " | ".join(f"speed, {s}" for s in list(settings)[1:]) + " | same answers as the sampler's |")
    print("|---" * (3 + 2 * len(settings)) + "|")
    for name, method in cases:
        tasks = [("greedy", lambda m=method: answers(base, questions, args.max_new_tokens, method=m)),
                 ("T=1", lambda m=method: answers(base, questions, args.max_new_tokens, method=m, temperature=1.0))]
        if method is not None and hasattr(getattr(method, "generator", None), "adapter"):
            tasks.append(("rollout", lambda m=method: rollout(m)))
        for what, task in tasks:
            times, outs = {s: [] for s in settings}, {}
            for _ in range(args.rounds):
                for s, (draw, dropped) in settings.items():
                    generation.categorical, generation.ENDED_SHARE = draw, dropped
                    t0 = time.perf_counter()
                    out = task()
                    times[s].append(time.perf_counter() - t0)
                    outs[s] = out.texts if hasattr(out, "texts") else out
            med = {s: statistics.median(v) for s, v in times.items()}
            lengths = [len(a) for a in outs["sampler"]] if what == "rollout" else None
            ended = ended_share(task, lengths, args.max_new_tokens)
            same = outs["+ rows dropped"] == outs["sampler"]
            print(f"| {name} | {what} | {ended:.0%} | " + " | ".join(f"{med[s]:.2f}" for s in settings) + " | "
                  + " | ".join(f"{med['before'] / med[s]:.2f}×" for s in list(settings)[1:])
                  + f" | {'yes' if same else 'no'} |")
    generation.categorical, generation.ENDED_SHARE = categorical, share


def ended_share(task, lengths: list[int] | None, max_new: int) -> float:
    """The share of row-steps spent on rows that had ended (each batch decodes until its longest row ends)."""
    from gantune import inference

    if lengths is None:
        out = task()  # answered in batches of MAX_DECODE_ROWS in prompt order; --n up to it is one batch
        lengths = [n + (0 if t else 1) for n, t in zip(out.lengths, out.truncated)]
        sizes = inference.MAX_DECODE_ROWS
    else:
        sizes = len(lengths)
    steps = ended = 0
    for start in range(0, len(lengths), sizes):
        chunk = lengths[start:start + sizes]
        longest = min(max(chunk), max_new)
        steps += longest * len(chunk)
        ended += sum(longest - min(n, max_new) for n in chunk)
    return ended / max(steps, 1)


if __name__ == "__main__":
    main()
