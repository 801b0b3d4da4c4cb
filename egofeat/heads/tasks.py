"""Training tasks: each owns its model factory, loss, validation metrics and what a run writes.

In the spirit of open_clip's ``TrainingTask``: a task is built from a run's config and its
feature store, and answers every question a run asks, so that neither the trainer nor the
pipelines ever branch on a head's or task's name::

    task = create_task(config, store)            # config.task.name, or the head's default task
    data = task.training_data()                  # train / val (or a held-out part of train)
    model = task.build_model(data.train)
    fit = task.fit(model, data.train, data.val, run_dir=out)
    predictions = task.predict(model, data.val)  # egofeat.eval.Predictions
    metrics = task.metrics(predictions, data.val)

Registered tasks (:func:`~egofeat.heads.registry.list_tasks`): ``classification`` (every
classification head: linear, mlp, tsn, trn, tsm), ``logreg`` (scikit-learn reference, fitted
in one call), ``retrieval`` (video-text projectors, validated by MIR mAP/nDCG), ``xmic``
(video-conditioned text classifiers from class-name text streams) and ``distill`` (a student
head learning from cached teacher logits). A task's options live in the config's ``[task]``
table and are checked by its :attr:`Task.Options` model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import polars as pl
import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from egofeat._util.hashing import stable_fraction
from egofeat.eval import Predictions, score_predictions
from egofeat.eval.predictions import ROW_COLUMNS
from egofeat.heads.config import RunConfig
from egofeat.heads.data import HeadData
from egofeat.heads.loading import load_head_data
from egofeat.heads.predict import LossFn, predict, resolve_device
from egofeat.heads.registry import create_head, register_task, task_class
from egofeat.heads.trainer import DEFAULT_MONITOR, FitResult, Trainer, Validation

__all__ = [
    "ClassificationTask",
    "Subsets",
    "Task",
    "TrainingData",
    "create_task",
    "reserved_videos",
]


@dataclass(frozen=True)
class Subsets:
    """EPIC scoring subsets: unseen participants and tail classes (ids), each optional;
    ``sources`` names the file each came from (for messages)."""

    unseen: frozenset[str] | None = None
    tail_verbs: frozenset[int] | None = None
    tail_nouns: frozenset[int] | None = None
    sources: dict[str, str] = field(default_factory=dict)

    def as_kwargs(self) -> dict[str, Any]:
        return {"unseen_participants": self.unseen, "tail_verbs": self.tail_verbs,
                "tail_nouns": self.tail_nouns}

    def check(self, data: HeadData) -> None:
        """Refuse subsets that cannot apply to ``data`` (checked before any training):
        tail class ids outside the vocabulary, unseen participants none of whom is in it."""
        for name, task in (("tail_verbs", "verb"), ("tail_nouns", "noun")):
            ids = getattr(self, name)
            if ids is None or task not in data.num_classes:
                continue
            size = data.num_classes[task]
            outside = sorted(i for i in ids if not 0 <= i < size)
            if outside:
                raise ValueError(
                    f"{self.sources.get(name, name)}: {task} class ids {outside[:10]} are outside the "
                    f"{size} {task} classes of the vocabulary (0..{size - 1}); give the tail file of "
                    "this dataset's vocabulary"
                )
        if self.unseen and "participant_id" in data.meta.columns:
            present = set(data.meta["participant_id"].drop_nulls().to_list())
            if not self.unseen & present:
                raise ValueError(
                    f"{self.sources.get('unseen', 'unseen')}: none of the unseen participants "
                    f"{sorted(self.unseen)} is among the {len(present)} participants of the scored "
                    f"split (e.g. {sorted(present)[:5]}); give the unseen file of this split"
                )


@dataclass(frozen=True)
class TrainingData:
    """What a task trains and validates on; ``val_name`` is the split, or ``"holdout"``;
    ``reserved``: the train segments kept out of training (``data.reserve``)."""

    train: HeadData
    val: HeadData | None
    val_name: str
    reserved: tuple[str, ...] = ()


def reserved_videos(videos: Sequence[str], fraction: float, seed: int) -> set[str]:
    """The videos ``data.reserve`` keeps out of training: those whose hash of ``(seed, video)``
    falls below ``fraction`` (about that share; the same videos in every run with this seed,
    whatever other videos it loads)."""
    return {video for video in set(videos) if stable_fraction(f"{seed}:{video}") < fraction}


class Task:
    """A training task (see the module docstring). Subclass, set :attr:`Options` and
    :attr:`monitor`, override what differs, and register with ``@register_task(name)``."""

    name: ClassVar[str] = ""
    monitor: ClassVar[str] = DEFAULT_MONITOR
    #: settings (config-file layout) the task's runs start from, under any file / --set / option
    defaults: ClassVar[dict[str, dict[str, Any]]] = {}

    class Options(BaseModel):
        """The task's ``[task]`` options (none by default)."""

        model_config = ConfigDict(extra="forbid")

    def __init__(self, config: RunConfig, store: Any) -> None:
        self.config = config
        self.store = store
        self.options = self.Options.model_validate(config.task.options)

    # ---- data -------------------------------------------------------------------------
    @property
    def training_streams(self) -> list[str]:
        """The streams loaded for training: the head's, plus any the loss reads (predicting
        and scoring read the head's streams only)."""
        return list(self.config.data.streams)

    def load_options(self) -> dict[str, Any]:
        """Extra :func:`~egofeat.heads.loading.load_head_data` arguments this task needs."""
        return {}

    def load(self, split: str | None = None, *, segment_ids: Sequence[str] | None = None,
             streams: Sequence[str] | None = None, **options: Any) -> HeadData:
        """One split (or the rows ``segment_ids``) of the store, as this task reads it;
        ``options`` are further :func:`~egofeat.heads.loading.load_head_data` arguments."""
        config = self.config
        settings = {"dataset": config.data.dataset, "missing_labels": config.data.missing_labels,
                    **self.load_options(), **options}
        data = load_head_data(
            self.store, list(streams or config.data.streams), tasks=config.trainer.tasks,
            splits=None if split is None else [split], segment_ids=segment_ids,
            cache_dir=config.data.cache_dir, **settings,
        )
        data.provenance = {name: data.provenance[name] for name in config.data.streams
                           if name in data.provenance}
        return data

    def training_data(self) -> TrainingData:
        """The train split and the val split; without a val split in the store, a held-out
        ``data.holdout`` of the train videos (no validation when that is 0 or train is tiny).
        ``data.reserve`` first takes its videos out of the train split."""
        data = self.config.data
        splits = set(self.store.segments().select("split").collect()["split"].unique().to_list())
        if data.train_split not in splits:
            raise ValueError(f"the store has no {data.train_split!r} split to train on; it has "
                             f"{sorted(splits)} (set data.train_split)")
        streams = self.training_streams
        train = self.load(data.train_split, streams=streams)
        train, reserved = self._reserve(train)
        if data.val_split and data.val_split in splits:
            return TrainingData(train, self.load(data.val_split, streams=streams), data.val_split,
                                reserved)
        if not data.holdout or len(train) < 10:
            return TrainingData(train, None, "", reserved)
        group = "video_id" if "video_id" in train.meta.columns else None
        train, held = train.holdout(data.holdout, seed=self.config.trainer.seed, group_by=group)
        return TrainingData(train, held, "holdout", reserved)

    def _reserve(self, train: HeadData) -> tuple[HeadData, tuple[str, ...]]:
        """``train`` without the ``data.reserve`` videos, and the reserved segment ids."""
        fraction = self.config.data.reserve
        if not fraction:
            return train, ()
        if "video_id" not in train.meta.columns:
            raise ValueError("data.reserve keeps videos out of training, and the train rows have no video_id")
        videos = train.meta["video_id"].cast(pl.Utf8).to_list()
        kept = reserved_videos(videos, fraction, self.config.trainer.seed)
        mask = np.isin(np.asarray(videos, dtype=object), list(kept))
        if not mask.any() or mask.all():
            raise ValueError(f"data.reserve={fraction} reserves {int(mask.sum())} of {len(train)} train "
                             f"rows ({len(set(videos))} videos); pick a share that leaves some of each")
        return train.subset(~mask), tuple(np.asarray(train.segment_ids)[mask].tolist())

    # ---- the model ----------------------------------------------------------------------
    def build_model(self, train: HeadData) -> nn.Module:
        """A freshly initialised head for ``train`` (seeded with ``trainer.seed``)."""
        torch.manual_seed(self.config.trainer.seed)
        head = self.config.head
        return create_head(head.name, in_dims=self.in_dims(train), num_frames=train.num_frames,
                           num_classes=self.num_classes(train), **head.kwargs)

    def in_dims(self, train: HeadData) -> dict[str, int]:
        """The head's input streams and their dimensions."""
        return {name: train.in_dims[name] for name in self.config.data.streams}

    def num_classes(self, train: HeadData) -> dict[str, int]:
        """Classes of each task the run trains (the data may label more)."""
        return {task: train.num_classes[task] for task in self.config.trainer.tasks}

    # ---- learning -----------------------------------------------------------------------
    def loss(self, model: nn.Module, train: HeadData) -> LossFn | None:
        """The training loss; ``None``: mean cross-entropy over the tasks."""
        return None

    def validation(self, model: nn.Module, train: HeadData, val: HeadData | None) -> Validation | None:
        """The per-epoch validation; ``None``: classification accuracy and loss."""
        return None

    def fit(self, model: nn.Module, train: HeadData, val: HeadData | None, *,
            run_dir: str | Path | None = None, resume: bool = False) -> FitResult:
        """Train ``model`` with the shared :class:`~egofeat.heads.trainer.Trainer`."""
        trainer = Trainer(self.config, loss_fn=self.loss(model, train),
                          validation=self.validation(model, train, val), monitor=self.monitor,
                          run_dir=run_dir)
        return trainer.fit(model, train, val, resume=resume)

    # ---- outputs ------------------------------------------------------------------------
    def outputs(self, model: nn.Module, data: HeadData, device: str = "auto") -> dict[str, np.ndarray]:
        """The model's outputs over ``data``: bf16 autocast on CUDA, exact fp32 on CPUs."""
        resolved = resolve_device(device)
        precision = self.config.trainer.precision if resolved.type == "cuda" else "fp32"
        return predict(model, data, self.config.trainer.eval_batch_size, device=resolved,
                       precision=precision)

    def predict(self, model: nn.Module, data: HeadData, *, split: str = "",
                device: str = "auto") -> Predictions:
        """``data``'s predictions in the one format (class scores, labels, class names)."""
        outputs = self.outputs(model, data, device)
        tasks = [task for task in outputs if task in data.num_classes]
        return Predictions(
            data.segment_ids.tolist(),
            logits={task: outputs[task] for task in tasks},
            labels={task: data.labels[task].cpu().numpy() for task in tasks if task in data.labels},
            class_names={task: list(data.class_names[task]) for task in tasks
                         if len(data.class_names[task]) == outputs[task].shape[1]},
            rows=_rows(data.meta),
            info=self.describe(split),
        )

    def metrics(self, predictions: Predictions, data: HeadData,
                subsets: Subsets | None = None) -> dict[str, float]:
        """The reported metrics of ``predictions`` of ``data`` (EPIC metrics for verb + noun)."""
        return score_predictions(predictions, **(subsets or Subsets()).as_kwargs())

    def run_summary(self, model: nn.Module, train: HeadData) -> dict[str, Any]:
        """What a run of this task reports beyond the common keys (default: nothing)."""
        return {}

    def describe(self, split: str = "") -> dict[str, Any]:
        """What made a prediction: task, head, streams, split (JSON-able)."""
        return {"task": self.name, "head": self.config.head.name,
                "streams": list(self.config.data.streams), "split": split}


@register_task("classification")
class ClassificationTask(Task):
    """Classification heads (linear, mlp, tsn, trn, tsm, ...) trained with cross-entropy."""


def create_task(config: RunConfig, store: Any) -> Task:
    """The task of ``config`` (``config.task.name``, resolved from the head), on ``store``."""
    return task_class(config.task.name)(config, store)


def _rows(meta: pl.DataFrame | None) -> pl.DataFrame | None:
    if meta is None:
        return None
    kept = [c for c in ROW_COLUMNS if c in meta.columns]
    return meta.select(kept) if kept else None

