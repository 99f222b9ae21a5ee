"""The one job manager: training (and comparison) jobs run in a background thread owned by the
server, not by a browser session.

One job at a time; Stop is a flag the trainer checks before its next step (the run still saves);
a page that closes or reloads changes nothing, and a new page reads ``status()`` to re-attach.
The thread writes the run folder; pages only read it. An error ends the job with its message and
leaves the run folder as it was.

The time left counts down to an estimated end that moves only when the finished steps say it is
off by more than their own spread (``REVISE_SHARE`` of the time left): steps that come at a steady
rate never make it rise. Equal steps (training) are timed by the mean of the current phase's
steps (the GAN's MLE warm-up and its adversarial steps differ); a resumed run's first report, which
jumps to its step, counts as one step. Unequal ones (a comparison's stages, ``plan``) are read
afresh each time by ``estimate.plan_left``: their estimates corrected by what the job measured so far.
"""

from __future__ import annotations

import math
import statistics
import threading
import time
import traceback
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import torch

from gantune.errors import OUT_OF_MEMORY, GantuneError, first_line

from .estimate import plan_left

# A job body gets (report, should_stop): report(step, total, run, message) updates the status.
Report = Callable[..., None]
JobBody = Callable[[Report, Callable[[], bool]], Any]

ACTIVE = ("starting", "running", "stopping")
REVISE_SHARE = 0.25  # the estimated end moves when a finished step puts it off by more than this share of the time left
SPREAD = 2.0  # … or by more than this many standard deviations of the steps still to come (their times summed)


class JobBusy(GantuneError):
    """Start was pressed while a job runs."""

    def __init__(self, status: "JobStatus"):
        self.status = status
        super().__init__(f"a job is running ({status.title}); watch it or stop it first")

    def text(self, lang: str) -> str:
        """The refusal in ``lang``, the running job named in it too."""
        from .i18n import title_text, tr

        return tr(lang, "job_busy", title=title_text(self.status, lang))


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
    failure: GantuneError | None = field(default=None, compare=False)  # the error itself: a page says it in its words
    started: float | None = None
    finished: float | None = None
    step_began: float | None = None  # wall clock when the step under way began (None before steps begin)
    pace: float | None = None  # mean seconds per finished step
    pace_hint: float | None = None  # seconds per step of an earlier run like this one: the first estimate
    finish_at: float | None = None  # the estimated end (wall clock), moved only when the finished steps say so
    plan: tuple[tuple[str, float], ...] = ()  # unequal steps (a comparison's stages): (kind, estimated seconds) each
    took: tuple[float | None, ...] = ()  # seconds each finished stage of the plan took (None: skipped)
    fraction: float = 0.0  # share of the step under way that is done (a comparison stage's training steps, batches)
    fraction_at: float = 0.0  # seconds into the step under way when ``fraction`` was told
    upto: float = 1.0  # share of the step under way done once its part under way (a batch, a step) ends; 1: unknown
    result: Any = field(default=None, compare=False)

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    def eta_seconds(self, now: float | None = None, total: int | None = None) -> float | None:
        """Seconds to the estimated end (before the first step ends: an earlier run's pace, the hint), counting
        down one second a second; None when unknown, when the job runs past it (``overdue``) or while stopping.

        ``total``: the planned steps, when the job has not reported them yet.
        """
        if self.state not in ("starting", "running") or self.step_began is None:
            return None
        now = time.time() if now is None else now
        if self.plan:
            left = plan_left(self.plan, self.took, now - self.step_began, self.fraction, self.fraction_at, self.upto)
        elif self.finish_at is not None:
            left = self.finish_at - now
        elif self.pace_hint is not None and (self.total or total):
            left = (self.total or total or 0) * self.pace_hint - (now - self.step_began)
        else:
            return None
        return left if left > 0 else None

    def overdue(self, now: float | None = None) -> bool:
        """Whether the job runs past its estimated end (the estimate moves when the step under way ends)."""
        now = time.time() if now is None else now
        if self.plan and self.step_began is not None:
            return self.state in ("starting", "running") and self.eta_seconds(now) is None
        return self.state in ("starting", "running") and self.finish_at is not None and now >= self.finish_at

    def done_share(self) -> float:
        """The share of the job done: steps (with the plan, their estimated seconds) and the step under way's part."""
        if self.plan:
            seconds = [s for _, s in self.plan]
            whole = sum(seconds) or 1.0
            current = seconds[self.step] if self.step < len(seconds) else 0.0
            return min(1.0, (sum(seconds[:self.step]) + self.fraction * current) / whole)
        return min(1.0, (self.step + self.fraction) / self.total) if self.total else 0.0


