"""The validating readers: one a kind of run file (and the comparison report), each a damaged or hand-edited file
as one GantuneError line naming the file and the field.

``config`` (config.json), ``trainer_state`` (checkpoint/trainer_state.json), ``evaluation`` (eval.json)
and ``report`` (a saved comparison) check a file's parsed JSON; summary.json's is ``summary.read_summary``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..config import TrainConfig
from ..errors import GantuneError, first_line

# eval.json's scores that the pages read as numbers (each may be null: unavailable)
EVAL_NUMBERS = ("rouge1", "rouge2", "rougeL", "rougeLsum", "bleurt", "semantic", "retention", "retention_rougeL",
                "length_mean", "length_w1", "truncated", "distinct1", "distinct2", "real_vs_generated_auc")


def config(path: Path, folder: Path, data: Any) -> tuple[TrainConfig, dict[str, Any]]:
    """config.json of the run in ``folder``: its settings (checked as a new run's are) and what it resolved."""
    data = expect_object(path, data)
    if "config" not in data:
        if "model_type" in data or "architectures" in data:
            raise GantuneError(f"{folder} is not a gantune run folder (its config.json has no run settings; "
                               "it looks like a model — pass it as --model to train)")
        raise missing(path, "config")
    settings = expect_object(path, data["config"], "config")
    try:
        config = TrainConfig.from_dict(settings).validate()
    except GantuneError as exc:
        raise GantuneError(f"{path}: {exc}") from exc
    except (TypeError, ValueError) as exc:  # a value of the wrong type that from_dict let through
        raise GantuneError(f"{path}: the run's settings are invalid ({first_line(exc)})") from exc
    resolved = expect_object(path, data.get("resolved", {}), "resolved")
    for key in ("n_train", "n_val", "n_test", "processes"):
        if key in resolved:
            expect(path, f"resolved.{key}", resolved[key], is_int(resolved[key]) and resolved[key] >= 0,
                   "a whole number >= 0")
    if "split" in resolved:
        split = expect_object(path, resolved["split"], "resolved.split")
        for part in ("train", "test"):
            pairs = split.get(part)
            expect(path, f"resolved.split.{part}", pairs, isinstance(pairs, list) and all(
                isinstance(p, dict) and isinstance(p.get("question"), str) and isinstance(p.get("answer"), str)
                for p in pairs), "a list of question/answer objects")
    expect(path, "resolved.resumes", resolved.get("resumes", []), isinstance(resolved.get("resumes", []), list),
           "a list")
    return config, resolved


def trainer_state(path: Path, state: Any, total_steps: int | None) -> dict[str, Any]:
    """checkpoint/trainer_state.json: its step always; with ``total_steps`` (a resume), the whole state."""
    state = expect_object(path, state)
    if "step" not in state:
        raise missing(path, "step")
    step = state["step"]
    expect(path, "step", step, is_int(step) and step >= 0, "a whole number >= 0")
    if total_steps is None:
        return state
    expect(path, "step", step, step <= total_steps, f"at most the run's {total_steps} planned steps")
    if "seconds" not in state:
        raise missing(path, "seconds")
    expect(path, "seconds", state["seconds"], is_number(state["seconds"]) and state["seconds"] >= 0,
           "a finite number >= 0")
    validation(path, state.get("validation", []), "validation")
    if state.get("best") is not None:
        score(path, state["best"], "best")
    return state


def evaluation(path: Path, result: Any) -> dict[str, Any]:
    """eval.json: an evaluation's scores, each a number or null."""
    result = expect_object(path, result)
    for key in EVAL_NUMBERS:
        value = result.get(key)
        expect(path, key, value, value is None or is_number(value), "a number or null")
    for key in ("reference", "sampled", "retention_sets"):
        if key in result:
            expect_object(path, result[key], key)
    per_question = expect_object(path, result.get("per_question", {}), "per_question")
    for key, values in per_question.items():
        expect(path, f"per_question.{key}", values, isinstance(values, list)
               and all(v is None or is_number(v) for v in values), "a list of numbers")
    return result


def report(path: Path, data: Any) -> dict[str, Any]:
    """A saved comparison: its rows (each an object naming its method, its numbers numbers or null, its runs
    text), its run list, answer lengths and reference row."""
    data = expect_object(path, data)
    rows = data.get("rows")
    expect(path, "rows", rows, isinstance(rows, list), "a list")
    for i, row in enumerate(rows + ([data["reference"]] if data.get("reference") is not None else [])):
        where = f"rows[{i}]" if i < len(rows) else "reference"
        row = expect_object(path, row, where)
        expect(path, f"{where}.method", row.get("method"), isinstance(row.get("method"), str), "text")
        for key in EVAL_NUMBERS + ("train_seconds", "peak_memory_mb", "trainable_params", "tokens_per_s",
                                   "eval_seconds", "temperature"):
            value = row.get(key)
            expect(path, f"{where}.{key}", value, value is None or is_number(value), "a number or null")
        expect(path, f"{where}.seeds", row.get("seeds", []), isinstance(row.get("seeds", []), list)
               and all(is_int(s) for s in row.get("seeds", [])), "a list of whole numbers")
        runs = row.get("runs", [])
        expect(path, f"{where}.runs", runs, isinstance(runs, list) and all(r is None or isinstance(r, str)
                                                                           for r in runs), "a list of run folders")
        ci = expect_object(path, row.get("ci") or {}, f"{where}.ci")
        for key, interval in ci.items():
            expect(path, f"{where}.ci.{key}", interval, interval is None or isinstance(interval, list)
                   and len(interval) == 2 and all(is_number(v) for v in interval), "two numbers or null")
    expect(path, "runs", data.get("runs", []), isinstance(data.get("runs", []), list)
           and all(isinstance(r, str) for r in data.get("runs", [])), "a list of run folders")
    lengths = expect_object(path, data.get("lengths") or {}, "lengths")
    for key, values in lengths.items():
        expect(path, f"lengths.{key}", values, isinstance(values, list) and all(is_int(v) for v in values),
               "a list of whole numbers")
    return data


# --- checks: one line naming the file and the field -----------------------------------------------------

def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _shown(value: Any) -> str:
    kind = {dict: "an object", list: "a list", str: "text", bool: "true/false", type(None): "null"}.get(type(value))
    text = json.dumps(value) if kind in (None, "text", "true/false", "null") else kind
    return text if len(text) <= 40 else text[:37] + "..."


def expect(path: Path, field: str, value: Any, ok: bool, want: str) -> None:
    if not ok:
        raise GantuneError(f"{path}: '{field}' must be {want} (got {_shown(value)})")


def missing(path: Path, field: str) -> GantuneError:
    return GantuneError(f"{path}: '{field}' is missing")


def expect_object(path: Path, value: Any, field: str | None = None) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise GantuneError(f"{path}: " + (f"'{field}' must be an object" if field else "must be a JSON object")
                           + f" (got {_shown(value)})")
    return value


def validation(path: Path, history: Any, field: str) -> None:
    """A validation history: objects, each a whole ``step`` and ``val_*`` scores."""
    expect(path, field, history, isinstance(history, list), "a list")
    for i, entry in enumerate(history):
        score(path, entry, f"{field}[{i}]")


def score(path: Path, entry: Any, field: str) -> None:
    entry = expect_object(path, entry, field)
    expect(path, f"{field}.step", entry.get("step"), is_int(entry.get("step")) and entry["step"] >= 0,
           "a whole number >= 0")
    for key, value in entry.items():
        if key.startswith("val_"):
            expect(path, f"{field}.{key}", value, is_number(value), "a finite number")
