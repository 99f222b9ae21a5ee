"""The runs folder as the page sees it: a run by its id, the runs table, deleting a run, its adapter as a
.zip, the saved comparison reports, and what earlier runs say of the next one (planned steps, pace).

A run is its id (the folder name: any name of one folder of the runs folder, spaces and letters of
any script included) at the page's boundary and a ``RunFolder`` inside; ``folder`` is the one way
from an id to a folder, and nothing outside the runs folder is reachable by it (a symbolic link out
of it is no run). A run that a job uses (or another process writes: its lock) is never deleted.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gantune.config import TrainConfig
from gantune.errors import GantuneError
from gantune.runs import RunFolder, RunSummary, read_json_file, saving, write_json_atomic
from gantune.runs import readers as run_readers

from .jobs import JobManager
from .policy import PageError

COMPARISONS = "comparisons"  # the folder of saved comparison reports, inside the runs folder
DAMAGED = "damaged: "  # a runs-list status: the run's files cannot be read, and why
# settings that set how long a training step takes: runs alike in these give the first time estimate
_PACE_SETTINGS = ("method", "model", "gguf_file", "batch_size", "max_new_tokens", "max_prompt_tokens", "rollout",
                  "samples_per_question", "discriminator", "epochs", "warmup_epochs")


@dataclass(frozen=True)
class RunRow:
    """One run of the runs table: what its files say (a damaged run: its id, when it began and why)."""

    run: str  # the run's id: its folder name
    created: str
    status: str  # running, completed, stopped, diverged, unfinished, or DAMAGED and why
    method: str | None = None
    preset: str | None = None
    steps: int | None = None
    seconds: float | None = None
    peak_memory_mb: float | None = None
    trainable_params: int | None = None
    evaluated: bool = False
    adapter: bool = False


class Catalogue:
    def __init__(self, root: Path, jobs: JobManager):
        self.root = root
        self._jobs = jobs  # which run a job is writing: it shows as running and cannot be deleted
        self._paces: dict[tuple, float] = {}  # seconds per step of jobs finished in this process, by _pace_key
        self._eval_paces: dict[tuple, float] = {}  # seconds per answer token of comparisons run here, by _eval_key
        self.in_use: set[Path] = set()  # runs the running job reads or writes besides its own (a comparison's)
        # the adapters offered for download: made outside the runs folder, which the page never serves
        self._downloads = Path(tempfile.mkdtemp(prefix="gantune-downloads-"))

    def folder(self, run_id: str, damaged_too: bool = False) -> RunFolder:
        """A run of the runs folder by its id (its folder name); nothing outside it is reachable.

        A run whose config.json is damaged is refused with why, unless ``damaged_too`` (to delete it).
        """
        name = str(run_id) if run_id else ""
        if not _is_run_name(name):  # a bare folder name: no separators, no "..", no absolute path
            raise PageError("no_such_run", run=repr(run_id))
        path = self.root / name
        if path.is_symlink() or not path.is_dir() or path.resolve().parent != self.root.resolve() \
                or not (path / "config.json").exists():
            raise PageError("no_such_run", run=repr(run_id))
        path = path.resolve()
        if not damaged_too:
            try:
                RunFolder(self.root / name).read_config()  # named as the runs folder is, in messages
            except GantuneError as exc:
                raise PageError("damaged_run", run=name, reason=str(exc)) from exc
        return RunFolder(path)

    def rows(self) -> list[RunRow]:
        """Every run folder, newest first, with what its files say."""
        # ordered by when config.json was written (a run's start): the folder's own mtime moves whenever
        # a file lands in it (eval.json, the adapter .zip), which would reshuffle old runs to the top
        found = []
        for path in self.root.iterdir():
            if path.is_symlink() or not _is_run_name(path.name):  # not a folder of the runs folder itself
                continue
            try:
                found.append(((path / "config.json").lstat().st_mtime, path))
            except OSError:  # not a run folder, or deleted meanwhile
                continue
        return [self._row(RunFolder(path), started) for started, path in sorted(found, reverse=True)]

    def _row(self, run: RunFolder, started: float) -> RunRow:
        name, created = run.path.name, time.strftime("%Y-%m-%d %H:%M", time.localtime(started))
        try:
            config, _ = run.read_config()
            summary = run.read_summary() or RunSummary()
            steps = summary.steps if summary.steps is not None else len(run.read_metrics())
        except GantuneError as exc:  # listed with why; the other runs and the page work on
            return RunRow(name, created, f"{DAMAGED}{exc}")
        return RunRow(name, created, "running" if self._busy(run) else summary.status or "unfinished",
                      method=config.method, preset=config.preset, steps=steps, seconds=summary.seconds,
                      peak_memory_mb=summary.peak_memory_mb, trainable_params=summary.trainable_params,
                      evaluated=run.eval_path.is_file(), adapter=run.adapter_dir.is_dir())

    def _busy(self, run: RunFolder) -> bool:
        """Whether the running job writes or uses this run now."""
        status = self._jobs.status()
        here = run.path.resolve()
        return bool(status.active and (status.run and Path(status.run).resolve() == here or here in self.in_use))

    def delete(self, run_id: str) -> None:
        """Delete a run, unless a job uses it (this workbench's, or another process's: its lock)."""
        run = self.folder(run_id, damaged_too=True)
        if self._busy(run):
            raise PageError("run_busy")
        run.delete(extra=(_archive_path(run),))

    def adapter_archive(self, run_id: str) -> Path:
        """A .zip of the run's adapter folder (safetensors + JSON config), made outside the run folder (a reader
        writes nothing there) in the downloads folder: the one file of a run the page serves."""
        run = self.folder(run_id)
        try:
            adapter = run.checked_adapter()  # regular files of the run's own folder only: nothing else goes in
        except GantuneError:
            if run.adapter_dir.exists() or run.adapter_dir.is_symlink():
                raise
            raise PageError("no_adapter", run=run.path.name) from None
        archive = self._downloads / run.path.name / f"{run.path.name}-adapter.zip"
        archive.parent.mkdir(exist_ok=True)
        with saving("the adapter archive", self._downloads), tempfile.TemporaryDirectory(dir=archive.parent) as tmp:
            made = shutil.make_archive(str(Path(tmp) / "adapter"), "zip", adapter)
            os.replace(made, archive)  # whole or not at all: a download never gets a torn .zip
        return archive

    def signature(self) -> tuple:
        """Changes whenever the runs list may have: a run folder made or deleted, a job started or ended."""
        try:
            folder = self.root.stat().st_mtime_ns
        except OSError:
            folder = None
        job = self._jobs.status()
        return folder, job.kind, job.run, job.state, job.started, job.finished

    # --- comparison reports ---------------------------------------------------------------------
    def comparisons(self) -> list[dict[str, Any]]:
        """The saved comparison reports, newest first (a damaged one left out: ``damaged_comparisons``)."""
        return [r for r in self._reports() if isinstance(r, dict)]

    def damaged_comparisons(self) -> list[tuple[str, str]]:
        """The saved comparison reports that cannot be read: (name, why), newest first."""
        return [r for r in self._reports() if isinstance(r, tuple)]

    def _reports(self) -> list[dict[str, Any] | tuple[str, str]]:
        """Each saved comparison, checked: the report, or (its name, why it is damaged)."""
        folder = self.root / COMPARISONS
        if folder.is_symlink() or not folder.is_dir():
            return []
        found: list[dict[str, Any] | tuple[str, str]] = []
        for path in sorted(folder.glob("*.json"), reverse=True):
            try:
                found.append(run_readers.report(path, read_json_file(path, folder)))
            except GantuneError as exc:
                found.append((path.stem, str(exc)))
        return found

    def save_comparison(self, report: dict[str, Any], stamp: str) -> None:
        """Keep a comparison's report as ``comparisons/<stamp>.json``."""
        with saving("the comparison", self.root):
            (self.root / COMPARISONS).mkdir(exist_ok=True)
            write_json_atomic(self.root / COMPARISONS / f"{stamp}.json", report)

    # --- the pace of earlier runs: the first time estimate of the next ----------------------------
    def note_pace(self, config: TrainConfig, seconds_per_step: float) -> None:
        """The pace of a job that finished in this process: the best guess for the next one alike."""
        self._paces[_pace_key(config)] = seconds_per_step

    def pace_hint(self, config: TrainConfig, besides: RunFolder | None = None) -> float | None:
        """Seconds per step of a run alike in ``_PACE_SETTINGS``: one finished in this process, else a saved one
        (not ``besides``: the run itself, when it resumes)."""
        key = _pace_key(config)
        if key in self._paces:
            return self._paces[key]
        for row in self.rows():
            if besides is not None and row.run == besides.path.name or not row.steps or not row.seconds:
                continue
            try:
                alike = _pace_key(self.folder(row.run).read_config()[0]) == key
            except GantuneError:
                continue
            if alike:
                return row.seconds / row.steps
        return None

    def note_eval_pace(self, config: TrainConfig, seconds_per_token: float) -> dict[str, Any]:
        """The evaluation pace a comparison of ``config``'s model measured: the next plan's; returned as its report
        keeps it (``evaluation_pace``), for a restarted workbench."""
        self._eval_paces[_eval_key(config)] = seconds_per_token
        return {"model": config.model, "gguf_file": config.gguf_file, "precision": config.precision,
                "seconds_per_token": seconds_per_token}

    def eval_pace_hint(self, config: TrainConfig) -> float | None:
        """Seconds per answer token of evaluating ``config``'s model (at its precision): measured by a comparison in
        this process, else by the newest saved one that says so; None when none has."""
        key = _eval_key(config)
        if key in self._eval_paces:
            return self._eval_paces[key]
        for report in self.comparisons():
            pace = report.get("evaluation_pace")
            if isinstance(pace, dict) and (pace.get("model"), pace.get("gguf_file"), pace.get("precision")) == key:
                seconds = pace.get("seconds_per_token")
                if isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and 0 < seconds < math.inf:
                    return float(seconds)
        return None


