"""The comparison's report, a pure function of its evaluations: each row's means over seeds with 95% intervals, the
references' own row, paired differences (to the twin, lora and base), the objective × adapter table and the answers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..metrics import DISTRIBUTION_NOTES, token_lengths
from ..runs import RunSummary
from ..stats import auc, mean_interval, paired_difference, seed_interval, statistic_interval, w1_equal_size

# report field -> per-question score it is the mean of
PER_QUESTION = {"rouge1": "rouge1", "rouge2": "rouge2", "rougeL": "rougeL", "rougeLsum": "rougeLsum",
                "bleurt": "bleurt", "semantic": "semantic", "length_mean": "length", "truncated": "truncated"}
METRIC_KEYS = ("rouge1", "rouge2", "rougeL", "rougeLsum", "bleurt", "semantic", "retention", "retention_rougeL",
               "retention_answered", "length_mean", "length_w1", "truncated", "distinct1", "distinct2", "real_vs_generated_auc")
PAIRED_KEYS = ("rougeL", "semantic")
NOTES = {
    "ci": "half the width of a 95% percentile bootstrap interval over (seed, question) pairs: each seed's test "
          "questions resampled with replacement, 2000 times, the statistic averaged over seeds; distinct-n (which "
          "repeated answers would bias) gets a t-interval over seeds instead, none with one seed",
    "paired": "mean per-question difference (same questions, same seed) with its 95% bootstrap interval",
    "retention_seeds": "retention is scored once per method, on the first seed's run",
    "mauve": "left out: with ~40 answers per seed mauve-text clusters 80 points into 4 buckets; 40 TOFU answers "
             "against 40 others cut to 4 words scored 0.22-0.76 across random draws (against 40 others uncut: "
             "0.91-1.00), and its authors ask for thousands of samples. real_vs_generated_auc is the two-sample "
             "test that works at this size",
    "temperature": "rows named method@T hold answers sampled at temperature T (no top-k/top-p, seeded); the other "
                   "rows are greedy; retention is greedy only",
    **DISTRIBUTION_NOTES,
}


@dataclass
class Evaluation:
    """One model's evaluation on one seed's split: its result, its run's summary and folder, how long it took."""

    row: str
    seed: int
    result: dict[str, Any]
    summary: RunSummary | None
    seconds: float
    run: str | None = None


def _label(row: str, temperature: float) -> str:
    return row if temperature == 0 else f"{row}@{temperature:g}"


def build_report(evaluations: list[Evaluation], seeds: list[int], n_train: int, n_test: int,
                 temperatures: Sequence[float], stopped: bool, twins: dict[str, str],
                 cells: dict[str, tuple[str, str] | None]) -> dict[str, Any]:
    """Rows (means over seeds, intervals), the reference row, paired differences, the objective × adapter table
    and the answers.

    ``twins``: adversarial row -> its twin (the MLE row of the same adapter), paired with it too; ``cells``: row ->
    its (objective, adapter)."""
    order = list(dict.fromkeys(e.row for e in evaluations))
    by_row = {row: [e for e in evaluations if e.row == row] for row in order}
    rows, per_question = [], {}
    for temperature in (0.0, *temperatures):
        for row in order:
            evs = by_row[row]
            results = [e.result if temperature == 0 else e.result["sampled"][f"{temperature:g}"] for e in evs]
            label = _label(row, temperature)
            per_question[label] = {e.seed: r["per_question"] for e, r in zip(evs, results)}
            rows.append(_row(label, row, temperature, evs, results))
    greedy = [e for e in evaluations if e.row == order[0]] if order else []
    noise = sorted({e.result["noise"] for e in evaluations if e.result.get("noise")})
    first = greedy[0].result if greedy else {}
    notes = {"rouge": first.get("rouge_note"), "bleurt": first.get("bleurt_note"),
             "semantic": first.get("semantic_note"), "retention": first.get("retention_note"),
             "retention_answered": first.get("retention_answered_note"), **NOTES,
             "noise": ("M_tunable is fed " + " / ".join("noise sampled per answer (--eval-noise sample)" if n == "sample"
                                                       else "zero noise" for n in noise) + " when answering")
             if noise else "no method with M_tunable was evaluated"}
    return {
        "seeds": seeds, "n_train": n_train, "n_test": n_test,
        "temperatures": [0.0, *temperatures], "status": "stopped" if stopped else "completed", "notes": notes,
        "rows": rows, "reference": _reference_row(greedy), "paired": (paired := _paired(rows, per_question, twins)),
        "objectives": _objectives(rows, paired, cells),
        "generations": _generations(evaluations, temperatures),
    }


