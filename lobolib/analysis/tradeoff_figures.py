"""Figures of what each compression buys: knowledge against bits per weight (or model GiB, or
joules per question) for every setting, with the Pareto front marked."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative

from lobolib.analysis.tradeoffs import pareto

PALETTE = qualitative.Plotly
SYMBOLS = ["circle", "square", "diamond", "triangle-up", "cross", "x", "star", "hexagon"]
AXES = {"bits_per_weight": "bits per weight (compressed matrices, metadata included)",
        "model_gib": "model size (GiB)", "joules_per_question": "joules per question (measured)"}


def knowledge_against(points: pd.DataFrame, benchmark: str, group: str, x: str = "bits_per_weight",
                      y: str = "value", title: str | None = None) -> go.Figure:
    """One marker per (model, setting, level) — colour by model, symbol by setting, its bootstrap
    interval as an error bar — and each model's Pareto front (no other point has as little `x`
    and more knowledge) as a dotted step line."""
    part = points[(points["benchmark"] == benchmark) & (points["group"] == group)].dropna(subset=[x])
    fig = go.Figure()
    models = list(dict.fromkeys(part["model"]))
    settings = list(dict.fromkeys(part["setting"]))
    for i, model in enumerate(models):
        colour = PALETTE[i % len(PALETTE)]
        mine = part[part["model"] == model]
        for j, setting in enumerate(settings):
            curve = mine[mine["setting"] == setting].sort_values(x)
            if curve.empty:
                continue
            error = None
            if {"ci_low", "ci_high"} <= set(curve.columns) and curve["ci_low"].notna().all():
                error = {"type": "data", "symmetric": False, "array": curve["ci_high"] - curve[y],
                         "arrayminus": curve[y] - curve["ci_low"], "thickness": 1}  # fmt: skip
            fig.add_trace(go.Scatter(
                x=curve[x], y=curve[y], mode="lines+markers", name=f"{model} · {setting}", error_y=error,
                marker={"color": colour, "symbol": SYMBOLS[j % len(SYMBOLS)], "size": 8},
                line={"color": colour, "width": 1}, legendgroup=model,
                customdata=curve["level"], hovertemplate=f"{model} · {setting}<br>level %{{customdata}}<br>"
                                                          f"{x} %{{x:.2f}}<br>score %{{y:.3f}}<extra></extra>",
            ))  # fmt: skip
        front = pareto(mine, x, y)
        fig.add_trace(go.Scatter(x=front[x], y=front[y], mode="lines", line={"color": colour, "dash": "dot", "shape": "hv"},
                                 name=f"{model}: Pareto front", legendgroup=model))  # fmt: skip
    fig.update_xaxes(title_text=AXES.get(x, x), autorange="reversed")
    fig.update_yaxes(title_text="accuracy" if y == "value" else y)
    fig.update_layout(title=title or f"{benchmark} — {group}: knowledge against {AXES.get(x, x)}",
                      template="plotly_white", height=420)  # fmt: skip
    return fig


def perplexity_beside_knowledge(scores: pd.DataFrame, knowledge: tuple[str, str], text: str,
                                settings=None, title: str | None = None) -> go.Figure:
    """Accuracy on a question benchmark (`knowledge` = (benchmark, group)) and perplexity on a
    held-out text benchmark (`text`) against the level, on one figure with two y-axes: where
    perplexity stays flat while accuracy falls, perplexity hides the knowledge loss (LLM-KICK,
    Jaiswal et al. 2023)."""
    settings = settings or [s for s in dict.fromkeys(scores["setting"]) if " - " not in str(s)]
    accuracy = scores[(scores["benchmark"] == knowledge[0]) & (scores["group"] == knowledge[1])
                      & (scores["scoring"] == "lobolib") & (scores["metric"] == "accuracy")]  # fmt: skip
    ppl = scores[(scores["benchmark"] == text) & (scores["metric"] == "perplexity")]
    fig = go.Figure()
    for i, model in enumerate(dict.fromkeys(accuracy["model"])):
        colour = PALETTE[i % len(PALETTE)]
        for j, setting in enumerate(settings):
            a = accuracy[(accuracy["model"] == model) & (accuracy["setting"] == setting)].sort_values("level")
            p = ppl[(ppl["model"] == model) & (ppl["setting"] == setting)].sort_values("level")
            dash = ["solid", "dash", "dot", "dashdot"][j % 4]
            fig.add_trace(go.Scatter(x=a["level"], y=a["value"], name=f"{model} · {setting}: accuracy",
                                     line={"color": colour, "dash": dash}, mode="lines+markers"))  # fmt: skip
            fig.add_trace(go.Scatter(x=p["level"], y=p["value"], name=f"{model} · {setting}: perplexity",
                                     line={"color": colour, "dash": dash, "width": 1}, marker={"symbol": "x"},
                                     mode="lines+markers", yaxis="y2"))  # fmt: skip
    fig.update_layout(title=title or f"{knowledge[0]} ({knowledge[1]}) accuracy beside {text} perplexity",
                      template="plotly_white", height=420, xaxis={"title": "level"},
                      yaxis={"title": "accuracy", "range": [0, 1]},
                      yaxis2={"title": "perplexity (log)", "overlaying": "y", "side": "right", "type": "log"})  # fmt: skip
    return fig
