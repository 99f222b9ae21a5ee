"""A compiled decode step against gantune's eager loop, side by side in one process: does compiling pay here?

    python benchmarks/compiled_decode.py [--precision bf16 fp32] [--rows 1 8 40] [--steps 32] [--rounds 3]
                                        [--no-freeze]

Issue 30's road not built. Loads SmolLM2-135M once (the offline default), then for each precision and batch width:
- the **eager loop**: ``generation.decode_steps`` on the model as gantune prepares it (``gantune.cpu``'s levers);
- the **compiled step**: the same weights in a plain transformers model with its ``StaticCache`` (room for the whole
  answer), one decode step (``forward`` of one token a row) through ``torch.compile`` (inductor; with weight freezing
  and packing unless ``--no-freeze``), one graph per batch width and cache length, as a compiled step would be used.
Prints the first compiled call (the compile: inductor's caches under a fresh temporary folder, as a first process on
a machine sees them), the median decode step of each (after a warm-up, ``--rounds`` rounds alternating), their
ratio, and whether their greedy tokens are the same (real TOFU questions, left-padded; no EOS stop).
Run it on a quiet machine; only the ratios measured in one run mean anything.
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


def eager_loop(base, ids, mask, pad_id: int, steps: int):
    """gantune's decode loop on the prepared model: seconds a step after the first, and the greedy tokens."""
    import torch

    from gantune.generation import decode_steps

    with base.autocast():
        it = decode_steps(base.model, ids, mask, -1, pad_id, steps + 1)
        first = next(it)[0]
        t0 = time.perf_counter()
        tokens = [first, *(t for t, _ in it)]
        return (time.perf_counter() - t0) / steps, torch.stack(tokens, 1)


def static_loop(plain, step, ids, mask, steps: int):
    """The plain model's decode with a ``StaticCache`` (room for the whole answer), each token by ``step``: the
    seconds of each step, and the greedy tokens."""
    import torch
    from transformers import StaticCache

    length = ids.shape[1] + steps + 1
    cache = StaticCache(config=plain.config, max_cache_len=length)
    seen = torch.zeros(ids.shape[0], length, dtype=mask.dtype)
    seen[:, : ids.shape[1]] = mask
    with torch.no_grad():
        logits = plain(input_ids=ids, attention_mask=seen[:, : ids.shape[1]], past_key_values=cache,
                       cache_position=torch.arange(ids.shape[1]), use_cache=True, logits_to_keep=1).logits[:, -1]
        token, tokens, times = logits.float().argmax(-1), [], []
        for i in range(steps):
            tokens.append(token)
            where = ids.shape[1] + i
            seen[:, where] = 1
            t0 = time.perf_counter()
            token = step(plain, token[:, None], torch.tensor([where]), seen, cache).argmax(-1)
            times.append(time.perf_counter() - t0)
    return times, torch.stack(tokens + [token], 1)


def decode_step(plain, ids, position, mask, cache):
    """One decode step of the plain model: the next token's logits (fp32)."""
    return plain(input_ids=ids, cache_position=position, attention_mask=mask, past_key_values=cache, use_cache=True,
                 logits_to_keep=1).logits[:, -1].float()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--precision", nargs="+", default=["bf16", "fp32"], choices=("bf16", "fp32"))
    ap.add_argument("--rows", type=int, nargs="+", default=[1, 8, 40])
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-freeze", action="store_true", help="compile without inductor's weight freezing")
    args = ap.parse_args()

    import torch
    import torch._inductor.config as inductor
    from transformers import AutoModelForCausalLM

    from gantune.cpu import keep_freed_pages
    from gantune.data import Encoder, load_pairs
    from gantune.models import load_base_model

    inductor.freezing = not args.no_freeze
    keep_freed_pages()
    pairs, _ = load_pairs(str(ROOT.parent / "shared" / "tofu"), "forget10")
    compiled = torch.compile(decode_step, dynamic=False)  # frozen graphs do not survive a second shape
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.steps} decode steps, "
          f"{args.rounds} rounds alternating; freezing {'off' if args.no_freeze else 'on'}")
    for precision in args.precision:
        base = load_base_model("default", precision=precision)
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        plain = AutoModelForCausalLM.from_config(base.model.config, attn_implementation="sdpa", dtype=dtype).eval()
        plain.load_state_dict(base.model.state_dict())
        plain.requires_grad_(False)
        for rows in args.rows:
            enc = Encoder(base.tokenizer, base.eos_id, 128, args.steps + 1)
            ids, mask = enc.prompts([pairs[i % len(pairs)].question for i in range(rows)])
            t0 = time.perf_counter()
            first = static_loop(plain, compiled, ids, mask, args.steps)[0][0]  # the compile: one graph a shape
            eager_loop(base, ids, mask, enc.pad_id, args.steps)
            loop, graph = [], []
            for _ in range(args.rounds):
                seconds, loop_tokens = eager_loop(base, ids, mask, enc.pad_id, args.steps)
                loop.append(seconds)
                times, graph_tokens = static_loop(plain, compiled, ids, mask, args.steps)
                graph.append(statistics.median(times))
            e, c = statistics.median(loop) * 1e3, statistics.median(graph) * 1e3
            same = torch.equal(loop_tokens, graph_tokens[:, : loop_tokens.shape[1]])
            print(f"{precision} batch {rows:3d}: first compiled call {first:5.1f} s (with the rest {time.perf_counter() - t0:5.1f} s); "
                  f"step: eager loop {e:6.1f} ms, compiled {c:6.1f} ms, compiled/eager speed {e / c:4.2f}x; "
                  f"greedy tokens {'identical' if same else 'differ'}", flush=True)


if __name__ == "__main__":
    main()
