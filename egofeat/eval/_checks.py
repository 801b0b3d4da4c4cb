"""Input checks shared by the metric modules.

Every metric takes plain arrays; these helpers turn them into numpy arrays of the expected
shape and dtype, or raise a ``ValueError`` that names the argument and says what is wrong.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def scores_2d(name: str, scores: object, *, dtype: type = np.float64) -> np.ndarray:
    """Return ``scores`` as a finite 2-D float array (rows = samples, columns = classes/items)."""
    array = np.asarray(scores, dtype=dtype)
    if array.ndim != 2:
        raise ValueError(f"{name} must be 2-D (samples, classes), got shape {array.shape}")
    if array.size and not np.isfinite(array).all():
        rows = np.unique(np.nonzero(~np.isfinite(array))[0])
        raise ValueError(
            f"{name} has NaN or infinite values in rows {rows[:10].tolist()}"
            f"{' …' if rows.size > 10 else ''}: scores must be finite"
        )
    return array


def class_labels(name: str, labels: object, *, n_samples: int, n_classes: int) -> np.ndarray:
    """``labels`` as an int64 vector of length ``n_samples`` with values in [0, n_classes)."""
    array = np.asarray(labels)
    if array.ndim != 1 or array.shape[0] != n_samples:
        raise ValueError(f"{name} must have shape ({n_samples},), got {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must hold integer class ids, got dtype {array.dtype}")
    array = array.astype(np.int64, copy=False)
    bad = np.nonzero((array < 0) | (array >= n_classes))[0]
    if bad.size:
        raise ValueError(
            f"{name}[{bad[0]}] = {array[bad[0]]} is outside [0, {n_classes}) "
            f"({bad.size} such rows): labels must index the score columns"
        )
    return array


def class_id_set(name: str, ids: Iterable[int], *, n_classes: int) -> np.ndarray:
    """Return a sorted unique int64 array of class ids, each in [0, n_classes)."""
    array = np.unique(np.asarray(list(ids), dtype=np.int64))
    bad = array[(array < 0) | (array >= n_classes)]
    if bad.size:
        raise ValueError(f"{name} has class ids outside [0, {n_classes}): {bad[:10].tolist()}")
    return array


def percent(numerator: float, denominator: float) -> float:
    """``100 · numerator / denominator``, NaN when the denominator is 0."""
    return float(100.0 * numerator / denominator) if denominator else float("nan")
