"""summary.json: how a run ended, as ``train`` writes it and as every reader gets it back, checked."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .readers import expect, expect_object, is_int, is_number, validation

STATUSES = ("completed", "stopped", "diverged")


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
        """The summary of a summary.json object (checked by ``checked``); keys it does not know are ignored."""
        return cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def complete(self) -> bool:
        """Whether the run completed every planned step (nothing is left to resume)."""
        return self.status == "completed" and self.steps == self.total_steps


def checked(path: Path, summary: Any) -> RunSummary:
    """summary.json's parsed JSON as a RunSummary, each field checked (one line naming the file and the field)."""
    summary = expect_object(path, summary)
    if "status" in summary:
        expect(path, "status", summary["status"], summary["status"] in STATUSES, f"one of {', '.join(STATUSES)}")
    for key in ("steps", "total_steps", "adapter_step", "kept_step", "trainable_params", "n_train", "n_val", "n_test"):
        value = summary.get(key)
        expect(path, key, value, value is None or is_int(value) and value >= 0, "a whole number >= 0")
    if is_int(summary.get("steps")) and is_int(summary.get("total_steps")):
        expect(path, "steps", summary["steps"], summary["steps"] <= summary["total_steps"],
               f"at most total_steps ({summary['total_steps']})")
    for key in ("seconds", "tokens_per_s", "peak_memory_mb"):
        value = summary.get(key)
        expect(path, key, value, value is None or is_number(value) and value >= 0, "a finite number >= 0")
    for key in ("adapter", "run", "kept_reason", "method", "preset", "memory_kind", "device"):
        value = summary.get(key)
        expect(path, key, value, value is None or isinstance(value, str), "text")
    validation(path, summary.get("validation", []), "validation")
    return RunSummary.from_dict(summary)
