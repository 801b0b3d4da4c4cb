"""Charades-Ego video-level mAP (``reference/formats.md`` §5.4).

One score per (video, class) over the 157 Charades classes, multi-label ground truth. As in the
reference evaluation (EgoVLP, LaViLa):

1. videos with no label at all get −inf scores (they rank last for every class);
2. per class, videos are ranked by descending score (``argsort(-scores)``, numpy's default
   sort, which orders exact ties), and AP = mean over the positives of the precision at their
   rank (non-interpolated);
3. a class with no positive video has AP = NaN, and :func:`charades_map` averages with a plain
   mean, so **any such class makes the mAP NaN**, as in the reference.
   :func:`charades_map_nanmean` instead averages over the classes that have positives.

Values are ×100.
"""

from __future__ import annotations

import numpy as np

from ._checks import scores_2d


def charades_average_precision(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-class AP (×100), NaN for classes without a positive video.

    Args:
        scores: (V, C) video-by-class scores.
        labels: (V, C) multi-hot ground truth (0/1 or bool).
    """
    scores = scores_2d("scores", scores)
    labels = np.asarray(labels)
    if labels.shape != scores.shape:
        raise ValueError(f"labels {labels.shape} must match scores {scores.shape}")
    if labels.size and not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be multi-hot: every entry 0 or 1")
    positive = labels.astype(bool)
    scores = np.where(positive.any(axis=1, keepdims=True), scores, -np.inf)

    order = np.argsort(-scores, axis=0)
    hits = np.take_along_axis(positive, order, axis=0)
    precision = np.cumsum(hits, axis=0) / np.arange(1, scores.shape[0] + 1)[:, None]
    n_positive = hits.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = (precision * hits).sum(axis=0) / n_positive
    return np.where(n_positive > 0, 100.0 * ap, np.nan)


def charades_map(scores: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Reference Charades-Ego mAP (×100) and per-class AP: NaN if any class has no positive."""
    per_class = charades_average_precision(scores, labels)
    return float(np.mean(per_class)), per_class


def charades_map_nanmean(scores: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Like :func:`charades_map`, but the mean skips classes without a positive video."""
    per_class = charades_average_precision(scores, labels)
    present = per_class[~np.isnan(per_class)]
    return (float(present.mean()) if present.size else float("nan")), per_class
