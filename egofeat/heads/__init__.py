"""Lightweight heads trained on cached features: models, data, trainer, checkpoints.

Typical use::

    from egofeat.heads import Trainer, TrainConfig, create_head, load_head_data

    data = load_head_data(store, ["clip-vit-b16/full", "clip-vit-b16/hand"], splits=["train", "val"])
    train, val = data.split("train"), data.split("val")
    head = create_head("trn", in_dims=train.in_dims, num_frames=train.num_frames,
                       num_classes=train.num_classes)
    Trainer(TrainConfig(epochs=20), run_dir="runs/trn").fit(head, train, val)
    logits = predict(head, val)          # {"verb": (N, 97), "noun": (N, 300)}
"""

from egofeat.heads import models as _models  # noqa: F401  (registers the built-in heads)
from egofeat.heads import retrieval as _retrieval  # noqa: F401  (registers the retrieval head)
from egofeat.heads import xmic as _xmic  # noqa: F401  (registers the xmic head)
from egofeat.heads.baselines import LogisticRegressionBaseline
from egofeat.heads.checkpoint import (
    Checkpoint,
    ProvenanceMismatchError,
    check_provenance,
    load_checkpoint,
    save_checkpoint,
)
from egofeat.heads.config import (
    ConfigError,
    DataConfig,
    HeadConfig,
    RunConfig,
    TrainConfig,
    load_config,
)
from egofeat.heads.data import UNLABELLED, HeadData, HeadDataset, LoadReport, load_head_data
from egofeat.heads.registry import HeadSpec, create_head, list_heads, register_head
from egofeat.heads.trainer import (
    FitResult,
    MultiTaskCrossEntropy,
    Trainer,
    evaluate,
    predict,
)

__all__ = [
    "UNLABELLED",
    "Checkpoint",
    "ConfigError",
    "DataConfig",
    "FitResult",
    "HeadConfig",
    "HeadData",
    "HeadDataset",
    "HeadSpec",
    "LoadReport",
    "LogisticRegressionBaseline",
    "MultiTaskCrossEntropy",
    "ProvenanceMismatchError",
    "RunConfig",
    "TrainConfig",
    "Trainer",
    "check_provenance",
    "create_head",
    "evaluate",
    "list_heads",
    "load_checkpoint",
    "load_config",
    "load_head_data",
    "predict",
    "register_head",
    "save_checkpoint",
]
