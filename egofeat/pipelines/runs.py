"""Training and evaluation runs on store streams: a run folder per trained head.

A run folder holds::

    run.json             store, streams, tasks, head and the full run config
    metrics.jsonl        one record per epoch (the trainer)
    last.pt / best.pt    checkpoints (model, config, class names, stream provenance)
    metrics.json         EPIC-style metrics of the evaluated split(s)
    predictions-<split>.parquet   segment ids, labels and logits per task
    plots/               training curves, per-class accuracy (head vs tail classes)
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from egofeat import eval as metrics_lib
from egofeat.heads import HeadData, LogisticRegressionBaseline, create_head, load_head_data
from egofeat.heads import retrieval as _retrieval  # noqa: F401  (registers the retrieval head)
from egofeat.heads.baselines import UNSEEN_CLASS_LOGIT
from egofeat.heads.checkpoint import Checkpoint, check_provenance, load_checkpoint, save_checkpoint
from egofeat.heads.config import RunConfig, load_config
from egofeat.heads.data import UNLABELLED
from egofeat.heads.trainer import (
    BEST_CHECKPOINT,
    LAST_CHECKPOINT,
    FitResult,
    LossFn,
    Trainer,
    predict,
    resolve_device,
)
from egofeat.store import FeatureStore

RUN_FILE = "run.json"
METRICS_FILE = "metrics.json"


@dataclass
class SubsetFiles:
    """Optional EPIC files defining the unseen-participant and tail-class subsets."""

    unseen: Path | None = None
    tail_verbs: Path | None = None
    tail_nouns: Path | None = None

    def load(self) -> dict[str, Any]:
        from egofeat.sources import load_tail_classes, load_unseen_participants

        return {
            "unseen": load_unseen_participants(self.unseen) if self.unseen else None,
            "tail_verbs": load_tail_classes(self.tail_verbs) if self.tail_verbs else None,
            "tail_nouns": load_tail_classes(self.tail_nouns) if self.tail_nouns else None,
        }


# ---- training ------------------------------------------------------------------------------


def resolve_config(
    config_file: str | Path | None,
    overrides: Sequence[str],
    *,
    streams: Sequence[str],
    head: str | None,
    tasks: Sequence[str] | None,
    epochs: int | None,
    device: str | None,
    progress: bool,
) -> RunConfig:
    """The run config: a file, then ``key=value`` overrides, then the explicit CLI options."""
    extra = list(overrides)
    if head:
        extra.append(f"head.name={head}")
    if epochs:
        extra.append(f"trainer.epochs={epochs}")
    if device:
        extra.append(f"trainer.device={device}")
    if tasks:
        extra.append(f"trainer.tasks={json.dumps(list(tasks))}")
    extra.append(f"trainer.progress={json.dumps(progress)}")
    config = load_config(config_file, extra)
    if streams:
        config.data.streams = list(streams)
    if not config.data.streams:
        raise ValueError("no streams to train on: pass --stream NAME[,NAME] or set data.streams in the config")
    return config


def load_split_data(store: FeatureStore, config: RunConfig, split: str, *,
                    extra_streams: Sequence[str] = (), **kwargs: Any) -> HeadData:
    """One split of the store's streams as HeadData (labels of the run's tasks).

    ``extra_streams`` are loaded on the same rows for the loss to read (e.g. cached teacher
    logits); the head does not read them, so the provenance kept (for checkpoints) omits them.
    """
    data = load_head_data(store, [*config.data.streams, *extra_streams], tasks=config.trainer.tasks,
                          splits=[split], dataset=config.data.dataset, cache_dir=config.data.cache_dir,
                          **kwargs)
    data.provenance = {name: data.provenance[name] for name in config.data.streams}
    return data


def train_run(
    store_path: str | Path,
    out: str | Path,
    config: RunConfig,
    *,
    resume: bool = False,
    subsets: SubsetFiles | None = None,
    loss_fn: LossFn | None = None,
    extra_streams: Sequence[str] = (),
    run_info: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train a head on store streams into run folder ``out``, then evaluate it on the val split.

    ``loss_fn`` replaces the cross-entropy; ``extra_streams`` are loaded beside the head's streams
    for it (see :func:`load_split_data`); ``run_info`` adds keys to ``run.json``.
    """
    if config.head.name == "retrieval":  # contrastive losses, validated by MIR metrics
        from egofeat.pipelines.retrieval import train_retrieval_run

        return train_retrieval_run(store_path, out, config, resume=resume)
    started = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    store = FeatureStore.open(store_path)
    train, val, val_name = _train_val(store, config, extra_streams)
    (out / RUN_FILE).write_text(json.dumps({
        "store": str(store.path), "streams": config.data.streams, "tasks": list(config.trainer.tasks),
        "head": config.head.name, "config": config.to_dict(), "val_split": val_name, **(run_info or {}),
    }, indent=1))
    if config.head.name == LOGREG:
        model, fit = fit_logreg(train, config, out)
    else:
        torch.manual_seed(config.trainer.seed)
        in_dims = {name: train.in_dims[name] for name in config.data.streams}
        if config.head.name == "xmic":  # its classifier is read from the store's class text streams
            from egofeat.pipelines.xmic import create_xmic_head

            model = create_xmic_head(store, config, train)
        else:
            model = create_head(config.head.name, in_dims=in_dims, num_frames=train.num_frames,
                                num_classes=train.num_classes, **config.head.kwargs)
        fit = Trainer(config, loss_fn=loss_fn, run_dir=out).fit(model, train, val, resume=resume)
    summary: dict[str, Any] = {
        "run": str(out), "head": config.head.name, "streams": config.data.streams,
        "epochs": len(fit.history), "best_epoch": fit.best_epoch, "stopped_early": fit.stopped_early,
        "train_rows": len(train), "trainable_parameters": count_parameters(model),
    }
    if val is not None:
        summary["metrics"] = report_split(out, model, val, val_name, config, subsets or SubsetFiles())
    _plot_curves(out, fit.history)
    summary["seconds"] = round(time.perf_counter() - started, 1)
    return summary


