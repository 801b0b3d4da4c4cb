"""Report figures: training curves, per-class accuracy, reliability diagram, shared vs novel.

Every function draws on its own ``matplotlib.figure.Figure`` (no pyplot state, no GUI
backend: PNGs are rendered with Agg), writes a PNG and returns its path.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from .calibration import ReliabilityBins

HEAD_COLOUR = "tab:blue"
TAIL_COLOUR = "tab:orange"
_SPLIT_PREFIXES = ("train_", "val_", "valid_", "validation_", "test_")


def _save(figure: Figure, path: str | Path) -> Path:
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"{path}: plots are written as .png")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120, format="png")
    return path


def _metric_name(key: str) -> str:
    """``val_loss`` → ``loss``: train and validation curves of one metric share a panel."""
    for prefix in _SPLIT_PREFIXES:
        if key.startswith(prefix):
            return key[len(prefix) :]
    return key


def plot_training_curves(
    history: Sequence[Mapping[str, float]], path: str | Path, *, title: str | None = None
) -> Path:
    """One panel per metric over epochs, e.g. ``train_loss`` and ``val_loss`` together.

    Args:
        history: one dict of numeric metrics per epoch; an ``epoch`` key, if present, is the
            x value (otherwise 1, 2, …). Metrics missing from some epochs leave gaps.
        path: output ``.png``.
    """
    if not history:
        raise ValueError("history is empty: nothing to plot")
    epochs = [float(entry.get("epoch", i + 1)) for i, entry in enumerate(history)]
    keys = sorted(
        {k for entry in history for k, v in entry.items() if k != "epoch" and _is_number(v)}
    )
    if not keys:
        raise ValueError("history has no numeric metrics besides 'epoch'")
    panels: dict[str, list[str]] = {}
    for key in keys:
        panels.setdefault(_metric_name(key), []).append(key)

    n_cols = min(3, len(panels))
    n_rows = math.ceil(len(panels) / n_cols)
    figure = Figure(figsize=(4.5 * n_cols, 3.2 * n_rows), layout="constrained")
    axes = figure.subplots(n_rows, n_cols, squeeze=False).ravel()
    for axis, (metric, members) in zip(axes, panels.items(), strict=False):
        for key in members:
            values = [float(e[key]) if _is_number(e.get(key)) else np.nan for e in history]
            axis.plot(epochs, values, marker="o", markersize=3, label=key)
        axis.set_title(metric)
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
        axis.legend(fontsize="small")
    for axis in axes[len(panels) :]:
        axis.set_visible(False)
    if title:
        figure.suptitle(title)
    return _save(figure, path)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def plot_per_class_accuracy(
    verb_accuracy: np.ndarray,
    noun_accuracy: np.ndarray,
    path: str | Path,
    *,
    tail_verbs: Iterable[int] = (),
    tail_nouns: Iterable[int] = (),
    verb_names: Sequence[str] | None = None,
    noun_names: Sequence[str] | None = None,
    title: str | None = None,
) -> Path:
    """Bars of per-class accuracy, verbs above nouns, named on the axis, head and tail classes
    in two colours (legend beside the bars, never over them).

    Args:
        verb_accuracy, noun_accuracy: per-class accuracies (e.g. from
            :func:`egofeat.eval.per_class_accuracy`); NaN classes (absent from the ground
            truth) get no bar, and their number is in the panel's title.
        tail_verbs, tail_nouns: class ids drawn in the tail colour.
        verb_names, noun_names: class names by id (default: the ids).
    """
    panels = []
    for name, accuracy, tail, names in (("verb", verb_accuracy, tail_verbs, verb_names),
                                        ("noun", noun_accuracy, tail_nouns, noun_names)):
        accuracy = np.asarray(accuracy, dtype=np.float64)
        names = list(names) if names is not None else [str(i) for i in range(accuracy.size)]
        if len(names) != accuracy.size:
            raise ValueError(f"{len(names)} {name} names for {accuracy.size} classes")
        panels.append((name, accuracy, set(tail), names))
    shown = max(int((~np.isnan(a)).sum()) for _, a, _, _ in panels)
    figure = Figure(figsize=(min(60.0, max(9.0, 0.22 * shown + 2.5)), 9), layout="constrained")
    axes = figure.subplots(2, 1)
    for axis, (name, accuracy, tail, names) in zip(axes, panels, strict=True):
        classes = np.nonzero(~np.isnan(accuracy))[0]
        positions = np.arange(classes.size)
        is_tail = np.isin(classes, np.asarray(sorted(tail), dtype=np.int64))
        for mask, colour, label in ((~is_tail, HEAD_COLOUR, "head classes"),
                                    (is_tail, TAIL_COLOUR, "tail classes")):
            if mask.any() or label.startswith("head"):
                axis.bar(positions[mask], accuracy[classes[mask]], width=0.8, color=colour, label=label)
        axis.set_xticks(positions, [names[c] for c in classes], rotation=90, fontsize=7)
        axis.set_xlim(-1, max(classes.size, 1))
        axis.set_ylim(0, 100)
        axis.set_ylabel("top-1 accuracy (%)")
        absent = accuracy.size - classes.size
        axis.set_title(f"{name}s: {classes.size} of {accuracy.size} classes in the ground truth"
                       + (f" ({absent} absent, not drawn)" if absent else ""))
        axis.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    if title:
        figure.suptitle(title)
    return _save(figure, path)


def plot_run_comparison(
    runs: Sequence[str], values: Sequence[float | None], path: str | Path, *, metric: str
) -> Path:
    """One bar per run of ``metric`` (runs without it get none), the best bar highlighted."""
    shown = [(run, float(v)) for run, v in zip(runs, values, strict=True) if v is not None]
    if not shown:
        raise ValueError(f"no run has the metric {metric!r}: nothing to plot")
    figure = Figure(figsize=(max(6.0, 0.6 * len(shown) + 3), 4.5), layout="constrained")
    axis = figure.subplots()
    best = max(range(len(shown)), key=lambda i: shown[i][1] * (-1 if metric.endswith("loss") else 1))
    colours = [TAIL_COLOUR if i == best else HEAD_COLOUR for i in range(len(shown))]
    bars = axis.bar(range(len(shown)), [v for _, v in shown], color=colours)
    axis.bar_label(bars, fmt="%.1f", fontsize="small")
    axis.set_xticks(range(len(shown)), [run for run, _ in shown], rotation=30, ha="right")
    axis.set_ylabel(metric)
    axis.set_title(f"{metric} by run (best highlighted)")
    axis.grid(axis="y", alpha=0.3)
    return _save(figure, path)


def plot_reliability_diagram(
    bins: ReliabilityBins, path: str | Path, *, title: str | None = None
) -> Path:
    """Accuracy against confidence per bin (with the diagonal), and the samples per bin."""
    widths = np.diff(bins.edges)
    lefts = bins.edges[:-1]
    filled = bins.counts > 0
    figure = Figure(figsize=(5, 6), layout="constrained")
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    top.bar(
        lefts[filled],
        bins.accuracy[filled],
        width=widths[filled],
        align="edge",
        color=HEAD_COLOUR,
        edgecolor="black",
        label="accuracy",
    )
    top.bar(
        lefts[filled],
        bins.confidence[filled] - bins.accuracy[filled],
        bottom=bins.accuracy[filled],
        width=widths[filled],
        align="edge",
        color="tab:red",
        alpha=0.3,
        label="gap to confidence",
    )
    top.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.legend(loc="upper left", fontsize="small")
    top.set_title(title or f"ECE = {100 * bins.expected_calibration_error:.2f}%")
    bottom.bar(lefts, bins.counts, width=widths, align="edge", color="grey", edgecolor="black")
    bottom.set_xlim(0, 1)
    bottom.set_xlabel("confidence")
    bottom.set_ylabel("samples")
    return _save(figure, path)


def plot_shared_novel(
    methods: Mapping[str, Mapping[str, float]],
    path: str | Path,
    *,
    keys: Sequence[str] = ("shared_accuracy", "novel_accuracy", "harmonic_mean_accuracy"),
    title: str | None = None,
) -> Path:
    """Grouped bars: one group per metric key (shared, novel, HM), one bar per method.

    Args:
        methods: method name → metrics, e.g. ``{"X-MIC": shared_novel_metrics(...),
            "zero-shot": ..., "linear probe": ...}``; every method needs every key.
        keys: which metrics to show, in order.
    """
    if not methods:
        raise ValueError("methods is empty: nothing to plot")
    for method, metrics in methods.items():
        missing = [k for k in keys if k not in metrics]
        if missing:
            raise ValueError(f"method {method!r} lacks metrics {missing}")
    positions = np.arange(len(keys))
    width = 0.8 / len(methods)
    highest = max(float(metrics[k]) for metrics in methods.values() for k in keys)
    figure = Figure(figsize=(max(6, 2.2 * len(keys)), 4), layout="constrained")
    axis = figure.subplots()
    for i, (method, metrics) in enumerate(methods.items()):
        values = [float(metrics[k]) for k in keys]
        bars = axis.bar(
            positions + (i - (len(methods) - 1) / 2) * width, values, width, label=method
        )
        axis.bar_label(bars, fmt="%.1f", fontsize="x-small")
    axis.set_xticks(positions, [k.replace("_", " ") for k in keys])
    axis.set_ylabel("accuracy (%)")
    axis.set_ylim(0, 1.2 * highest if highest > 0 else 1)  # headroom for the legend
    axis.legend(loc="upper center", ncols=len(methods), fontsize="small")
    axis.grid(axis="y", alpha=0.3)
    if title:
        axis.set_title(title)
    return _save(figure, path)
