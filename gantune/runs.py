"""The run folder: everything a run produces, written so that a crash never leaves a torn file.

    config.json        settings, resolved model/data sources, seed, the command that repeats it
    metrics.jsonl      one JSON object per step (appended line by line; a torn last line is skipped)
    adapter/           the tuned part: safetensors + JSON config (loadable without this run's objects)
    checkpoint/        weights + optimiser state (safetensors) + trainer state (JSON), for --resume
    summary.json       written at the end: steps, seconds, peak memory, where the adapter is
    gantune-run.json   the marker: written when a run claims the folder (JSON: a random id, when)

A run claims its folder atomically (made create-exclusive, then marked), so two runs never share
one; gantune deletes only files of a folder holding its marker, and never replaces a folder that
lacks it (a user's folder, or a run made before the marker existed: that one still opens and resumes).
Every run file is read through one validating reader per kind (``read_config``, ``load_checkpoint``,
``read_summary``, ``read_eval``, ``read_metrics``/``read_samples``): a damaged or hand-edited file
is one GantuneError line naming the file and the field.

Files are replaced whole (written beside, then renamed over); folders are swapped in by two renames,
and a crash between them is undone on the next read. A failed write (disk full, folder deleted or
read-only) is one GantuneError line; what was saved before stays as it was.
"""

from __future__ import annotations

import glob
import itertools
import json
import math
import os
import secrets
import shutil
import tempfile
import time
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import TrainConfig
from .errors import GantuneError, first_line, write_error


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
    """The default name of a run folder (one-second resolution: ``claim_unused`` makes it unique)."""
    return Path(root) / f"{method}-{preset}-{time.strftime('%Y%m%d-%H%M%S')}"


MARKER = "gantune-run.json"
STATUSES = ("completed", "stopped", "diverged")
# eval.json's scores that the pages read as numbers (each may be null: unavailable)
EVAL_NUMBERS = ("rouge1", "rouge2", "rougeL", "rougeLsum", "bleurt", "semantic", "retention", "retention_rougeL",
                "length_mean", "length_w1", "truncated", "distinct1", "distinct2", "real_vs_generated_auc")


@dataclass
class RunSummary:
    """summary.json: how a run ended (``train`` writes it; ``RunFolder.read_summary`` reads it back, checked).

    A run written by an older gantune may lack fields (None) or hold others (ignored).
    """

    status: str | None = None  # one of STATUSES
    method: str | None = None
    preset: str | None = None
    steps: int | None = None
    total_steps: int | None = None
    adapter_step: int | None = None  # the step whose adapter is in adapter/ (None: none was saved)
    kept_step: int | None = None
    kept_reason: str | None = None
    validation: list[dict[str, Any]] = field(default_factory=list)  # {"step", "val_<metric>"} of each scored adapter
    seconds: float | None = None
    tokens_per_s: float | None = None
    peak_memory_mb: float | None = None
    memory_kind: str | None = None
    trainable_params: int | None = None
    n_train: int | None = None
    n_val: int | None = None
    n_test: int | None = None
    device: str | None = None
    adapter: str | None = None  # the adapter folder, when one was saved
    run: str | None = None  # the run folder

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "RunSummary":
        """The summary of a summary.json object (checked by ``read_summary``); keys it does not know are ignored."""
        return cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def complete(self) -> bool:
        """Whether the run completed every planned step (nothing is left to resume)."""
        return self.status == "completed" and self.steps == self.total_steps


