"""Plotly figures from run records (metrics.jsonl lines) and evaluations, in the page's language.

Quantities of different scale get panels of their own (a policy-gradient loss near 0 never shares
an axis with an MLE loss near 2.5); every trace is named in a legend, even alone, and traces that
may coincide differ in dash and marker; a plot with nothing to show says so in words instead of
drawing empty axes. ``for_page`` hands a figure to the page with Plotly's own locale bundle
(modebar tooltips, decimal and thousands separators: ``plotly_locales/``).
"""

from __future__ import annotations

import ast
import functools
import json
import math
import re
import textwrap
from pathlib import Path
from typing import Any, Sequence

import plotly.graph_objects as go
from gradio.components.plot import PlotData
from plotly.subplots import make_subplots

from .i18n import metric_label, plural, tr

LOCALES = Path(__file__).with_name("plotly_locales")
HINT_WIDTH = 60  # characters a line of a plot's hint: it wraps inside the plot, in any language

Records = list[dict[str, Any]]
_LEGEND = {"orientation": "h", "y": -0.18, "x": 0}
_MARGIN = {"l": 60, "r": 20, "t": 60, "b": 50}
# quantities of every method's records that mean the same thing for each (Compare's overlay)
COMPARABLE = ("mle_loss", "val_nll", "val_rougeL", "step_seconds", "peak_memory_mb")


# quantities that mean something only in the adversarial phase (in the MLE warm-up the generator's loss is the MLE loss)
ADVERSARIAL_ONLY = ("g_loss",)


def _series(records: Records, key: str, x: str = "step") -> tuple[list, list]:
    points = [(r[x], r[key]) for r in records if isinstance(r.get(key), (int, float)) and x in r
              and not (key in ADVERSARIAL_ONLY and r.get("phase") == "mle")]
    return [p[0] for p in points], [p[1] for p in points]


@functools.cache
def plotly_locale(lang: str) -> dict[str, Any] | None:
    """Plotly's locale bundle for ``lang`` (its ``dictionary`` and ``format``), or None (English is plotly's own)."""
    path = LOCALES / f"{lang}.js"
    if not path.is_file():
        return None
    text = path.read_text(encoding="utf-8")
    body = text[text.index("{"):text.rindex("}") + 1]  # a JS object literal: quote its bare keys, read it as Python's
    bundle = ast.literal_eval(re.sub(r"^(\s*)([A-Za-z_]\w*):", r"\1'\2':", body, flags=re.M))
    return {"dictionary": bundle["dictionary"], "format": bundle["format"]}


def for_page(fig: go.Figure, lang: str) -> PlotData:
    """A figure as the page draws it: Plotly's words and number format in the page's language, no Plotly logo."""
    spec = json.loads(fig.to_json())
    spec["config"] = {"locale": lang, "displaylogo": False}
    if (bundle := plotly_locale(lang)) is not None:
        spec["config"]["locales"] = {lang: bundle}
    return PlotData(type="plotly", plot=json.dumps(spec))


def hint(text: str, height: int = 300) -> go.Figure:
    """No axes, a few short lines of text: what a plot shows once there is something to show."""
    fig = go.Figure()
    wrapped = "<br>".join(textwrap.wrap(text, HINT_WIDTH))
    fig.add_annotation(text=wrapped, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False, font={"size": 14})
    fig.update_layout(height=height, margin=_MARGIN, xaxis={"visible": False}, yaxis={"visible": False},
                      plot_bgcolor="rgba(0,0,0,0)")
    return fig


def _warmup_steps(records: Records) -> tuple[float, float] | None:
    """The x-range of the MLE warm-up (records with phase 'mle' before an adversarial one), if any."""
    steps = [r["step"] for r in records if r.get("phase") == "mle" and "step" in r]
    if not steps or not any(r.get("phase") == "adversarial" for r in records):
        return None
    return min(steps) - 0.5, max(steps) + 0.5


# the second trace of a panel (D's accuracy on generated answers, the peak memory) may lie on the first: dashed, other marks
_SECOND = {"line": {"dash": "dash"}, "marker_symbol": "diamond-open"}


