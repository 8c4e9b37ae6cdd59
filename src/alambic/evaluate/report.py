"""report.html: the evaluation table, the training loss curve and example answers."""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path
from typing import Any

import jinja2

from alambic.results import DistillResult, EvalResult, ModelScore

# Answers longer than this show their first words, the rest behind a "more" control.
FOLD_CHARACTERS = 280


def loss_plot_png(losses: list[tuple[int, float]]) -> str:
    """The training loss as a base64 PNG, so that the report is one self-contained file."""
    figure, axes = _plot(height=3)
    steps, values = zip(*losses, strict=True) if losses else ((), ())
    axes.plot(steps, values, color="#8a3b12", linewidth=1.5)
    axes.set_xlabel("step")
    axes.set_ylabel("training loss")
    axes.grid(alpha=0.3)
    return _png(figure)


def _plot(height: float) -> tuple[Any, Any]:
    """A figure and its axes, drawn off-screen: reports are written where no display is."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    return plt.subplots(figsize=(7, height), dpi=110)


def _png(figure: Any) -> str:
    from matplotlib import pyplot as plt

    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def speed_plot_png(models: list[ModelScore]) -> str | None:
    """Answer speed against fact recall (hand-checked where there is one, else held-out), one point a model, as a
    base64 PNG; None where fewer than two models have both."""
    checked = any(row.checked_fact_recall is not None for row in models)
    points = [
        (row.label, row.tokens_per_second, row.checked_fact_recall if checked else row.fact_recall)
        for row in models
        if row.tokens_per_second > 0
    ]
    points = [(label, speed, recall) for label, speed, recall in points if recall is not None]
    if len(points) < 2:
        return None
    figure, axes = _plot(height=3.4)
    for label, speed, recall in points:
        axes.scatter([speed], [recall], color="#8a3b12")
        axes.annotate(label, (speed, recall), textcoords="offset points", xytext=(5, 4), fontsize=8)
    axes.set_xlabel("answer tokens/s")
    axes.set_ylabel(f"{'hand-checked' if checked else 'held-out'} fact recall")
    axes.set_ylim(-0.05, 1.05)
    axes.grid(alpha=0.3)
    return _png(figure)


def fold(text: str, limit: int = FOLD_CHARACTERS) -> tuple[str, str]:
    """(what a cell shows, what it folds away): cut at the last space before ``limit``, or at ``limit`` in a
    string with no space (an untrained model's output can be one long run of characters)."""
    if len(text) <= limit:
        return text, ""
    cut = text.rfind(" ", limit // 2, limit)
    cut = cut if cut > 0 else limit
    return text[:cut], text[cut:]


def write_report(
    path: Path,
    project_name: str,
    summary: EvalResult,
    training: DistillResult,
    examples: list[dict[str, Any]],
) -> None:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("alambic.evaluate", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    environment.filters["fold"] = fold
    html = environment.get_template("report.html.j2").render(
        project=project_name,
        summary=summary,
        training=training,
        examples=examples,
        loss_png=loss_plot_png(training.losses),
        speed_png=speed_plot_png(summary.models),
    )
    partial = path.with_suffix(".html.partial")
    partial.write_text(html, encoding="utf-8")
    os.replace(partial, path)
