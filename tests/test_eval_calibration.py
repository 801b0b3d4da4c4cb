"""Expected calibration error and reliability bins against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from egofeat.eval import expected_calibration_error, reliability_bins

# Confidences 0.9 (one right, one wrong) and 0.7 (both right).
PROBS = np.array([[0.9, 0.1], [0.1, 0.9], [0.7, 0.3], [0.3, 0.7]])
LABELS = np.array([0, 0, 0, 1])


def test_ece_weights_each_bin_gap_by_its_size():
    # 15 bins: 0.9 falls in (13/15, 14/15], 0.7 in (10/15, 11/15].
    # ECE = 2/4 · |0.5 − 0.9| + 2/4 · |1.0 − 0.7| = 0.2 + 0.15.
    assert expected_calibration_error(PROBS, LABELS) == pytest.approx(0.35)


def test_reliability_bins_hold_counts_accuracy_and_confidence():
    bins = reliability_bins(PROBS, LABELS, n_bins=15)
    assert bins.edges.shape == (16,)
    assert np.nonzero(bins.counts)[0].tolist() == [10, 13]
    assert bins.counts.sum() == 4
    np.testing.assert_allclose(bins.accuracy[[10, 13]], [1.0, 0.5])
    np.testing.assert_allclose(bins.confidence[[10, 13]], [0.7, 0.9])
    assert np.isnan(bins.accuracy[0]) and np.isnan(bins.confidence[14])
    assert bins.expected_calibration_error == pytest.approx(0.35)


def test_a_confidence_on_a_bin_edge_goes_to_the_lower_bin():
    bins = reliability_bins(np.array([[0.5, 0.5]]), np.array([0]), n_bins=2)
    assert bins.counts.tolist() == [1, 0]
    assert expected_calibration_error(np.array([[0.5, 0.5]]), np.array([0]), n_bins=2) == 0.5


def test_calibrated_predictions_have_zero_ece():
    probs = np.tile([0.8, 0.2], (10, 1))
    labels = np.array([0] * 8 + [1] * 2)
    assert expected_calibration_error(probs, labels) == pytest.approx(0.0, abs=1e-12)


def test_no_samples_give_nan():
    assert math.isnan(expected_calibration_error(np.zeros((0, 3)), np.zeros(0, dtype=int)))


def test_logits_are_refused():
    with pytest.raises(ValueError, match="pass softmax probabilities, not logits"):
        expected_calibration_error(np.array([[2.0, -1.0]]), np.array([0]))
    with pytest.raises(ValueError, match=r"row 1 sums to 0\.5000"):
        expected_calibration_error(np.array([[0.5, 0.5], [0.25, 0.25]]), np.array([0, 1]))
