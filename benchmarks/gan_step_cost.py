"""One GAN iteration vs one LoRA-style forward+backward over the same batch, side by side.

    python benchmarks/gan_step_cost.py [--iters 3] [--batch-size 8] [--max-new-tokens 48] [--pairs 40]

Each side runs in its own fresh process (so one side's freed memory cannot hide the other's
peak) on the offline default model and the same forget10 batches, after one warm-up step.
Prints seconds per step, peak memory (GPU allocator, or the process's resident set on CPU: the
whole peak and the part above the loaded model) and the GAN/LoRA ratios, plus where the GAN
step's time goes (sampling / D / G pass).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TOFU = Path(__file__).resolve().parents[2] / "shared" / "tofu"


def measure(mode: str, args: argparse.Namespace) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model

    from gantune.config import preset_config
    from gantune.data import Encoder, load_pairs
    from gantune.memory import MemoryMonitor
    from gantune.methods.gan.method import GanMethod
    from gantune.models import load_base_model, pick_device
    from gantune.scoring import answer_logprobs, mle_loss

    torch.manual_seed(0)
    device = pick_device("auto")
    base = load_base_model("default", device=device)
    pairs, _ = load_pairs(str(args.data), "forget10")
    pairs = pairs[: args.pairs]
    enc = Encoder(base.tokenizer, base.eos_id, 128, args.max_new_tokens)
    items = enc.encode(pairs)
    batches = [enc.collate(items[i : i + args.batch_size]).to(device) for i in range(0, len(items), args.batch_size)]
    # one adversarial iteration with its own sampling (no warm-up, per-step rollout): the step's full cost; the
    # whole-run ratio (warm-up epochs, one rollout per epoch) is what `gantune bench` reports as time/LoRA
    config = preset_config(batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, warmup_epochs=0,
                           rollout="batch")
    autocast = base.autocast()  # the precision --precision auto picks for this chip (bf16 on AMX / AVX512-BF16 CPUs)

    if mode == "gan":
        method = GanMethod(base, config)

        def step(batch):
            return method.train_step(batch)
    else:
        lm = get_peft_model(base.model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]))
        opt = torch.optim.AdamW([p for p in lm.parameters() if p.requires_grad], lr=1e-4)

        def step(batch):
            with autocast:
                if mode == "lora":  # the loss as gantune computes it: logits of the answer slice only
                    logp = answer_logprobs(lm, batch.prompt_ids, batch.prompt_mask, batch.answer_ids, batch.answer_mask)
                    loss = mle_loss(logp, batch.answer_mask)
                else:  # the usual SFT step: labels over the whole row, prompt and padding set to -100
                    ids = torch.cat([batch.prompt_ids, batch.answer_ids], 1)
                    mask = torch.cat([batch.prompt_mask, batch.answer_mask], 1)
                    labels = torch.cat([torch.full_like(batch.prompt_ids, -100),
                                        batch.answer_ids.masked_fill(batch.answer_mask == 0, -100)], 1)
                    loss = lm(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp(min=0),
                              labels=labels).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return {}

    times, parts = [], {"sample_seconds": 0.0, "d_seconds": 0.0, "g_seconds": 0.0}
    with MemoryMonitor(device, interval=0.01) as memory:
        loaded_mb = memory.current_mb()
        step(batches[0])  # warm-up (inside the memory window: first-step allocations count too)
        for i in range(args.iters):
            t0 = time.perf_counter()
            stats = step(batches[i % len(batches)])
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
            for k in parts:
                parts[k] += stats.get(k, 0.0)
        peak_mb = memory.peak_mb()
    return {"mode": mode, "seconds_per_step": sum(times) / len(times), "peak_mb": peak_mb, "loaded_mb": loaded_mb,
            "device": str(device), "parts": {k: v / args.iters for k, v in parts.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--pairs", type=int, default=40)
    ap.add_argument("--data", type=Path, default=TOFU)
    ap.add_argument("--mode", choices=["gan", "lora", "lora-labels"], help=argparse.SUPPRESS)  # the child process
    args = ap.parse_args()
    if args.mode:
        print(json.dumps(measure(args.mode, args)))
        return
    rows = {}
    for mode in ("lora", "lora-labels", "gan"):
        out = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--mode", mode],
                             capture_output=True, text=True, check=True)
        rows[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    gan = rows["gan"]
    print(f"device {gan['device']}; batch {args.batch_size}, ≤{args.max_new_tokens} new tokens, "
          f"{args.pairs} forget10 pairs, {args.iters} timed steps after 1 warm-up")
    for name, label in (("lora", "LoRA fwd+bwd, answer-slice logits (as gantune)"),
                        ("lora-labels", "LoRA fwd+bwd, full logits + labels (usual SFT step)")):
        lora = rows[name]
        print(f"\nvs {label}")
        print(f"{'':24}{'LoRA':>10}{'GAN iteration':>15}{'GAN/LoRA':>10}")
        print(f"{'seconds per step':24}{lora['seconds_per_step']:10.2f}{gan['seconds_per_step']:15.2f}"
              f"{gan['seconds_per_step'] / lora['seconds_per_step']:10.2f}")
        print(f"{'peak memory MB':24}{lora['peak_mb']:10.0f}{gan['peak_mb']:15.0f}{gan['peak_mb'] / lora['peak_mb']:10.2f}")
        lo, go = lora["peak_mb"] - lora["loaded_mb"], gan["peak_mb"] - gan["loaded_mb"]
        print(f"{'  above loaded model':24}{lo:10.0f}{go:15.0f}{go / max(lo, 1e-9):10.2f}")
    p = gan["parts"]
    total = sum(p.values()) or 1.0
    print("GAN time: " + ", ".join(f"{k.removesuffix('_seconds')} {v:.2f} s ({v / total:.0%})" for k, v in p.items()))


if __name__ == "__main__":
    main()
