"""The one comparison protocol: train methods on given splits, evaluate them beside base, summarise.

``compare_methods`` is what the bench (``python -m gantune bench``) and the workbench's Compare tab
both run: for each seed's split it evaluates the base model, trains each method row (or takes an
already trained run, training its settings again at a seed it has no run for) and evaluates it, greedy
and at any extra temperatures; then the report (``report.py``) turns the per-question scores into means
over seeds with 95% bootstrap intervals, the answers' distribution against the references', and paired
differences to ``lora``, ``base`` and, for an adversarial row, its twin (the MLE method of the same adapter).

With a ``Continuation`` (the bench's ``plateau`` preset) every row starts from an MLE warm-up trained
to its plateau once per seed and adapter, and the rows of an adapter — adversarial ones and the MLE
twin simply continued — train the same number of steps from those same weights (equal compute).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from ..config import TrainConfig
from ..data import QAPair, load_pairs, split_pairs
from ..errors import GantuneError
from ..evaluate import MIN_TEMPERATURE, EvalSettings, Scorers, Stopped, load_retention_sets
from ..memory import release_freed_memory
from ..methods import adapter_kind
from ..methods.gan.settings import GENERATOR_METHODS
from ..models import BaseModel
from ..runs import RunFolder, RunSummary, claim_unused
from ..trainer import train
from .evaluation import EVALUATIONS, evaluate_base, evaluate_run
from .report import Evaluation, build_report
from .rows import ROWS, objective, row_adapter, row_cell, row_config, shared_settings, twin


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
    is (step, steps)), "batch" (a batch of an evaluation's answers begins; ``share`` is (the evaluation's share
    done, its share done once the batch ends)), "kept" (a run trained before, kept: ``keep_finished``), "not_evaluated" (a training that saved no adapter), "as_it_stands" (a
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
    share: tuple[float, float] | None = None


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
    train_missing: bool = False,
    continuation: Continuation | None = None,
    keep_finished: bool = False,
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
    name, each a run folder per seed, evaluated but not trained; with ``train_missing`` a seed one has no run
    for is trained first, with its first run's settings on that split, into ``runs_dir/<name>-seed<seed><run_suffix>``
    (the workbench's reference run at further seeds). ``temperatures``: extra sampling
    temperatures (above 0) scored besides greedy answers. ``retention``: sets scored once per row,
    on the first split. ``continuation``: every row starts from an MLE warm-up of its adapter (see
    ``Continuation``), trained first on each split into ``runs_dir/warmup-<adapter>-seed<seed><run_suffix>``.
    Runs go to ``runs_dir/<row>-seed<seed><run_suffix>``, replacing an earlier run of
    that name (the bench's own folder; with ``keep_finished`` one that completed with the same settings is kept, not
    trained again: a stopped bench continued), or with ``new_folders`` to a folder claimed anew (``-2``, ``-3`` …
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
    trained = {name: dict(runs) for name, runs in (trained or {}).items()}
    missing = [(name, s) for s in splits for name, runs in trained.items() if s.seed not in runs]
    if missing and not train_missing:
        raise GantuneError(f"no run given for {', '.join(f'{name} (seed {s.seed})' for name, s in missing)}")
    runs_dir = Path(runs_dir)
    kinds = list(dict.fromkeys(row_adapter(r) for r in rows)) if continuation else []
    if "full" in kinds:
        raise GantuneError("full fine-tuning has no adapter to continue from a warm-up; leave it out of this comparison")
    total = len(missing) + len(splits) * (1 + len(trained) + 2 * len(rows) + len(kinds))
    twins = _twins(rows, trained)
    cells = {r: row_cell(r) for r in rows} | {name: _run_cell(runs) for name, runs in trained.items()}
    warmups: list[dict[str, Any]] = []
    done, evaluations, stopped = 0, [], False
    say = progress or (lambda _: None)
    stop = should_stop or (lambda: False)

    def summarised(stopped: bool) -> dict[str, Any]:
        return build_report(evaluations, [s.seed for s in splits], len(splits[0].train), len(splits[0].test),
                            temperatures, stopped, twins, cells)

    def evaluated(row: str, split: Split, first: bool, summary: RunSummary | None, run: str | Path | None) -> None:
        nonlocal done
        say(Progress("evaluating", f"seed {split.seed}: evaluating {row} …", done, total, split.seed, row,
                     str(run) if run else None))
        eval_settings = replace(settings, seed=split.seed)

        def batch(share: float, upto: float) -> None:
            say(Progress("batch", f"seed {split.seed}: evaluating {row}: {share:.0%} answered …", done, total,
                         split.seed, row, str(run) if run else None, share=(share, upto)))

        t0 = time.perf_counter()
        if run is None:
            result = evaluate_base(base, split.test, retention if first else None, scorers, eval_settings, temperatures,
                                   runs_dir / EVALUATIONS, stop, batch)
        else:
            result = evaluate_run(run, base, split.test, retention if first else None, scorers, eval_settings,
                                  temperatures, stop, batch)
        seconds = time.perf_counter() - t0
        if run is not None and summary is None:  # an already trained run: its own summary.json
            summary = _read_summary(run)
        evaluations.append(Evaluation(row, split.seed, result, summary, seconds, str(run) if run else None))
        done += 1

    def check_stop() -> None:
        if stop():
            raise Stopped

    def trained_run(row: str, config: TrainConfig, split: Split, out: Path, claimed: RunFolder | None) -> RunSummary:
        """Train one run of the comparison (a row, or a warm-up) on the split, in ``out`` (``claimed`` for it, with
        ``new_folders``); a stop raises Stopped."""
        nonlocal done
        kept = _finished(out, config, base.precision) if keep_finished else None
        if kept is not None:
            done += 1
            say(Progress("kept", f"seed {split.seed}: {row} was trained before; kept", done, total, split.seed, row,
                         str(out)))
            return kept
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
        for name, split in missing:  # a trained row's settings again, at a seed it has no run for
            check_stop()
            config, _ = RunFolder(next(iter(trained[name].values()))).read_config()
            out, claimed = folder(name, split)
            summary = trained_run(name, replace(config, seed=split.seed, out=str(out)), split, out, claimed)
            if summary.adapter is None:
                done += 1
                say(Progress("not_evaluated", f"seed {split.seed}: {name} {summary.status} before saving an adapter; "
                             "not evaluated", done, total, split.seed, name, str(out)))
            else:
                trained[name][split.seed] = str(out)
        for index, split in enumerate(splits):
            first = index == 0
            check_stop()
            evaluated("base", split, first, None, None)
            for name, runs in trained.items():
                check_stop()
                if split.seed in runs:
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
        report = summarised(False)
        report.update(status="failed", error=str(exc))
        raise ComparisonFailed(str(exc), report) from exc
    say(Progress("stopped" if stopped else "done", "stopped" if stopped else "done", done, total))
    report = summarised(stopped)
    if continuation:
        report["continuation"] = {"max_epochs": continuation.max_epochs, "patience": continuation.patience,
                                  "warmups": warmups}
    return report


def compare_with_run(base: BaseModel, run: str | Path, rows: Sequence[str], seeds: int, scorers: Scorers,
                     runs_dir: str | Path, retention_n: int | None, **options: Any) -> dict[str, Any]:
    """Compare a trained run with ``rows`` on its terms (the workbench's Compare): its recorded split, then its data
    split anew at each of ``seeds - 1`` further seeds, where its own settings are trained again; its model, schedule
    and token limits for every row. ``options``: ``compare_methods``' (``run_suffix``, ``progress`` …)."""
    folder = RunFolder(run)
    config, _ = folder.read_config()
    splits = [recorded_split(folder.path)]
    if seeds > 1:
        splits += seeded_splits(config.data, config.subset, config.n, config.train_fraction,
                                [config.seed + i for i in range(1, seeds)])[0]
    settings = EvalSettings(max_new_tokens=config.max_new_tokens, max_prompt_tokens=config.max_prompt_tokens,
                            retention_n=retention_n, seed=config.seed)
    return compare_methods(base, rows, splits, shared_settings(config), runs_dir, scorers, settings,
                           retention=load_retention_sets(config.data, retention_n, config.seed),
                           trained={folder.path.name: {config.seed: str(folder.path)}}, train_missing=True, **options)


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


def _finished(run: Path, config: TrainConfig, precision: str) -> RunSummary | None:
    """The summary of the run at ``run`` when it completed, with its adapter, under ``config`` (its precision
    ``auto`` as the trainer resolves it: the loaded model's ``precision``); else None."""
    wanted = replace(config, precision=precision) if config.precision == "auto" else config
    try:
        folder = RunFolder(run)
        summary = folder.read_summary() if folder.path.is_dir() else None
        same = summary is not None and folder.read_config()[0] == wanted
    except GantuneError:
        return None
    return summary if same and summary.complete and summary.adapter is not None else None


def _read_summary(run: str | Path) -> RunSummary | None:
    try:
        return RunFolder(run).read_summary()
    except GantuneError:
        return None
