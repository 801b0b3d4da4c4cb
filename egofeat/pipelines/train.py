"""`egofeat train`: a training task run on store streams into a run folder.

:func:`train_run` is the same for every task (classification heads, the logistic-regression
reference, X-MIC, retrieval, distilled students): the task (``egofeat.heads.tasks``) says how
to load, build, train, validate and predict; this module says where things are written
(:mod:`.rundir`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from egofeat.heads import RunConfig, Subsets, create_task, resolve_device
from egofeat.pipelines.rundir import RunFolder
from egofeat.store import FeatureStore

__all__ = ["count_parameters", "train_run"]


def count_parameters(model: torch.nn.Module) -> int:
    """Trainable parameters of ``model``."""
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))


def train_run(
    store_path: str | Path,
    out: str | Path,
    config: RunConfig,
    *,
    resume: bool = False,
    subsets: Subsets | None = None,
    run_info: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train the task of ``config`` on the store's streams into run folder ``out``, then
    predict and score the validation split (its predictions and metrics go into the folder).

    ``run_info`` adds keys to ``run.json``. Returns a JSON-able summary.
    """
    started = time.perf_counter()
    if not config.data.streams:
        raise ValueError("no streams to train on: pass --stream NAME[,NAME] or set data.streams")
    resolve_device(config.trainer.device)  # a device this machine lacks: refused before any write
    store = FeatureStore.open(store_path)
    task = create_task(config, store)
    data = task.training_data()
    if subsets is not None:  # a bad tail or unseen file fails here: before training, no run folder
        subsets.check(data.val if data.val is not None else data.train)
    run = RunFolder.create(out, store=str(store.path), config=config, val_split=data.val_name,
                           extra=run_info)
    if data.reserved:
        run.write_reserved(config.data.train_split, data.reserved, config.data.reserve)
    model = task.build_model(data.train)
    fit = task.fit(model, data.train, data.val, run_dir=run.path, resume=resume)
    summary: dict[str, Any] = {
        "run": str(run.path), "task": task.name, "head": config.head.name,
        "streams": list(config.data.streams), "epochs": len(fit.history),
        "best_epoch": fit.best_epoch, "stopped_early": fit.stopped_early,
        "train_rows": len(data.train), "reserved_rows": len(data.reserved),
        "trainable_parameters": count_parameters(model),
        "monitor": config.trainer.monitor or task.monitor, **task.run_summary(model, data.train),
    }
    if data.val is not None:
        predictions = task.predict(model, data.val, split=data.val_name,
                                   device=config.trainer.device)
        run.write_predictions(predictions, data.val_name)
        summary["metrics"] = task.metrics(predictions, data.val, subsets)
        run.write_metrics(data.val_name, summary["metrics"])
        run.plot_per_class(predictions, data.val_name, subsets or Subsets())
    run.plot_curves(fit.history)
    summary["seconds"] = round(time.perf_counter() - started, 1)
    run.record(summary)
    return summary