#: the scikit-learn reference baseline's head name (not a torch head: fitted in one call)
LOGREG = "logreg"


def fit_logreg(train: HeadData, config: RunConfig, out: Path) -> tuple[torch.nn.Module, FitResult]:
    """scikit-learn LogisticRegression on standardized time-mean features, saved as a ``linear`` head.

    The scaler folds into the linear layer (W' = W / sigma, b' = b - W' mu), so the run's
    checkpoint is an ordinary ``linear`` head that `egofeat eval` and `predict` can use.
    """
    options = dict(config.head.kwargs)
    baseline = LogisticRegressionBaseline(config.trainer.tasks, C=float(options.pop("C", 1.0)),
                                          seed=config.trainer.seed).fit(train)
    if options:
        raise ValueError(f"head {LOGREG!r} accepts only the option C, got {sorted(options)}")
    model = create_head("linear", in_dims=train.in_dims, num_frames=train.num_frames, num_classes=train.num_classes)
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
    checkpoint = Checkpoint(model_state=model.state_dict(), head=model.head_spec, config=config.to_dict(),
                            class_names=train.class_names or {}, provenance=train.provenance, epoch=1)
    save_checkpoint(out / BEST_CHECKPOINT, checkpoint)
    return model.eval(), FitResult(history=[], best_epoch=1, best_score=None, stopped_early=False, run_dir=out)


def _train_val(store: FeatureStore, config: RunConfig,
               extra_streams: Sequence[str] = ()) -> tuple[HeadData, HeadData | None, str]:
    splits = set(store.segments().select("split").collect()["split"].unique().to_list())
    if config.data.train_split not in splits:
        raise ValueError(f"the store has no {config.data.train_split!r} split to train on; it has {sorted(splits)}")
    train = load_split_data(store, config, config.data.train_split, extra_streams=extra_streams)
    val_split = config.data.val_split
    if val_split and val_split in splits:
        return train, load_split_data(store, config, val_split, extra_streams=extra_streams), val_split
    if len(train) < 10:
        return train, None, ""
    train, held = train.holdout(0.1, seed=config.trainer.seed, group_by="video_id" if "video_id" in train.meta.columns else None)
    return train, held, "holdout"


def count_parameters(model: torch.nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))


# ---- evaluation ----------------------------------------------------------------------------


def score(outputs: dict[str, np.ndarray], data: HeadData, subsets: dict[str, Any]) -> dict[str, float]:
    """EPIC-100 metrics when verb and noun are predicted, else top-1/top-5 per task (all ×100)."""
    labels = {task: data.labels[task].cpu().numpy() for task in outputs if task in data.labels}
    labelled = np.ones(len(data), dtype=bool)
    for y in labels.values():
        labelled &= y != UNLABELLED
    if not labelled.any():
        return {}
    outputs = {k: v[labelled] for k, v in outputs.items()}
    labels = {k: v[labelled] for k, v in labels.items()}
    participants = None
    if "participant_id" in data.meta.columns:
        participants = data.meta["participant_id"].to_numpy()[labelled]
    if {"verb", "noun"} <= set(labels):
        return metrics_lib.epic_action_metrics(
            outputs["verb"], outputs["noun"], labels["verb"], labels["noun"],
            participant_ids=participants if subsets.get("unseen") else None,
            unseen_participants=subsets.get("unseen"),
            tail_verbs=subsets.get("tail_verbs"), tail_nouns=subsets.get("tail_nouns"),
        )
    result = {}
    for task, logits in outputs.items():
        ranked = np.argsort(-logits, axis=1, kind="stable")
        for k in (1, 5):
            result[f"all_{task}_accuracy_at_{k}"] = float((ranked[:, :k] == labels[task][:, None]).any(1).mean() * 100)
        result[f"{task}_mean_class_accuracy"] = metrics_lib.mean_class_accuracy(
            metrics_lib.per_class_accuracy(logits, labels[task], logits.shape[1]))
    return result