def claim_unused(path: str | Path) -> "RunFolder":
    """A new run folder at ``path``, or ``path-2``, ``path-3`` … when that name is taken, made and marked atomically."""
    path = Path(path)
    for i in itertools.count(1):
        run = RunFolder(path if i == 1 else path.with_name(f"{path.name}-{i}"))
        try:
            run.path.parent.mkdir(parents=True, exist_ok=True)
            os.mkdir(run.path)
            if run._mark(made=True):
                return run
        except FileExistsError:
            continue
        except OSError as exc:
            raise GantuneError(f"cannot create run folder {run.path}: {exc.strerror}") from exc


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
        self.marker_path = self.path / MARKER
        self._replaced: Path | None = None  # the marker of the run a claim with overwrite is to replace, set aside

    def create(self) -> "RunFolder":
        """Make the folder if missing (no claim: for writing files into a folder of one's own)."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise GantuneError(f"cannot create run folder {self.path}: {exc.strerror}") from exc
        return self

    # claiming: a run's folder is its own, and gantune deletes only what it can prove it wrote ---------
    def is_marked(self) -> bool:
        """Whether gantune claimed this folder for a run (its marker file is there)."""
        return self.marker_path.is_file()

    def claim(self, overwrite: bool = False) -> "RunFolder":
        """Make this folder a fresh run's own, atomically: a new or empty folder is claimed; a run folder
        gantune made only with ``overwrite`` (its files go once the new run starts: ``drop_replaced``; nothing
        else of the folder's); anything else is refused.
        """
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.mkdir(self.path)
                made = True
            except FileExistsError:
                made = self._take_over(overwrite)
            if not self._mark(made):
                raise GantuneError(f"{self.path} was claimed by another run just now; choose another --out")
        except OSError as exc:
            raise GantuneError(f"cannot create run folder {self.path}: {exc.strerror}") from exc
        return self

    def _take_over(self, overwrite: bool) -> bool:
        """Ready an existing folder to be claimed: empty, or a run gantune made (only with ``overwrite``: its marker
        is set aside); anything else is refused. Returns whether gantune made the folder itself."""
        if not self.path.is_dir():
            raise GantuneError(f"{self.path} exists and is not a folder; choose another --out")
        if self.is_marked():
            if not overwrite:
                raise GantuneError(f"{self.path} already holds a run; pass --resume {self.path} to continue it, "
                                   "--overwrite to replace it, or another --out")
            made = self._made_by_gantune()
            taken = self.path / f"{MARKER}.{secrets.token_hex(4)}.replaced"
            try:
                os.rename(self.marker_path, taken)  # of two runs replacing it at once, one wins this rename
            except FileNotFoundError:
                raise GantuneError(f"{self.path} is being replaced by another run just now; choose another --out") \
                    from None
            self._replaced = taken
            return made
        if self.config_path.is_file():
            raise GantuneError(f"{self.path} holds a run made before gantune marked its run folders, so gantune will "
                               f"not replace it; continue it with --resume {self.path}, or move it aside or choose "
                               "another --out for a new run")
        if any(self.path.iterdir()):
            if self.is_marked():  # another run made and marked it since the check above
                raise GantuneError(f"{self.path} was claimed by another run just now; choose another --out")
            raise GantuneError(f"{self.path} is not a gantune run folder; gantune replaces only run folders it made "
                               "— choose another --out")
        return False

    def _mark(self, made: bool) -> bool:
        """Write the marker, create-exclusive; False when another run marked the folder first."""
        try:
            fd = os.open(self.marker_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({"run_id": secrets.token_hex(8), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                       "made_folder": made}, fh)
        return True

    def _clear(self) -> None:
        """Remove what an earlier run wrote here: gantune's own files only (the folder's other files stay)."""
        for f in (self.config_path, self.metrics_path, self.summary_path, self.samples_path, self.eval_path):
            f.unlink(missing_ok=True)
        for d in (self.adapter_dir, self.checkpoint_dir):
            shutil.rmtree(d, ignore_errors=True)
            shutil.rmtree(d.with_name(f".{d.name}.old"), ignore_errors=True)

    def _made_by_gantune(self) -> bool:
        """Whether the marker says gantune made the folder itself (not a user's empty folder it claimed)."""
        try:
            return read_json_file(self.marker_path).get("made_folder") is True
        except (GantuneError, AttributeError):
            return False

    def drop_replaced(self) -> None:
        """Remove the files of the run a claim with overwrite replaces, now that the new run starts."""
        if self._replaced is not None:
            self._clear()
            self._replaced.unlink(missing_ok=True)
            self._replaced = None

    def release(self) -> None:
        """Give back a claim nothing was written under (a run refused before its first file): a run it was to
        replace stays as it was; else the marker goes, and the folder too when the claim made it."""
        try:
            if self._replaced is not None:
                os.replace(self._replaced, self.marker_path)
                self._replaced = None
                return
            if {p.name for p in self.path.iterdir()} != {MARKER}:
                return
            made = self._made_by_gantune()
            self.marker_path.unlink()
            if made:
                self.path.rmdir()
        except OSError:
            pass  # whatever is left is harmless: an empty or marked folder

    def delete(self, extra: tuple[Path, ...] = ()) -> None:
        """Delete this run as far as gantune can prove it wrote it: the whole folder when gantune made it (its
        marker says so); else gantune's own files (and ``extra``) of a marked folder or of a run made before the
        marker existed (its config.json holds run settings), and the folder when that empties it."""
        if self._made_by_gantune():
            shutil.rmtree(self.path)
            return
        if not self.is_marked():
            try:
                self.read_config()
            except GantuneError as exc:
                raise GantuneError(f"{self.path} was not made by gantune ({exc}), so gantune will not delete it; "
                                   "delete it yourself if you mean to") from exc
        self._clear()
        for f in (self.marker_path, *extra):
            f.unlink(missing_ok=True)
        with suppress(OSError):
            self.path.rmdir()  # what else the folder holds is not gantune's: it stays

    # config -------------------------------------------------------------------------------------
    def write_config(self, config: TrainConfig, resolved: dict[str, Any]) -> None:
        with saving("the run's settings", self.path):
            write_json_atomic(self.config_path, {
                "config": config.to_dict(), "resolved": resolved, "command": config.command_preview(),
            })

    def read_config(self) -> tuple[TrainConfig, dict[str, Any]]:
        """The run's settings (checked as a new run's are) and what it resolved (model, data, split sizes)."""
        if not self.config_path.is_file():
            raise GantuneError(f"{self.path} is not a run folder (no config.json)")
        path = self.config_path
        data = _object(path, read_json_file(path))
        if "config" not in data:
            if "model_type" in data or "architectures" in data:
                raise GantuneError(f"{self.path} is not a gantune run folder (its config.json has no run settings; "
                                   "it looks like a model — pass it as --model to train)")
            raise _missing(path, "config")
        settings = _object(path, data["config"], "config")
        try:
            config = TrainConfig.from_dict(settings).validate()
        except GantuneError as exc:
            raise GantuneError(f"{path}: {exc}") from exc
        except (TypeError, ValueError) as exc:  # a value of the wrong type that from_dict let through
            raise GantuneError(f"{path}: the run's settings are invalid ({first_line(exc)})") from exc
        resolved = _object(path, data.get("resolved", {}), "resolved")
        for key in ("n_train", "n_val", "n_test", "processes"):
            if key in resolved:
                _expect(path, f"resolved.{key}", resolved[key], _is_int(resolved[key]) and resolved[key] >= 0,
                        "a whole number >= 0")
        return config, resolved

    # metrics ------------------------------------------------------------------------------------
    def append_metrics(self, record: dict[str, Any]) -> None:
        with saving("the step's metrics", self.path):
            _append_line(self.metrics_path, record)

    def read_metrics(self) -> list[dict[str, Any]]:
        """One record a training step (an object with a whole ``step``); other lines are skipped."""
        return [r for r in _read_lines(self.metrics_path)
                if _is_int(r.get("step")) and (_is_int(r["total_steps"]) if "total_steps" in r else True)]

    def append_sample(self, record: dict[str, Any]) -> None:
        with saving("the sampled answers", self.path):
            _append_line(self.samples_path, record)

    def read_samples(self) -> list[dict[str, Any]]:
        """Sampled answers: a whole ``step`` and text ``question``/``answer``/``reference`` ('' when absent)."""
        texts = ("question", "answer", "reference")
        return [{**dict.fromkeys(texts, ""), **r} for r in _read_lines(self.samples_path)
                if _is_int(r.get("step")) and all(isinstance(r.get(k, ""), str) for k in texts)]

    def keep_records_until(self, step: int) -> None:
        """Drop metrics and samples of steps after ``step`` (a resumed run redoes them)."""
        with saving("the metrics", self.path):
            for path in (self.metrics_path, self.samples_path):
                if path.is_file():
                    kept = [r for r in _read_lines(path) if _is_int(r.get("step")) and r["step"] <= step]
                    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in kept))

    # adapter, checkpoint, summary, evaluation -----------------------------------------------------
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

    def load_checkpoint(self, total_steps: int | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
        """The checkpoint's tensors and trainer state, or None without one.

        The state's ``step`` is always checked; with ``total_steps`` (a resume) the whole state is: step
        within the run's planned steps, seconds, and the validation history.
        """
        if not self.has_checkpoint():
            return None
        path = self.checkpoint_dir / "trainer_state.json"
        state = _object(path, read_json_file(path))
        _trainer_state(path, state, total_steps)
        try:
            return load_file(self.checkpoint_dir / "state.safetensors"), state
        except (OSError, ValueError, SafetensorError) as exc:
            raise GantuneError(f"the checkpoint in {self.checkpoint_dir} is unreadable: {exc}") from exc

    def write_summary(self, summary: RunSummary) -> None:
        with saving("the summary", self.path):
            write_json_atomic(self.summary_path, summary.to_dict())

    def read_summary(self) -> RunSummary | None:
        """summary.json (written when a run ends), checked; None before there is one."""
        if not self.summary_path.is_file():
            return None
        path = self.summary_path
        summary = _object(path, read_json_file(path))
        if "status" in summary:
            _expect(path, "status", summary["status"], summary["status"] in STATUSES, f"one of {', '.join(STATUSES)}")
        for key in ("steps", "total_steps", "adapter_step", "kept_step", "trainable_params", "n_train", "n_val",
                    "n_test"):
            value = summary.get(key)
            _expect(path, key, value, value is None or _is_int(value) and value >= 0, "a whole number >= 0")
        if _is_int(summary.get("steps")) and _is_int(summary.get("total_steps")):
            _expect(path, "steps", summary["steps"], summary["steps"] <= summary["total_steps"],
                    f"at most total_steps ({summary['total_steps']})")
        for key in ("seconds", "tokens_per_s", "peak_memory_mb"):
            value = summary.get(key)
            _expect(path, key, value, value is None or _is_number(value) and value >= 0, "a finite number >= 0")
        for key in ("adapter", "run", "kept_reason", "method", "preset", "memory_kind", "device"):
            value = summary.get(key)
            _expect(path, key, value, value is None or isinstance(value, str), "text")
        _validation(path, summary.get("validation", []), "validation")
        return RunSummary.from_dict(summary)

    def read_eval(self) -> dict[str, Any] | None:
        """eval.json (an evaluation's scores), checked; None before there is one."""
        if not self.eval_path.is_file():
            return None
        path = self.eval_path
        result = _object(path, read_json_file(path))
        for key in EVAL_NUMBERS:
            value = result.get(key)
            _expect(path, key, value, value is None or _is_number(value), "a number or null")
        for key in ("reference", "sampled", "retention_sets"):
            if key in result:
                _object(path, result[key], key)
        per_question = _object(path, result.get("per_question", {}), "per_question")
        for key, values in per_question.items():
            _expect(path, f"per_question.{key}", values, isinstance(values, list)
                    and all(v is None or _is_number(v) for v in values), "a list of numbers")
        return result


def read_json_file(path: Path) -> Any:
    """A JSON file's value; one GantuneError line naming the file when it is not UTF-8, not JSON or unreadable."""
    try:
        return json.loads(Path(path).read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise GantuneError(f"{path} is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise GantuneError(f"{path} is not valid JSON (line {exc.lineno}: {exc.msg})") from None
    except RecursionError:
        raise GantuneError(f"{path} is not a JSON file gantune reads (nested too deeply)") from None
    except OSError as exc:
        raise GantuneError(f"{path} cannot be read: {exc.strerror or type(exc).__name__}") from None


# --- checks: one line naming the file and the field -----------------------------------------------------

def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _shown(value: Any) -> str:
    kind = {dict: "an object", list: "a list", str: "text", bool: "true/false", type(None): "null"}.get(type(value))
    text = json.dumps(value) if kind in (None, "text", "true/false", "null") else kind
    return text if len(text) <= 40 else text[:37] + "..."


def _expect(path: Path, field: str, value: Any, ok: bool, want: str) -> None:
    if not ok:
        raise GantuneError(f"{path}: '{field}' must be {want} (got {_shown(value)})")


def _missing(path: Path, field: str) -> GantuneError:
    return GantuneError(f"{path}: '{field}' is missing")


def _object(path: Path, value: Any, field: str | None = None) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise GantuneError(f"{path}: " + (f"'{field}' must be an object" if field else "must be a JSON object")
                           + f" (got {_shown(value)})")
    return value


def _validation(path: Path, history: Any, field: str) -> None:
    """A validation history: objects, each a whole ``step`` and ``val_*`` scores."""
    _expect(path, field, history, isinstance(history, list), "a list")
    for i, entry in enumerate(history):
        _score(path, entry, f"{field}[{i}]")


def _score(path: Path, entry: Any, field: str) -> None:
    entry = _object(path, entry, field)
    _expect(path, f"{field}.step", entry.get("step"), _is_int(entry.get("step")) and entry["step"] >= 0,
            "a whole number >= 0")
    for key, value in entry.items():
        if key.startswith("val_"):
            _expect(path, f"{field}.{key}", value, _is_number(value), "a finite number")


def _trainer_state(path: Path, state: dict[str, Any], total_steps: int | None) -> None:
    if "step" not in state:
        raise _missing(path, "step")
    step = state["step"]
    _expect(path, "step", step, _is_int(step) and step >= 0, "a whole number >= 0")
    if total_steps is None:
        return
    _expect(path, "step", step, step <= total_steps, f"at most the run's {total_steps} planned steps")
    if "seconds" not in state:
        raise _missing(path, "seconds")
    _expect(path, "seconds", state["seconds"], _is_number(state["seconds"]) and state["seconds"] >= 0,
            "a finite number >= 0")
    _validation(path, state.get("validation", []), "validation")
    if state.get("best") is not None:
        _score(path, state["best"], "best")


def _append_line(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line in one write; a line torn by an earlier crash is closed off first."""
    with open(path, "a+b") as fh:
        torn = fh.tell() > 0 and (fh.seek(-1, os.SEEK_END), fh.read(1))[1] != b"\n"
        fh.write((b"\n" if torn else b"") + (json.dumps(record) + "\n").encode("utf-8"))


def _read_lines(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSON Lines file; a line torn by a crash, not UTF-8, or not an object is skipped."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise GantuneError(f"{path} cannot be read: {exc.strerror or type(exc).__name__}") from None
    records = []
    for line in raw.splitlines():
        try:
            record = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            continue
        if isinstance(record, dict):
            records.append(record)
    return records
