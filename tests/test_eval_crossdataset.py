"""Shared / novel accuracies (X-MIC evaluation) against a hand-computed case."""

from __future__ import annotations

import math

import numpy as np
import pytest

from egofeat.eval import harmonic_mean, shared_novel_metrics

SHARED, NOVEL = [0, 1], [2, 3]
LABELS = np.array([0, 1, 0, 2, 3, 3])
LOGITS = np.array(
    [
        [3, 0, 1, 0],  # shared 0 → 0: right
        [0, 1, 3, 0],  # shared 1 → 2 (novel): wrong; among shared → 1: right
        [0, 3, 0, 0],  # shared 0 → 1: wrong, also among shared
        [0, 0, 3, 1],  # novel 2 → 2: right
        [3, 0, 1, 2],  # novel 3 → 0 (shared): wrong; among novel → 3: right
        [0, 0, 0, 3],  # novel 3 → 3: right
    ],
    dtype=float,
)


def test_instance_restricted_and_class_mean_accuracy_per_subset():
    m = shared_novel_metrics(LOGITS, LABELS, SHARED, NOVEL)
    assert m["shared_count"] == 3 and m["novel_count"] == 3 and m["all_count"] == 6
    assert m["shared_accuracy"] == pytest.approx(100 / 3)
    assert m["novel_accuracy"] == pytest.approx(200 / 3)
    assert m["all_accuracy"] == pytest.approx(50.0)
    assert m["shared_restricted_accuracy"] == pytest.approx(200 / 3)
    assert m["novel_restricted_accuracy"] == pytest.approx(100.0)
    assert m["all_restricted_accuracy"] == pytest.approx(50.0)
    # Per-class recall: class 0 = 50, class 1 = 0, class 2 = 100, class 3 = 50.
    assert m["shared_class_mean_accuracy"] == pytest.approx(25.0)
    assert m["novel_class_mean_accuracy"] == pytest.approx(75.0)
    assert m["all_class_mean_accuracy"] == pytest.approx(50.0)


def test_harmonic_means_of_shared_and_novel():
    m = shared_novel_metrics(LOGITS, LABELS, SHARED, NOVEL)
    assert m["harmonic_mean_accuracy"] == pytest.approx(2 * (100 / 3) * (200 / 3) / 100)
    assert m["harmonic_mean_restricted_accuracy"] == pytest.approx(80.0)
    assert m["harmonic_mean_class_mean_accuracy"] == pytest.approx(37.5)
    assert harmonic_mean(0.0, 0.0) == 0.0
    assert math.isnan(harmonic_mean(float("nan"), 50.0))


def test_a_subset_without_samples_scores_nan():
    m = shared_novel_metrics(LOGITS[:3], LABELS[:3], SHARED, NOVEL)
    assert m["novel_count"] == 0
    assert math.isnan(m["novel_accuracy"]) and math.isnan(m["novel_class_mean_accuracy"])
    assert math.isnan(m["harmonic_mean_accuracy"])


def test_overlapping_subsets_are_refused():
    with pytest.raises(ValueError, match=r"classes \[1\] are both shared and novel"):
        shared_novel_metrics(LOGITS, LABELS, [0, 1], [1, 2, 3])
