"""Report figures are written as valid PNGs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from egofeat.eval import per_class_accuracy, reliability_bins, shared_novel_metrics
from egofeat.eval.plots import (
    plot_per_class_accuracy,
    plot_reliability_diagram,
    plot_shared_novel,
    plot_training_curves,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    height, width, _ = imread(path).shape
    assert height > 100 and width > 100


def test_training_curves(tmp_path: Path):
    history = [
        {"epoch": e, "train_loss": 2.0 / e, "val_loss": 2.5 / e, "val_verb_accuracy": 10.0 * e}
        for e in range(1, 6)
    ]
    history[2].pop("val_loss")  # a metric missing from one epoch leaves a gap
    path = plot_training_curves(history, tmp_path / "curves.png", title="linear probe")
    assert path == tmp_path / "curves.png"
    assert_png(path)


def test_per_class_accuracy_bars(tmp_path: Path):
    rng = np.random.default_rng(0)
    verbs = per_class_accuracy(rng.standard_normal((400, 97)), rng.integers(0, 60, 400))
    nouns = per_class_accuracy(rng.standard_normal((400, 300)), rng.integers(0, 200, 400))
    path = plot_per_class_accuracy(
        verbs,
        nouns,
        tmp_path / "sub" / "per_class.png",
        tail_verbs=range(40, 97),
        tail_nouns=range(100, 300),
    )
    assert_png(path)


def test_reliability_diagram(tmp_path: Path):
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((500, 10)) * 3
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    bins = reliability_bins(probs, rng.integers(0, 10, 500))
    assert_png(plot_reliability_diagram(bins, tmp_path / "reliability.png"))


def test_shared_vs_novel_grouped_bars(tmp_path: Path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 20, 300)
    methods = {
        name: shared_novel_metrics(
            rng.standard_normal((300, 20)) + skill * np.eye(20)[labels],
            labels,
            range(10),
            range(10, 20),
        )
        for name, skill in (("X-MIC", 2.0), ("zero-shot", 0.5), ("linear probe", 1.0))
    }
    assert_png(plot_shared_novel(methods, tmp_path / "shared_novel.png", title="Ego4D → EPIC"))


def test_plots_refuse_other_formats_and_missing_metrics(tmp_path: Path):
    with pytest.raises(ValueError, match=r"\.png"):
        plot_training_curves([{"loss": 1.0}], tmp_path / "curves.pdf")
    with pytest.raises(ValueError, match=r"method 'a' lacks metrics \['novel_accuracy'"):
        plot_shared_novel({"a": {"shared_accuracy": 1.0}}, tmp_path / "x.png")