def planned_steps(run: RunFolder) -> int | None:
    """The steps a training run will take, from what its config.json says (None before it is written)."""
    try:
        config, resolved = run.read_config()
    except GantuneError:
        return None
    n_train = resolved.get("n_train")
    return math.ceil(n_train / config.batch_size) * config.epochs if n_train else None


def summary_or_none(run: RunFolder) -> RunSummary | None:
    """The run's summary.json, or None when it has none or it is damaged (the page shows what it can)."""
    try:
        return run.read_summary()
    except GantuneError:
        return None


def eval_or_none(run: RunFolder) -> dict[str, Any] | None:
    """The run's eval.json, or None when it has none or it is damaged."""
    try:
        return run.read_eval()
    except GantuneError:
        return None


def json_or_none(path: Path) -> dict[str, Any] | None:
    """A JSON object file of its folder, or None when it is missing, damaged or not an object."""
    try:
        found = read_json_file(path, path.parent)
    except GantuneError:
        return None
    return found if isinstance(found, dict) else None


def _is_run_name(name: str) -> bool:
    """Whether ``name`` can be a run's id: one folder's name (any letters and spaces), not hidden (a temporary
    folder), no path separator."""
    return bool(name) and not name.startswith(".") and "/" not in name and "\\" not in name and "\0" not in name and len(name.encode("utf-8", "surrogateescape")) <= 255


def _archive_path(run: RunFolder) -> Path:
    """Where an earlier gantune made a run's adapter .zip: in the run folder (Delete removes it)."""
    return run.path / f"{run.path.name}-adapter.zip"


def _eval_key(config: TrainConfig) -> tuple:
    return config.model, config.gguf_file, config.precision


def _pace_key(config: TrainConfig) -> tuple:
    return tuple(json.dumps(getattr(config, name, None)) for name in _PACE_SETTINGS)
