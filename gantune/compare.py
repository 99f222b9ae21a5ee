"""The one comparison protocol: train methods on given splits, evaluate them beside base, summarise.

``compare_methods`` is what the bench (``python -m gantune bench``) and the workbench's Compare tab
both run: for each seed's split it evaluates the base model, trains each method row (or takes an
already trained run) and evaluates it, greedy and at any extra temperatures; then it turns the
per-question scores into the report: means over seeds with 95% bootstrap intervals, the answers'
distribution against the references', and paired differences to ``lora``, ``base`` and, for an
adversarial row, its twin (the MLE method of the same adapter).

With a ``Continuation`` (the bench's ``plateau`` preset) every row starts from an MLE warm-up trained
to its plateau once per seed and adapter, and the rows of an adapter — adversarial ones and the MLE
twin simply continued — train the same number of steps from those same weights (equal compute).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .config import TrainConfig, preset_config
from .data import QAPair, load_pairs, split_pairs
from .errors import GantuneError
from .evaluate import MIN_TEMPERATURE, EvalSettings, Scorers, ShouldStop, Stopped, evaluate, evaluation_key
from .inference import load_method
from .memory import release_freed_memory
from .methods import METHODS, adapter_kind
from .methods.base import TuningMethod
from .methods.gan.settings import GENERATOR_METHODS
from .metrics import DISTRIBUTION_NOTES
from .models import BaseModel
from .runs import RunFolder, RunSummary, claim_unused, read_json_file, saving, write_json_atomic
from .stats import auc, mean_interval, paired_difference, seed_interval, statistic_interval, w1_equal_size
from .trainer import train


def _on(method: str) -> dict[str, Any]:
    """The GAN on the adapter ``method`` trains: its warm-up at that method's rate, the adversarial phase at half of it
    (as ``improved`` has M_tunable's)."""
    lr = METHODS[method].defaults["lr"]
    kind = next(k for k, m in GENERATOR_METHODS.items() if m == method)
    return {"adapter": kind, "lr": lr, "adv_lr": lr / 2}


IMPLICIT = {"discriminator": "implicit"}
# row name -> (method, TrainConfig preset, settings on top of the preset)
ROWS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "gan": ("gan", "improved", {}),
    # ablations of the improved GAN: without the MLE term in the adversarial phase; the plain SeqGAN step (v1)
    "gan-no-mle": ("gan", "improved", {"mle_weight": 0.0}),
    "gan-seqgan": ("gan", "improved", {"warmup_epochs": 0, "rollout": "batch", "discriminator": "embedding",
                                       "d_loss": "bce", "d_dropout": 0.0, "d_weight_decay": 0.0, "kl_coef": 0.0,
                                       "clip": 0.0, "normalize_advantage": False, "mle_weight": 0.0, "adv_lr": 1e-3,
                                       "val_pairs": 0}),
    # levers on top of the improved GAN: 4 samples a question with a leave-one-out baseline (RLOO);
    # two adversarial epochs of the three instead of one (warm-up 1)
    "gan-rloo": ("gan", "improved", {"samples_per_question": 4, "baseline": "loo"}),
    "gan-adv2": ("gan", "improved", {"warmup_epochs": 1}),
    # each part of the rollout used for 4 generator updates (PPO's epochs); sampled cold (T 0.7, ColdGANs), with
    # and without the 4 updates
    "gan-ppo4": ("gan", "improved", {"ppo_epochs": 4}),
    "gan-cold": ("gan", "improved", {"ppo_epochs": 4, "rollout_temperature": 0.7}),
    "gan-t07": ("gan", "improved", {"rollout_temperature": 0.7}),
    # D scores every prefix; per-token advantages with D as the critic (ScratchGAN's dense rewards)
    "gan-dense": ("gan", "improved", {"reward": "dense"}),
    "gan-thesis": ("gan", "thesis", {}),
    # the objective on other adapters (--adapter): each row's twin is the MLE method of its adapter (lora …)
    "gan-lora": ("gan", "improved", _on("lora")),
    "gan-prompt": ("gan", "improved", _on("prompt-tuning")),
    "gan-prefix": ("gan", "improved", _on("prefix-tuning")),
    # the implicit discriminator D = β·(log π − log π_ref) (DDO's loss; SPIN's), on each adapter
    "gan-implicit": ("gan", "improved", IMPLICIT),
    "gan-spin": ("gan", "improved", {**IMPLICIT, "implicit_loss": "spin"}),
    "gan-lora-implicit": ("gan", "improved", {**_on("lora"), **IMPLICIT}),
    "gan-prompt-implicit": ("gan", "improved", {**_on("prompt-tuning"), **IMPLICIT}),
    "gan-prefix-implicit": ("gan", "improved", {**_on("prefix-tuning"), **IMPLICIT}),
    "adapter-mle": ("adapter-mle", "improved", {}),
    "lora": ("lora", "improved", {}),
    "prompt-tuning": ("prompt-tuning", "improved", {}),
    "prefix-tuning": ("prefix-tuning", "improved", {}),
    "full": ("full", "improved", {}),
}
EVALUATIONS = ".evaluations"  # inside a comparison's runs folder: the base model's stored evaluations
# what a trained row shares with the others of its comparison (the seed is each split's)
SHARED_SETTINGS = ("model", "gguf_file", "trust_remote_code", "data", "subset", "n", "train_fraction", "seed",
                   "device", "precision", "epochs", "batch_size", "max_new_tokens", "max_prompt_tokens")
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


