"""Calibration of top-1 predictions: reliability bins and expected calibration error (ECE).

Confidence = the highest class probability of a sample; it is correct when that class (the
lowest id among tied maxima) is the label. Confidences fall into ``n_bins`` equal-width bins
``(i/n, (i+1)/n]`` (a confidence of exactly 0 goes to the first bin), and

    ECE = Σ_bins (|bin| / N) · |accuracy(bin) − mean confidence(bin)|,

with 15 bins as in the multimodal-distillation evaluation (``reference/heads.md`` §1.6).
ECE and the bins are fractions in [0, 1], not percentages.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._checks import class_labels, scores_2d

_ROW_SUM_TOLERANCE = 1e-3


@dataclass(frozen=True)
class ReliabilityBins:
    """Per-bin statistics of top-1 confidence; empty bins hold NaN accuracy and confidence.

    Attributes:
        edges: (n_bins + 1,) bin edges from 0 to 1.
        counts: (n_bins,) samples per bin.
        accuracy: (n_bins,) fraction of correct top-1 predictions in each bin.
        confidence: (n_bins,) mean top-1 confidence in each bin.
    """

    edges: np.ndarray
    counts: np.ndarray
    accuracy: np.ndarray
    confidence: np.ndarray

    @property
    def expected_calibration_error(self) -> float:
        """Bin-size-weighted mean |accuracy − confidence| (NaN when there are no samples)."""
        total = self.counts.sum()
        if not total:
            return float("nan")
        filled = self.counts > 0
        gaps = np.abs(self.accuracy[filled] - self.confidence[filled])
        return float((self.counts[filled] * gaps).sum() / total)


def reliability_bins(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> ReliabilityBins:
    """Bin samples by top-1 confidence.

    Args:
        probs: (N, C) class probabilities (rows sum to 1; pass softmax outputs, not logits).
        labels: (N,) ground-truth class ids.
        n_bins: number of equal-width confidence bins.
    """
    probs = scores_2d("probs", probs)
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    labels = class_labels("labels", labels, n_samples=probs.shape[0], n_classes=probs.shape[1])
    if probs.size:
        if probs.min() < 0 or probs.max() > 1:
            raise ValueError("probs must lie in [0, 1]: pass softmax probabilities, not logits")
        row_sums = probs.sum(axis=1)
        off = np.nonzero(np.abs(row_sums - 1) > _ROW_SUM_TOLERANCE)[0]
        if off.size:
            raise ValueError(
                f"probs row {off[0]} sums to {row_sums[off[0]]:.4f}, not 1 ({off.size} rows): "
                "pass softmax probabilities, not logits"
            )
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    confidence = probs.max(axis=1) if probs.size else np.zeros(0)
    correct = probs.argmax(axis=1) == labels if probs.size else np.zeros(0, dtype=bool)
    # side="left" on the inner edges puts a confidence equal to an edge in the bin below it.
    bins = np.searchsorted(edges[1:-1], confidence, side="left")
    counts = np.bincount(bins, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.bincount(bins, weights=correct, minlength=n_bins) / counts
        mean_confidence = np.bincount(bins, weights=confidence, minlength=n_bins) / counts
    return ReliabilityBins(edges, counts, accuracy, mean_confidence)


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """Expected calibration error of top-1 predictions, as a fraction in [0, 1]."""
    return reliability_bins(probs, labels, n_bins).expected_calibration_error
