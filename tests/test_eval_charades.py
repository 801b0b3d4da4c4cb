"""Charades-Ego video-level mAP against a hand-computed case."""

from __future__ import annotations

import math

import numpy as np
import pytest

from egofeat.eval import charades_average_precision, charades_map, charades_map_nanmean

# Video 3 has no label: its scores become −inf, so its 0.99 for class 2 does not count.
# Class 1 has no positive video.
SCORES = np.array(
    [
        [0.9, 0.1, 0.2],
        [0.8, 0.2, 0.5],
        [0.3, 0.3, 0.4],
        [0.1, 0.4, 0.99],
    ]
)
LABELS = np.array([[1, 0, 0], [0, 0, 1], [1, 0, 1], [0, 0, 0]])


def test_per_class_ap_is_mean_precision_at_the_positives():
    ap = charades_average_precision(SCORES, LABELS)
    # Class 0 ranks videos 0, 1, 2: positives at ranks 1 and 3 → (1/1 + 2/3) / 2.
    assert ap[0] == pytest.approx(100 * (1 + 2 / 3) / 2)
    # Class 2 ranks 1, 2, 0, then video 3 (forced to −inf): both positives first.
    assert ap[2] == pytest.approx(100.0)
    assert math.isnan(ap[1])


def test_reference_map_is_nan_when_a_class_has_no_positive():
    value, per_class = charades_map(SCORES, LABELS)
    assert math.isnan(value)
    assert per_class.shape == (3,)


def test_nanmean_variant_skips_classes_without_positives():
    value, _ = charades_map_nanmean(SCORES, LABELS)
    assert value == pytest.approx((100 * (1 + 2 / 3) / 2 + 100) / 2)


def test_unlabelled_video_scores_would_otherwise_change_the_ap():
    labelled = LABELS.copy()
    labelled[3, 1] = 1  # now video 3 has a label and keeps its 0.99 for class 2
    ap = charades_average_precision(SCORES, labelled)
    assert ap[2] == pytest.approx(100 * (1 / 2 + 2 / 3) / 2)
    assert charades_map(SCORES, labelled)[0] == pytest.approx(np.mean(ap))


def test_labels_must_be_multi_hot():
    with pytest.raises(ValueError, match="multi-hot"):
        charades_map(SCORES, LABELS * 2)
