"""`egofeat eval / predict / fuse / submit`: runs' predictions, scored and combined.

Every command here speaks the one prediction format (:mod:`egofeat.eval.predictions`): a run's
``predictions-<split>.parquet`` goes unchanged into ``fuse``, ``submit`` and ``eval --results``;
EPIC-KITCHENS results files (``.pkl`` / ``.pt``) are read too.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from egofeat import eval as metrics_lib
from egofeat._util.jsonsafe import jsonable
from egofeat.eval import Predictions
from egofeat.heads import HeadData, Subsets, Task, check_provenance, create_task
from egofeat.pipelines.rundir import RunFolder
from egofeat.store import FeatureStore

__all__ = [
    "SubsetFiles",
    "evaluate_predictions_file",
    "evaluate_run",
    "fuse_files",
    "predict_run",
    "run_predictions",
    "submit_file",
]


@dataclass
class SubsetFiles:
    """Optional EPIC files defining the unseen-participant and tail-class subsets."""

    unseen: Path | None = None
    tail_verbs: Path | None = None
    tail_nouns: Path | None = None

    def load(self) -> Subsets:
        from egofeat.sources import load_tail_classes, load_unseen_participants

        return Subsets(
            unseen=frozenset(load_unseen_participants(self.unseen)) if self.unseen else None,
            tail_verbs=frozenset(load_tail_classes(self.tail_verbs)) if self.tail_verbs else None,
            tail_nouns=frozenset(load_tail_classes(self.tail_nouns)) if self.tail_nouns else None,
            sources={name: str(path) for name, path in (("unseen", self.unseen), ("tail_verbs", self.tail_verbs),
                                                       ("tail_nouns", self.tail_nouns)) if path},
        )


def run_predictions(run: str | Path, split: str, *, store_path: str | Path | None = None,
                    device: str = "auto") -> tuple[Predictions, HeadData, Task]:
    """A trained run's predictions on a split of its store (provenance checked first)."""
    folder = RunFolder.open(run)
    checkpoint = folder.checkpoint()
    store = FeatureStore.open(store_path or folder.store)
    config = folder.config
    check_provenance(checkpoint, {name: store.stream(name).info.provenance for name in config.data.streams})
    task = create_task(config, store)
    data = task.load(split)
    predictions = task.predict(checkpoint.build_model(), data, split=split, device=device)
    return predictions, data, task


def evaluate_run(run: str | Path, split: str = "val", *, store_path: str | Path | None = None,
                 subsets: SubsetFiles | None = None, device: str = "auto") -> dict[str, Any]:
    """Score a trained run on one split of its store; writes its predictions and metrics."""
    loaded = (subsets or SubsetFiles()).load()
    predictions, data, task = run_predictions(run, split, store_path=store_path, device=device)
    loaded.check(data)
    folder = RunFolder.open(run)
    folder.write_predictions(predictions, split)
    metrics = task.metrics(predictions, data, loaded)
    folder.write_metrics(split, metrics)
    folder.plot_per_class(predictions, split, loaded)
    return {"run": str(run), "split": split, "rows": len(predictions), "metrics": jsonable(metrics)}


def predict_run(run: str | Path, split: str, out: str | Path, *, store_path: str | Path | None = None,
                device: str = "auto") -> dict[str, Any]:
    """Write a run's predictions on a split: ``.parquet`` (the format), or ``.pkl`` / ``.npz``
    (verb and noun scores for EPIC tools)."""
    predictions, _, _ = run_predictions(run, split, store_path=store_path, device=device)
    metrics_lib.save_predictions(predictions, out)
    widths = {task: int(logits.shape[1]) for task, logits in predictions.logits.items()}
    return {"run": str(run), "split": split, "rows": len(predictions), "classes": widths, "out": str(out)}


def evaluate_predictions_file(path: str | Path, annotations: str | Path, *, subsets: SubsetFiles,
                              allow_pickle: bool = False) -> dict[str, Any]:
    """Score a predictions file (ours, or an EPIC results file) against an annotation file."""
    from egofeat import sources

    predictions = metrics_lib.load_predictions(path)
    table = sources.load_epic100(annotations, allow_pickle=allow_pickle)
    present = table.join(pl.DataFrame({"segment_id": predictions.segment_ids}), on="segment_id", how="semi")
    if present.height == 0:
        raise ValueError(f"no segment id of {path} is in {annotations}")
    selected = predictions.select(present["segment_id"].to_list())
    loaded = subsets.load()
    labels = {task: present[f"{task}_class"].fill_null(-1).to_numpy() for task in ("verb", "noun")
              if f"{task}_class" in present.columns and task in selected.logits}
    metrics = metrics_lib.score(
        selected.logits, labels, participant_ids=present["participant_id"].to_numpy(),
        **loaded.as_kwargs(),
    )
    return {"results": str(path), "annotations": str(annotations), "scored": present.height,
            "annotations_without_results": table.height - present.height, "metrics": jsonable(metrics)}


def fuse_files(files: Iterable[str | Path], out: str | Path) -> dict[str, Any]:
    """Average pre-softmax scores of several predictions files (aligned by segment id)."""
    files = list(files)
    fused = metrics_lib.fuse_predictions([metrics_lib.load_predictions(f) for f in files])
    metrics_lib.save_predictions(fused, out)
    return {"inputs": [str(f) for f in files], "rows": len(fused), "out": str(out)}


def submit_file(path: str | Path, out: str | Path, *, sls_pt: int = 2, sls_tl: int = 3,
                sls_td: int = 4) -> dict[str, Any]:
    """The EPIC-KITCHENS challenge submission zip (``test.json``) of a predictions file."""
    predictions = metrics_lib.load_predictions(path)
    metrics_lib.write_submission(predictions, out, sls_pt=sls_pt, sls_tl=sls_tl, sls_td=sls_td)
    return {"results": str(path), "rows": len(predictions), "out": str(out)}
