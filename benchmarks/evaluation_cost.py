"""One evaluation as bench and Compare run it, retention's prompts run once for all their answers or once a pair.

    python benchmarks/evaluation_cost.py [--runs RUN ...] [--no-base] [--rounds 3]

Loads SmolLM2-135M once (the offline default) and evaluates the base model and each run folder given (a trained
``bench``/``train`` run) on the quick bench's settings (40 forget10 test questions of seed 0's split, 20
real_authors and 20 world_facts retention questions, ≤48 tokens, BLEURT off), with ``metrics.mean_loglik``
scoring each retention question's four answers after one pass of its prompt (``scoring.shared_prompt_logprobs``)
and, in turn, one whole pass a (question, answer) pair, as before. Prints the median seconds of the whole
evaluation and of retention's likelihood passes, their ratios, and whether every retention verdict is the same.
Run it on a quiet machine; only the ratios measured in one run mean anything.
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", nargs="*", default=[], help="run folders whose tuned models are evaluated too")
    ap.add_argument("--no-base", action="store_true", help="only the runs' models")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    import torch

    from gantune import metrics, scoring
    from gantune.cpu import keep_freed_pages
    from gantune.data import load_pairs, split_pairs
    from gantune.evaluate import EvalSettings, Scorers, evaluate, load_retention_sets
    from gantune.inference import load_method
    from gantune.models import load_base_model

    keep_freed_pages()
    data = str(ROOT.parent / "shared" / "tofu")
    pairs, _ = load_pairs(data, "forget10")
    test = split_pairs(pairs, n=80, train_fraction=0.5, seed=0)[1]
    sets = load_retention_sets(data, 20, 0)
    base = load_base_model("default")
    scorers = Scorers.load(None)
    settings = EvalSettings(max_new_tokens=48, max_prompt_tokens=128)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {base.precision}, {len(test)} test and "
          f"{sum(map(len, sets.values()))} retention questions, {args.rounds} rounds alternating")
    print("| model | evaluation s, per pair | shared prompts | speed | retention passes s, per pair | shared prompts "
          "| speed | same verdicts |")
    print("|---|---|---|---|---|---|---|---|")
    reusable, loglik = scoring.prompt_reusable, metrics.mean_loglik
    cases = [("base", None)] * (not args.no_base) + [(Path(r).name, load_method(r, base)) for r in args.runs]
    for name, method in cases:
        whole, passes, verdicts = {"pair": [], "shared": []}, {"pair": [], "shared": []}, {}
        for _ in range(args.rounds):
            for mode in whole:
                spent = []

                def timed(*a, spent=spent, **k):
                    t0 = time.perf_counter()
                    try:
                        return loglik(*a, **k)
                    finally:
                        spent.append(time.perf_counter() - t0)

                scoring.prompt_reusable = reusable if mode == "shared" else (lambda _model: False)
                metrics.mean_loglik = timed
                t0 = time.perf_counter()
                out = evaluate(base, method, test, sets, scorers, settings)
                whole[mode].append(time.perf_counter() - t0)
                passes[mode].append(sum(spent))
                verdicts[mode] = [r for s in out["retention_sets"].values() for r in s["retained"]]
        scoring.prompt_reusable, metrics.mean_loglik = reusable, loglik
        w = {m: statistics.median(v) for m, v in whole.items()}
        p = {m: statistics.median(v) for m, v in passes.items()}
        print(f"| {name} | {w['pair']:.1f} | {w['shared']:.1f} | {w['pair'] / w['shared']:.2f}× | {p['pair']:.1f} | "
              f"{p['shared']:.1f} | {p['pair'] / p['shared']:.2f}× | "
              f"{'yes' if verdicts['pair'] == verdicts['shared'] else 'no'} |", flush=True)


if __name__ == "__main__":
    main()