def _panels(title: str, records: Records, panels: list[tuple[str, list[tuple[str, str, str]]]], lang: str,
            empty: str | go.Figure, y_ranges: dict[int, list[float]] | None = None) -> go.Figure:
    """One panel a quantity (its own y axis), panels without data left out; a hint when none has data."""
    drawn = [(name, [(key, label, mode) for key, label, mode in traces if _series(records, key)[1]])
             for name, traces in panels]
    drawn = [(name, traces) for name, traces in drawn if traces]
    if not drawn:
        return empty if isinstance(empty, go.Figure) else hint(tr(lang, empty))
    fig = make_subplots(rows=len(drawn), cols=1, shared_xaxes=True, vertical_spacing=0.09,
                        subplot_titles=[name for name, _ in drawn])
    for row, (_, traces) in enumerate(drawn, start=1):
        for index, (key, label, mode) in enumerate(traces):
            xs, ys = _series(records, key)
            fig.add_trace(go.Scatter(x=xs, y=ys, mode=mode, name=label, marker={"size": 5 if mode == "markers" else 4},
                                     **(_SECOND if index else {})), row=row, col=1)
        for key in [key for key, _, _ in traces if key in (y_ranges or {})]:
            fig.update_yaxes(range=y_ranges[key], row=row, col=1)
    warmup = _warmup_steps(records)
    if warmup:
        fig.add_vrect(x0=warmup[0], x1=warmup[1], fillcolor="#f0e68c", opacity=0.25, line_width=0, row="all", col=1)
        fig.add_annotation(text=tr(lang, "warmup"), x=warmup[0], y=0, xref="x", yref="paper", xanchor="left",
                           yanchor="bottom", showarrow=False, font={"size": 11, "color": "#8a6d00"},
                           bgcolor="rgba(255,255,255,0.7)")
    fig.update_xaxes(title_text=tr(lang, "axis_step"), row=len(drawn), col=1)
    fig.update_layout(title=title, height=170 + 150 * len(drawn), margin=_MARGIN, legend=_LEGEND, showlegend=True)
    return fig


def validation_keys(records: Records) -> list[str]:
    """The validation scores the records hold (``val_nll``, ``val_rougeL`` …: one a run, at epoch ends)."""
    return sorted({k for r in records for k in r if k.startswith("val_") and isinstance(r[k], (int, float))})


def losses(records: Records, lang: str = "en", validation: Records | None = None) -> go.Figure:
    """Generator, discriminator and MLE losses, each in its own panel; the validation score at epoch ends
    beside the MLE loss when it is the NLL (the same quantity), else in a panel of its own. ``validation``: the
    run's scored adapters (``RunFolder.read_validation``), for the scores no step record holds (step 0's)."""
    recorded = {r.get("step") for r in records}
    extra = [v for v in validation or [] if v.get("step") not in recorded]
    if extra:
        records = sorted([*records, *extra], key=lambda r: r["step"])
    panels = [
        (tr(lang, "panel_g"), [("g_loss", tr(lang, "trace_g"), "lines+markers")]),
        (tr(lang, "panel_d"), [("d_loss", tr(lang, "trace_d"), "lines+markers")]),
        (tr(lang, "panel_mle"), [("mle_loss", tr(lang, "trace_mle"), "lines+markers")]),
    ]
    for key in validation_keys(records):
        metric = metric_label(lang, key.removeprefix("val_"))
        trace = (key, tr(lang, "trace_val", metric=metric), "lines+markers")
        if key == "val_nll":
            panels[2][1].append(trace)
        else:
            panels.append((tr(lang, "panel_val", metric=metric), [trace]))
    return _panels(tr(lang, "plot_losses"), records, panels, lang, "plot_empty")


def game(records: Records, lang: str = "en", warmup_epochs: int = 0) -> go.Figure:
    """The adversarial game: the reward, D's accuracy on both sides, and the KL to the untuned model; for the
    implicit discriminator (no D network) its margin D(q,r) − D(q,y), both sides' scores and the round.

    Before the game begins (``warmup_epochs`` of MLE, with records of them already), the plot says so.
    """
    empty = hint(tr(lang, "game_warmup", epochs=plural(lang, "epochs", warmup_epochs))) \
        if records and warmup_epochs else "plot_empty"
    return _panels(tr(lang, "plot_game"), records, [
        (tr(lang, "panel_reward"), [("reward_mean", tr(lang, "trace_reward"), "lines+markers")]),
        (tr(lang, "panel_d_acc"), [("d_acc_real", tr(lang, "trace_acc_real"), "lines+markers"),
                                   ("d_acc_fake", tr(lang, "trace_acc_fake"), "lines+markers"),
                                   ("d_acc_pairs", tr(lang, "trace_acc_pairs"), "lines+markers")]),
        (tr(lang, "panel_kl"), [("kl", tr(lang, "trace_kl"), "lines+markers")]),
        (tr(lang, "panel_margin"), [("d_margin", tr(lang, "trace_margin"), "lines+markers"),
                                    ("d_real", tr(lang, "trace_d_real"), "lines+markers"),
                                    ("d_fake", tr(lang, "trace_d_fake"), "lines+markers")]),
        (tr(lang, "panel_round"), [("round", tr(lang, "trace_round"), "lines+markers")]),
    ], lang, empty, y_ranges={"d_acc_fake": [-0.05, 1.05]})


def weights(records: Records, lang: str = "en") -> go.Figure:
    """Adapter norm moving, frozen LM norm flat (the thesis' Figures 3.3 / 3.4)."""
    fig = _panels(tr(lang, "plot_weights"), records, [
        (tr(lang, "panel_adapter"), [("adapter_norm", tr(lang, "trace_adapter"), "lines+markers")]),
        (tr(lang, "panel_frozen"), [("frozen_norm", tr(lang, "trace_frozen"), "lines+markers")]),
    ], lang, "plot_empty")
    fig.update_yaxes(exponentformat="none", tickformat=".6g")
    return fig


