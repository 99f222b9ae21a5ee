"""The page's polls: each refresh runs on the page's load and, only while a job runs, every ``POLL_SECONDS``.

A timer ticks in the browser, so only while a page is open; here each is on only while a job runs. A refresh returns,
after its outputs, whether a job ran when it began (read before anything it draws), and its timer is set from that
once it has drawn: a job that ends between two reads is drawn ended before the timer stops. An action that starts a
job or changes what a refresh shows (a run opened, deleted) turns every timer on (``wake``): the next tick draws it.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import gradio as gr

from .jobs import JobManager

POLL_SECONDS = 2.0


class Polls:
    """A page's timers, one a refresh; ``wire`` connects the wakes once every timer exists."""

    def __init__(self, jobs: JobManager):
        self.jobs = jobs
        self.timers: list[gr.Timer] = []
        self._wakes: list[Any] = []  # events after which every timer is turned on

    def refresh(self, demo: gr.Blocks, fn: Callable, inputs: Sequence[Any], outputs: Sequence[Any],
                **options: Any) -> gr.Timer:
        """``fn`` on the page's load and on its timer's ticks; ``fn`` returns (or yields last) its ``outputs`` and,
        after them, whether a job ran when it began. ``options``: the event's (``api_name`` …). Returns the timer."""
        timer = gr.Timer(POLL_SECONDS, active=False)
        running = gr.State(False)
        gr.on([timer.tick, demo.load], fn, inputs, [*outputs, running], **options).then(
            self.keep, running, timer, api_visibility="private", show_progress="hidden", queue=False)
        self.timers.append(timer)
        return timer

    def keep(self, running: bool) -> gr.Timer:
        """The timer after a refresh: on while the job it drew (or one started since) runs, else off."""
        return gr.Timer(active=bool(running) or self.jobs.status().active)

    def wake(self, event: Any) -> None:
        """Turn every timer on once ``event`` (a listener's return: a job started, a run opened or deleted) has run."""
        self._wakes.append(event)

    def wire(self) -> None:
        """Connect the wakes (after the last timer is made)."""
        for event in self._wakes:
            event.then(self.on, None, self.timers, api_visibility="private", show_progress="hidden", queue=False)

    def on(self) -> tuple[gr.Timer, ...]:
        """Every timer on."""
        return tuple(gr.Timer(active=True) for _ in self.timers)
