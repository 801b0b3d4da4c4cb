"""Run folders: what a training run writes, and how later commands read it back.

A run folder holds::

    run.json                      store, streams, tasks, head, task, the full run config, and
                                  the summary of the finished run (epochs, parameters, seconds)
    metrics.jsonl                 one record per epoch (the trainer)
    last.pt / best.pt             checkpoints (model, config, class names, stream provenance)
    metrics.json                  the reported metrics of each scored split
    reserved.json                 with data.reserve: the train segments kept out of training
    predictions-<split>.parquet   the one prediction format (egofeat.eval.predictions)
    plots/                        training curves, per-class accuracy (head vs tail classes)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from egofeat._util.jsonsafe import jsonable
from egofeat.eval import Predictions, load_predictions, per_class_accuracy, save_predictions
from egofeat.eval.predictions import class_names_of
from egofeat.heads import Checkpoint, RunConfig, Subsets, load_checkpoint
from egofeat.heads.trainer import BEST_CHECKPOINT, LAST_CHECKPOINT

__all__ = ["METRICS_FILE", "RESERVED_FILE", "RUN_FILE", "RunFolder"]

RUN_FILE = "run.json"
METRICS_FILE = "metrics.json"
RESERVED_FILE = "reserved.json"


@dataclass
class RunFolder:
    """A run folder (see the module docstring) and what its ``run.json`` says."""

    path: Path
    info: dict[str, Any]

    @classmethod
    def create(cls, path: str | Path, *, store: str, config: RunConfig, val_split: str,
               extra: Mapping[str, Any] | None = None) -> RunFolder:
        """Start a run folder for ``config`` on ``store`` (writes ``run.json``)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        info = {
            "store": store, "streams": list(config.data.streams),
            "tasks": list(config.trainer.tasks), "head": config.head.name,
            "task": config.task.name, "config": config.to_dict(), "val_split": val_split,
            **(extra or {}),
        }
        (path / RUN_FILE).write_text(json.dumps(jsonable(info), indent=1))
        return cls(path, info)

    @classmethod
    def open(cls, path: str | Path) -> RunFolder:
        """An existing run folder (FileNotFoundError naming the command that makes one)."""
        path = Path(path)
        if not (path / RUN_FILE).exists():
            raise FileNotFoundError(f"{path} is not a run folder (no {RUN_FILE}); train one with "
                                    "`egofeat train`")
        return cls(path, json.loads((path / RUN_FILE).read_text()))

    def record(self, summary: Mapping[str, Any]) -> None:
        """Keep a finished run's summary (epochs, parameters, seconds, metrics) in ``run.json``."""
        self.info["summary"] = dict(summary)
        (self.path / RUN_FILE).write_text(json.dumps(jsonable(self.info), indent=1))

    @property
    def config(self) -> RunConfig:
        return RunConfig.from_dict(self.info["config"], source=str(self.path / RUN_FILE))

    @property
    def store(self) -> str:
        return self.info["store"]

    def checkpoint_path(self) -> Path:
        """``best.pt``, else ``last.pt``."""
        for name in (BEST_CHECKPOINT, LAST_CHECKPOINT):
            if (self.path / name).exists():
                return self.path / name
        raise FileNotFoundError(f"run {self.path} has no checkpoint ({BEST_CHECKPOINT} or "
                                f"{LAST_CHECKPOINT})")

    def checkpoint(self) -> Checkpoint:
        return load_checkpoint(self.checkpoint_path())

    # ---- rows kept out of training -------------------------------------------------------
    def write_reserved(self, split: str, segment_ids: list[str] | tuple[str, ...], share: float) -> None:
        """List the ``split`` segments ``data.reserve`` kept out of training."""
        record = {"split": split, "share": share, "segment_ids": list(segment_ids)}
        (self.path / RESERVED_FILE).write_text(json.dumps(record))

    def reserved(self) -> tuple[str, set[str]]:
        """``(split, segment ids)`` this run kept out of training (an empty set when none)."""
        file = self.path / RESERVED_FILE
        if not file.exists():
            return self.info.get("config", {}).get("data", {}).get("train_split", "train"), set()
        record = json.loads(file.read_text())
        return record["split"], set(record["segment_ids"])

    # ---- predictions and metrics --------------------------------------------------------
    def predictions_path(self, split: str) -> Path:
        return self.path / f"predictions-{split}.parquet"

    def write_predictions(self, predictions: Predictions, split: str) -> Path:
        return save_predictions(predictions, self.predictions_path(split))

    def read_predictions(self, split: str) -> Predictions:
        path = self.predictions_path(split)
        if not path.exists():
            raise FileNotFoundError(f"run {self.path} has no predictions on {split!r}: "
                                    f"`egofeat predict {self.path} --split {split}` writes them")
        return load_predictions(path)

    def metrics(self) -> dict[str, Any]:
        """``metrics.json``: split -> metrics (empty before any split was scored)."""
        file = self.path / METRICS_FILE
        return json.loads(file.read_text()) if file.exists() else {}

    def write_metrics(self, split: str, metrics: Mapping[str, float]) -> None:
        scored = self.metrics()
        scored[split] = dict(metrics)
        (self.path / METRICS_FILE).write_text(json.dumps(jsonable(scored), indent=1))

    # ---- plots --------------------------------------------------------------------------
    def plot_curves(self, history: list[dict[str, Any]]) -> None:
        from egofeat.eval.plots import plot_training_curves

        numeric = [{k: v for k, v in record.items()
                    if isinstance(v, (int, float)) and k not in ("seconds", "lr")}
                   for record in history]
        if numeric:
            plot_training_curves(numeric, self.path / "plots" / "training_curves.png",
                                 title=self.path.name)

    def plot_per_class(self, predictions: Predictions, split: str, subsets: Subsets) -> None:
        """Per-class top-1 of verbs and nouns (tail classes coloured), when both are scored."""
        if not {"verb", "noun"} <= set(predictions.logits):
            return
        from egofeat.eval.plots import plot_per_class_accuracy

        accuracy = {}
        for task in ("verb", "noun"):
            labels = predictions.labels.get(task)
            keep = labels >= 0 if labels is not None else np.zeros(0, bool)
            if not keep.any():
                return
            logits = predictions.logits[task]
            accuracy[task] = per_class_accuracy(logits[keep], labels[keep], logits.shape[1])
        plot_per_class_accuracy(accuracy["verb"], accuracy["noun"],
                                self.path / "plots" / f"per_class_{split}.png",
                                tail_verbs=subsets.tail_verbs or (), tail_nouns=subsets.tail_nouns or (),
                                verb_names=class_names_of(predictions, "verb"),
                                noun_names=class_names_of(predictions, "noun"),
                                title=f"{self.path.name}: per-class top-1 on {split}")
