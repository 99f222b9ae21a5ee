"""Plotly figures from run records (metrics.jsonl lines): losses, the game, weights, memory."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

Records = list[dict[str, Any]]
_LAYOUT = {"height": 300, "margin": {"l": 50, "r": 20, "t": 40, "b": 40}, "legend": {"orientation": "h", "y": -0.25}}


def _series(records: Records, key: str, x: str = "step") -> tuple[list, list]:
    points = [(r[x], r[key]) for r in records if r.get(key) is not None and x in r]
    return [p[0] for p in points], [p[1] for p in points]


def _figure(title: str, records: Records, keys: dict[str, str], x: str = "step", x_title: str = "step") -> go.Figure:
    fig = go.Figure()
    for key, label in keys.items():
        xs, ys = _series(records, key, x)
        if ys:
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=label, marker={"size": 4}))
    fig.update_layout(title=title, xaxis_title=x_title, **_LAYOUT)
    return fig


def losses(records: Records) -> go.Figure:
    return _figure("Losses", records, {"g_loss": "G loss", "d_loss": "D loss", "mle_loss": "MLE loss"})


def game(records: Records) -> go.Figure:
    fig = _figure("Reward and D accuracy", records,
                  {"reward_mean": "mean reward D(q+y)", "d_acc_real": "D accuracy, real", "d_acc_fake": "D accuracy, generated"})
    fig.update_yaxes(range=[-0.05, 1.05])
    return fig


def weights(records: Records) -> go.Figure:
    """Adapter norm moving, frozen LM norm flat (the thesis' Figures 3.3 / 3.4)."""
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.12,
                        subplot_titles=("tuned part: L2 norm", "frozen LM weights: L2 norm"))
    for row, (key, name) in enumerate((("adapter_norm", "adapter"), ("frozen_norm", "frozen LM")), start=1):
        xs, ys = _series(records, key)
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=name, marker={"size": 4}), row=row, col=1)
    fig.update_yaxes(exponentformat="none", tickformat=".6g", row=2, col=1)
    fig.update_layout(title="Weights", **{**_LAYOUT, "height": 360})
    return fig


def memory(records: Records) -> go.Figure:
    """Memory over time (the thesis' Figure 3.5): GPU allocator or the process's resident set."""
    return _figure("Memory (MB)", records, {"memory_mb": "in use", "peak_memory_mb": "peak"}, x="seconds",
                   x_title="training seconds")


def overlay(runs: dict[str, Records], key: str = "g_loss") -> go.Figure:
    """One metric of several runs on one plot (x: share of training done, so schedules line up)."""
    fig = go.Figure()
    for name, records in runs.items():
        points = [(r["step"] / max(r.get("total_steps") or len(records), 1), r[key]) for r in records
                  if r.get(key) is not None]
        if points:
            fig.add_trace(go.Scatter(x=[p[0] for p in points], y=[p[1] for p in points], mode="lines", name=name))
    fig.update_layout(title=f"{key} of the selected runs", xaxis_title="share of training", **_LAYOUT)
    return fig


def token_lengths(question_lengths: list[int], answer_lengths: list[int]) -> go.Figure:
    fig = go.Figure()
    fig.add_trace(go.Histogram(x=question_lengths, name="prompt tokens", opacity=0.7))
    fig.add_trace(go.Histogram(x=answer_lengths, name="answer tokens", opacity=0.7))
    fig.update_layout(title="Token lengths", barmode="overlay", xaxis_title="tokens", **_LAYOUT)
    return fig
