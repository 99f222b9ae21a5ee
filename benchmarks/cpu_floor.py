"""How close gantune runs to this machine's floor: today's code paths against the new ones, side by side.

    python benchmarks/cpu_floor.py [--baseline 66bacc6] [--loop-baseline 68ec3fd] [--skip-compare] [--quick-bench]
                                   [--only-decode]

Prints, for this machine (its CPU named):
1. the measured peaks: a 2048² matrix product in fp32 and bf16 (GFLOPS) and memory read bandwidth (GB/s);
2. decoding tokens/s at batch 8 and 40 (32 tokens after the first, no EOS), in bf16 and in fp32 side by side:
   transformers' ``generate`` at ``--baseline`` (fp32 weights, its sdpa attention), gantune's eager loop at
   ``--loop-baseline`` (issue 30's start) and this tree's eager loop (fused sibling projections, one-kernel
   norms), the ratios between them, and the new loop against the floor of a decode step at its precision —
   the larger of its arithmetic (2 × parameters × rows at the matmul peak) and its weight bytes at the
   bandwidth (the compiled step: benchmarks/compiled_decode.py, docs/benchmarks.md; not built);
3. one training step of every method (the GAN's adversarial step with its own sampling), today (fp32,
   sdpa) against new;
4. a comparison of base + GAN + LoRA on 8 pairs, end to end (``bench --preset quick --n 8 --epochs 2
   --batch-size 2 --max-new-tokens 16 --methods gan lora --bleurt none``), the ``--baseline`` commit's
   code (a temporary git worktree) against this tree's;
5. with ``--quick-bench``: the quick bench's GAN and LoRA rows (one seed), training seconds, both codes.

Every measurement runs in a process of its own (two at once on 2 cores would ruin both). Run it on a
quiet machine; the ratios are what it is for.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TOFU = ROOT.parent / "shared" / "tofu"
DECODE_ROWS = (8, 40)
PRECISIONS = ("bf16", "fp32")
STEPS = 32
METHODS = ("gan", "adapter-mle", "lora", "prompt-tuning", "prefix-tuning", "full")


def cpu_name() -> str:
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown CPU"


def child(kind: str, **values) -> dict:
    """Run one measurement in a fresh process and return what it printed (its last line, JSON); ``tree``: whose
    gantune it imports (today's: the baseline worktree)."""
    out = subprocess.run([sys.executable, __file__, "--child", json.dumps({"kind": kind, **values})],
                         capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if out.returncode != 0:
        raise RuntimeError(f"{kind} {values} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- the measurements, each in its own process ------------------------------------------------------------

def measure_peaks() -> dict:
    import torch

    def rate(f, n):
        f()
        t0 = time.perf_counter()
        for _ in range(n):
            f()
        return (time.perf_counter() - t0) / n

    a = torch.randn(2048, 2048)
    flops = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        x = a.to(dtype)
        flops[name] = 2 * 2048 ** 3 / rate(lambda x=x: x @ x, 20) / 1e9
    big = torch.randn(128_000_000 // 4)  # 512 MB: far past the caches
    bandwidth = big.numel() * 4 / rate(big.sum, 10) / 1e9
    return {"gflops": flops, "gb_per_s": bandwidth, "threads": torch.get_num_threads()}


def _load(new: bool, precision: str = "auto"):
    import torch

    from gantune.models import load_base_model, pick_device

    kwargs = {}  # today's code: fp32, transformers' sdpa
    if new:  # as `python -m gantune` and `python app.py` start
        from gantune.cpu import keep_freed_pages

        keep_freed_pages()
        kwargs = {"precision": precision}
    base = load_base_model("default", device=pick_device("auto"), **kwargs)
    torch.manual_seed(0)
    return base


def measure_decoding(new: bool, rows: int, precision: str = "auto") -> dict:
    import torch
    from transformers import GenerationConfig

    from gantune.data import Encoder, load_pairs

    base = _load(new, precision)
    pairs, _ = load_pairs(str(TOFU), "forget10")
    enc = Encoder(base.tokenizer, base.eos_id, 128, STEPS + 1)
    ids, mask = enc.prompts([pairs[i % len(pairs)].question for i in range(rows)])

    def run() -> float:  # seconds of the STEPS decode steps after the prompt pass
        if new:
            from gantune.generation import decode_steps

            with base.autocast():
                steps = decode_steps(base.model, ids, mask, -1, enc.pad_id, STEPS + 1)  # eos -1: never ends
                next(steps)
                t0 = time.perf_counter()
                for _ in steps:
                    pass
                return time.perf_counter() - t0
        prompt_only = GenerationConfig(max_new_tokens=1, do_sample=False, eos_token_id=None, pad_token_id=enc.pad_id)
        full = GenerationConfig(max_new_tokens=STEPS + 1, do_sample=False, eos_token_id=None, pad_token_id=enc.pad_id)
        with torch.no_grad():
            t0 = time.perf_counter()
            base.model.generate(input_ids=ids, attention_mask=mask, generation_config=prompt_only, use_model_defaults=False)
            t1 = time.perf_counter()
            base.model.generate(input_ids=ids, attention_mask=mask, generation_config=full, use_model_defaults=False)
            return time.perf_counter() - t1 - (t1 - t0)

    run()  # warm-up
    seconds = min(run() for _ in range(2))
    params = sum(p.numel() for p in base.model.parameters())
    byte = next(base.model.parameters()).element_size()
    return {"tokens_per_s": rows * STEPS / seconds, "step_ms": seconds / STEPS * 1e3, "params": params,
            "bytes": byte, "precision": getattr(base, "precision", "fp32")}


def measure_step(new: bool, method: str) -> dict:

    from gantune.config import preset_config
    from gantune.data import Encoder, load_pairs
    from gantune.methods import get_method

    base = _load(new)
    pairs, _ = load_pairs(str(TOFU), "forget10")
    enc = Encoder(base.tokenizer, base.eos_id, 128, 48)
    items = enc.encode(pairs[:32])
    batches = [enc.collate(items[i:i + 8]) for i in range(0, 32, 8)]
    # the GAN's adversarial step with its own sampling (no warm-up, a rollout per step): its whole cost
    extra = {"precision": base.precision} if new else {}
    config = preset_config(method, warmup_epochs=0, rollout="batch", **extra).validate()
    m = get_method(method)(base, config)
    m.start_epoch(0, batches)
    m.train_step(batches[0])  # warm-up
    times = []
    for b in batches[1:]:
        t0 = time.perf_counter()
        m.train_step(b)
        times.append(time.perf_counter() - t0)
    return {"seconds": sorted(times)[len(times) // 2], "precision": getattr(base, "precision", "fp32")}


def measure_bench(tree: str, out: str, args: list[str]) -> dict:
    Path(out).parent.mkdir(parents=True)  # a folder of its own: bench never writes beside another's files
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "gantune", "bench", *args, "--data", str(TOFU), "--out", out], cwd=tree,
                   check=True, capture_output=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    wall = time.perf_counter() - t0
    report = json.loads(Path(out).read_text())
    rows = {r["method"]: r for r in report["rows"] if not r.get("temperature")}
    return {"wall": wall, "train": {k: r.get("train_seconds") for k, r in rows.items()},
            "eval": {k: r.get("eval_seconds") for k, r in rows.items()}}


# --- the report ------------------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", default="66bacc6", help="the git commit whose code is 'today' in sections 4 and 5")
    ap.add_argument("--loop-baseline", default="68ec3fd", help="the git commit whose eager decode loop is 'today's "
                    "loop' in section 2")
    ap.add_argument("--skip-compare", action="store_true", help="leave out section 4")
    ap.add_argument("--only-benches", action="store_true", help="sections 4 and 5 only")
    ap.add_argument("--only-decode", action="store_true", help="sections 1 and 2 only")
    ap.add_argument("--quick-bench", action="store_true", help="also run section 5 (about 10 minutes)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        values = json.loads(args.child)
        kind = values.pop("kind")
        tree = values.pop("tree", str(ROOT))
        sys.path.insert(0, tree)  # whose gantune this measurement imports
        if kind == "bench":
            values["tree"] = tree
        result = {"peaks": measure_peaks, "decode": measure_decoding, "step": measure_step,
                  "bench": measure_bench}[kind](**values)
        print(json.dumps(result))
        return

    with tempfile.TemporaryDirectory() as tmp:
        trees = {name: Path(tmp) / name for name in ("baseline", "loop")}
        for name, commit in (("baseline", args.baseline), ("loop", args.loop_baseline)):
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(trees[name]), commit],
                           check=True, capture_output=True)
        try:
            report(args, str(trees["baseline"]), str(trees["loop"]), tmp)
        finally:
            for tree in trees.values():
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], capture_output=True)


def report(args: argparse.Namespace, baseline: str, loop: str, tmp: str) -> None:
    today, new_tree = {"tree": baseline}, {"tree": str(ROOT)}
    peaks = child("peaks")
    print(f"{cpu_name()}, {peaks['threads']} threads, torch {__import__('torch').__version__}; today = {args.baseline}")
    print(f"\n1. peaks: matmul 2048² fp32 {peaks['gflops']['fp32']:.0f} GFLOPS, bf16 {peaks['gflops']['bf16']:.0f} GFLOPS; "
          f"memory read {peaks['gb_per_s']:.1f} GB/s")

    if args.only_benches:
        return benches(args, baseline, tmp)
    print(f"\n2. decoding, {STEPS} tokens after the prompt (SmolLM2-135M): tokens/s; today's loop = {args.loop_baseline}")
    print("| rows | precision | generate (fp32) | today's loop | new loop | new / today's loop | new / generate | "
          "floor | new / floor |")
    print("|---|---|---|---|---|---|---|---|---|")
    for rows in DECODE_ROWS:
        old = child("decode", new=False, rows=rows, **today)
        for precision in PRECISIONS:
            was = child("decode", new=True, rows=rows, precision=precision, tree=loop)
            new = child("decode", new=True, rows=rows, precision=precision, **new_tree)
            arithmetic = 2 * new["params"] * rows / (peaks["gflops"][precision] * 1e9)
            memory = new["params"] * new["bytes"] / (peaks["gb_per_s"] * 1e9)
            floor = rows / max(arithmetic, memory)
            bound = "memory" if memory > arithmetic else "arithmetic"
            print(f"| {rows} | {precision} | {old['tokens_per_s']:.0f} | {was['tokens_per_s']:.0f} | "
                  f"{new['tokens_per_s']:.0f} | {new['tokens_per_s'] / was['tokens_per_s']:.2f}× | "
                  f"{new['tokens_per_s'] / old['tokens_per_s']:.2f}× | {floor:.0f} ({bound}) | "
                  f"{new['tokens_per_s'] / floor:.0%} |", flush=True)

    if args.only_decode:
        return
    print("\n3. one training step, batch 8 (≤128 prompt, ≤48 answer tokens): seconds (median of 3)")
    print("| method | today | new (auto) | speed-up |")
    print("|---|---|---|---|")
    for method in METHODS:
        old, new = child("step", new=False, method=method, **today), child("step", new=True, method=method, **new_tree)
        print(f"| {method}{' (adversarial step, own sampling)' if method == 'gan' else ''} | {old['seconds']:.2f} | "
              f"{new['seconds']:.2f} ({new['precision']}) | {old['seconds'] / new['seconds']:.2f}× |", flush=True)

    benches(args, baseline, tmp)


def benches(args: argparse.Namespace, baseline: str, tmp: str) -> None:
    trees = (("today", baseline), ("new", str(ROOT)))
    if not args.skip_compare:
        small = ["--preset", "quick", "--n", "8", "--epochs", "2", "--batch-size", "2", "--max-new-tokens", "16",
                 "--methods", "gan", "lora", "--bleurt", "none"]
        print(f"\n4. base + GAN + LoRA on 8 pairs, end to end: bench {' '.join(small)}")
        print("| code | wall s | train gan s | train lora s | eval base s | eval gan s | eval lora s |")
        print("|---|---|---|---|---|---|---|")
        results = {}
        for name, tree in trees:
            r = results[name] = child("bench", tree=tree, out=str(Path(tmp) / f"{name}-small" / "report.json"), args=small)
            print(f"| {name} | {r['wall']:.0f} | {r['train']['gan']:.1f} | {r['train']['lora']:.1f} | "
                  f"{r['eval']['base']:.1f} | {r['eval']['gan']:.1f} | {r['eval']['lora']:.1f} |", flush=True)
        print(f"new/today wall: {results['new']['wall'] / results['today']['wall']:.2f}×")
    if args.quick_bench:
        quick = ["--preset", "quick", "--methods", "gan", "lora", "--bleurt", "none", "--seeds", "0"]
        print(f"\n5. bench {' '.join(quick)}: training seconds")
        print("| code | gan | lora | gan/lora | wall s |")
        print("|---|---|---|---|---|")
        results = {}
        for name, tree in trees:
            r = results[name] = child("bench", tree=tree, out=str(Path(tmp) / f"{name}-quick" / "report.json"), args=quick)
            print(f"| {name} | {r['train']['gan']:.1f} | {r['train']['lora']:.1f} | "
                  f"{r['train']['gan'] / r['train']['lora']:.2f}× | {r['wall']:.0f} |", flush=True)
        print(f"gan new/today: {results['new']['train']['gan'] / results['today']['train']['gan']:.2f}×")

if __name__ == "__main__":
    main()
