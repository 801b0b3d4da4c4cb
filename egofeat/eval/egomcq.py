"""EgoMCQ accuracy (Ego4D multiple-choice video-text questions, ``reference/formats.md`` §5.3).

Each question pairs a text query with 5 candidate clips; the prediction is the candidate with
the highest similarity (the first one on ties) and accuracy is reported per question type:

- ``types == 1``: **inter-video** (the 5 candidates come from different videos; the easy one,
  ≈ 90 % for EgoVLP),
- ``types == 2``: **intra-video** (the 5 candidates come from the same video; ≈ 57–63 %).

EgoVLP's and LaViLa's metric code prints these two labels swapped; these names are right.
"""

from __future__ import annotations

import numpy as np

from ._checks import class_labels, percent, scores_2d

INTER_VIDEO = 1
INTRA_VIDEO = 2


def egomcq_accuracy(
    similarity: np.ndarray, answers: np.ndarray, types: np.ndarray
) -> dict[str, float]:
    """Inter- and intra-video EgoMCQ accuracy (×100; NaN for a type with no questions).

    Args:
        similarity: (Q, 5) query-to-candidate similarities.
        answers: (Q,) index of the correct candidate.
        types: (Q,) 1 = inter-video, 2 = intra-video.
    """
    similarity = scores_2d("similarity", similarity)
    n_questions, n_choices = similarity.shape
    answers = class_labels("answers", answers, n_samples=n_questions, n_classes=n_choices)
    types = np.asarray(types)
    if types.shape != (n_questions,):
        raise ValueError(f"types must have shape ({n_questions},), got {types.shape}")
    unknown = ~np.isin(types, (INTER_VIDEO, INTRA_VIDEO))
    if unknown.any():
        row = int(np.nonzero(unknown)[0][0])
        raise ValueError(
            f"types[{row}] = {types[row].item()!r}: EgoMCQ types are 1 (inter-video) "
            "or 2 (intra-video)"
        )
    correct = similarity.argmax(axis=1) == answers if n_questions else np.zeros(0, dtype=bool)
    return {
        name: percent(float(correct[types == code].sum()), float((types == code).sum()))
        for name, code in (("inter_video", INTER_VIDEO), ("intra_video", INTRA_VIDEO))
    }
