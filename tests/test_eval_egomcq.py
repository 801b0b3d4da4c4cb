"""EgoMCQ inter/intra-video accuracy, with the type codes labelled right."""

from __future__ import annotations

import math

import numpy as np
import pytest

from egofeat.eval import egomcq_accuracy


def test_type_1_is_inter_video_and_type_2_intra_video():
    similarity = np.array(
        [
            [0.9, 0.1, 0.0, 0.0, 0.0],  # inter, answer 0: right
            [0.9, 0.1, 0.0, 0.0, 0.0],  # inter, answer 1: wrong
            [0.0, 0.0, 0.5, 0.1, 0.2],  # intra, answer 2: right
            [0.0, 0.0, 0.0, 0.0, 0.3],  # intra, answer 4: right
        ]
    )
    accuracy = egomcq_accuracy(similarity, np.array([0, 1, 2, 4]), np.array([1, 1, 2, 2]))
    assert accuracy == {"inter_video": 50.0, "intra_video": 100.0}


def test_ties_pick_the_first_candidate_and_a_missing_type_is_nan():
    accuracy = egomcq_accuracy(np.ones((2, 5)), np.array([0, 1]), np.array([2, 2]))
    assert accuracy["intra_video"] == 50.0
    assert math.isnan(accuracy["inter_video"])


def test_unknown_types_are_refused():
    with pytest.raises(ValueError, match=r"types\[1\] = 3"):
        egomcq_accuracy(np.ones((2, 5)), np.array([0, 1]), np.array([1, 3]))
