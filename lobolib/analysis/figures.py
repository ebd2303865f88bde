"""Plotly figures of a run: degradation curves with bootstrap bands, failure-mode stacked areas,
label-distribution bars, confusion heatmaps; and how they are shown and saved.

`show(fig)` displays a figure so it stays interactive both in JupyterLab (plotly's mimetype) and
in the rendered report (an HTML div drawn by the plotly.js the report embeds once). `save(fig,
name, directory)` writes <name>.html next to one shared plotly.min.js (no CDN: the files work
offline) and a PNG where a static exporter (kaleido) is installed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

PALETTE = qualitative.Plotly
OUTCOME_COLOURS = {"correct": "#2ca02c", "wrong answer": "#d62728"}
LABEL_COLOURS = {"yes": "#1f77b4", "no": "#ff7f0e", "maybe": "#9467bd", "invalid": "#7f7f7f",
                 "A": "#1f77b4", "B": "#ff7f0e", "C": "#2ca02c", "D": "#9467bd"}  # fmt: skip


def _rgba(colour: str, alpha: float) -> str:
    colour = colour.lstrip("#")
    r, g, b = (int(colour[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def _axis(unit: str) -> dict:
    """x-axis settings: sparsity as a percentage, bits with compression growing to the right."""
    if unit == "bits":
        return {"title_text": "bits per weight (level)", "autorange": "reversed"}
    return {"title_text": "sparsity", "tickformat": ".0%"}


def _curve_label(model: str, setting: str, settings: Sequence[str]) -> str:
    return model if len(settings) <= 1 else f"{model} · {setting}"


def degradation_curves(
    scores: pd.DataFrame,
    benchmark: str,
    group: str,
    panels: Sequence[tuple[str, str]] = (("lobolib", "accuracy"), ("lobolib", "first_token_accuracy"), ("reference", "accuracy")),
    title: str | None = None,
    settings: Sequence[str] | None = None,
    lines: dict[str, float] | None = None,
    unit: str = "sparsity",
) -> go.Figure:
    """Score against level, one line per curve (model, setting) with its bootstrap band, one
    panel per (scoring, metric) — e.g. generative accuracy beside first-token accuracy. Panels
    without rows in `scores` are left out. `lines` ({"chance": 0.25, "majority": 0.55}) are drawn
    as dotted horizontal lines in the accuracy panels; the x-axis runs from the first level to
    the last one evaluated."""
    part = scores[(scores["benchmark"] == benchmark) & (scores["group"] == group)]
    settings = list(settings) if settings is not None else [s for s in dict.fromkeys(part["setting"]) if " - " not in str(s)]
    part = part[part["setting"].isin(settings)]
    panels = [p for p in panels if ((part["scoring"] == p[0]) & (part["metric"] == p[1])).any()]
    models = list(dict.fromkeys(part["model"]))
    fig = make_subplots(rows=1, cols=max(len(panels), 1), shared_yaxes=True,
                        subplot_titles=[f"{m} ({s})" for s, m in panels])  # fmt: skip
    dashes = ["solid", "dash", "dot", "dashdot", "longdash", "longdashdot"]
    for col, (scoring, metric) in enumerate(panels, start=1):
        for i, model in enumerate(models):
            for j, setting in enumerate(settings):
                curve = part[(part["model"] == model) & (part["setting"] == setting) & (part["scoring"] == scoring)
                             & (part["metric"] == metric)].sort_values("level")  # fmt: skip
                if curve.empty:
                    continue
                colour, label = PALETTE[i % len(PALETTE)], _curve_label(model, setting, settings)
                if curve["ci_low"].notna().all():
                    fig.add_trace(go.Scatter(
                        x=list(curve["level"]) + list(curve["level"])[::-1],
                        y=list(curve["ci_high"]) + list(curve["ci_low"])[::-1],
                        fill="toself", fillcolor=_rgba(colour, 0.2), line={"width": 0}, hoverinfo="skip",
                        legendgroup=label, showlegend=False,
                    ), row=1, col=col)  # fmt: skip
                fig.add_trace(go.Scatter(
                    x=curve["level"], y=curve["value"], mode="lines+markers", name=label,
                    line={"color": colour, "dash": dashes[j % len(dashes)]}, legendgroup=label, showlegend=col == 1,
                    hovertemplate=f"{label}<br>level %{{x}}<br>{metric} %{{y:.3f}}<extra></extra>",
                ), row=1, col=col)  # fmt: skip
        if metric.endswith("accuracy"):
            for name, value in (lines or {}).items():
                fig.add_hline(y=value, line={"dash": "dot", "color": "#999", "width": 1}, row=1, col=col,
                              annotation_text=name, annotation_position="bottom right")  # fmt: skip
    if not part.empty:
        levels = part["level"].astype(float)
        fig.update_xaxes(range=[levels.min(), levels.max()] if unit != "bits" else None)
    fig.update_xaxes(**_axis(unit))
    fig.update_yaxes(title_text="score", row=1, col=1)
    fig.update_layout(title=title or f"{benchmark} — {group}", template="plotly_white", height=380)
    return fig


def failure_modes_area(modes: pd.DataFrame, benchmark: str, title: str | None = None) -> go.Figure:
    """Stacked areas of outcome shares (correct, wrong answer, invalid by reason) over the levels,
    one panel per curve (model, setting)."""
    part = modes[modes["benchmark"] == benchmark]
    settings = list(dict.fromkeys(part["setting"]))
    curves = list(dict.fromkeys(zip(part["model"], part["setting"])))
    models = [_curve_label(m, s, settings) for m, s in curves]
    outcomes = ["correct", "wrong answer"] + sorted(o for o in set(part["outcome"]) if o.startswith("invalid"))
    greys = ["#7f7f7f", "#bcbd22", "#17becf", "#8c564b", "#e377c2", "#c7c7c7"]
    fig = make_subplots(rows=1, cols=max(len(models), 1), shared_yaxes=True, subplot_titles=models)
    for col, (model, setting) in enumerate(curves, start=1):
        mine = part[(part["model"] == model) & (part["setting"] == setting)].pivot_table(
            index="level", columns="outcome", values="share", fill_value=0)
        for j, outcome in enumerate(outcomes):
            if outcome not in mine.columns:
                continue
            colour = OUTCOME_COLOURS.get(outcome, greys[(j - 2) % len(greys)])
            fig.add_trace(go.Scatter(
                x=mine.index, y=mine[outcome], name=outcome, stackgroup=f"m{col}", mode="lines",
                line={"width": 0.5, "color": colour}, legendgroup=outcome, showlegend=col == 1,
            ), row=1, col=col)  # fmt: skip
    fig.update_xaxes(title_text="level")
    fig.update_yaxes(title_text="share of items", range=[0, 1], row=1, col=1)
    fig.update_layout(title=title or f"{benchmark}: what the answers are", template="plotly_white", height=380)
    return fig


def label_distribution_bars(distribution: pd.DataFrame, benchmark: str, title: str | None = None) -> go.Figure:
    """Stacked bars of the predicted label shares at each level, one panel per model, with the
    gold distribution as the first bar of each panel: the answer bias and its evolution."""
    part = distribution[distribution["benchmark"] == benchmark]
    gold = part[part["model"] == "gold"]
    rest = part[part["model"] != "gold"]
    settings = list(dict.fromkeys(rest["setting"]))
    curves = list(dict.fromkeys(zip(rest["model"], rest["setting"])))
    labels = list(dict.fromkeys(part["label"]))
    fig = make_subplots(rows=1, cols=max(len(curves), 1), shared_yaxes=True,
                        subplot_titles=[_curve_label(m, s, settings) for m, s in curves])  # fmt: skip
    for col, (model, setting) in enumerate(curves, start=1):
        mine = rest[(rest["model"] == model) & (rest["setting"] == setting)]
        for label in labels:
            rows = mine[mine["label"] == label].sort_values("level")
            gold_share = gold.loc[gold["label"] == label, "share"]
            x = ["gold"] + [f"{s:g}" for s in rows["level"]]
            y = [float(gold_share.iloc[0]) if len(gold_share) else 0.0] + list(rows["share"])
            fig.add_trace(go.Bar(x=x, y=y, name=label, marker_color=LABEL_COLOURS.get(label),
                                 legendgroup=label, showlegend=col == 1), row=1, col=col)  # fmt: skip
    fig.update_layout(barmode="stack", template="plotly_white", height=380,
                      title=title or f"{benchmark}: predicted labels against gold")  # fmt: skip
    fig.update_yaxes(title_text="share", range=[0, 1], row=1, col=1)
    fig.update_xaxes(title_text="level")
    return fig


def confusion_heatmap(table: pd.DataFrame, title: str = "confusion") -> go.Figure:
    """Counts of gold (rows) × prediction (columns), as metrics.confusion returns them."""
    fig = go.Figure(go.Heatmap(
        z=table.to_numpy(), x=[str(c) for c in table.columns], y=[str(i) for i in table.index],
        colorscale="Blues", text=table.to_numpy(), texttemplate="%{text}",
    ))  # fmt: skip
    fig.update_layout(title=title, xaxis_title="prediction", yaxis_title="gold", template="plotly_white",
                      height=360, yaxis={"autorange": "reversed"})  # fmt: skip
    return fig


def achieved_sparsity(levels: pd.DataFrame, title: str = "achieved sparsity") -> go.Figure:
    """Requested against achieved sparsity (columns model, method, level, pruned, overall)."""
    fig = go.Figure()
    for i, ((model, method), rows) in enumerate(levels.groupby(["model", "method"], sort=False)):
        colour = PALETTE[i % len(PALETTE)]
        fig.add_trace(go.Scatter(x=rows["level"], y=rows["pruned"], name=f"{model} · {method}: compressed matrices",
                                 mode="lines+markers", line={"color": colour}))  # fmt: skip
        fig.add_trace(go.Scatter(x=rows["level"], y=rows["overall"], name=f"{model} · {method}: all parameters",
                                 mode="lines", line={"color": colour, "dash": "dot"}))  # fmt: skip
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="requested", line={"color": "#999", "width": 1}))
    fig.update_layout(title=title, xaxis_title="requested", yaxis_title="zeros", template="plotly_white", height=360,
                      xaxis_tickformat=".0%", yaxis_tickformat=".0%")  # fmt: skip
    return fig


# ----------------------------------------------------------------------------- showing and saving


def show(fig: go.Figure):
    """Display `fig` interactively in JupyterLab and in the report (see the module docstring)."""
    import json

    from IPython.display import display

    bundle = {
        "application/vnd.plotly.v1+json": json.loads(fig.to_json()),
        "text/html": fig.to_html(full_html=False, include_plotlyjs=False),
        "text/plain": f"<plotly figure: {fig.layout.title.text or 'untitled'}>",
    }
    display(bundle, raw=True)


def save(fig: go.Figure, name: str, directory: str | os.PathLike) -> list[Path]:
    """Write <directory>/<name>.html (plotly.js from the shared plotly.min.js beside it) and,
    where kaleido is installed, <name>.png. Returns the paths written."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    html_path = directory / f"{name}.html"
    fig.write_html(html_path, include_plotlyjs="directory", full_html=True)
    paths = [html_path]
    if png_supported():
        png_path = directory / f"{name}.png"
        fig.write_image(png_path)
        paths.append(png_path)
    return paths


