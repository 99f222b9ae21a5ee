"""The run folder: everything a run produces, written so that a crash never leaves a torn file.

    config.json        settings, resolved model/data sources, seed, the command that repeats it
    metrics.jsonl      one JSON object per step (appended line by line; a torn last line is skipped)
    adapter/           the tuned part: safetensors + JSON config (loadable without this run's objects)
    checkpoint/        weights + optimiser state (safetensors) + trainer state (JSON), for --resume
    summary.json       written at the end: steps, seconds, peak memory, where the adapter is

Files are replaced whole (written beside, then renamed over); folders are swapped in by two renames,
and a crash between them is undone on the next read. A failed write (disk full, folder deleted or
read-only) is one GantuneError line; what was saved before stays as it was.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import TrainConfig
from .errors import GantuneError, write_error


def write_text_atomic(path: Path, text: str) -> None:
    """Write text to a temporary file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON atomically (see ``write_text_atomic``)."""
    write_text_atomic(path, json.dumps(obj, indent=2))


def replace_dir_atomic(path: Path, fill: Callable[[Path], None]) -> None:
    """Fill a fresh temporary folder, then swap it in for ``path`` (the old one survives a failure)."""
    recover_dir(path)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        fill(tmp)
        old = path.with_name(f".{path.name}.old")
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
        os.replace(tmp, path)  # a crash just before this leaves only .old: recover_dir puts it back
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def recover_dir(path: Path) -> None:
    """Undo a swap cut short by a crash: bring ``.name.old`` back when ``name`` is missing; drop stale temps."""
    old = path.with_name(f".{path.name}.old")
    if old.is_dir() and not path.exists():
        os.replace(old, path)
    if path.parent.is_dir():
        for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)


@contextmanager
def saving(what: str, where: object) -> Iterator[None]:
    """Turn a failed write (disk full, folder gone, read-only) into one clear GantuneError line."""
    try:
        yield
    except OSError as exc:
        raise write_error(exc, what, where) from exc


def new_run_dir(root: str | Path, method: str, preset: str) -> Path:
    return Path(root) / f"{method}-{preset}-{time.strftime('%Y%m%d-%H%M%S')}"


class RunFolder:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.config_path = self.path / "config.json"
        self.metrics_path = self.path / "metrics.jsonl"
        self.summary_path = self.path / "summary.json"
        self.adapter_dir = self.path / "adapter"
        self.checkpoint_dir = self.path / "checkpoint"
        self.samples_path = self.path / "samples.jsonl"
        self.eval_path = self.path / "eval.json"

    def create(self) -> "RunFolder":
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise GantuneError(f"cannot create run folder {self.path}: {exc.strerror}") from exc
        return self

    def clear(self) -> None:
        """Remove what an earlier run wrote here (only gantune's own files), for a fresh start."""
        for f in (self.config_path, self.metrics_path, self.summary_path, self.samples_path, self.eval_path):
            f.unlink(missing_ok=True)
        for d in (self.adapter_dir, self.checkpoint_dir):
            shutil.rmtree(d, ignore_errors=True)

    # config -------------------------------------------------------------------------------------
    def write_config(self, config: TrainConfig, resolved: dict[str, Any]) -> None:
        with saving("the run's settings", self.path):
            write_json_atomic(self.config_path, {
                "config": config.to_dict(), "resolved": resolved, "command": config.command_preview(),
            })

    def read_config(self) -> tuple[TrainConfig, dict[str, Any]]:
        if not self.config_path.is_file():
            raise GantuneError(f"{self.path} is not a run folder (no config.json)")
        try:
            data = json.loads(self.config_path.read_text(encoding="utf-8"))
            return TrainConfig.from_dict(data["config"]), data.get("resolved", {})
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise GantuneError(f"{self.config_path} is unreadable: {exc}") from exc

    # metrics ------------------------------------------------------------------------------------
    def append_metrics(self, record: dict[str, Any]) -> None:
        with saving("the step's metrics", self.path):
            _append_line(self.metrics_path, record)

    def read_metrics(self) -> list[dict[str, Any]]:
        return _read_lines(self.metrics_path)

    def append_sample(self, record: dict[str, Any]) -> None:
        with saving("the sampled answers", self.path):
            _append_line(self.samples_path, record)

    def read_samples(self) -> list[dict[str, Any]]:
        return _read_lines(self.samples_path)

    def keep_records_until(self, step: int) -> None:
        """Drop metrics and samples of steps after ``step`` (a resumed run redoes them)."""
        with saving("the metrics", self.path):
            for path in (self.metrics_path, self.samples_path):
                if path.is_file():
                    kept = [r for r in _read_lines(path) if r.get("step", 0) <= step]
                    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in kept))

    # adapter, checkpoint, summary ---------------------------------------------------------------
    def save_adapter(self, save_pretrained: Callable[[Path], None]) -> None:
        with saving("the adapter", self.path):
            replace_dir_atomic(self.adapter_dir, save_pretrained)

    def save_checkpoint(self, tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
        def fill(folder: Path) -> None:
            save_file({k: v.contiguous() for k, v in tensors.items()}, folder / "state.safetensors")
            (folder / "trainer_state.json").write_text(json.dumps(state, indent=2))

        with saving("a checkpoint", self.path):
            replace_dir_atomic(self.checkpoint_dir, fill)

    def has_checkpoint(self) -> bool:
        recover_dir(self.checkpoint_dir)
        return (self.checkpoint_dir / "trainer_state.json").is_file()

    def load_checkpoint(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
        if not self.has_checkpoint():
            return None
        state_file = self.checkpoint_dir / "trainer_state.json"
        try:
            return load_file(self.checkpoint_dir / "state.safetensors"), json.loads(state_file.read_text())
        except (OSError, ValueError, SafetensorError) as exc:
            raise GantuneError(f"the checkpoint in {self.checkpoint_dir} is unreadable: {exc}") from exc

    def write_summary(self, summary: dict[str, Any]) -> None:
        with saving("the summary", self.path):
            write_json_atomic(self.summary_path, summary)


def _append_line(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line in one write; a line torn by an earlier crash is closed off first."""
    with open(path, "a+b") as fh:
        torn = fh.tell() > 0 and (fh.seek(-1, os.SEEK_END), fh.read(1))[1] != b"\n"
        fh.write((b"\n" if torn else b"") + (json.dumps(record) + "\n").encode("utf-8"))


def _read_lines(path: Path) -> list[dict[str, Any]]:
    """JSON Lines, skipping a line torn by a crash mid-write."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records