class ComparisonFailed(GantuneError):
    """A row of a comparison failed: why (the message), and the report of the rows it finished (``report``)."""

    def __init__(self, message: str, report: dict[str, Any]):
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class Continuation:
    """Equal-compute continuation: MLE to its plateau first, once per seed and adapter, then every row from there.

    Each adapter the rows tune gets one warm-up run per seed (``warmup-<adapter>-seed<s>``): its MLE method for at
    most ``max_epochs`` epochs, stopped once the validation score has not improved for ``patience`` epochs
    (``--patience``). Every row of that adapter then starts from the warm-up's kept adapter (``--init-from``, the
    optimiser fresh) and trains the comparison's epochs: an adversarial row with no warm-up of its own, the MLE
    row (its twin) simply continued — the same steps from the same weights.
    """

    max_epochs: int
    patience: int


@dataclass(frozen=True)
class Split:
    """One seed's training and test pairs."""

    seed: int
    train: list[QAPair]
    test: list[QAPair]


@dataclass(frozen=True)
class Progress:
    """What the comparison is doing: ``done`` of ``total`` stages (a training or an evaluation each).

    ``kind``: "evaluating" or "training" (a stage begins), "step" (a training step ended; ``step``
    is (step, steps)), "not_evaluated" (a training that saved no adapter), "as_it_stands" (a
    training that did not complete, evaluated anyway), "done" or "stopped". ``message`` says the
    same in English.
    """

    kind: str
    message: str
    done: int
    total: int
    seed: int | None = None
    method: str | None = None
    run: str | None = None  # the run folder being written, when there is one
    step: tuple[int, int] | None = None


@dataclass
class _Evaluation:
    row: str
    seed: int
    result: dict[str, Any]
    summary: RunSummary | None
    seconds: float
    run: str | None = None


def seeded_splits(data: str | None, subset: str, n: int | None, train_fraction: float,
                  seeds: Sequence[int]) -> tuple[list[Split], str]:
    """Each seed's split of the data, as the trainer makes it; also the data source's description."""
    pairs, source = load_pairs(data, subset)
    return [Split(s, *split_pairs(pairs, n, train_fraction, s)) for s in seeds], source


