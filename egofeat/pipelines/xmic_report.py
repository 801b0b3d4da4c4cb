"""The X-MIC cross-dataset report: scores per method, ``report.md`` tables, shared/novel plots."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from egofeat.eval import harmonic_mean, mean_class_accuracy, per_class_accuracy
from egofeat.eval import shared_novel_metrics as score_shared_novel
from egofeat.heads import UNLABELLED, HeadData

__all__ = ["METHOD_NAMES", "per_class_rows", "plot_report", "report_markdown", "score_method"]

# ---- the report ------------------------------------------------------------------------------

METHOD_NAMES = {"xmic": "X-MIC", "zero_shot": "zero-shot CLIP", "linear_probe": "linear probe"}


def report_markdown(report: Mapping[str, Any]) -> str:
    """The report's tables: per task and split kind, one row per method (accuracies, %)."""
    lines = [
        f"# X-MIC {report['source']} -> {report['target']}",
        "",
        f"Checkpoint selection: {report['selection']}.",
        "",
    ]
    used = report.get("train_segments")
    if used:
        lines += [f"Trained on {used['trained_on']:,} of the {used['source_train']:,} "
                  f"{report['source']} train segments ({used['held_out_for_selection']:,} held out "
                  "for selection).", ""]
    if report.get("recipe"):
        lines += [f"Recipe: `{report['recipe']['name']}` ({report['recipe']['summary']}).", ""]
    header = (
        "| method | top-1 all | top-1 shared | top-1 novel | HM | class-mean all | "
        "class-mean shared | class-mean novel | HM (class-mean) | within | HM within/cross |"
    )
    for task, result in report["tasks"].items():
        for kind in result["splits"]:
            counts = result["splits"][kind]
            lines += [
                f"## {task}, {kind} split ({counts['shared']} shared, {counts['novel']} novel "
                f"{report['target']} classes)",
                "",
                header,
                "|" + " --- |" * 11,
            ]
            for method, scores in result["methods"].items():
                m = scores["cross"][kind]
                within = (scores["within"] or {}).get("accuracy")
                cells = [
                    m["all_accuracy"],
                    m["shared_accuracy"],
                    m["novel_accuracy"],
                    m["harmonic_mean_accuracy"],
                    m["all_class_mean_accuracy"],
                    m["shared_class_mean_accuracy"],
                    m["novel_class_mean_accuracy"],
                    m["harmonic_mean_class_mean_accuracy"],
                    within,
                    scores["within_cross_harmonic_mean"],
                ]
                lines.append(
                    f"| {METHOD_NAMES[method]} | " + " | ".join(_cell(c) for c in cells) + " |"
                )
            lines.append("")
        lines.append(
            f"X-MIC {task}: {result['trainable_parameters']:,} trainable parameters, "
            f"best epoch {result['best_epoch']}."
        )
        lines.append("")
        lines += _per_class_markdown(report["target"], task, result.get("per_class", []))
    return "\n".join(lines)


def _per_class_markdown(target: str, task: str, rows: list[Mapping[str, Any]]) -> list[str]:
    """Top-1 per target class, by name, most frequent first (classes the eval split has)."""
    if not rows:
        return []
    methods = [m for m in METHOD_NAMES if m in rows[0]["accuracy"]]
    lines = [f"### {task}: top-1 per {target} class (exact split)", "",
             "| class | exact split | segments | " + " | ".join(METHOD_NAMES[m] for m in methods) + " |",
             "|" + " --- |" * (3 + len(methods))]
    for row in rows:
        lines.append(f"| {row['name']} | {row['exact']} | {row['count']} | "
                     + " | ".join(_cell(row["accuracy"][m]) for m in methods) + " |")
    return [*lines, ""]


def per_class_rows(outputs: Mapping[str, np.ndarray], task: str, target: HeadData,
                   names: list[str], shared: list[int]) -> list[dict[str, Any]]:
    """Per target class in the eval split: its name, shared or novel (exact split), segments
    and each method's top-1 (%), most frequent class first."""
    labels = target.labels[task].numpy()
    labelled = labels != UNLABELLED
    accuracy = {method: per_class_accuracy(logits[labelled], labels[labelled], len(names))
                for method, logits in outputs.items()}
    counts = np.bincount(labels[labelled], minlength=len(names))
    present = [int(c) for c in np.argsort(-counts, kind="stable") if counts[c]]
    shared_set = set(shared)
    return [{"class_id": c, "name": names[c], "exact": "shared" if c in shared_set else "novel",
             "count": int(counts[c]), "accuracy": {m: float(a[c]) for m, a in accuracy.items()}}
            for c in present]


def _cell(value: float | None) -> str:
    return (
        "n/a"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else f"{value:.1f}"
    )


def plot_report(out: Path, report: Mapping[str, Any]) -> list[str]:
    from egofeat.eval.plots import plot_shared_novel

    paths = []
    for task, result in report["tasks"].items():
        for kind in result["splits"]:
            methods = {
                METHOD_NAMES[m]: {k: _zero_nan(v) for k, v in s["cross"][kind].items()}
                for m, s in result["methods"].items()
            }
            title = f"{report['source']} -> {report['target']}: {task}, {kind} split"
            paths.append(
                str(plot_shared_novel(methods, out / "plots" / f"{task}-{kind}.png", title=title))
            )
    return paths


def _zero_nan(value: float) -> float:
    return 0.0 if isinstance(value, float) and math.isnan(value) else value


def score_method(
    outputs: Mapping[str, np.ndarray | None],
    task: str,
    target: HeadData,
    source: HeadData | None,
    splits: Mapping[str, tuple[list[int], list[int]]],
) -> dict[str, Any]:
    """Cross-dataset metrics per split kind (labelled target rows), within-dataset top-1 and
    class-mean accuracy on the source, and the harmonic mean of within and cross top-1."""
    labels = target.labels[task].numpy()
    labelled = labels != UNLABELLED
    cross = {
        kind: score_shared_novel(outputs["cross"][labelled], labels[labelled], shared, novel)
        for kind, (shared, novel) in splits.items()
    }
    result: dict[str, Any] = {"cross": cross, "within": None, "within_cross_harmonic_mean": None}
    if source is not None and outputs["within"] is not None:
        truth = source.labels[task].numpy()
        keep = truth != UNLABELLED
        logits = outputs["within"][keep]
        within = {
            "accuracy": float((logits.argmax(1) == truth[keep]).mean() * 100),
            "class_mean_accuracy": mean_class_accuracy(
                per_class_accuracy(logits, truth[keep], logits.shape[1])
            ),
            "count": int(keep.sum()),
        }
        result["within"] = within
        result["within_cross_harmonic_mean"] = harmonic_mean(
            within["accuracy"], cross["exact"]["all_accuracy"]
        )
    return result
