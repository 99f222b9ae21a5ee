"""The run folder: where each of a run's files lives, how it is written, and its checked reader.

Every write is whole or not at all (``files``); every read goes through one validating reader per
kind (``readers``, ``summary``) and opens only regular files inside the folder.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..config import TrainConfig
from ..errors import GantuneError
from . import readers, summary
from .claims import MARKER, Claims
from .files import (
    append_line,
    check_data_only,
    check_finite,
    check_regular,
    check_tree,
    identity,
    last_complete,
    read_json_file,
    read_lines,
    replace_dir_atomic,
    saving,
    write_json_atomic,
    write_text_atomic,
)
from .lock import RunInUse, RunLock
from .summary import RunSummary

T = TypeVar("T")


def new_run_dir(root: str | Path, method: str, preset: str) -> Path:
    """The default name of a run folder (one-second resolution: ``claim_unused`` makes it unique)."""
    return Path(root) / f"{method}-{preset}-{time.strftime('%Y%m%d-%H%M%S')}"


class RunFolder(Claims):
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.config_path = self.path / "config.json"
        self.metrics_path = self.path / "metrics.jsonl"
        self.summary_path = self.path / "summary.json"
        self.adapter_dir = self.path / "adapter"
        self.checkpoint_dir = self.path / "checkpoint"
        self.samples_path = self.path / "samples.jsonl"
        self.eval_path = self.path / "eval.json"
        self.marker_path = self.path / MARKER
        self._replaced: Path | None = None
        self._lock: RunLock | None = None

    def create(self) -> "RunFolder":
        """Make the folder if missing (no claim: for writing files into a folder of one's own)."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise GantuneError(f"cannot create run folder {self.path}: {exc.strerror}") from exc
        return self

    # config -------------------------------------------------------------------------------------
    def write_config(self, config: TrainConfig, resolved: dict[str, Any]) -> None:
        with saving("the run's settings", self.path):
            write_json_atomic(self.config_path, {
                "config": config.to_dict(), "resolved": resolved, "command": config.command_preview(),
            })

    def read_config(self) -> tuple[TrainConfig, dict[str, Any]]:
        """The run's settings (checked as a new run's are) and what it resolved (model, data, split, resumes)."""
        if not (self.config_path.exists() or self.config_path.is_symlink()):
            if self.is_marked():
                raise GantuneError(f"{self.path} holds no run yet: it was stopped before its settings were written; "
                                   f"start it again with --out {self.path}")
            raise GantuneError(f"{self.path} is not a run folder (no config.json)")
        return readers.config(self.config_path, self.path, read_json_file(self.config_path, self.path))

    # metrics ------------------------------------------------------------------------------------
    def append_metrics(self, record: dict[str, Any]) -> None:
        with saving("the step's metrics", self.path):
            append_line(self.metrics_path, record)

    def read_metrics(self) -> list[dict[str, Any]]:
        """One record a training step (an object with a whole ``step``); other lines are skipped."""
        return [r for r in read_lines(self.metrics_path, self.path) if readers.is_int(r.get("step"))
                and (readers.is_int(r["total_steps"]) if "total_steps" in r else True)]

    def append_sample(self, record: dict[str, Any]) -> None:
        with saving("the sampled answers", self.path):
            append_line(self.samples_path, record)

    def read_samples(self) -> list[dict[str, Any]]:
        """Sampled answers: a whole ``step`` and text ``question``/``answer``/``reference`` ('' when absent)."""
        texts = ("question", "answer", "reference")
        return [{**dict.fromkeys(texts, ""), **r} for r in read_lines(self.samples_path, self.path)
                if readers.is_int(r.get("step")) and all(isinstance(r.get(k, ""), str) for k in texts)]

    def keep_records_until(self, step: int) -> None:
        """Drop metrics and samples of steps after ``step`` (a resumed run redoes them)."""
        with saving("the metrics", self.path):
            for path in (self.metrics_path, self.samples_path):
                if path.exists() or path.is_symlink():
                    kept = [r for r in read_lines(path, self.path) if readers.is_int(r.get("step")) and r["step"] <= step]
                    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in kept))

    # adapter, checkpoint, summary, evaluation -----------------------------------------------------
    def save_adapter(self, save_pretrained: Callable[[Path], None]) -> None:
        with saving("the adapter", self.path):
            replace_dir_atomic(self.adapter_dir, save_pretrained)

    def checked_adapter(self) -> Path:
        """The adapter's last complete copy (``last_complete``: nothing is repaired), once its kind and place are
        checked: regular files inside the run only, safetensors and text only; one line when there is none."""
        folder = last_complete(self.adapter_dir)
        if not (folder.exists() or folder.is_symlink()):
            raise GantuneError(f"{self.path} has no adapter yet (the run did not finish or save)")
        check_tree(folder, self.path)
        if not folder.is_dir():
            raise GantuneError(f"{folder} is not a folder (a file, FIFO or device); gantune reads an adapter folder only")
        check_data_only(folder)
        return folder

    def read_adapter(self, load: Callable[[Path], T], discard: Callable[[T], None] = lambda _: None) -> T:
        """``load`` the run's adapter as any reader may, with or without the run's lock: its last complete copy,
        checked (``checked_adapter``, and every weight finite), never changed; loaded again when a writer swapped
        a new copy in meanwhile (what was loaded from the old one goes to ``discard``), so it is one copy's."""
        for _ in range(3):
            folder = self.checked_adapter()
            before = identity(folder)
            try:
                check_finite(folder)
                loaded = load(folder)
            except Exception:
                if identity(folder) == before:
                    raise
                continue  # a writer swapped the folder while it was read: read the new copy
            if identity(folder) == before:
                return loaded
            discard(loaded)
        raise GantuneError(f"{self.adapter_dir} changed each time it was read (a job is saving it): try again")

    def save_checkpoint(self, tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
        def fill(folder: Path) -> None:
            save_file({k: v.contiguous() for k, v in tensors.items()}, folder / "state.safetensors")
            (folder / "trainer_state.json").write_text(json.dumps(state, indent=2))

        with saving("a checkpoint", self.path):
            replace_dir_atomic(self.checkpoint_dir, fill)

    def has_checkpoint(self) -> bool:
        """Whether the run holds a checkpoint (its last complete copy); a read only: nothing is repaired or deleted."""
        return (last_complete(self.checkpoint_dir) / "trainer_state.json").exists()

    def load_checkpoint(self, total_steps: int | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
        """The checkpoint's tensors and trainer state (its last complete copy), or None without one.

        The state's ``step`` is always checked; with ``total_steps`` (a resume) the whole state is: step
        within the run's planned steps, seconds, and the validation history.
        """
        folder = last_complete(self.checkpoint_dir)
        if not (folder / "trainer_state.json").exists():
            return None
        check_tree(folder, self.path)
        path = folder / "trainer_state.json"
        state = readers.trainer_state(path, read_json_file(path, self.path), total_steps)
        tensors_path = folder / "state.safetensors"
        try:
            check_regular(tensors_path, self.path)
            return load_file(tensors_path), state
        except (OSError, ValueError, SafetensorError) as exc:
            raise GantuneError(f"the checkpoint in {folder} is unreadable: {exc}") from exc

    def write_summary(self, run_summary: RunSummary) -> None:
        with saving("the summary", self.path):
            write_json_atomic(self.summary_path, run_summary.to_dict())

    def drop_summary(self) -> None:
        """Remove summary.json: the run is under way again (a resume), and says how it ended only when it ends."""
        with saving("the summary", self.path):
            self.summary_path.unlink(missing_ok=True)

    def read_summary(self) -> RunSummary | None:
        """summary.json (written when a run ends), checked; None before there is one."""
        if not (self.summary_path.exists() or self.summary_path.is_symlink()):
            return None
        return summary.checked(self.summary_path, read_json_file(self.summary_path, self.path))

    def read_validation(self) -> list[dict[str, Any]]:
        """The validation scores of the adapters scored so far, step 0's included: summary.json's once the run has
        ended, else its checkpoint's (checked; [] without either)."""
        ended = self.read_summary()
        if ended is not None:
            return ended.validation
        state = self.checkpoint_state()
        if state is None:
            return []
        readers.validation(self.checkpoint_dir / "trainer_state.json", state.get("validation", []), "validation")
        return state.get("validation", [])

    def checkpoint_state(self) -> dict[str, Any] | None:
        """The checkpoint's trainer state (its step checked; no tensor is read), or None without a checkpoint."""
        path = self.checkpoint_dir / "trainer_state.json"
        if not (path.exists() or path.is_symlink()):
            return None
        return readers.trainer_state(path, read_json_file(path, self.path), None)

    def read_eval(self) -> dict[str, Any] | None:
        """eval.json (an evaluation's scores), checked; None before there is one."""
        if not (self.eval_path.exists() or self.eval_path.is_symlink()):
            return None
        return readers.evaluation(self.eval_path, read_json_file(self.eval_path, self.path))


def claim_unused(path: str | Path) -> RunFolder:
    """A new run folder at ``path``, or ``path-2``, ``path-3`` … when that name is taken, made, locked and marked
    atomically."""
    path = Path(path)
    for i in itertools.count(1):
        run = RunFolder(path if i == 1 else path.with_name(f"{path.name}-{i}"))
        try:
            run.path.parent.mkdir(parents=True, exist_ok=True)
            os.mkdir(run.path)
            run.lock("training")
            if run._mark(made=True):
                return run
            run.unlock()
        except (FileExistsError, RunInUse):
            continue
        except OSError as exc:
            run.unlock()
            raise GantuneError(f"cannot create run folder {run.path}: {exc.strerror}") from exc
    raise AssertionError("unreachable")