def report_split(out: Path, model: torch.nn.Module, data: HeadData, split: str, config: RunConfig,
                 subset_files: SubsetFiles) -> dict[str, float]:
    """Predict ``data``, write predictions, metrics and per-class plots; return the metrics."""
    outputs = _predict(model, data, config, config.trainer.device)
    subsets = subset_files.load()
    metrics = score(outputs, data, subsets)
    write_predictions(out / f"predictions-{split}.parquet", outputs, data)
    existing = json.loads((out / METRICS_FILE).read_text()) if (out / METRICS_FILE).exists() else {}
    existing[split] = metrics
    (out / METRICS_FILE).write_text(json.dumps(_finite(existing), indent=1))
    _plot_per_class(out, outputs, data, split, subsets)
    return metrics


def write_predictions(path: Path, outputs: dict[str, np.ndarray], data: HeadData) -> None:
    columns: dict[str, Any] = {"segment_id": data.segment_ids.tolist()}
    for task, logits in outputs.items():
        columns[f"{task}_label"] = data.labels[task].cpu().numpy() if task in data.labels else None
        columns[f"{task}_logits"] = pl.Series(f"{task}_logits", logits.astype(np.float32)).cast(
            pl.Array(pl.Float32, logits.shape[1]))
    frame = pl.DataFrame(columns)
    if "split" in data.meta.columns:
        frame = frame.with_columns(data.meta["split"])
    frame.write_parquet(path)


def load_run(run: str | Path) -> tuple[dict[str, Any], Any]:
    """A run's ``run.json`` and its best (else last) checkpoint."""
    run = Path(run)
    if not (run / RUN_FILE).exists():
        raise FileNotFoundError(f"{run} is not a run folder (no {RUN_FILE}); train one with `egofeat train`")
    info = json.loads((run / RUN_FILE).read_text())
    for name in (BEST_CHECKPOINT, LAST_CHECKPOINT):
        if (run / name).exists():
            return info, load_checkpoint(run / name)
    raise FileNotFoundError(f"run {run} has no checkpoint ({BEST_CHECKPOINT} or {LAST_CHECKPOINT})")


def run_outputs(run: str | Path, split: str, *, store_path: str | Path | None = None,
                device: str = "auto") -> tuple[dict[str, np.ndarray], HeadData, RunConfig]:
    """Logits of a trained run on a split of its store (provenance checked first)."""
    info, checkpoint = load_run(run)
    store = FeatureStore.open(store_path or info["store"])
    config = RunConfig.from_dict(info["config"], source=str(Path(run) / RUN_FILE))
    provenance = {name: store.stream(name).info.provenance for name in config.data.streams}
    check_provenance(checkpoint, provenance)
    data = load_split_data(store, config, split)
    return _predict(checkpoint.build_model(), data, config, device), data, config


def _predict(model: torch.nn.Module, data: HeadData, config: RunConfig, device: str) -> dict[str, np.ndarray]:
    """Logits for scoring: bf16 autocast on CUDA, exact fp32 on CPUs (evaluation is cheap there)."""
    resolved = resolve_device(device)
    precision = config.trainer.precision if resolved.type == "cuda" else "fp32"
    return predict(model, data, config.trainer.eval_batch_size, device=resolved, precision=precision)


def evaluate_run(run: str | Path, split: str = "val", *, store_path: str | Path | None = None,
                 subsets: SubsetFiles | None = None, device: str = "auto") -> dict[str, Any]:
    """Score a trained run on one split of its store; writes metrics.json and predictions."""
    info, checkpoint = load_run(run)
    if info["head"] == "retrieval":  # embeddings: scored by EK-100 MIR over the split
        from egofeat.pipelines.retrieval import ProtocolInputs, evaluate_protocol

        return evaluate_protocol("ek100-mir", ProtocolInputs(run=Path(run), store=store_path, split=split))
    store = FeatureStore.open(store_path or info["store"])
    config = RunConfig.from_dict(info["config"], source=str(Path(run) / RUN_FILE))
    check_provenance(checkpoint, {n: store.stream(n).info.provenance for n in config.data.streams})
    data = load_split_data(store, config, split)
    metrics = report_split(Path(run), checkpoint.build_model(), data, split, config, subsets or SubsetFiles())
    return {"run": str(run), "split": split, "rows": len(data), "metrics": metrics}


