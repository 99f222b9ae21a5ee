"""Pieces of HTML the tabs share: the job status with its progress bar and time left, one-line
errors, and read-only tables that wrap their text (no virtual rows, so a growing table draws every
row). Everything a person reads comes in the request's language; everything from a run or an
exception is escaped.
"""

from __future__ import annotations

import html
import time
from pathlib import Path
from typing import Any, Sequence

import gradio as gr

from gantune.errors import GantuneError

from .i18n import EN, error_text, percent, title_text, tr
from .jobs import JobStatus

SLOW_STEP_SECONDS = 30.0  # a step slower than this: the status suggests smaller settings
_COLOURS = {"failed": "#c0392b", "stopped": "#e67e22", "completed": "#27ae60"}


def duration(lang: str, seconds: float) -> str:
    """``12 s`` or ``3 min 5 s`` in the page's language."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return tr(lang, "seconds", s=seconds)
    return tr(lang, "minutes_seconds", m=seconds // 60, s=seconds % 60)


def error_markdown(exc: GantuneError, lang: str) -> str:
    return f"**{tr(lang, 'error')}** {error_text(exc, lang)}"


def refusal_html(exc: GantuneError, lang: str) -> str:
    """A refusal that stays on the page (above the status) until the next try: a toast fades."""
    return f'<p class="gantune-refusal" role="alert">⚠ {html.escape(error_text(exc, lang))}</p>'


def warn(exc: GantuneError | str, lang: str) -> None:
    """A toast in the page's language (its head, which Gradio 6.17 writes in English, the page script says anew)."""
    gr.Warning(exc if isinstance(exc, str) else error_text(exc, lang))


def message_text(status: JobStatus, lang: str) -> str:
    """The job's message in the page's language ('' when it only repeats the state)."""
    if status.message == status.state or status.error:
        return ""
    key = f"msg_{status.message}"
    return tr(lang, key, **status.message_args) if key in EN else status.message


def time_left(status: JobStatus, lang: str, planned: int | None = None, now: float | None = None) -> str:
    """What the status says about time: left until the estimated end, a first estimate, overdue, or stopping."""
    now = time.time() if now is None else now
    if status.state == "stopping":
        return tr(lang, "stopping_after_step")
    total = status.total or planned or 0
    eta = status.eta_seconds(now, total)
    if eta is not None:
        first = status.pace is None
        key = "eta" if not first else "eta_plan" if status.plan else "eta_first"
        return tr(lang, key, time=duration(lang, eta))
    if status.overdue(now):  # past the estimate in the last step: its validation and the saving, not a stall
        return tr(lang, "eta_last_step" if not status.plan and total and status.step >= total - 1 else "eta_revised")
    if status.state == "running" and status.step_began is not None and status.step == 0 and total:
        return tr(lang, "first_step_only", elapsed=duration(lang, now - status.step_began))
    return ""


def progress_html(status: JobStatus, lang: str, planned: int | None = None, notes: Sequence[str] = (),
                  now: float | None = None, idle: str = "idle") -> str:
    """The job's title, state and run, a progress bar, its progress and time left, its message or error, and ``notes``.

    A training job counts its steps; a comparison (a plan of stages) says its share done, and its
    message names the stage and that stage's own step: one counter a line. ``idle``: the catalogue
    key of what to say before the first job.
    """
    if status.state == "idle":
        return f"<div class='gantune-status' data-state='idle'>{html.escape(tr(lang, idle))}</div>"
    total = status.total or planned or 0
    share = status.done_share() if status.total else (status.step / total if total else 0.0)
    colour = _COLOURS.get(status.state, "#2c7be5")
    if status.plan:
        counter = percent(lang, share)
    elif total:
        counter = f"{tr(lang, 'step_of', step=status.step, total=total)} ({percent(lang, share)})"
    else:
        counter = tr(lang, "step_of_unknown", step=status.step)
    parts = [counter, time_left(status, lang, planned, now), message_text(status, lang)]
    line = " · ".join(html.escape(p) for p in parts if p)
    # text from settings, paths and exception messages is escaped: "<unk>" or a path must not become markup
    said = error_text(status.failure, lang) if status.failure is not None else status.error
    error = (f"<div style='color:#c0392b'><b>{html.escape(tr(lang, 'error'))}</b> {html.escape(said)}</div>"
             if status.error else "")
    run = (f" · {html.escape(tr(lang, 'run_label'))} <code>{html.escape(Path(status.run).name)}</code>"
           if status.run else "")
    pace = status.pace if status.pace is not None else status.pace_hint
    if status.active and status.kind == "train" and pace and pace > SLOW_STEP_SECONDS:
        notes = [*notes, tr(lang, "slow_steps", pace=duration(lang, pace))]
    extra = "".join(f"<div class='gantune-note'>{html.escape(n)}</div>" for n in notes)
    return (f"<div class='gantune-status' data-state='{status.state}'><b>{html.escape(title_text(status, lang))}</b> — "
            f"{html.escape(tr(lang, 'state_' + status.state))}{run}"
            f"<div style='background:#eee;border-radius:4px;margin:6px 0'><div style='width:{share:.0%};"
            f"background:{colour};height:12px;border-radius:4px'></div></div>{line}{error}{extra}</div>")


def html_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], widths: Sequence[str], css_class: str) -> str:
    """A read-only table whose cells wrap at word boundaries, with fixed column widths."""
    cols = "".join(f"<col style='width:{w}'>" for w in widths)
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return (f"<table class='gantune-table {css_class}'><colgroup>{cols}</colgroup><thead><tr>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table>")


CSS = """
.gantune-status { font-size: 0.95em }
.gantune-note { margin-top: 4px; color: #555 }
.gantune-table { width: 100%; table-layout: fixed; border-collapse: collapse; font-size: 0.92em }
.gantune-table th, .gantune-table td { text-align: left; vertical-align: top; padding: 4px 6px;
  border-bottom: 1px solid #ddd; overflow-wrap: break-word; word-break: normal; hyphens: auto; white-space: normal }
.gantune-table th { white-space: nowrap; overflow: hidden; text-overflow: ellipsis }
.gantune-collapse { border: 2px solid #c0392b; border-radius: 6px; padding: 8px 12px; background: #fdecea }
.gantune-refusal { color: #c0392b; font-weight: 600; margin: 4px 0 }
#gantune-runs-table th, #gantune-runs-table .header-content, .gantune-words th, .gantune-words .header-content {
  word-break: normal; overflow-wrap: normal; hyphens: none }
#gantune-method-grid .gantune-cell label { margin: 1px 2px }
/* the train share's own numbers (its box, its ends): Gradio writes them as JavaScript does ("0.5" on a Russian page
   too); the line under the slider says the share in the page's numbers */
#gantune-train-share .tab-like-container, #gantune-train-share input[type="number"],
#gantune-train-share [data-testid="min-value"], #gantune-train-share [data-testid="max-value"] { display: none }
"""
