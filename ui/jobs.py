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

from gantune.errors import OUT_OF_MEMORY, GantuneError, first_line

# A job body gets (report, should_stop): report(step, total, run, message) updates the status.
Report = Callable[..., None]
JobBody = Callable[[Report, Callable[[], bool]], Any]

ACTIVE = ("starting", "running", "stopping")


class JobBusy(GantuneError):
    """Start was pressed while a job runs."""


@dataclass(frozen=True)
class JobStatus:
    state: str = "idle"  # idle | starting | running | stopping | completed | stopped | failed
    kind: str = ""  # train | compare
    title: str = ""  # in English (its catalogue key, when it has one, is title_key)
    title_key: str = ""
    title_args: dict[str, Any] = field(default_factory=dict, hash=False)
    run: str | None = None  # the run folder being written (the page plots it)
    step: int = 0
    total: int = 0
    message: str = ""  # a catalogue key ("training", …) filled with message_args; a failed job's: its error
    message_args: dict[str, Any] = field(default_factory=dict, hash=False)
    error: str | None = None
    started: float | None = None
    finished: float | None = None
    step_began: float | None = None  # wall clock when the step under way began (None before steps begin)
    pace: float | None = None  # seconds per finished step, smoothed over the steps so far
    pace_hint: float | None = None  # seconds per step of an earlier run like this one: the first estimate
    result: Any = field(default=None, compare=False)

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    def eta_seconds(self, now: float | None = None, total: int | None = None) -> float | None:
        """Seconds left at the pace of the finished steps (or the hint before the first ends); None when unknown.

        It counts down through a step instead of climbing while one is slow, and is None while
        stopping (the job ends after this step). ``total``: the planned steps, when the job has not
        reported them yet.
        """
        total = self.total or total or 0
        pace = self.pace if self.pace is not None else self.pace_hint
        if self.state not in ("starting", "running") or total <= 0 or self.step_began is None or pace is None:
            return None
        in_step = max(0.0, (now if now is not None else time.time()) - self.step_began)
        return max(0.0, max(total - self.step, 0) * pace - min(in_step, pace))


class JobManager:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._status = JobStatus()
        self._last: dict[str, JobStatus] = {}  # the latest status of each kind of job
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def status(self, kind: str | None = None) -> JobStatus:
        """The current job's status; with ``kind``, the latest job of that kind (idle if none yet)."""
        with self._lock:
            if kind is None or self._status.kind == kind:
                return self._status
            return self._last.get(kind, JobStatus())

    def _set(self, status: JobStatus) -> JobStatus:  # under the lock
        self._status = self._last[status.kind] = status
        return status

    def start(self, kind: str, title: str, body: JobBody, run: str | None = None, title_key: str = "",
              title_args: dict[str, Any] | None = None) -> JobStatus:
        """Run ``body`` in the background; raises JobBusy when a job is already running.

        ``run``: the run folder the job will write, when known up front (the page plots it at once);
        ``title_key``, ``title_args``: the title as the page's catalogue says it.
        """
        with self._lock:
            if self._status.active:
                raise JobBusy(f"a job is running ({self._status.title}); watch it or stop it first")
            self._stop.clear()
            status = self._set(JobStatus(state="starting", kind=kind, title=title, title_key=title_key,
                                         title_args=title_args or {}, run=run, started=time.time(), message="starting"))
            self._thread = threading.Thread(target=self._run, args=(body,), daemon=True, name=f"gantune-{kind}")
            self._thread.start()
            return status

    def stop(self, kind: str | None = None) -> JobStatus:
        """Ask the running job (with ``kind``: only a job of that kind) to end at its next step; it still saves.

        Returns the status of ``kind``'s latest job (of the current job without ``kind``).
        """
        with self._lock:
            if self._status.active and kind in (None, self._status.kind):
                self._stop.set()
                self._set(replace(self._status, state="stopping", message="stopping", message_args={}))
            return self._status if kind in (None, self._status.kind) else self._last.get(kind, JobStatus())

    def wait(self, timeout: float | None = None) -> JobStatus:
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return self.status()

    def _report(self, step: int | None = None, total: int | None = None, run: str | None = None,
                message: str | None = None, args: dict[str, Any] | None = None, steps_begin: bool = False,
                pace_hint: float | None = None) -> None:
        """A job's progress: its step and total, its run, a message (catalogue key and ``args``).

        ``steps_begin``: the steps start now (the model is loaded), so the clock of the first one
        starts; ``pace_hint``: seconds per step of an earlier run like this one.
        """
        now = time.time()
        with self._lock:
            s = self._status
            changes: dict[str, Any] = {k: v for k, v in (("total", total), ("run", run), ("pace_hint", pace_hint))
                                       if v is not None}
            if message is not None:
                changes.update(message=message, message_args=args or {})
            if steps_begin:
                changes["step_began"] = now
            if step is not None and step != s.step:
                if step > s.step and s.step_began is not None:  # a step finished: the pace, smoothed
                    took = (now - s.step_began) / (1 if s.step == 0 else step - s.step)  # a resumed run's first
                    changes["pace"] = took if s.pace is None else 0.7 * s.pace + 0.3 * took
                changes.update(step=step, step_began=now)
            state = "stopping" if self._stop.is_set() else "running"
            if state == "stopping":
                changes.update(message="stopping", message_args={})
            self._set(replace(s, state=state, **changes))

    def _run(self, body: JobBody) -> None:
        try:
            result = body(self._report, self._stop.is_set)
            # a Stop pressed when no stop point was left: the job still ended as its result says
            ended = getattr(result, "status", None) or (result.get("status") if isinstance(result, dict) else None)
            state = "stopped" if self._stop.is_set() and ended != "completed" else "completed"
            error = None
        except GantuneError as exc:
            result, state, error = None, "failed", str(exc)
        except (MemoryError, torch.OutOfMemoryError):
            result, state, error = None, "failed", OUT_OF_MEMORY
        except Exception as exc:  # a bug or a runtime fault: the page shows it, the server lives on
            traceback.print_exc()
            result, state, error = None, "failed", f"{type(exc).__name__}: {first_line(exc)}"
        with self._lock:
            self._set(replace(self._status, state=state, error=error, finished=time.time(), result=result,
                              message=error or state, message_args={}))