def evaluate_results_file(results: str | Path, annotations: str | Path, *, subsets: SubsetFiles,
                          allow_pickle: bool = False) -> dict[str, Any]:
    """Score a results file (egofeat's or the EPIC baselines' format) against an annotation file."""
    from egofeat import sources

    loaded = metrics_lib.load_results(results)
    table = sources.load_epic100(annotations, allow_pickle=allow_pickle)
    aligned = pl.DataFrame({"segment_id": loaded.narration_ids}).with_row_index("i").join(
        table.select("segment_id", "participant_id", "verb_class", "noun_class"), on="segment_id", how="inner")
    missing = table.height - aligned.height
    if aligned.height == 0:
        raise ValueError(f"no narration id of {results} is in {annotations}")
    rows = aligned["i"].to_numpy()
    loaded_subsets = subsets.load()
    metrics = metrics_lib.epic_action_metrics(
        loaded.verb_output[rows], loaded.noun_output[rows],
        aligned["verb_class"].to_numpy(), aligned["noun_class"].to_numpy(),
        participant_ids=aligned["participant_id"].to_list() if loaded_subsets["unseen"] else None,
        unseen_participants=loaded_subsets["unseen"],
        tail_verbs=loaded_subsets["tail_verbs"], tail_nouns=loaded_subsets["tail_nouns"],
    )
    return {"results": str(results), "annotations": str(annotations), "scored": aligned.height,
            "annotations_without_results": missing, "metrics": _finite(metrics)}


def predict_run(run: str | Path, split: str, out: str | Path, *, store_path: str | Path | None = None,
                device: str = "auto") -> dict[str, Any]:
    """Write a run's verb/noun logits on a split as a results file (.npz, or .pkl in EPIC's layout)."""
    outputs, data, _ = run_outputs(run, split, store_path=store_path, device=device)
    if not {"verb", "noun"} <= set(outputs):
        raise ValueError("results files hold verb and noun logits: train with --task verb,noun")
    results = metrics_lib.Results(data.segment_ids.tolist(), outputs["verb"], outputs["noun"])
    metrics_lib.save_results(results, out)
    return {"run": str(run), "split": split, "rows": len(data), "out": str(out)}


def fuse_files(files: Iterable[str | Path], out: str | Path) -> dict[str, Any]:
    """Average pre-softmax logits of several results files (aligned by narration id)."""
    files = list(files)
    fused = metrics_lib.fuse_results([metrics_lib.load_results(f) for f in files])
    metrics_lib.save_results(fused, out)
    return {"inputs": [str(f) for f in files], "rows": len(fused.narration_ids), "out": str(out)}


def submit_file(results: str | Path, out: str | Path, *, sls_pt: int = 2, sls_tl: int = 3,
                sls_td: int = 4) -> dict[str, Any]:
    """The EPIC-KITCHENS challenge submission zip (``test.json``) of a results file."""
    loaded = metrics_lib.load_results(results)
    metrics_lib.write_submission(loaded, out, sls_pt=sls_pt, sls_tl=sls_tl, sls_td=sls_td)
    return {"results": str(results), "rows": len(loaded.narration_ids), "out": str(out)}


# ---- plots ---------------------------------------------------------------------------------


def _plot_curves(out: Path, history: list[dict[str, Any]]) -> None:
    from egofeat.eval.plots import plot_training_curves

    numeric = [{k: v for k, v in record.items() if isinstance(v, (int, float)) and k not in ("seconds", "lr")}
               for record in history]
    if numeric:
        plot_training_curves(numeric, out / "plots" / "training_curves.png", title=out.name)


def _plot_per_class(out: Path, outputs: dict[str, np.ndarray], data: HeadData, split: str,
                    subsets: dict[str, Any]) -> None:
    if not {"verb", "noun"} <= set(outputs):
        return
    from egofeat.eval.plots import plot_per_class_accuracy

    accuracy = {}
    for task in ("verb", "noun"):
        labels = data.labels[task].cpu().numpy()
        keep = labels != UNLABELLED
        if not keep.any():
            return
        accuracy[task] = metrics_lib.per_class_accuracy(outputs[task][keep], labels[keep], outputs[task].shape[1])
    plot_per_class_accuracy(accuracy["verb"], accuracy["noun"], out / "plots" / f"per_class_{split}.png",
                            tail_verbs=subsets.get("tail_verbs") or (), tail_nouns=subsets.get("tail_nouns") or (),
                            title=f"{out.name}: per-class top-1 on {split}")


def _finite(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
