"""The metric dispatch of classification outputs: arrays in, the published metrics out.

:func:`score` gives the EPIC-KITCHENS-100 action recognition metrics (:mod:`.epic`) when verb
and noun are predicted, otherwise top-1 / top-5 and class-mean accuracy per task; rows whose
label is unknown (``-1``, e.g. a test split) are left out. :func:`score_predictions` applies it
to a :class:`~egofeat.eval.predictions.Predictions`. All accuracies are ×100.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from .epic import epic_action_metrics, mean_class_accuracy, per_class_accuracy
from .predictions import Predictions

__all__ = ["UNLABELLED", "score", "score_predictions"]

UNLABELLED = -1
"""Label of a segment without one."""


def score(
    logits: Mapping[str, np.ndarray],
    labels: Mapping[str, np.ndarray],
    *,
    participant_ids: np.ndarray | None = None,
    unseen_participants: Iterable[str] | None = None,
    tail_verbs: Iterable[int] | None = None,
    tail_nouns: Iterable[int] | None = None,
) -> dict[str, float]:
    """Metrics of task scores ``(N, C)`` against labels ``(N,)`` (``-1``: unknown, skipped).

    With ``verb`` and ``noun`` scores: EPIC-100 metrics (verb, noun and action top-1/top-5,
    unseen participants when ``participant_ids`` and ``unseen_participants`` are given, tail
    classes when the tail lists are). Otherwise per task: ``all_<task>_accuracy_at_1``,
    ``..._at_5`` and ``<task>_mean_class_accuracy``. Empty when no row is labelled.
    """
    tasks = [task for task in logits if task in labels]
    labelled = np.ones(len(next(iter(logits.values()))) if logits else 0, dtype=bool)
    for task in tasks:
        labelled &= np.asarray(labels[task]) != UNLABELLED
    if not tasks or not labelled.any():
        return {}
    scores = {task: np.asarray(logits[task])[labelled] for task in tasks}
    truth = {task: np.asarray(labels[task])[labelled] for task in tasks}
    if {"verb", "noun"} <= set(tasks):
        unseen = list(unseen_participants) if unseen_participants is not None else None
        return epic_action_metrics(
            scores["verb"], scores["noun"], truth["verb"], truth["noun"],
            participant_ids=None if unseen is None or participant_ids is None
            else np.asarray(participant_ids)[labelled],
            unseen_participants=unseen,
            tail_verbs=tail_verbs, tail_nouns=tail_nouns,
        )  # fmt: skip
    result: dict[str, float] = {}
    for task in tasks:
        ranked = np.argsort(-scores[task], axis=1, kind="stable")
        for k in (1, 5):
            hits = (ranked[:, :k] == truth[task][:, None]).any(axis=1)
            result[f"all_{task}_accuracy_at_{k}"] = float(hits.mean() * 100)
        result[f"{task}_mean_class_accuracy"] = mean_class_accuracy(
            per_class_accuracy(scores[task], truth[task], scores[task].shape[1])
        )
    return result


def score_predictions(
    predictions: Predictions,
    *,
    unseen_participants: Iterable[str] | None = None,
    tail_verbs: Iterable[int] | None = None,
    tail_nouns: Iterable[int] | None = None,
) -> dict[str, float]:
    """:func:`score` of a predictions file's logits against its own labels."""
    return score(
        predictions.logits, predictions.labels,
        participant_ids=predictions.column("participant_id"),
        unseen_participants=unseen_participants, tail_verbs=tail_verbs, tail_nouns=tail_nouns,
    )  # fmt: skip
