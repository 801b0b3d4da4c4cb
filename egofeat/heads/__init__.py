"""Lightweight heads trained on cached features: models, tasks, data, trainer, checkpoints.

Typical use::

    from egofeat.heads import Trainer, TrainConfig, create_head, load_head_data, predict

    train = load_head_data(store, ["clip-vit-b16/full", "clip-vit-b16/hand"], splits=["train"])
    val = load_head_data(store, ["clip-vit-b16/full", "clip-vit-b16/hand"], splits=["val"])
    head = create_head("trn", in_dims=train.in_dims, num_frames=train.num_frames,
                       num_classes=train.num_classes)
    Trainer(TrainConfig(epochs=20), run_dir="runs/trn").fit(head, train, val)
    logits = predict(head, val)          # {"verb": (N, 97), "noun": (N, 300)}

Runs of a whole config go through a training task (:mod:`egofeat.heads.tasks`), which owns the
model factory, the loss, the validation and the predictions of its kind of head.
"""

from egofeat.heads import models as _models  # noqa: F401  (registers the built-in heads)
from egofeat.heads.baselines import LogisticRegressionBaseline, LogRegTask
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
    TaskConfig,
    TrainConfig,
    load_config,
)
from egofeat.heads.data import UNLABELLED, HeadData, HeadDataset, LoadReport
from egofeat.heads.distill import DistillTask
from egofeat.heads.loading import load_head_data
from egofeat.heads.predict import DeviceError, evaluate, predict, resolve_device
from egofeat.heads.registry import (
    HeadSpec,
    create_head,
    head_task,
    list_heads,
    list_tasks,
    register_head,
    register_task,
)
from egofeat.heads.retrieval import RetrievalTask
from egofeat.heads.tasks import ClassificationTask, Subsets, Task, TrainingData, create_task
from egofeat.heads.trainer import FitResult, MultiTaskCrossEntropy, Trainer
from egofeat.heads.xmic_task import XMICTask

__all__ = [
    "UNLABELLED",
    "Checkpoint",
    "ClassificationTask",
    "ConfigError",
    "DataConfig",
    "DeviceError",
    "DistillTask",
    "FitResult",
    "HeadConfig",
    "HeadData",
    "HeadDataset",
    "HeadSpec",
    "LoadReport",
    "LogRegTask",
    "LogisticRegressionBaseline",
    "MultiTaskCrossEntropy",
    "ProvenanceMismatchError",
    "RetrievalTask",
    "RunConfig",
    "Subsets",
    "Task",
    "TaskConfig",
    "TrainConfig",
    "Trainer",
    "TrainingData",
    "XMICTask",
    "check_provenance",
    "create_head",
    "create_task",
    "evaluate",
    "head_task",
    "list_heads",
    "list_tasks",
    "load_checkpoint",
    "load_config",
    "load_head_data",
    "predict",
    "register_head",
    "register_task",
    "resolve_device",
    "save_checkpoint",
]