def recorded_split(run: str | Path) -> Split:
    """The split a run recorded in its config.json, with its seed."""
    config, resolved = RunFolder(run).read_config()
    try:
        recorded = resolved["split"]
        as_pairs = [[QAPair(p["question"], p["answer"], tuple(p.get("perturbed", ()))) for p in recorded[part]]
                    for part in ("train", "test")]
    except (KeyError, TypeError) as exc:
        raise GantuneError(f"{run} has no recorded split in its config.json") from exc
    return Split(config.seed, *as_pairs)


def shared_settings(config: TrainConfig) -> dict[str, Any]:
    """The settings of ``config`` that every row compared with it shares."""
    return {k: getattr(config, k) for k in SHARED_SETTINGS}


def row_config(row: str, shared: dict[str, Any], seed: int, out: str | Path, **more: Any) -> TrainConfig:
    """The TrainConfig of method row ``row`` with the shared settings (then ``more``), at ``seed``, writing to ``out``."""
    if row not in ROWS:
        raise GantuneError(f"unknown method(s) {row}; choose from {', '.join(ROWS)}")
    method, preset, extra = ROWS[row]
    return preset_config(method, preset, **{**extra, **shared, **more, "seed": seed, "out": str(out)})


def row_adapter(row: str) -> str:
    """The kind of adapter a row tunes (``m-tunable``, ``lora`` …; ``full`` for full fine-tuning)."""
    method, _, extra = ROWS[row]
    return adapter_kind(method, extra.get("adapter", "m-tunable"))


OBJECTIVES = ("mle", "explicit", "implicit")  # MLE alone; the GAN with a D network; with the implicit D


def objective(method: str, discriminator: str) -> str | None:
    """What a run of ``method`` optimises: ``mle``, the ``explicit`` GAN or the ``implicit`` one (None: full)."""
    if method == "gan":
        return "implicit" if discriminator == "implicit" else "explicit"
    return "mle" if method in GENERATOR_METHODS.values() else None


def row_cell(row: str) -> tuple[str, str] | None:
    """(objective, adapter) of a comparison row: its cell in the objective × adapter table."""
    method, preset, extra = ROWS[row]
    kind = objective(method, extra.get("discriminator", preset_config(method, preset).discriminator))
    return (kind, row_adapter(row)) if kind else None


def twin(row: str) -> str | None:
    """An adversarial row's twin: the MLE row of the same adapter (``gan-lora`` → ``lora``); None for the others."""
    return GENERATOR_METHODS[row_adapter(row)] if ROWS[row][0] == "gan" else None


def baseline_config(reference: TrainConfig, row: str, out: str | Path) -> TrainConfig:
    """The ``row`` method on the same model, data, split, schedule and token limits as ``reference``."""
    return row_config(row, shared_settings(reference), reference.seed, out)


def evaluate_run(run: str | Path, base: BaseModel, test: list[QAPair], retention: dict[str, list[QAPair]] | None,
                 scorers: Scorers, settings: EvalSettings, temperatures: Sequence[float] = (),
                 should_stop: ShouldStop | None = None) -> dict[str, Any]:
    """Evaluate a finished run's tuned model and keep the result as the run's eval.json.

    The result is the greedy evaluation; answers sampled at each of ``temperatures`` are scored
    too, under ``"sampled"`` keyed by the temperature (``"0.7"``). An eval.json of the same
    ``evaluation_key`` (the same adapter, questions and settings) is returned as it is, not made
    again. A stop (``should_stop``, asked between tokens) raises ``Stopped`` and writes nothing.
    """
    folder = RunFolder(run)
    with folder.guarded("evaluating the run"):  # no other job replaces or resumes it while it is evaluated
        key = evaluation_key(base, test, retention, scorers, settings, temperatures, adapter=folder.adapter_dir)
        kept = _stored(folder.eval_path, key)
        if kept is not None:
            return kept
        tuned = load_method(str(run), base=base)
        try:
            result = _evaluated(base, tuned, test, retention, scorers, settings, temperatures, should_stop)
        finally:
            tuned.close()
        with saving("the evaluation", run):
            write_json_atomic(folder.eval_path, {**result, "key": key})
        return result


