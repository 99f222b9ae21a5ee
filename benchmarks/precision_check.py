"""Is quality unchanged in bf16? Two bench reports of the same preset, seeds and methods, one per precision, paired.

    python -m gantune bench --preset quick --seeds 0 1 2 --precision fp32 --bleurt none --out fp32/report.json
    python -m gantune bench --preset quick --seeds 0 1 2 --precision bf16 --bleurt none --out bf16/report.json
    python benchmarks/precision_check.py fp32/report.json bf16/report.json

For every row (greedy answers) it pairs each test question's ROUGE-L and MiniLM similarity across the two
reports (the same questions: each seed has its own split, the same in both) and prints the mean bf16 − fp32
difference with its 95% bootstrap interval (gantune.stats, as the bench's paired differences), and whether it
passes issue 19's check: within ±0.01, its interval covering zero.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gantune.metrics import Semantic, cosine, rouge_per_example  # noqa: E402
from gantune.stats import paired_difference  # noqa: E402

LIMIT = 0.01


def answers(report: Path) -> dict[str, dict[int, list[tuple[str, str, str]]]]:
    """row -> seed -> [(question, reference, answer)] from the report's generations.jsonl (greedy rows only)."""
    out: dict[str, dict[int, list]] = defaultdict(lambda: defaultdict(list))
    for line in (report.parent / "generations.jsonl").read_text().splitlines():
        g = json.loads(line)
        for row, answer in g["answers"].items():
            if "@" not in row:
                out[row][g["seed"]].append((g["question"], g["reference"], answer))
    return out


def main() -> None:
    fp32_report, bf16_report = (Path(a) for a in sys.argv[1:3])
    fp32, bf16 = answers(fp32_report), answers(bf16_report)
    semantic = Semantic.load()
    print(f"{fp32_report} (fp32) against {bf16_report} (bf16): bf16 − fp32, per question, greedy answers\n")
    print("| row | seeds | Δ ROUGE-L | Δ semantic | identical answers | within ±0.01, interval covers 0 |")
    print("|---|---|---|---|---|---|")
    for row in fp32:
        seeds = sorted(set(fp32[row]) & set(bf16.get(row, {})))
        if not seeds:
            continue
        if any([q for q, _, _ in fp32[row][s]] != [q for q, _, _ in bf16[row][s]] for s in seeds):
            raise SystemExit(f"{row}: the two reports hold other questions; run both on the same seeds and data")
        scores = {}
        for name, runs in (("fp32", fp32), ("bf16", bf16)):
            rouge = [[r["rougeL"] for r in rouge_per_example([a for _, _, a in runs[row][s]],
                                                             [r for _, r, _ in runs[row][s]])] for s in seeds]
            sim = [cosine(semantic.embed([a for _, _, a in runs[row][s]]), semantic.embed([r for _, r, _ in runs[row][s]]))
                   for s in seeds]
            scores[name] = (rouge, sim)
        cells, ok = [], True
        for k in range(2):
            diff, (lo, hi) = paired_difference(scores["bf16"][k], scores["fp32"][k])
            ok &= abs(diff) <= LIMIT and lo <= 0 <= hi
            cells.append(f"{diff:+.3f} [{lo:+.3f}, {hi:+.3f}]")
        same = sum(a == b for s in seeds for (_, _, a), (_, _, b) in zip(fp32[row][s], bf16[row][s]))
        total = sum(len(fp32[row][s]) for s in seeds)
        print(f"| {row} | {' '.join(map(str, seeds))} | {cells[0]} | {cells[1]} | {same}/{total} | "
              f"{'yes' if ok else 'NO'} |")


if __name__ == "__main__":
    main()
