"""Metrics, results files, challenge submissions and report plots.

Inputs are plain numpy arrays (and Python sequences); this layer imports nothing else of
egofeat. Accuracy, AP, mAP and nDCG values are percentages (×100) as published; calibration
values (ECE, reliability bins) are fractions in [0, 1]. Definitions follow the official
scorers; each module's docstring states them. Figures live in :mod:`egofeat.eval.plots`
(imported on its own, so that scoring does not load matplotlib).
"""

from .calibration import ReliabilityBins, expected_calibration_error, reliability_bins
from .charades import charades_average_precision, charades_map, charades_map_nanmean
from .crossdataset import harmonic_mean, shared_novel_metrics
from .egomcq import egomcq_accuracy
from .epic import (
    ACTION_ID_BASE,
    NOUN_CLASSES,
    VERB_CLASSES,
    action_scores,
    epic_action_metrics,
    mean_class_accuracy,
    per_class_accuracy,
)
from .mir import mir_map, mir_metrics, mir_ndcg, mir_relevancy, mir_relevancy_blocks, score_mir
from .predictions import Predictions, fuse_predictions, load_predictions, save_predictions
from .results import UnsafePickleError
from .scoring import UNLABELLED, score, score_predictions
from .submission import write_submission

__all__ = [
    "ACTION_ID_BASE",
    "NOUN_CLASSES",
    "VERB_CLASSES",
    "UNLABELLED",
    "Predictions",
    "ReliabilityBins",
    "UnsafePickleError",
    "action_scores",
    "charades_average_precision",
    "charades_map",
    "charades_map_nanmean",
    "egomcq_accuracy",
    "epic_action_metrics",
    "expected_calibration_error",
    "fuse_predictions",
    "harmonic_mean",
    "load_predictions",
    "mean_class_accuracy",
    "mir_map",
    "mir_metrics",
    "mir_ndcg",
    "mir_relevancy",
    "mir_relevancy_blocks",
    "per_class_accuracy",
    "reliability_bins",
    "save_predictions",
    "score",
    "score_mir",
    "score_predictions",
    "shared_novel_metrics",
    "write_submission",
]