def evaluate_base(base: BaseModel, test: list[QAPair], retention: dict[str, list[QAPair]] | None, scorers: Scorers,
                  settings: EvalSettings, temperatures: Sequence[float], store: Path,
                  should_stop: ShouldStop | None = None) -> dict[str, Any]:
    """The base model's evaluation, as ``evaluate_run``'s; kept in ``store`` under its ``evaluation_key`` and
    reused by every later comparison of the same model, questions and settings."""
    key = evaluation_key(base, test, retention, scorers, settings, temperatures)
    path = store / f"base-{key}.json"
    kept = _stored(path, key)
    if kept is not None:
        return kept
    result = _evaluated(base, None, test, retention, scorers, settings, temperatures, should_stop)
    with saving("the base model's evaluation", store):
        store.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, {**result, "key": key})
    return result


def _evaluated(base: BaseModel, method: TuningMethod | None, test: list[QAPair],
               retention: dict[str, list[QAPair]] | None, scorers: Scorers, settings: EvalSettings,
               temperatures: Sequence[float], should_stop: ShouldStop | None) -> dict[str, Any]:
    result = evaluate(base, method, test, retention, scorers, settings, should_stop)
    sampled = {f"{t:g}": evaluate(base, method, test, None, scorers, replace(settings, temperature=t), should_stop)
               for t in temperatures}
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