class JobManager:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._status = JobStatus()
        self._last: dict[str, JobStatus] = {}  # the latest status of each kind of job
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._times: list[tuple[str, float, int, int]] = []  # finished steps: (phase or kind, seconds, steps, first)
        self._period = 0  # steps an epoch: the first step of each (its rollout) may take longer than the rest
        self._slack = 0.0  # how far off the estimated end was allowed to be when it was set: its error stays that size

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
                raise JobBusy(self._status)
            self._stop.clear()
            self._times = []
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
                pace_hint: float | None = None, phase: str | None = None, period: int | None = None,
                plan: tuple[tuple[str, float], ...] | None = None, fraction: float | None = None,
                upto: float | None = None) -> None:
        """A job's progress: its step and total, its run, a message (catalogue key and ``args``).

        ``steps_begin``: the steps start now (the model is loaded), so the clock of the first one
        starts; ``pace_hint``: seconds per step of an earlier run like this one; ``phase``: the phase
        of the step just finished (steps of one phase take alike); ``period``: steps an epoch (a step
        is timed by the finished steps at its place in an epoch, when there are); ``plan``: steps of unequal length,
        (kind, estimated seconds) each (its length is the total); ``fraction``: the share of the step
        under way that is done (now); ``upto``: its share done once the part under way (a batch, a step) ends.
        """
        now = time.time()
        with self._lock:
            s = self._status
            changes: dict[str, Any] = {k: v for k, v in (("total", total), ("run", run), ("pace_hint", pace_hint),
                                                          ("fraction", fraction), ("upto", upto)) if v is not None}
            if (fraction is not None or upto is not None) and s.step_began is not None:
                changes["fraction_at"] = now - s.step_began
            if plan is not None:
                changes.update(plan=tuple(plan), total=len(plan))
            if message is not None:
                changes.update(message=message, message_args=args or {})
            if period:
                self._period = period
            if steps_begin:
                changes["step_began"] = now
                self._times, self._period, self._slack = [], period or 0, 0.0
                changes["took"] = ()
            if step is not None and step != s.step:
                if step > s.step and s.step_began is not None:  # steps finished: their time, by phase (or stage kind)
                    took = now - s.step_began
                    if s.plan:
                        changes["took"] = (*changes.get("took", s.took), took, *[None] * (step - s.step - 1))
                    # a training job reports every step: a first report past step 1 is a resumed run's first step
                    count, first = (1, step - 1) if not s.plan and not self._times else (step - s.step, s.step)
                    self._times.append((phase or "", took, count, first))
                    changes["pace"] = sum(t[1] for t in self._times) / sum(t[2] for t in self._times)
                changes.update(step=step, step_began=now, fraction=0.0, fraction_at=0.0, upto=1.0)
                moved = replace(s, **changes)
                left = self._time_left(moved)
                if left is not None:
                    candidate, tolerance = now + left[0], max(left[1], REVISE_SHARE * left[0])
                    if s.finish_at is None or abs(candidate - s.finish_at) > max(tolerance, self._slack / 2):
                        changes["finish_at"], self._slack = candidate, tolerance
            state = "stopping" if self._stop.is_set() else "running"
            if state == "stopping":
                changes.update(message="stopping", message_args={})
            self._set(replace(s, state=state, **changes))

    def _time_left(self, status: JobStatus) -> tuple[float, float] | None:
        """(seconds left, how far off that may be by chance) from the finished steps' times; None before any finished
        and for a plan (read afresh by ``eta_seconds``).

        Each step still to come at the mean of the current phase's finished steps at its place in an epoch (else
        of all of them); by chance: a step's length, or the spread of the steps to come at the finished ones'
        standard deviation.
        """
        if not self._times or not status.total or status.plan:
            return None
        phase = self._times[-1][0]
        mine = [(t / k, first) for p, t, k, first in self._times if p == phase]
        pace = sum(t for t, _ in mine) / len(mine)
        places: dict[int, list[float]] = {}
        for took, first in mine:
            places.setdefault(first % self._period if self._period else 0, []).append(took)
        left = [statistics.fmean(places.get(step % self._period if self._period else 0, [pace]))
                for step in range(status.step, status.total)]
        spread = statistics.pstdev([t - statistics.fmean(places[f % self._period if self._period else 0])
                                    for t, f in mine]) * math.sqrt(len(left)) if len(mine) > 1 else 0.0
        return sum(left), max(pace, SPREAD * spread)

    def _run(self, body: JobBody) -> None:
        failure: GantuneError | None = None
        try:
            result = body(self._report, self._stop.is_set)
            # a Stop pressed when no stop point was left: the job still ended as its result says
            ended = getattr(result, "status", None) or (result.get("status") if isinstance(result, dict) else None)
            state = "stopped" if self._stop.is_set() and ended != "completed" else "completed"
            error = None
        except GantuneError as exc:
            result, state, error, failure = None, "failed", str(exc), exc
        except (MemoryError, torch.OutOfMemoryError):
            result, state, error = None, "failed", OUT_OF_MEMORY
        except Exception as exc:  # a bug or a runtime fault: the page shows it, the server lives on
            traceback.print_exc()
            result, state, error = None, "failed", f"{type(exc).__name__}: {first_line(exc)}"
        with self._lock:
            self._set(replace(self._status, state=state, error=error, failure=failure, finished=time.time(),
                              result=result, message=error or state, message_args={}))
