"""A scikit-learn reference: logistic regression on standardized time-mean features.

Its predictions have the same layout as the torch heads' (task -> logits ``(N, C_task)``), so
``egofeat.eval`` scores them the same way. It trains on the CPU in one call, without
epochs, and is the number a new head has to beat. As the ``logreg`` task
(``egofeat train --head logreg``), the fitted model folds into an ordinary ``linear`` head
checkpoint, so `egofeat eval` and `predict` treat it like any run.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from egofeat.heads.checkpoint import Checkpoint, save_checkpoint
from egofeat.heads.data import HeadData
from egofeat.heads.registry import create_head, register_head, register_task
from egofeat.heads.tasks import Task
from egofeat.heads.trainer import BEST_CHECKPOINT, FitResult

if TYPE_CHECKING:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

__all__ = ["UNSEEN_CLASS_LOGIT", "LogRegTask", "LogisticRegressionBaseline", "time_mean_features"]

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
        # scikit-learn (with SciPy) costs about a second to import: only runs that fit load it
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

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


def fold_into_linear(baseline: LogisticRegressionBaseline, model: nn.Module) -> nn.Module:
    """Copy a fitted baseline into a ``linear`` head: the scaler folds into the weights
    (``W' = W / sigma``, ``b' = b - W' mu``); classes never seen in training get
    :data:`UNSEEN_CLASS_LOGIT` as their bias."""
    mean, scale = baseline.scaler.mean_, baseline.scaler.scale_
    with torch.no_grad():
        for task, layer in model.classifier.tasks.items():
            sk = baseline.models[task]
            weight = np.zeros((layer.out_features, layer.in_features))
            bias = np.full(layer.out_features, UNSEEN_CLASS_LOGIT, dtype=np.float64)
            coef, intercept = sk.coef_, sk.intercept_
            if coef.shape[0] == 1:  # binary: sklearn keeps only classes_[1]'s score
                coef, intercept = np.vstack([np.zeros_like(coef), coef]), np.array([0.0, intercept[0]])
            weight[sk.classes_] = coef / scale
            bias[sk.classes_] = intercept - (coef / scale) @ mean
            layer.weight.copy_(torch.from_numpy(weight))
            layer.bias.copy_(torch.from_numpy(bias))
    return model.eval()


@register_task("logreg")
class LogRegTask(Task):
    """The scikit-learn reference, fitted in one call and saved as a ``linear`` head."""

    def fit(self, model: nn.Module, train: HeadData, val: HeadData | None, *,
            run_dir: str | Path | None = None, resume: bool = False) -> FitResult:
        config = self.config
        options = dict(config.head.kwargs)
        baseline = LogisticRegressionBaseline(config.trainer.tasks, C=float(options.pop("C", 1.0)),
                                              seed=config.trainer.seed).fit(train)
        fold_into_linear(baseline, model)
        if run_dir is not None:
            checkpoint = Checkpoint(model_state=model.state_dict(), head=model.head_spec,
                                    config=config.to_dict(), class_names=train.class_names or {},
                                    provenance=train.provenance, epoch=1)
            save_checkpoint(Path(run_dir) / BEST_CHECKPOINT, checkpoint)
        return FitResult(history=[], best_epoch=1, best_score=None, stopped_early=False,
                         run_dir=Path(run_dir) if run_dir is not None else None)


@register_head("logreg", task="logreg")
def logreg(*, in_dims, num_frames, num_classes, C: float = 1.0) -> nn.Module:
    """scikit-learn LogisticRegression reference, fitted in one call by ``egofeat train``.

    This entry builds the ``linear`` head its fitted weights fold into (standardization
    included), so ``--head logreg`` runs are ordinary linear-probe checkpoints afterwards.
    """
    del C  # the fitting option, read by the logreg task
    return create_head("linear", in_dims=in_dims, num_frames=num_frames, num_classes=num_classes)
