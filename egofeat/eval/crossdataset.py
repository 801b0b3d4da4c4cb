"""Shared / novel class accuracy for cross-dataset evaluation (X-MIC, ``reference/xmic.md`` §4).

A model trained on one dataset (e.g. Ego4D) is scored on another (e.g. EPIC-KITCHENS) with
logits over the *target* vocabulary. The target classes are partitioned into *shared* (also in
the source vocabulary) and *novel* (not in it). For each subset S of classes (all, shared,
novel) and the samples whose label is in S, X-MIC's evaluator reports:

- ``{S}_accuracy``: instance top-1 accuracy, the prediction made over **all** target classes
  (X-MIC's ``full_acc``);
- ``{S}_restricted_accuracy``: instance top-1 accuracy with the prediction restricted to the
  classes of S (the logits of other classes set to −∞; X-MIC's "splitted" accuracy);
- ``{S}_class_mean_accuracy``: the mean over classes of S present in the labels of their top-1
  recall, predictions over all classes (X-MIC's ``avg_acc``).

X-MIC's code computes no shared/novel harmonic mean; here ``harmonic_mean_{accuracy,
restricted_accuracy,class_mean_accuracy}`` = 2ab / (a + b) of the shared (a) and novel (b)
values of each variant. Argmax ties go to the lower class id. Values are ×100.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ._checks import class_id_set, class_labels, percent, scores_2d
from .epic import mean_class_accuracy, per_class_accuracy

_VARIANTS = ("accuracy", "restricted_accuracy", "class_mean_accuracy")


def harmonic_mean(a: float, b: float) -> float:
    """2ab / (a + b); 0 when both are 0, NaN when either is NaN."""
    if np.isnan(a) or np.isnan(b):
        return float("nan")
    return 2 * a * b / (a + b) if a + b else 0.0


def shared_novel_metrics(
    logits: np.ndarray,
    labels: np.ndarray,
    shared_classes: Iterable[int],
    novel_classes: Iterable[int],
) -> dict[str, float]:
    """Accuracies over all, shared and novel target classes, and their harmonic means.

    Args:
        logits: (N, C) scores over the target vocabulary.
        labels: (N,) target class ids.
        shared_classes: ids of target classes that the source vocabulary has too.
        novel_classes: ids of target classes it lacks (disjoint from ``shared_classes``).

    Returns:
        ``{all,shared,novel}_{accuracy,restricted_accuracy,class_mean_accuracy}``,
        ``{all,shared,novel}_count`` and ``harmonic_mean_{accuracy,restricted_accuracy,
        class_mean_accuracy}``. A subset with no samples scores NaN.
    """
    logits = scores_2d("logits", logits)
    n_samples, n_classes = logits.shape
    labels = class_labels("labels", labels, n_samples=n_samples, n_classes=n_classes)
    shared = class_id_set("shared_classes", shared_classes, n_classes=n_classes)
    novel = class_id_set("novel_classes", novel_classes, n_classes=n_classes)
    overlap = np.intersect1d(shared, novel)
    if overlap.size:
        raise ValueError(f"classes {overlap[:10].tolist()} are both shared and novel")

    per_class = per_class_accuracy(logits, labels)
    prediction = logits.argmax(axis=1) if n_samples else np.zeros(0, dtype=np.int64)
    metrics: dict[str, float] = {}
    for name, classes in (("all", np.arange(n_classes)), ("shared", shared), ("novel", novel)):
        in_subset = np.isin(labels, classes)
        count = float(in_subset.sum())
        restricted = (
            classes[logits[in_subset][:, classes].argmax(axis=1)]
            if count and classes.size
            else np.zeros(0, dtype=np.int64)
        )
        metrics[f"{name}_accuracy"] = percent(
            float((prediction[in_subset] == labels[in_subset]).sum()), count
        )
        metrics[f"{name}_restricted_accuracy"] = percent(
            float((restricted == labels[in_subset]).sum()), count
        )
        metrics[f"{name}_class_mean_accuracy"] = mean_class_accuracy(per_class[classes])
        metrics[f"{name}_count"] = int(count)
    for variant in _VARIANTS:
        metrics[f"harmonic_mean_{variant}"] = harmonic_mean(
            metrics[f"shared_{variant}"], metrics[f"novel_{variant}"]
        )
    return metrics