def memory(records: Records, lang: str = "en") -> go.Figure:
    """Memory over training time (the thesis' Figure 3.5): GPU allocator or the process's resident set."""
    fig = go.Figure()
    for index, (key, label) in enumerate((("memory_mb", "trace_memory"), ("peak_memory_mb", "trace_peak"))):
        xs, ys = _series(records, key, x="seconds")
        if ys:
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=tr(lang, label), marker={"size": 4},
                                     **(_SECOND if index else {})))
    if not fig.data:
        return hint(tr(lang, "plot_empty"))
    fig.update_layout(title=tr(lang, "plot_memory"), xaxis_title=tr(lang, "axis_seconds"), height=320, margin=_MARGIN,
                      legend=_LEGEND, showlegend=True)
    return fig


def overlay(runs: dict[str, Records], key: str = "mle_loss", lang: str = "en") -> go.Figure:
    """One comparable quantity of several runs (x: share of training done, so schedules line up), each run named
    (``runs``' keys: the names the tables use)."""
    fig = go.Figure()
    for name, records in runs.items():
        points = [(r["step"] / max(r.get("total_steps") or len(records), 1), r[key]) for r in records
                  if isinstance(r.get(key), (int, float)) and "step" in r]
        if points:
            mode = "lines+markers" if key.startswith("val_") or len(points) < 3 else "lines"
            fig.add_trace(go.Scatter(x=[p[0] for p in points], y=[p[1] for p in points], mode=mode, name=name))
    if not fig.data:
        return hint(tr(lang, "plot_empty_compare"))
    fig.update_layout(title=tr(lang, "plot_overlay", quantity=tr(lang, f"q_{key}")), xaxis_title=tr(lang, "axis_share"),
                      height=340, margin=_MARGIN, legend=_LEGEND, showlegend=True)
    return fig


def shared_bins(*samples: Sequence[float], bins: int = 20) -> dict[str, float]:
    """Histogram bins of one width for every sample (whole tokens): start, end and size."""
    values = [v for sample in samples for v in sample]
    lo, hi = (min(values), max(values)) if values else (0, 1)
    size = max(1, math.ceil((hi - lo + 1) / bins))
    return {"start": lo - 0.5, "end": hi + 0.5, "size": size}


def token_lengths(question_lengths: list[int], answer_lengths: list[int], lang: str = "en") -> go.Figure:
    """Prompt and answer token lengths on one set of bins."""
    bins = shared_bins(question_lengths, answer_lengths)
    fig = go.Figure()
    fig.add_trace(go.Histogram(x=question_lengths, name=tr(lang, "trace_prompt_tokens"), opacity=0.7, xbins=bins))
    fig.add_trace(go.Histogram(x=answer_lengths, name=tr(lang, "trace_answer_tokens"), opacity=0.7, xbins=bins))
    fig.update_layout(title=tr(lang, "plot_tokens"), barmode="overlay", xaxis_title=tr(lang, "axis_tokens"), height=320,
                      margin=_MARGIN, legend=_LEGEND, showlegend=True)
    return fig


def answer_lengths(lengths: dict[str, list[int]], lang: str = "en") -> go.Figure:
    """Answer lengths of the references and of each run: grouped bars side by side on one set of bins."""
    lengths = {name: values for name, values in lengths.items() if values}
    if not lengths:
        return hint(tr(lang, "plot_empty_compare"))
    bins = shared_bins(*lengths.values())
    fig = go.Figure()
    for name, values in lengths.items():
        fig.add_trace(go.Histogram(x=values, name=name, xbins=bins))
    fig.update_layout(title=tr(lang, "plot_answer_lengths"), barmode="group", xaxis_title=tr(lang, "axis_tokens"),
                      yaxis_title=tr(lang, "axis_count"), height=340, margin=_MARGIN, legend=_LEGEND, showlegend=True)
    return fig


def metric_bars(rows: list[dict[str, Any]], metric: str, lang: str = "en") -> go.Figure:
    """One bar a row (its mean of ``metric``) with whiskers to its 95% interval where the row has one."""
    rows = [r for r in rows if isinstance(r.get(metric), (int, float))]
    if not rows:
        return hint(tr(lang, "plot_empty_compare"))
    values = [r[metric] for r in rows]
    intervals = [(r.get("ci") or {}).get(metric) for r in rows]
    upper = [hi - v if ci else 0 for v, ci in zip(values, intervals) for hi in [ci[1] if ci else v]]
    lower = [v - lo if ci else 0 for v, ci in zip(values, intervals) for lo in [ci[0] if ci else v]]
    label = metric_label(lang, metric)
    fig = go.Figure(go.Bar(x=[r["name"] for r in rows], y=values, name=label,
                           error_y={"type": "data", "symmetric": False, "array": upper, "arrayminus": lower,
                                    "visible": any(intervals)}))
    fig.update_layout(title=tr(lang, "plot_bars", metric=label), height=340, margin=_MARGIN, showlegend=False)
    return fig