def png_supported() -> bool:
    """Whether a static image exporter (kaleido) is installed; without it only HTML is written."""
    try:
        import kaleido  # noqa: F401
    except ImportError:
        return False
    return True


def publish(fig: go.Figure, name: str, directory: str | os.PathLike) -> go.Figure:
    """Save `fig` under `directory` and show it; the notebooks' one call per figure."""
    save(fig, name, directory)
    show(fig)
    return fig


def explorer(records: pd.DataFrame, items: dict | None = None):
    """An ipywidgets explorer for JupyterLab: choose a model, a sparsity level and an item, and
    read the prompt's question, the raw response, the parsed answer and the gold label."""
    import ipywidgets as widgets
    from IPython.display import display

    questions = {item.id: item.question for batch in (items or {}).values() for item in batch}
    indexed = records.set_index(["model", "level", "item_id"]).sort_index()
    model = widgets.Dropdown(options=sorted(set(records["model"])), description="model")
    level = widgets.SelectionSlider(options=sorted(set(records["level"])), description="level")
    item = widgets.Dropdown(options=sorted(set(records["item_id"])), description="item")
    out = widgets.Output()

    def update(_change=None):
        out.clear_output()
        key = (model.value, level.value, item.value)
        with out:
            if key not in indexed.index:
                print("no record for this choice")
                return
            row = indexed.loc[key]
            print(f"question: {questions.get(item.value, '(not loaded)')}")
            print(f"gold: {row['gold']}   answer: {row['answer']}   tier: {row['tier']}   invalid: {row['invalid_reason']}")
            print(f"first-token answer: {row['loglik_answer']}")
            print(f"raw response: {row['raw_response']!r}")

    for control in (model, level, item):
        control.observe(update, names="value")
    update()
    display(widgets.VBox([widgets.HBox([model, level]), item, out]))
