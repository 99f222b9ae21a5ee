"""The eager decode loop's levers (gantune.cpu 5–7, and 3 for fp32 weights), each A/B in one process, alternating.

    python benchmarks/decode_levers.py [--precision bf16|fp32] [--rows 8 40] [--rounds 5] [--threads N] [--profile]

Loads SmolLM2-135M once, then times the decode steps after the prompt (``--steps`` tokens, no EOS) with the fused
sibling projections, the one-kernel RMS norms, the one-query attention and packed fp32 weights (fp32's products by
oneDNN instead of torch's ``linear``; bf16's were packed before these levers) switched off and on, in turn, round
after round: ratios measured this way hold on a busy machine where absolute times do not. Prints the median step
(ms) of each setting and its ratio to the loop without any (issue 30's start); ``--profile`` adds where a step's
milliseconds go, by operation, with none and with all on, and what the step's matrix products alone take (each
weight, fused siblings as one, multiplied once in the order a step reads them: the part of a step no eager lever
can shorten).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


LIBRARY: dict = {}  # gantune.cpu._packable as the library has it, kept at the first switch


def fused_kernel_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """gantune's attention as it was before the one-query path: torch's fused kernel at every step."""
    import torch

    if attention_mask is not None and attention_mask.ndim == 4:
        attention_mask = attention_mask[:, :, :, : key.shape[-2]]
    out = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask,
                                                           scale=scaling, enable_gqa=key.shape[1] != query.shape[1])
    return out.transpose(1, 2).contiguous(), None


def switch(model, siblings: bool, norms: bool, attention: bool, packed: bool) -> None:
    """Turn the fused sibling projections, the one-kernel RMS norms, the one-query attention and packed fp32 weights
    of a prepared model (decoding only) on or off."""
    import torch
    from transformers import AttentionInterface

    from gantune import cpu

    AttentionInterface.register(cpu.ATTENTION, cpu.grouped_sdpa if attention else fused_kernel_attention)
    packable = LIBRARY.setdefault("packable", cpu._packable)
    cpu._packable = packable if packed else (lambda x, w: x.dtype != torch.float32 and packable(x, w))

    for module in model.modules():
        if hasattr(module, "_gantune_siblings"):
            plain = cpu.packed_linear if cpu._CAN_PACK else type(module).forward
            module.forward = types.MethodType(cpu.sibling_linear if siblings else plain, module)
        elif "forward" in module.__dict__ and module.forward.__func__ in (cpu.rms_norm, type(module).forward):
            module.forward = types.MethodType(cpu.rms_norm if norms else type(module).forward, module)


def products_alone(model, rows: int, rounds: int = 15) -> float:
    """Median ms of one decode step's matrix products alone: every linear layer of ``model`` (a group of fused
    siblings as its one product) given ``rows`` input rows, in module order, as a step streams the weights."""
    import torch

    from gantune import cpu

    calls = []
    for module in model.modules():
        if type(module) is not torch.nn.Linear:
            continue
        group, index = getattr(module, "_gantune_siblings", (None, 0))
        if index:
            continue
        weight, bias = group._fused() if group is not None else (module.weight, module.bias)
        calls.append((torch.randn(rows, module.in_features, dtype=weight.dtype), weight, bias))
    times = []
    with torch.no_grad():
        for _ in range(rounds + 2):
            t0 = time.perf_counter()
            for x, weight, bias in calls:
                cpu.product(x, weight, bias)
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times[2:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--precision", default="bf16", choices=("bf16", "fp32"))
    ap.add_argument("--rows", type=int, nargs="+", default=[8, 40])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--threads", type=int, help="torch's threads (default: torch's own choice)")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from gantune.cpu import keep_freed_pages
    from gantune.data import Encoder, load_pairs
    from gantune.generation import decode_steps
    from gantune.models import load_base_model

    keep_freed_pages()
    base = load_base_model("default", precision=args.precision)
    pairs, _ = load_pairs(str(ROOT.parent / "shared" / "tofu"), "forget10")
    settings = {"none": (False, False, False, False), "fused q/k/v, gate/up": (True, False, False, False),
                "rms_norm": (False, True, False, False), "one-query attention": (False, False, True, False),
                "packed fp32 weights": (False, False, False, True), "all": (True, True, True, True)}
    print(f"{args.precision}, {torch.get_num_threads()} threads, {args.rounds} rounds alternating, {args.steps} steps; "
          f"decode step ms, ratio to 'none'")
    for rows in args.rows:
        enc = Encoder(base.tokenizer, base.eos_id, 128, args.steps + 1)
        ids, mask = enc.prompts([pairs[i % len(pairs)].question for i in range(rows)])

        def run(ids=ids, mask=mask, pad=enc.pad_id) -> float:
            with base.autocast():
                steps = decode_steps(base.model, ids, mask, -1, pad, args.steps + 1)
                next(steps)
                t0 = time.perf_counter()
                for _ in steps:
                    pass
                return (time.perf_counter() - t0) / args.steps * 1e3

        times: dict[str, list[float]] = {name: [] for name in settings}
        tokens = {}
        for name, levers in settings.items():  # warm-up, and each setting's greedy tokens
            switch(base.model, *levers)
            run()
            with base.autocast():
                tokens[name] = torch.stack([t for t, _ in decode_steps(base.model, ids, mask, -1, enc.pad_id, 9)])
        for _ in range(args.rounds):
            for name, levers in settings.items():
                switch(base.model, *levers)
                times[name].append(run())
        ref, ref_median = min(times["none"]), statistics.median(times["none"])
        for name, values in times.items():
            ms, median = min(values), statistics.median(values)
            same = torch.equal(tokens[name], tokens["none"])
            print(f"  batch {rows}: {name:22s} min {ms:6.1f} ms {ref / ms:5.2f}×   median {median:6.1f} ms "
                  f"{ref_median / median:5.2f}×   (9 greedy tokens {'identical' if same else 'differ'})", flush=True)
        if args.profile:
            from torch.profiler import profile

            for name in ("none", "all"):
                switch(base.model, *settings[name])
                with profile() as prof:
                    run()
                print(f"  batch {rows}, {name}: where {args.steps} steps' milliseconds go, by operation")
                print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
            ms = products_alone(base.model, rows)
            fastest, median = min(times["all"]), statistics.median(times["all"])
            print(f"  batch {rows}: the step's matrix products alone {ms:.1f} ms, of a step with all levers on "
                  f"{fastest:.1f} ms min ({ms / fastest:.0%}), {median:.1f} ms median ({ms / median:.0%})")


if __name__ == "__main__":
    main()