def compare_methods(
    base: BaseModel,
    rows: Sequence[str],
    splits: Sequence[Split],
    shared: dict[str, Any],
    runs_dir: str | Path,
    scorers: Scorers,
    settings: EvalSettings,
    *,
    temperatures: Sequence[float] = (),
    retention: dict[str, list[QAPair]] | None = None,
    trained: dict[str, dict[int, str | Path]] | None = None,
    continuation: Continuation | None = None,
    run_suffix: str = "",
    new_folders: bool = False,
    progress: Callable[[Progress], None] | None = None,
    progress_bars: bool = False,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Train each row of ``rows`` on every split, evaluate it and base, and return the report.

    ``shared``: the TrainConfig settings every trained row shares (model, data, schedule, token
    limits; see ``shared_settings``); each split's seed replaces its ``seed``, and each row trains on
    the split as given (the data need not be there any more). ``trained``: rows already trained, by
    name, each a run folder per seed, evaluated but not trained. ``temperatures``: extra sampling
    temperatures (above 0) scored besides greedy answers. ``retention``: sets scored once per row,
    on the first split. ``continuation``: every row starts from an MLE warm-up of its adapter (see
    ``Continuation``), trained first on each split into ``runs_dir/warmup-<adapter>-seed<seed><run_suffix>``.
    Runs go to ``runs_dir/<row>-seed<seed><run_suffix>``, replacing an earlier run of
    that name (the bench's own folder), or with ``new_folders`` to a folder claimed anew (``-2``, ``-3`` …
    when the name is taken; the workbench's runs folder). ``progress`` hears of
    every stage and training step; ``progress_bars`` draws the trainer's own (a terminal's).
    ``should_stop`` is asked before every stage, during training and between evaluation batches; a
    stopped comparison reports the stages it finished (an evaluation cut short is dropped, unsaved).
    A row that fails raises ``ComparisonFailed``, which carries the report of the rows finished before it.
    """
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        raise GantuneError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(ROWS)}")
    if not splits:
        raise GantuneError("a comparison needs at least one split (seed)")
    bad = [t for t in temperatures if not t >= MIN_TEMPERATURE]
    if bad:
        raise GantuneError(f"sampling temperatures must be above 0 (at least {MIN_TEMPERATURE:g}; greedy answers are "
                           f"always scored); got {bad[0]:g}")
    trained = trained or {}
    missing = [f"{name} (seed {s.seed})" for name, runs in trained.items() for s in splits if s.seed not in runs]
    if missing:
        raise GantuneError(f"no run given for {', '.join(missing)}")
    runs_dir = Path(runs_dir)
    kinds = list(dict.fromkeys(row_adapter(r) for r in rows)) if continuation else []
    if "full" in kinds:
        raise GantuneError("full fine-tuning has no adapter to continue from a warm-up; leave it out of this comparison")
    total = len(splits) * (1 + len(trained) + 2 * len(rows) + len(kinds))
    twins = _twins(rows, trained)
    cells = {r: row_cell(r) for r in rows} | {name: _run_cell(runs) for name, runs in trained.items()}
    warmups: list[dict[str, Any]] = []
    done, evaluations, stopped = 0, [], False
    say = progress or (lambda _: None)
    stop = should_stop or (lambda: False)

    def evaluated(row: str, split: Split, first: bool, summary: RunSummary | None, run: str | Path | None) -> None:
        nonlocal done
        say(Progress("evaluating", f"seed {split.seed}: evaluating {row} …", done, total, split.seed, row,
                     str(run) if run else None))
        eval_settings = replace(settings, seed=split.seed)
        t0 = time.perf_counter()
        if run is None:
            result = evaluate_base(base, split.test, retention if first else None, scorers, eval_settings, temperatures,
                                   runs_dir / EVALUATIONS, stop)
        else:
            result = evaluate_run(run, base, split.test, retention if first else None, scorers, eval_settings,
                                  temperatures, stop)
        seconds = time.perf_counter() - t0
        if run is not None and summary is None:  # an already trained run: its own summary.json
            summary = _read_summary(run)
        evaluations.append(_Evaluation(row, split.seed, result, summary, seconds, str(run) if run else None))
        done += 1

    def check_stop() -> None:
        if stop():
            raise Stopped

    def trained_run(row: str, config: TrainConfig, split: Split, out: Path, claimed: RunFolder | None) -> RunSummary:
        """Train one run of the comparison (a row, or a warm-up) on the split, in ``out`` (``claimed`` for it, with
        ``new_folders``); a stop raises Stopped."""
        nonlocal done
        say(Progress("training", f"seed {split.seed}: training {row} ({config.epochs} epochs, "
                     f"batch {config.batch_size}) …", done, total, split.seed, row, str(out)))
        release_freed_memory()
        summary = train(config, base=base, should_stop=stop, overwrite=not new_folders, claimed=claimed,
                        progress=progress_bars, split=(split.train, split.test),
                        on_step=lambda r, m=row, s=split.seed, o=str(out), d=done: say(Progress(
                            "step", f"seed {s}: training {m}: step {r['step']}/{r['total_steps']}", d, total,
                            s, m, o, (r["step"], r["total_steps"]))))
        done += 1
        if summary.status == "stopped":
            raise Stopped
        return summary

    def folder(name: str, split: Split) -> tuple[Path, RunFolder | None]:
        """A run's folder in the comparison: its own name (replaced), or with ``new_folders`` one claimed anew."""
        out = runs_dir / f"{name}-seed{split.seed}{run_suffix}"
        claimed = claim_unused(out) if new_folders else None
        return (claimed.path if claimed is not None else out), claimed

    try:
        for index, split in enumerate(splits):
            first = index == 0
            check_stop()
            evaluated("base", split, first, None, None)
            for name, runs in trained.items():
                check_stop()
                evaluated(name, split, first, None, runs[split.seed])
            starts: dict[str, str | None] = {}  # adapter -> its warm-up's run folder (None: it saved no adapter)
            for kind in kinds:
                check_stop()
                out, claimed = folder(f"warmup-{kind}", split)
                config = row_config(GENERATOR_METHODS[kind], shared, split.seed, out, epochs=continuation.max_epochs,
                                    patience=continuation.patience)
                summary = trained_run(f"warmup-{kind}", config, split, out, claimed)
                starts[kind] = str(out) if summary.adapter is not None else None
                warmups.append({"seed": split.seed, "adapter": kind, "run": str(out), "status": summary.status,
                                "steps": summary.steps, "max_steps": summary.total_steps,
                                "kept_step": summary.kept_step, "kept_reason": summary.kept_reason})
            for row in rows:
                check_stop()
                more = {}
                if continuation:
                    start = starts[row_adapter(row)]
                    if start is None:
                        done += 2
                        say(Progress("not_evaluated", f"seed {split.seed}: {row}: its warm-up saved no adapter; not "
                                     "trained", done, total, split.seed, row))
                        continue
                    more = {"init_from": start, "warmup_epochs": 0}
                out, claimed = folder(row, split)
                summary = trained_run(row, row_config(row, shared, split.seed, out, **more), split, out, claimed)
                if summary.adapter is None:
                    done += 1
                    say(Progress("not_evaluated", f"seed {split.seed}: {row} {summary.status} before saving an "
                                 "adapter; not evaluated", done, total, split.seed, row, str(out)))
                    continue
                if summary.status != "completed":
                    say(Progress("as_it_stands", f"seed {split.seed}: {row}: training {summary.status}; "
                                 "evaluated as it stands", done, total, split.seed, row, str(out)))
                evaluated(row, split, first, summary, out)
    except Stopped:
        stopped = True
    except GantuneError as exc:
        if not evaluations:
            raise
        report = _report(evaluations, splits, temperatures, False, twins, cells)
        report.update(status="failed", error=str(exc))
        raise ComparisonFailed(str(exc), report) from exc
    say(Progress("stopped" if stopped else "done", "stopped" if stopped else "done", done, total))
    report = _report(evaluations, splits, temperatures, stopped, twins, cells)
    if continuation:
        report["continuation"] = {"max_epochs": continuation.max_epochs, "patience": continuation.patience,
                                  "warmups": warmups}
    return report


def _run_cell(runs: dict[int, str | Path]) -> tuple[str, str] | None:
    """A trained run's (objective, adapter), from its config."""
    config, _ = RunFolder(next(iter(runs.values()))).read_config()
    kind = objective(config.method, config.discriminator)
    return (kind, adapter_kind(config.method, config.adapter)) if kind else None


def _twins(rows: Sequence[str], trained: dict[str, dict[int, str | Path]]) -> dict[str, str]:
    """Each adversarial row of the comparison -> its twin, when the twin is in it too. A trained run's adapter is
    read from its config (a GAN run of the workbench may tune any adapter)."""
    found = {r: twin(r) for r in rows}
    for name, runs in trained.items():
        config, _ = RunFolder(next(iter(runs.values()))).read_config()
        found[name] = GENERATOR_METHODS[config.adapter] if config.method == "gan" else None
    return {r: t for r, t in found.items() if t is not None and t in (*rows, *trained)}


def _read_summary(run: str | Path) -> RunSummary | None:
    try:
        return RunFolder(run).read_summary()
    except GantuneError:
        return None


# --- the report -----------------------------------------------------------------------------------------


def _label(row: str, temperature: float) -> str:
    return row if temperature == 0 else f"{row}@{temperature:g}"


def _report(evaluations: list[_Evaluation], splits: Sequence[Split], temperatures: Sequence[float],
            stopped: bool, twins: dict[str, str], cells: dict[str, tuple[str, str] | None] | None = None
            ) -> dict[str, Any]:
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
        "seeds": [s.seed for s in splits], "n_train": len(splits[0].train), "n_test": len(splits[0].test),
        "temperatures": [0.0, *temperatures], "status": "stopped" if stopped else "completed", "notes": notes,
        "rows": rows, "reference": _reference_row(greedy), "paired": (paired := _paired(rows, per_question, twins)),
        "objectives": _objectives(rows, paired, cells or {}),
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


def _generations(evaluations: list[_Evaluation], temperatures: Sequence[float]) -> list[dict[str, Any]]:
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


def _row(label: str, row: str, temperature: float, evs: list[_Evaluation], results: list[dict[str, Any]]) -> dict[str, Any]:
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


def _reference_row(greedy: list[_Evaluation]) -> dict[str, Any] | None:
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