def _objectives(rows: list[dict[str, Any]], paired: list[dict[str, Any]],
                cells: dict[str, tuple[str, str] | None]) -> list[dict[str, Any]]:
    """The objective × adapter table, one entry a filled cell (greedy answers): which row, its ROUGE-L and semantic
    similarity, and its paired difference to its twin (an adversarial row's MLE row of the same adapter)."""
    against_twin = {p["method"]: p for p in paired if p.get("twin") and not p["temperature"]}
    out = []
    for row in rows:
        cell = cells.get(row["method"]) if not row["temperature"] else None
        if cell is None:
            continue
        vs = against_twin.get(row["method"])
        out.append({"objective": cell[0], "adapter": cell[1], "row": row["method"], "rougeL": row.get("rougeL"),
                    "semantic": row.get("semantic"),
                    "twin": vs and vs["versus"], "vs_twin": vs and {k: vs.get(k) for k in PAIRED_KEYS}})
    return out


def _generations(evaluations: list[Evaluation], temperatures: Sequence[float]) -> list[dict[str, Any]]:
    """Each seed's test questions, references and every row's answer (one dict a question)."""
    out = []
    for seed in dict.fromkeys(e.seed for e in evaluations):
        evs = [e for e in evaluations if e.seed == seed]
        answers = {_label(e.row, t): (e.result if t == 0 else e.result["sampled"][f"{t:g}"])["generations"]
                   for e in evs for t in (0.0, *temperatures)}
        for i, g in enumerate(evs[0].result["generations"]):
            out.append({"seed": seed, "question": g["question"], "reference": g["reference"],
                        "answers": {label: gens[i]["answer"] for label, gens in answers.items()}})
    return out


def _row(label: str, row: str, temperature: float, evs: list[Evaluation], results: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"method": label, "temperature": temperature, "seeds": [e.seed for e in evs]}
    ci: dict[str, list[float] | None] = {}
    for key in METRIC_KEYS:
        out[key], ci[key] = _metric(key, results)
    out["ci"] = ci
    # cost: once, on the greedy row (a sampled row is the same runs); base trains nothing. eval_seconds: one
    # seed's whole evaluation (every temperature; retention on the first seed), mean over seeds
    summaries = [e.summary for e in evs if e.summary] if temperature == 0 else []
    untrained = temperature == 0 and row == "base"
    out.update({
        "train_seconds": 0.0 if untrained else _mean([s.seconds for s in summaries]),
        "peak_memory_mb": _mean([s.peak_memory_mb for s in summaries]),
        "trainable_params": 0 if untrained else summaries[0].trainable_params if summaries else None,
        "tokens_per_s": _mean([s.tokens_per_s for s in summaries]),
        "steps": [s.steps for s in summaries] if summaries else None,  # each seed's training steps
        "eval_seconds": round(_mean([e.seconds for e in evs]), 1) if temperature == 0 else None,
        "retention_n": next((r.get("retention_n") for r in results if r.get("retention_n")), None),
        "run": evs[0].run, "runs": [e.run for e in evs],
    })
    return out


def _metric(key: str, results: list[dict[str, Any]]) -> tuple[float | None, list[float] | None]:
    """One metric's mean over seeds and its interval, from each seed's per-question scores."""
    pq = [r["per_question"] for r in results]
    if key in PER_QUESTION:
        name = PER_QUESTION[key]
        if not all(name in p for p in pq):
            return None, None
        return _with_interval(mean_interval([p[name] for p in pq]))
    if key == "length_w1":
        return _with_interval(statistic_interval([len(p["length"]) for p in pq], lambda g, i: w1_equal_size(
            np.asarray(pq[g]["length"], dtype=float)[i], np.asarray(pq[g]["reference_length"], dtype=float)[i])))
    if key == "real_vs_generated_auc":
        if not all("real_score" in p for p in pq):
            return None, None
        return _with_interval(statistic_interval([len(p["real_score"]) for p in pq], lambda g, i: auc(
            np.asarray(pq[g]["real_score"])[i], np.asarray(pq[g]["generated_score"])[i])))
    if key in ("distinct1", "distinct2"):
        return _with_interval(seed_interval([r[key] for r in results]))
    scored = [r for r in results if r.get("retention_sets")]  # retention: the first seed's, greedy rows only
    if not scored:
        return None, None
    sets = scored[0]["retention_sets"].values()
    if key == "retention":
        return _with_interval(mean_interval([[float(x) for s in sets for x in s["retained"]]]))
    if key == "retention_answered":
        if not all("answered_per_question" in s for s in sets):
            return None, None
        return _with_interval(mean_interval([[float(x) for s in sets for x in s["answered_per_question"]]]))
    return _with_interval(mean_interval([s["rougeL_per_question"] for s in sets]))


