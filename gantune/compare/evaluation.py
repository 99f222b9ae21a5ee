"""The evaluations a comparison makes, each once: a run's (kept as its eval.json) and the base model's (kept in the
comparison's store), reused while what they depend on (``evaluate.evaluation_key``) is the same."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

from ..data import QAPair
from ..errors import GantuneError
from ..evaluate import EvalProgress, EvalSettings, Scorers, ShouldStop, answer_tokens, evaluate, evaluation_key, progress_part
from ..inference import load_method
from ..methods.base import TuningMethod
from ..models import BaseModel
from ..runs import RunFolder, read_json_file, saving, write_json_atomic

EVALUATIONS = ".evaluations"  # inside a comparison's runs folder: the base model's stored evaluations


def evaluate_run(run: str | Path, base: BaseModel, test: list[QAPair], retention: dict[str, list[QAPair]] | None,
                 scorers: Scorers, settings: EvalSettings, temperatures: Sequence[float] = (),
                 should_stop: ShouldStop | None = None, progress: EvalProgress | None = None) -> dict[str, Any]:
    """Evaluate a finished run's tuned model and keep the result as the run's eval.json.

    The result is the greedy evaluation; answers sampled at each of ``temperatures`` are scored
    too, under ``"sampled"`` keyed by the temperature (``"0.7"``). An eval.json of the same
    ``evaluation_key`` (the same adapter, questions and settings) is returned as it is, not made
    again. A stop (``should_stop``, asked between tokens) raises ``Stopped`` and writes nothing. ``progress`` hears
    of each batch of answers (``evaluate``'s; all the temperatures' answers make its whole).
    """
    folder = RunFolder(run)
    with folder.guarded("evaluating the run"):  # no other job replaces or resumes it while it is evaluated
        key = evaluation_key(base, test, retention, scorers, settings, temperatures, adapter=folder.adapter_dir)
        kept = _stored(folder.eval_path, key)
        if kept is not None:
            return kept
        tuned = load_method(str(run), base=base)
        try:
            result = _evaluated(base, tuned, test, retention, scorers, settings, temperatures, should_stop, progress)
        finally:
            tuned.close()
        with saving("the evaluation", run):
            write_json_atomic(folder.eval_path, {**result, "key": key})
        return result


def evaluate_base(base: BaseModel, test: list[QAPair], retention: dict[str, list[QAPair]] | None, scorers: Scorers,
                  settings: EvalSettings, temperatures: Sequence[float], store: Path,
                  should_stop: ShouldStop | None = None, progress: EvalProgress | None = None) -> dict[str, Any]:
    """The base model's evaluation, as ``evaluate_run``'s; kept in ``store`` under its ``evaluation_key`` and
    reused by every later comparison of the same model, questions and settings."""
    key = evaluation_key(base, test, retention, scorers, settings, temperatures)
    path = store / f"base-{key}.json"
    kept = _stored(path, key)
    if kept is not None:
        return kept
    result = _evaluated(base, None, test, retention, scorers, settings, temperatures, should_stop, progress)
    with saving("the base model's evaluation", store):
        store.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, {**result, "key": key})
    return result


def _evaluated(base: BaseModel, method: TuningMethod | None, test: list[QAPair],
               retention: dict[str, list[QAPair]] | None, scorers: Scorers, settings: EvalSettings,
               temperatures: Sequence[float], should_stop: ShouldStop | None,
               progress: EvalProgress | None) -> dict[str, Any]:
    greedy, each = answer_tokens(test, retention, settings), answer_tokens(test, None, settings)
    whole = greedy + each * len(temperatures) or 1
    result = evaluate(base, method, test, retention, scorers, settings, should_stop,
                      progress_part(progress, 0, greedy, whole))
    sampled = {f"{t:g}": evaluate(base, method, test, None, scorers, replace(settings, temperature=t), should_stop,
                                  progress_part(progress, greedy + i * each, each, whole))
               for i, t in enumerate(temperatures)}
    if sampled:
        result["sampled"] = sampled
    return result


def _stored(path: Path, key: str) -> dict[str, Any] | None:
    """A stored evaluation at ``path`` made under ``key``; None when there is none (or it is damaged, or other)."""
    try:
        result = read_json_file(path) if path.is_file() else None
    except GantuneError:
        return None
    if not isinstance(result, dict) or result.pop("key", None) != key:
        return None
    return result
