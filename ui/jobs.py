"""The one job manager: training (and comparison) jobs run in a background thread owned by the
server, not by a browser session.

One job at a time; Stop is a flag the trainer checks before its next step (the run still saves);
a page that closes or reloads changes nothing, and a new page reads ``status()`` to re-attach.
The thread writes the run folder; pages only read it. An error ends the job with its message and
leaves the run folder as it was.
"""

from __future__ import annotations

import threading
import time
import traceback
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import torch

from gantune.errors import OUT_OF_MEMORY, GantuneError

# A job body gets (report, should_stop): report(step, total, run, message) updates the status.
Report = Callable[..., None]
JobBody = Callable[[Report, Callable[[], bool]], Any]

ACTIVE = ("starting", "running", "stopping")


class JobBusy(GantuneError):
    """Start was pressed while a job runs."""


@dataclass(frozen=True)
class JobStatus:
    state: str = "idle"  # idle | starting | running | stopping | completed | stopped | failed
    kind: str = ""
    title: str = ""
    run: str | None = None  # the run folder being written (the page plots it)
    step: int = 0
    total: int = 0
    message: str = ""
    error: str | None = None
    started: float | None = None
    finished: float | None = None
    result: Any = field(default=None, compare=False)

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    def eta_seconds(self) -> float | None:
        """Remaining time at the pace so far (None before the first step)."""
        if not self.active or not self.started or self.step <= 0 or self.total <= 0:
            return None
        return (time.time() - self.started) / self.step * (self.total - self.step)


class JobManager:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._status = JobStatus()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def status(self) -> JobStatus:
        with self._lock:
            return self._status

    def start(self, kind: str, title: str, body: JobBody, run: str | None = None) -> JobStatus:
        """Run ``body`` in the background; raises JobBusy when a job is already running.

        ``run``: the run folder the job will write, when known up front (the page plots it at once).
        """
        with self._lock:
            if self._status.active:
                raise JobBusy(f"a job is running ({self._status.title}); watch it or stop it first")
            self._stop.clear()
            self._status = JobStatus(state="starting", kind=kind, title=title, run=run, started=time.time(),
                                     message="starting …")
            self._thread = threading.Thread(target=self._run, args=(body,), daemon=True, name=f"gantune-{kind}")
            self._thread.start()
            return self._status

    def stop(self) -> JobStatus:
        """Ask the running job to end at its next step (it still saves)."""
        with self._lock:
            if self._status.active:
                self._stop.set()
                self._status = replace(self._status, state="stopping", message="stopping at the next step …")
            return self._status

    def wait(self, timeout: float | None = None) -> JobStatus:
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return self.status()

    def _report(self, step: int | None = None, total: int | None = None, run: str | None = None,
                message: str | None = None) -> None:
        with self._lock:
            s = self._status
            changes = {k: v for k, v in (("step", step), ("total", total), ("run", run), ("message", message))
                       if v is not None}
            state = "stopping" if self._stop.is_set() else "running"
            self._status = replace(s, state=state, **changes)

    def _run(self, body: JobBody) -> None:
        try:
            result = body(self._report, self._stop.is_set)
            state, error = ("stopped" if self._stop.is_set() else "completed"), None
        except GantuneError as exc:
            result, state, error = None, "failed", str(exc)
        except (MemoryError, torch.OutOfMemoryError):
            result, state, error = None, "failed", OUT_OF_MEMORY
        except Exception as exc:  # a bug or a runtime fault: the page shows it, the server lives on
            traceback.print_exc()
            result, state, error = None, "failed", f"{type(exc).__name__}: {exc}"
        with self._lock:
            self._status = replace(self._status, state=state, error=error, finished=time.time(), result=result,
                                   message=error or f"{state}")
