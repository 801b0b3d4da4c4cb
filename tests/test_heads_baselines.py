"""The scikit-learn logistic-regression reference baseline."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from egofeat.heads import HeadData, LogisticRegressionBaseline
from egofeat.heads.baselines import UNSEEN_CLASS_LOGIT, time_mean_features


def blobs(rows: int, seed: int, verb_classes: int = 4) -> HeadData:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(6, 10, generator=torch.Generator().manual_seed(7)) * 3
    verb = torch.randint(0, verb_classes, (rows,), generator=g)
    noun = torch.randint(0, 2, (rows,), generator=g)
    full = centres[verb][:, None] + torch.randn(rows, 3, 10, generator=g)
    hand = centres[noun][:, None, :4] * 2 + torch.randn(rows, 1, 4, generator=g)
    return HeadData(
        features={"full": full.half(), "hand": hand},
        labels={"verb": verb, "noun": noun},
        num_classes={"verb": 6, "noun": 2},
    )


def test_logistic_regression_predicts_logits_in_the_head_layout():
    train, test = blobs(300, seed=0), blobs(100, seed=1)
    baseline = LogisticRegressionBaseline(C=0.5).fit(train)
    logits = baseline.predict(test)
    assert set(logits) == {"verb", "noun"}
    assert logits["verb"].shape == (100, 6) and logits["verb"].dtype == np.float32
    assert logits["noun"].shape == (100, 2)  # binary task: both columns filled
    # classes 4 and 5 never occur in training: they rank last
    assert (logits["verb"][:, 4:] == UNSEEN_CLASS_LOGIT).all()
    for task in ("verb", "noun"):
        accuracy = (logits[task].argmax(1) == test.labels[task].numpy()).mean()
        assert accuracy > 0.95, (task, accuracy)


def test_time_mean_features_concatenate_streams():
    data = blobs(5, seed=0)
    features = time_mean_features(data)
    assert features.shape == (5, 14) and features.dtype == np.float32
    np.testing.assert_allclose(features[:, 10:], data.features["hand"][:, 0].numpy())


def test_baseline_errors():
    data = blobs(20, seed=0)
    with pytest.raises(RuntimeError, match="fit"):
        LogisticRegressionBaseline().predict(data)
    with pytest.raises(KeyError, match="no labels for task 'action'"):
        LogisticRegressionBaseline(tasks=["action"]).fit(data)
    data.labels["noun"][:] = 1
    with pytest.raises(ValueError, match="at least 2 classes"):
        LogisticRegressionBaseline(tasks=["noun"]).fit(data)