def _with_interval(estimate: tuple[float, tuple[float, float] | None]) -> tuple[float, list[float] | None]:
    point, interval = estimate
    return point, list(interval) if interval is not None else None


def _reference_row(greedy: list[Evaluation]) -> dict[str, Any] | None:
    """The references' own length and distinct-n (one test set per seed), to read the rows against."""
    if not greedy:
        return None
    results = [e.result for e in greedy]
    row: dict[str, Any] = {"method": "reference", "seeds": [e.seed for e in greedy]}
    ci: dict[str, list[float] | None] = {}
    row["length_mean"], ci["length_mean"] = _with_interval(
        mean_interval([r["per_question"]["reference_length"] for r in results]))
    for key in ("distinct1", "distinct2"):
        row[key], ci[key] = _with_interval(seed_interval([r["reference"][key] for r in results]))
    row["length_w1"], ci["length_w1"] = 0.0, [0.0, 0.0]
    row["ci"] = ci
    return row


def _paired(rows: list[dict[str, Any]], per_question: dict[str, dict[int, dict[str, list]]],
            twins: dict[str, str]) -> list[dict[str, Any]]:
    """Each row but base against its twin (an adversarial row's, ``twin: true``), lora and base at the same
    temperature, on the seeds both have."""
    out = []
    for row in rows:
        if row["method"] == _label("base", row["temperature"]):
            continue
        name = row["method"].split("@")[0]
        for versus in dict.fromkeys([*([twins[name]] if name in twins else []), "lora", "base"]):
            other = _label(versus, row["temperature"])
            if row["method"] == other or other not in per_question:
                continue
            mine, theirs = per_question[row["method"]], per_question[other]
            seeds = [s for s in mine if s in theirs]
            entry: dict[str, Any] = {"method": row["method"], "versus": other, "temperature": row["temperature"],
                                     "seeds": seeds, "twin": twins.get(name) == versus}
            for key in PAIRED_KEYS:
                if not seeds or not all(key in mine[s] and key in theirs[s] for s in seeds):
                    entry[key] = None
                    continue
                diff, interval = paired_difference([mine[s][key] for s in seeds], [theirs[s][key] for s in seeds])
                entry[key] = {"mean": diff, "ci": list(interval)}
            if entry["twin"]:  # what a GAN is for: the answers' distribution against the twin's, on the same resamples
                entry.update(_distribution_differences([mine[s] for s in seeds], [theirs[s] for s in seeds]))
            out.append(entry)
    return out


def _distribution_differences(mine: list[dict[str, list]], theirs: list[dict[str, list]]) -> dict[str, Any]:
    """Length W1 and real-vs-generated AUC of a row minus its twin's, each seed's questions resampled together
    for both (a paired bootstrap of a set statistic): negative is nearer the references for both."""
    sizes = [len(m["length"]) for m in mine]

    def w1(pq: dict[str, list], i: np.ndarray) -> np.ndarray:
        return w1_equal_size(np.asarray(pq["length"], dtype=float)[i], np.asarray(pq["reference_length"], dtype=float)[i])

    def auc_of(pq: dict[str, list], i: np.ndarray) -> np.ndarray:
        return auc(np.asarray(pq["real_score"])[i], np.asarray(pq["generated_score"])[i])

    out: dict[str, Any] = {}
    for key, statistic, needs in (("length_w1", w1, "length"), ("real_vs_generated_auc", auc_of, "real_score")):
        if not all(needs in pq for pq in (*mine, *theirs)):
            out[key] = None
            continue
        diff, interval = statistic_interval(sizes, lambda g, i, f=statistic: f(mine[g], i) - f(theirs[g], i))
        out[key] = {"mean": diff, "ci": list(interval)}
    return out


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def answer_lengths(report: dict[str, Any], tokenizer: Any) -> dict[str, list[int]]:
    """Every row's answers' lengths in tokens, and the references' (``"reference"``), from the report's generations."""
    generations = report.get("generations", [])
    lengths = {row["method"]: token_lengths(tokenizer, [g["answers"][row["method"]] for g in generations
                                                        if row["method"] in g["answers"]]) for row in report["rows"]}
    return {**lengths, "reference": token_lengths(tokenizer, [g["reference"] for g in generations])}
