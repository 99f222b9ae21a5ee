"""gantune's compiled decode step (``--decode compiled``) against its eager loop, side by side in one process.

    python benchmarks/compiled_decode.py [--precision bf16 fp32] [--rows 1 8 40] [--steps 32] [--rounds 3]

Loads SmolLM2-135M once (the offline default), then for each precision and batch width times
``generation.decode_steps`` — the very code every rollout, evaluation and Chat runs — under ``compiled.set_mode``
``eager`` and ``compiled``, rounds alternating. Prints the first compiled call (the compile, in a fresh inductor cache
folder unless TORCHINDUCTOR_CACHE_DIR is set: what a first process on a machine pays), the median decode step after
the prompt of each (``--steps`` tokens of forget10 questions, left-padded, no EOS stop), their ratio, and how many
greedy tokens agree. Run it on a quiet machine; only the ratios measured in one run mean anything.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="inductor-"))


def run(base, ids, mask, pad_id: int, steps: int):
    """``decode_steps`` for ``steps`` tokens after the first: seconds a step, the greedy tokens, and the first
    token's seconds (the prompt's pass, and the compile when there is one)."""
    import torch

    from gantune.generation import decode_steps

    with base.autocast():
        t0 = time.perf_counter()
        it = decode_steps(base.model, ids, mask, -1, pad_id, steps + 2)
        tokens = [next(it)[0], next(it)[0]]  # the prompt's pass, then the first compiled step
        t1 = time.perf_counter()
        tokens += [t for t, _ in it]
        return (time.perf_counter() - t1) / steps, torch.stack(tokens, 1), t1 - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--precision", nargs="+", default=["bf16", "fp32"], choices=("bf16", "fp32"))
    ap.add_argument("--rows", type=int, nargs="+", default=[1, 8, 40])
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    import torch

    from gantune import compiled
    from gantune.cpu import keep_freed_pages
    from gantune.data import Encoder, load_pairs
    from gantune.models import load_base_model

    keep_freed_pages()
    pairs, _ = load_pairs(str(ROOT.parent / "shared" / "tofu"), "forget10")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.steps} decode steps, "
          f"{args.rounds} rounds alternating")
    for precision in args.precision:
        base = load_base_model("default", precision=precision)
        for rows in args.rows:
            enc = Encoder(base.tokenizer, base.eos_id, 128, args.steps + 2)
            ids, mask = enc.prompts([pairs[i % len(pairs)].question for i in range(rows)])
            compiled.set_mode("compiled")
            before = compiled.compile_seconds(base.model)
            first = run(base, ids, mask, enc.pad_id, args.steps)[2]
            spent = compiled.compile_seconds(base.model) - before
            times = {"eager": [], "compiled": []}
            for _ in range(args.rounds):
                for mode in times:
                    compiled.set_mode(mode)
                    times[mode].append(run(base, ids, mask, enc.pad_id, args.steps)[0])
            out = {}
            for mode in times:
                compiled.set_mode(mode)
                out[mode] = run(base, ids, mask, enc.pad_id, args.steps)[1]
            e, c = (statistics.median(times[m]) * 1e3 for m in ("eager", "compiled"))
            same = (out["eager"] == out["compiled"]).float().mean().item()
            print(f"{precision} batch {rows:3d}: compile {spent:5.1f} s (first call {first:5.1f} s); step: eager "
                  f"{e:6.1f} ms, compiled {c:6.1f} ms, compiled/eager speed {e / c:4.2f}x; greedy tokens "
                  f"{same:.0%} the same", flush=True)


if __name__ == "__main__":
    main()
