"""Distilled students on cached features: teacher runs -> cached logits -> student -> report.

Multimodal distillation (``reference/heads.md`` §1) moved onto a feature store:

1. **Teachers** are trained runs (``egofeat train`` run folders), typically on streams the
   student will not have (hand crops, other encoders). :func:`cache_teacher_logits` predicts
   each of them once on the student's train and val splits and writes the logits into the store
   as a derived stream of kind ``logits`` (float32, one row per segment, one part per split,
   laid out as :func:`egofeat.heads.distill.pack_teacher_logits` says). Its provenance names the
   teachers: run folder, checkpoint file and hash, head, and the provenance of the streams each
   was trained on. Asking for the same teachers again finds that stream by its name (which
   hashes the provenance) and reuses it; a retrained teacher has another checkpoint hash and
   gets a new stream.
2. **The student** is any classification head on its own stream(s), trained as the ``distill``
   task (:class:`~egofeat.heads.distill.DistillTask`: the cached logits are loaded beside its
   features, :class:`~egofeat.heads.distill.DistillationLoss` is the loss) by the ordinary run
   machinery (:func:`~egofeat.pipelines.train.train_run`). Its run folder is an ordinary run
   folder (``egofeat eval`` / ``predict`` work on it and need no teacher). With ``baseline`` the
   same head is also trained with cross-entropy only (the same task with ``w_distill = 0``,
   ``w_gt = 1``: the same rows) into ``<out>/baseline``.
3. **The report** (``distill_report.json`` and ``.md`` in the student's run folder) compares
   student, teacher ensemble, each teacher and the CE-only head on the val split: EPIC metrics,
   ECE (15 bins) and reliability diagrams (``plots/reliability_*.png``).

Teacher ensembles average pre-softmax logits (``weighting="mean"``), or weight teachers per
sample by ``softmin(CE / tau_w)`` against the label (``"per-sample"``, training batches only;
the ensemble is scored with uniform weights, since test segments have no label), or by fixed
``softmin(mean CE / tau_w)`` weights calibrated on train rows none of the teachers trained on
(``"dataset"``): the videos every teacher kept out of its training with ``data.reserve``, as the
reference calibrates on the train rows outside its RGB teacher's training indices. The student
still trains on all train rows, as in the reference.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from egofeat import eval as metrics_lib
from egofeat._util.hashing import file_sha256
from egofeat._util.jsonsafe import jsonable
from egofeat.config import DistillConfig
from egofeat.eval import Predictions, load_predictions, score
from egofeat.heads import RunConfig, Subsets, head_task, load_head_data, resolve_device
from egofeat.heads.checkpoint import Checkpoint
from egofeat.heads.distill import (
    dataset_weights,
    ensemble_logits,
    pack_teacher_logits,
    unpack_teacher_logits,
)
from egofeat.heads.registry import DEFAULT_TASK
from egofeat.pipelines.evaluate import SubsetFiles, run_predictions
from egofeat.pipelines.rundir import RunFolder
from egofeat.pipelines.train import train_run
from egofeat.store import FeatureStore, PartAlreadyCommittedError, Stream
from egofeat.store.names import safe_name, teacher_stream
from egofeat.store.provenance import comparable, provenance_key

__all__ = [
    "BASELINE_DIR",
    "REPORT_JSON",
    "REPORT_MARKDOWN",
    "TeacherLogits",
    "cache_teacher_logits",
    "calibrate_teacher_weights",
    "distill_report",
    "report_markdown",
    "run_distill",
    "teacher_provenance",
]

#: Sub-folder of the student's run folder holding the CE-only head.
BASELINE_DIR = "baseline"
REPORT_JSON = "distill_report.json"
REPORT_MARKDOWN = "distill_report.md"
#: Confidence bins of the ECE and the reliability diagrams (as the reference evaluates).
ECE_BINS = 15


@dataclass(frozen=True)
class TeacherLogits:
    """A derived stream of cached teacher logits, and what this call did to it."""

    stream: str
    teachers: list[str]
    num_classes: dict[str, int]
    written: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---- 1. caching teacher logits ---------------------------------------------------------------


def teacher_provenance(teachers: Sequence[str | Path]) -> dict[str, Any]:
    """The provenance of the logits of ``teachers``: what the derived stream's features depend on.

    Teachers are listed (and their logits laid out) in the order of their resolved run paths.

    Raises ValueError when teachers disagree on tasks or vocabularies (their logits could not be
    averaged) or a run is given twice.
    """
    runs = [Path(run).resolve() for run in teachers]
    if not runs:
        raise ValueError("give at least one teacher run folder")
    repeated = sorted({str(run) for run in runs if runs.count(run) > 1})
    if repeated:
        raise ValueError(f"teacher run(s) {repeated} given twice; name each teacher once")
    runs.sort()  # the same teachers in another order are the same ensemble: one stream
    checkpoints = {run: RunFolder.open(run).checkpoint() for run in runs}
    for run, checkpoint in checkpoints.items():
        if checkpoint.head is None:
            raise ValueError(f"teacher {run}: its checkpoint has no head spec to predict with")
    first = checkpoints[runs[0]]
    for run in runs[1:]:
        other = checkpoints[run]
        if other.head.num_classes != first.head.num_classes or _names_differ(
            other.class_names, first.class_names
        ):
            raise ValueError(
                f"teachers {runs[0]} and {run} predict different classes ({first.head.num_classes}"
                f" vs {other.head.num_classes}); an ensemble needs one vocabulary per task"
            )
    return {
        "derived": "teacher-logits",
        "layout": "teacher-major rows: [teacher 0: task logits in `tasks` order | teacher 1: ...]",
        "tasks": [[task, count] for task, count in first.head.num_classes.items()],
        "teachers": [_teacher_entry(run, checkpoints[run]) for run in runs],
    }


def _teacher_entry(run: Path, checkpoint: Checkpoint) -> dict[str, Any]:
    path = RunFolder.open(run).checkpoint_path()
    return {
        "run": str(run),
        "checkpoint": path.name,
        "checkpoint_sha256": file_sha256(path),
        "head": checkpoint.head.to_dict(),
        "streams": {name: comparable(p) for name, p in checkpoint.provenance.items()},
    }


def cache_teacher_logits(
    store_path: str | Path,
    teachers: Sequence[str | Path],
    splits: Sequence[str],
    *,
    name: str | None = None,
    device: str = "auto",
) -> TeacherLogits:
    """Predict each teacher on ``splits`` once, into a derived ``logits`` stream of the store.

    Splits already in the stream (one part per split) are reused, not predicted again. A
    segment of a split that some teacher has no features for becomes an error row naming that
    teacher, so loaders report it rather than silently dropping it.

    Args:
        store_path: The store the student trains on; the teachers' streams must be in it with
            the provenance they were trained on.
        teachers: ``egofeat train`` run folders.
        splits: Splits of the store to predict (the student's train and val splits).
        name: Stream name; default :func:`default_stream_name`. An existing stream of that name
            made from other teachers is refused (IncompatibleStreamError).
        device: Where the teachers run.
    """
    provenance = teacher_provenance(teachers)
    num_classes = {task: int(count) for task, count in provenance["tasks"]}
    runs = [entry["run"] for entry in provenance["teachers"]]
    store = FeatureStore.open(store_path)
    stream = store.create_stream(
        name or teacher_stream([t["run"] for t in provenance["teachers"]], provenance_key(provenance)),
        dim=len(runs) * sum(num_classes.values()),
        provenance=provenance,
        kind="logits",
        dtype="float32",
        frames_per_row=1,
    )
    written, reused = [], []
    for split in dict.fromkeys(splits):
        part = safe_name(split)
        if not stream.is_committed(part):
            try:
                _write_split(store, stream, runs, split, part, num_classes, device)
                written.append(split)
                continue
            except PartAlreadyCommittedError:  # another process cached it meanwhile
                pass
        reused.append(split)
    return TeacherLogits(stream.name, runs, num_classes, written, reused)


def _write_split(
    store: FeatureStore,
    stream: Stream,
    runs: Sequence[str],
    split: str,
    part: str,
    num_classes: dict[str, int],
    device: str,
) -> None:
    table = store.segments().filter(pl.col("split") == split).collect()
    if table.height == 0:
        raise KeyError(f"the store has no segments in split {split!r} to predict teachers on")
    outputs, datasets = [], set()
    for i, run in enumerate(runs):
        predictions, data, _ = run_predictions(run, split, store_path=store.path, device=device)
        outputs.append(predictions.logits)
        rows = pl.DataFrame({"segment_id": data.segment_ids, f"row{i}": np.arange(len(data))})
        table = table.join(rows, on="segment_id", how="left", maintain_order="left")
        if "dataset" in data.meta.columns:
            datasets.update(data.meta["dataset"].unique().to_list())
    if datasets and "dataset" in table.columns:  # segments of other datasets are no teacher's
        table = table.filter(pl.col("dataset").is_in(sorted(datasets)))
    positions = table.select([f"row{i}" for i in range(len(runs))]).to_numpy()
    complete = ~np.isnan(positions.astype(np.float64)).any(axis=1)
    index = positions[complete].astype(np.int64)
    packed = pack_teacher_logits(
        [
            {task: logits[task][index[:, i]] for task in num_classes}
            for i, logits in enumerate(outputs)
        ],
        num_classes,
    )
    ids = table["segment_id"].to_list()
    videos = table["video_id"].cast(pl.Utf8).fill_null("").to_list()
    with stream.part_writer(part) as writer:
        ok_rows = iter(packed)
        for row, (segment, video) in enumerate(zip(ids, videos, strict=True)):
            if complete[row]:
                writer.add(segment, video, next(ok_rows)[None, :])
                continue
            lacking = [runs[i] for i in range(len(runs)) if math.isnan(positions[row, i])]
            writer.add_error(
                segment,
                video,
                f"no logits from teacher run(s) {lacking}: their streams have no ok row for "
                "this segment (see `egofeat info` on the store)",
            )


def _names_differ(a: dict[str, list[str]], b: dict[str, list[str]]) -> bool:
    return any(task in b and a[task] != b[task] for task in a)


# ---- 2. training the student ---------------------------------------------------------------


def run_distill(config: DistillConfig, *, subsets: SubsetFiles | None = None,
                run_info: dict[str, Any] | None = None) -> dict[str, Any]:
    """Distil ``config.teachers`` into the student run ``config.student``; write run folder
    ``config.out``.

    Caches the teachers' logits (or reuses them), trains the student (the ``distill`` task),
    with ``baseline`` also the same head on the same rows with cross-entropy only into
    ``out/baseline``, then writes the comparison report (when there is a val split or holdout).
    The store defaults to the first teacher's. ``run_info`` (e.g. the recipe applied) goes into
    both runs' ``run.json``. Returns a JSON-able summary.
    """
    run_info = dict(run_info or {})
    started = time.perf_counter()
    student = config.student
    resolve_device(student.trainer.device)  # refused before the teacher-logit stream is written
    if head_task(student.head.name) != DEFAULT_TASK:
        raise ValueError(
            f"head {student.head.name!r} is trained by the {head_task(student.head.name)!r} task, "
            "not by a loss: pick a classification head (egofeat heads) for the student"
        )
    out = Path(config.out)
    store = FeatureStore.open(config.store or RunFolder.open(config.teachers[0]).store)
    cache = cache_teacher_logits(store.path, config.teachers, _splits_to_cache(store, student),
                                 name=config.teacher_stream, device=student.trainer.device)
    missing = [task for task in student.trainer.tasks if task not in cache.num_classes]
    if missing:
        raise ValueError(f"the teachers predict {sorted(cache.num_classes)}, not task(s) {missing}")
    options = dict(student.task.options, teacher_stream=cache.stream, teacher_classes=cache.num_classes)
    weights, calibration = None, None
    if options.get("weighting") == "dataset":
        weights, calibration = calibrate_teacher_weights(store, student, cache, options.get("tau_w", 1.0))
        options["teacher_weights"] = _listed(weights)
    distilled = _with_task(student, options)
    info = {"teachers": cache.teachers, "teacher_stream": cache.stream, "settings": options,
            "teacher_weights": _listed(weights), "calibration": calibration}
    summary: dict[str, Any] = {
        "run": str(out), "teachers": cache.teachers, "teacher_stream": cache.to_dict(),
        "settings": options, "baseline": None,
        "student": train_run(store.path, out, distilled, subsets=(subsets or SubsetFiles()).load(),
                             run_info={**run_info, "distillation": info}),
        "recipe": run_info.get("recipe"),
    }
    if config.baseline:  # the same rows (those with teacher logits), cross-entropy only
        ce_only = _with_task(student, {**options, "w_distill": 0.0, "w_gt": 1.0, "weighting": "mean",
                                       "teacher_weights": None})
        summary["baseline"] = train_run(store.path, out / BASELINE_DIR, ce_only,
                                        subsets=(subsets or SubsetFiles()).load(),
                                        run_info={**run_info, "baseline_of": str(out),
                                                  "teacher_stream": cache.stream})
    if "metrics" in summary["student"]:
        summary["report"] = distill_report(out, cache, weights, subsets=subsets, settings=options)
    summary["seconds"] = round(time.perf_counter() - started, 1)
    return summary


def _with_task(config: RunConfig, options: dict[str, Any]) -> RunConfig:
    """``config`` trained as the ``distill`` task with ``options``."""
    raw = config.to_dict()
    raw["task"] = {"name": "distill", **{k: v for k, v in options.items() if k != "name"}}
    return RunConfig.from_dict(raw, source="distillation")


def calibrate_teacher_weights(store: FeatureStore, config: RunConfig, cache: TeacherLogits,
                              tau_w: float) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Fixed teacher weights from the teachers' mean CE on the train rows none of them trained
    on: the segments every teacher run kept out of its training (``data.reserve``, listed in its
    ``reserved.json``). Returns the weights and what they were calibrated on (for the run)."""
    reserved = {run: RunFolder.open(run).reserved() for run in cache.teachers}
    lacking = [run for run, (_, ids) in reserved.items() if not ids]
    if lacking:
        raise ValueError(
            f"--weighting dataset calibrates the teachers on train rows none of them trained on, and "
            f"teacher run(s) {lacking} kept none out: train them with --set data.reserve=0.1 (one "
            "trainer.seed for all, so they reserve the same videos)"
        )
    split = config.data.train_split
    other = {run: s for run, (s, _) in reserved.items() if s != split}
    if other:
        raise ValueError(f"teacher run(s) reserved rows of other splits than the student's {split!r}: {other}")
    common = set.intersection(*(ids for _, ids in reserved.values()))
    counts = {run: len(ids) for run, (_, ids) in reserved.items()}
    if not common:
        raise ValueError(f"the teachers reserved no train segment in common (reserved per run: {counts}): "
                         "train them with the same trainer.seed and data.reserve")
    data = load_head_data(store, [cache.stream], tasks=config.trainer.tasks, splits=[split],
                          segment_ids=sorted(common), dataset=config.data.dataset)
    teachers = _tasks_only(unpack_teacher_logits(data.features[cache.stream], cache.num_classes),
                           config.trainer.tasks)
    labels = {task: data.labels[task] for task in config.trainer.tasks}
    weights = dataset_weights(teachers, labels, tau_w)
    videos = data.meta["video_id"].n_unique() if "video_id" in data.meta.columns else None
    return weights, {"split": split, "rows": len(data), "videos": videos,
                     "rows_from": "train segments every teacher kept out of its training (data.reserve)",
                     "reserved_by_teacher": counts}


def _splits_to_cache(store: FeatureStore, config: RunConfig) -> list[str]:
    splits = set(store.segments().select("split").collect()["split"].unique().to_list())
    if config.data.train_split not in splits:
        raise ValueError(
            f"the store has no {config.data.train_split!r} split to train on; it has {sorted(splits)}"
        )
    wanted = [config.data.train_split]
    if config.data.val_split and config.data.val_split in splits:
        wanted.append(config.data.val_split)
    return wanted


def _tasks_only(teachers: list[dict[str, torch.Tensor]], tasks: Sequence[str]) -> list[dict]:
    return [{task: logits[task] for task in tasks} for logits in teachers]


def _listed(weights: dict[str, torch.Tensor] | None) -> dict[str, list[float]] | None:
    return None if weights is None else {k: v.tolist() for k, v in weights.items()}


# ---- 3. the report -------------------------------------------------------------------------


def distill_report(
    out: str | Path,
    cache: TeacherLogits,
    weights: dict[str, torch.Tensor] | None = None,
    *,
    subsets: SubsetFiles | None = None,
    settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Compare student, teacher ensemble, each teacher and the CE-only head on the val split.

    Reads the predictions the runs wrote (``predictions-<val split>.parquet``) and the cached
    teacher logits of the same segments; writes ``distill_report.json`` (metrics ×100, ECE as a
    fraction), ``distill_report.md`` (one table) and reliability diagrams into ``out``.
    ``weights`` are the ensemble's fixed teacher weights (``None``: uniform).
    """
    out = Path(out)
    run = RunFolder.open(out)
    split = run.info["val_split"]
    student = run.read_predictions(split)
    tasks = list(run.info["tasks"])
    ids = student.segment_ids
    models: dict[str, dict[str, np.ndarray]] = {"student (distilled)": _logits(student, tasks)}
    baseline_file = RunFolder(out / BASELINE_DIR, {}).predictions_path(split)
    if baseline_file.exists():
        baseline = load_predictions(baseline_file)
        if baseline.segment_ids != ids:
            raise ValueError(f"{baseline_file} holds other segments than the student's {split!r}")
        models["CE-only"] = _logits(baseline, tasks)
    store = FeatureStore.open(run.store)
    packed = torch.from_numpy(np.ascontiguousarray(store.stream(cache.stream).read(ids)))
    teachers = _tasks_only(unpack_teacher_logits(packed, cache.num_classes), tasks)
    ensemble = ensemble_logits(teachers, weights)
    models["teacher ensemble"] = {task: ensemble[task].numpy() for task in tasks}
    for i, (path, logits) in enumerate(zip(cache.teachers, teachers, strict=True)):
        models[f"teacher {i + 1}: {Path(path).name}"] = {t: logits[t].numpy() for t in tasks}

    scored = (subsets or SubsetFiles()).load()
    plotted = ("student (distilled)", "CE-only", "teacher ensemble")
    entries = [
        _model_entry(label, outputs, student, scored, out if label in plotted else None)
        for label, outputs in models.items()
    ]
    report = {
        "split": split,
        "rows": len(ids),
        "tasks": tasks,
        "teachers": cache.teachers,
        "teacher_stream": cache.stream,
        "settings": settings,
        "ensemble_weights": _listed(weights) or "uniform",
        "ece_bins": ECE_BINS,
        "models": entries,
    }
    (out / REPORT_JSON).write_text(json.dumps(jsonable(report), indent=1))
    (out / REPORT_MARKDOWN).write_text(report_markdown(report))
    return {
        "json": str(out / REPORT_JSON),
        "markdown": str(out / REPORT_MARKDOWN),
        "models": entries,
    }


def report_markdown(report: dict[str, Any]) -> str:
    """The report as a markdown table: top-1/top-5 per task (and action) and ECE per task."""
    tasks = report["tasks"]
    scored = [*tasks, "action"] if {"verb", "noun"} <= set(tasks) else tasks
    header = [
        "model",
        *(f"{t} top-1" for t in scored),
        *(f"{t} top-5" for t in scored),
        *(f"ECE {t} (%)" for t in tasks),
    ]
    lines = [
        f"# Distillation report: {report['split']} split, {report['rows']} segments",
        "",
        f"Teachers: {', '.join(report['teachers'])} (cached in stream `{report['teacher_stream']}`)",
        f"Ensemble weights at evaluation: {json.dumps(report['ensemble_weights'])}",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
    ]
    for entry in report["models"]:
        metrics, ece = entry["metrics"], entry["ece"]
        cells = [entry["model"]]
        cells += [_cell(metrics.get(f"all_{t}_accuracy_at_1")) for t in scored]
        cells += [_cell(metrics.get(f"all_{t}_accuracy_at_5")) for t in scored]
        cells += [_cell(None if ece.get(t) is None else 100 * ece[t]) for t in tasks]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Accuracies ×100; ECE over {report['ece_bins']} confidence bins."]
    return "\n".join(lines) + "\n"


def _model_entry(
    label: str,
    outputs: dict[str, np.ndarray],
    predictions: Predictions,
    subsets: Subsets,
    plot_dir: Path | None,
) -> dict[str, Any]:
    """A model's EPIC metrics, ECE and reliability diagrams against the predictions' labels."""
    from egofeat.eval.plots import plot_reliability_diagram

    entry: dict[str, Any] = {
        "model": label,
        "metrics": score(outputs, predictions.labels, participant_ids=predictions.column("participant_id"),
                         **subsets.as_kwargs()),
        "ece": {},
        "reliability": {},
    }
    for task, logits in outputs.items():
        labels = predictions.labels[task]
        keep = labels >= 0
        if not keep.any():
            continue
        probs = torch.softmax(torch.from_numpy(logits[keep]).double(), dim=1).numpy()
        bins = metrics_lib.reliability_bins(probs, labels[keep], n_bins=ECE_BINS)
        entry["ece"][task] = bins.expected_calibration_error
        if plot_dir is not None:
            path = plot_dir / "plots" / f"reliability_{safe_name(label.split(' (')[0])}_{task}.png"
            title = f"{label}, {task}: ECE {100 * bins.expected_calibration_error:.2f}%"
            plot_reliability_diagram(bins, path, title=title)
            entry["reliability"][task] = str(path)
    return entry


def _logits(predictions: Predictions, tasks: Sequence[str]) -> dict[str, np.ndarray]:
    return {task: predictions.logits[task] for task in tasks}


def _cell(value: float | None) -> str:
    return (
        "n/a"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else f"{value:.2f}"
    )

