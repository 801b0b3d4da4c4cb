"""A scikit-learn reference: logistic regression on standardized time-mean features.

Its predictions have the same layout as the torch heads' (task -> logits ``(N, C_task)``), so
``egofeat.eval`` scores them the same way. It trains on the CPU in one call, without
epochs, and is the number a new head has to beat.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from torch import nn

from egofeat.heads.data import HeadData
from egofeat.heads.registry import create_head, register_head

__all__ = ["UNSEEN_CLASS_LOGIT", "LogisticRegressionBaseline", "time_mean_features"]

UNSEEN_CLASS_LOGIT = -1e9
"""Logit given to classes absent from the training labels (they rank last)."""


def time_mean_features(data: HeadData) -> np.ndarray:
    """``(N, sum D)`` float32: each stream averaged over frames, streams concatenated in order."""
    return np.concatenate(
        [x.float().mean(dim=1).numpy() for x in data.features.values()], axis=1
    ).astype(np.float32, copy=False)


class LogisticRegressionBaseline:
    """One multinomial ``LogisticRegression`` per task on standardized time-mean features.

    Args:
        tasks: tasks to fit (label columns of the data).
        C: inverse regularisation strength (scikit-learn's ``C``).
        max_iter: L-BFGS iterations.
        seed: ``random_state`` of the solver.
    """

    def __init__(
        self,
        tasks: Iterable[str] = ("verb", "noun"),
        *,
        C: float = 1.0,
        max_iter: int = 1000,
        seed: int = 0,
    ) -> None:
        self.tasks = tuple(tasks)
        self.C = C
        self.max_iter = max_iter
        self.seed = seed
        self.scaler: StandardScaler | None = None
        self.models: dict[str, LogisticRegression] = {}
        self.num_classes: dict[str, int] = {}

    def fit(self, data: HeadData) -> LogisticRegressionBaseline:
        """Fit the scaler and one classifier per task on the labelled rows of ``data``."""
        features = time_mean_features(data)
        self.scaler = StandardScaler().fit(features)
        features = self.scaler.transform(features)
        for task in self.tasks:
            if task not in data.labels:
                raise KeyError(f"data has no labels for task {task!r}; tasks: {data.tasks}")
            labelled = data.labelled(task)
            labels = data.labels[task].numpy()[labelled]
            if len(np.unique(labels)) < 2:
                raise ValueError(
                    f"task {task!r}: logistic regression needs at least 2 classes in the "
                    f"labelled training rows, found {np.unique(labels).tolist()}"
                )
            model = LogisticRegression(C=self.C, max_iter=self.max_iter, random_state=self.seed)
            self.models[task] = model.fit(features[labelled], labels)
            self.num_classes[task] = data.num_classes[task]
        return self

    def predict(self, data: HeadData) -> dict[str, np.ndarray]:
        """Task -> ``(N, C_task)`` float32 logits (``decision_function``), in row order.

        Classes never seen in training get :data:`UNSEEN_CLASS_LOGIT`.
        """
        if self.scaler is None:
            raise RuntimeError("call fit() before predict()")
        features = self.scaler.transform(time_mean_features(data))
        outputs = {}
        for task, model in self.models.items():
            scores = model.decision_function(features)
            if scores.ndim == 1:  # two classes: sklearn gives the score of classes_[1] only
                scores = np.stack([np.zeros_like(scores), scores], axis=1)
            logits = np.full((len(data), self.num_classes[task]), UNSEEN_CLASS_LOGIT, np.float32)
            logits[:, model.classes_] = scores
            outputs[task] = logits
        return outputs


@register_head("logreg")
def logreg(*, in_dims, num_frames, num_classes, C: float = 1.0) -> nn.Module:
    """scikit-learn LogisticRegression reference, fitted in one call by ``egofeat train``.

    This entry builds the ``linear`` head its fitted weights fold into (standardization
    included), so ``--head logreg`` runs are ordinary linear-probe checkpoints afterwards.
    """
    return create_head("linear", in_dims=in_dims, num_frames=num_frames, num_classes=num_classes)
