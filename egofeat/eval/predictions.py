"""Predictions: the one per-segment output format of egofeat.

Every run writes its outputs on a split as a :class:`Predictions` file,
``predictions-<split>.parquet``, and every consumer reads it directly: ``egofeat eval
--results``, ``egofeat fuse``, ``egofeat submit``, reports and plots. One parquet row per
segment::

    segment_id       str
    split, dataset, video_id, participant_id      str (when known)
    <task>_logits    array[float32, C_task]   pre-softmax scores, e.g. verb_logits (97), noun_logits (300)
    <task>_label     int64, null where unknown (a test split)
    <name>_embedding array[float32, E]        unit embeddings of retrieval runs (video, text)

The parquet's key-value metadata ``egofeat.predictions`` holds JSON: the format version, the
class names of each task (by class id) and what made the file (run, split, head, streams).
polars alone reads it: ``pl.read_parquet(path)``.

For interoperability the EPIC-KITCHENS layouts are read too (``.pkl`` / ``.pt`` dicts or lists
of ``verb_output`` / ``noun_output`` / ``narration_id``, see :mod:`egofeat.eval.results`), and
written on request (``.pkl`` for the official scorer; ``.npz`` with the same three arrays).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from .results import read_results_file, write_results_file

__all__ = [
    "FORMAT_VERSION",
    "Predictions",
    "class_names_of",
    "fuse_predictions",
    "load_predictions",
    "save_predictions",
]

FORMAT_VERSION = 1
_META_KEY = b"egofeat.predictions"
#: per-row metadata columns kept beside the outputs, in this order
ROW_COLUMNS = ("split", "dataset", "video_id", "participant_id")
_EXPORT_SUFFIXES = (".npz", ".pkl")


@dataclass(frozen=True)
class Predictions:
    """A model's outputs on N segments, keyed by segment id.

    Attributes:
        segment_ids: N unique ids (EPIC: narration ids such as ``"P01_11_0"``).
        logits: task -> float32 ``(N, C)`` pre-softmax class scores.
        labels: task -> int64 ``(N,)`` class ids, ``-1`` where unknown.
        embeddings: name -> float32 ``(N, E)`` embeddings (retrieval runs: ``video``, ``text``).
        class_names: task -> class names by id (as long as the task's logits are wide).
        rows: per-segment metadata (:data:`ROW_COLUMNS` that are known), row-aligned.
        info: what made the predictions (run, split, head, streams, ...), JSON-able.
    """

    segment_ids: list[str]
    logits: dict[str, np.ndarray] = field(default_factory=dict)
    labels: dict[str, np.ndarray] = field(default_factory=dict)
    embeddings: dict[str, np.ndarray] = field(default_factory=dict)
    class_names: dict[str, list[str]] = field(default_factory=dict)
    rows: pl.DataFrame | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        ids = [_as_str(value, i) for i, value in enumerate(self.segment_ids)]
        if len(set(ids)) != len(ids):
            repeated = sorted(i for i, count in Counter(ids).items() if count > 1)
            raise ValueError(f"segment ids must be unique; repeated: {repeated[:10]}")
        n = len(ids)
        object.__setattr__(self, "segment_ids", ids)
        object.__setattr__(self, "logits", {k: _block(f"{k} logits", v, n) for k, v in self.logits.items()})
        object.__setattr__(self, "embeddings", {k: _block(f"{k} embeddings", v, n) for k, v in self.embeddings.items()})
        labels = {}
        for task, values in self.labels.items():
            array = np.asarray(values, dtype=np.int64).reshape(-1)
            if array.shape != (n,):
                raise ValueError(f"{task} labels have shape {array.shape}, expected ({n},)")
            labels[task] = array
        object.__setattr__(self, "labels", labels)
        for task, names in self.class_names.items():
            width = self.logits[task].shape[1] if task in self.logits else len(names)
            if len(names) != width:
                raise ValueError(f"{len(names)} {task} class names for {width} {task} scores")
        if self.rows is not None and self.rows.height != n:
            raise ValueError(f"rows has {self.rows.height} rows for {n} segments")

    def __len__(self) -> int:
        return len(self.segment_ids)

    @property
    def tasks(self) -> list[str]:
        """Tasks with class scores (``verb``, ``noun``, ...)."""
        return list(self.logits)

    def column(self, name: str) -> np.ndarray | None:
        """A per-row metadata column (``participant_id``, ``split``, ...), or None."""
        if self.rows is None or name not in self.rows.columns:
            return None
        return self.rows[name].to_numpy()

    def select(self, segment_ids: Sequence[str]) -> Predictions:
        """The rows of ``segment_ids``, in that order (KeyError naming ids it lacks)."""
        row_of = {sid: i for i, sid in enumerate(self.segment_ids)}
        missing = [sid for sid in segment_ids if sid not in row_of]
        if missing:
            raise KeyError(f"{len(missing)} segments have no prediction, e.g. {missing[:5]}")
        order = np.fromiter((row_of[s] for s in segment_ids), np.int64, len(segment_ids))
        return replace(
            self,
            segment_ids=list(segment_ids),
            logits={k: v[order] for k, v in self.logits.items()},
            labels={k: v[order] for k, v in self.labels.items()},
            embeddings={k: v[order] for k, v in self.embeddings.items()},
            rows=None if self.rows is None else self.rows[order],
        )

    def to_frame(self) -> pl.DataFrame:
        """The parquet layout (module docstring) as a polars DataFrame."""
        columns: dict[str, Any] = {"segment_id": pl.Series("segment_id", self.segment_ids, pl.Utf8)}
        if self.rows is not None:
            for name in ROW_COLUMNS:
                if name in self.rows.columns:
                    columns[name] = self.rows[name].cast(pl.Utf8)
        for task, logits in self.logits.items():
            columns[f"{task}_logits"] = _array_column(f"{task}_logits", logits)
            if task in self.labels:
                labels = self.labels[task]
                columns[f"{task}_label"] = pl.Series(f"{task}_label", labels, pl.Int64).replace(-1, None)
        for name, vectors in self.embeddings.items():
            columns[f"{name}_embedding"] = _array_column(f"{name}_embedding", vectors)
        return pl.DataFrame(columns)


def save_predictions(predictions: Predictions, path: str | os.PathLike[str]) -> Path:
    """Write ``predictions`` to ``path``: ``.parquet`` (the format), or for interoperability
    ``.pkl`` (the EPIC baselines' dict layout) / ``.npz`` (the same arrays) of verb and noun
    scores. Written beside the final name and renamed into place: never a torn file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix in _EXPORT_SUFFIXES:
        missing = [task for task in ("verb", "noun") if task not in predictions.logits]
        if missing:
            raise ValueError(
                f"{path.suffix} results files hold verb and noun scores; these predictions have "
                f"{predictions.tasks or 'none'}: write .parquet instead"
            )
        return write_results_file(predictions.segment_ids, predictions.logits["verb"],
                                  predictions.logits["noun"], path)
    if path.suffix != ".parquet":
        raise ValueError(f"{path}: predictions are written as .parquet (or .pkl / .npz for EPIC tools)")
    table = predictions.to_frame().to_arrow()
    meta = {
        "format_version": FORMAT_VERSION,
        "class_names": predictions.class_names,
        "info": predictions.info,
    }
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), _META_KEY: json.dumps(meta)})
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    pq.write_table(table, partial)
    os.replace(partial, path)
    return path


def load_predictions(path: str | os.PathLike[str]) -> Predictions:
    """Read a predictions file: ours (``.parquet``), or an EPIC / legacy results file
    (``.pkl``, ``.pt``, ``.npz``), read without executing pickled code."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no predictions file at {path}")
    if path.suffix != ".parquet":
        ids, verb, noun = read_results_file(path)
        return Predictions(ids, logits={"verb": verb, "noun": noun}, info={"source": str(path)})
    table = pq.read_table(path)
    raw = (table.schema.metadata or {}).get(_META_KEY)
    meta = json.loads(raw) if raw else {}
    if meta.get("format_version", 1) > FORMAT_VERSION:
        raise ValueError(
            f"{path} has predictions format {meta['format_version']}, newer than this egofeat "
            f"reads ({FORMAT_VERSION}); upgrade egofeat"
        )
    frame = pl.from_arrow(table)
    if "segment_id" not in frame.columns:
        raise ValueError(f"{path}: not a predictions file (no segment_id column); columns: {frame.columns}")
    logits, labels, embeddings = {}, {}, {}
    for name in frame.columns:
        if name.endswith("_logits"):
            logits[name.removesuffix("_logits")] = _matrix(frame[name])
        elif name.endswith("_embedding"):
            embeddings[name.removesuffix("_embedding")] = _matrix(frame[name])
        elif name.endswith("_label"):
            labels[name.removesuffix("_label")] = frame[name].fill_null(-1).to_numpy().astype(np.int64)
    rows = frame.select([c for c in ROW_COLUMNS if c in frame.columns])
    return Predictions(
        frame["segment_id"].to_list(),
        logits=logits,
        labels=labels,
        embeddings=embeddings,
        class_names={k: list(v) for k, v in (meta.get("class_names") or {}).items() if k in logits},
        rows=rows if rows.width else None,
        info=dict(meta.get("info") or {}, source=str(path)),
    )


def fuse_predictions(predictions: Sequence[Predictions]) -> Predictions:
    """Late fusion: the elementwise mean of the pre-softmax scores of several predictions.

    Rows are aligned by segment id; the output follows the first one's row order and keeps
    its labels, metadata rows and class names.

    Raises:
        ValueError: the inputs cover different segments (ids missing on either side listed),
            predict other tasks, other class counts, or name their classes differently.
    """
    if not predictions:
        raise ValueError("fusion needs at least one predictions file")
    first = predictions[0]
    if not first.logits:
        raise ValueError("fusion averages class scores; the first predictions have none")
    sums = {task: first.logits[task].astype(np.float64) for task in first.logits}
    reference = set(first.segment_ids)
    for position, other in enumerate(predictions[1:], start=1):
        if sorted(other.logits) != sorted(first.logits):
            raise ValueError(f"predictions[{position}] has tasks {sorted(other.logits)}, "
                             f"predictions[0] {sorted(first.logits)}")
        for task in first.logits:
            if other.logits[task].shape[1] != first.logits[task].shape[1]:
                raise ValueError(
                    f"predictions[{position}] has {other.logits[task].shape[1]} {task} classes, "
                    f"predictions[0] has {first.logits[task].shape[1]}"
                )
            names = (first.class_names.get(task), other.class_names.get(task))
            if None not in names and names[0] != names[1]:
                raise ValueError(f"predictions[0] and [{position}] name their {task} classes differently")
        if set(other.segment_ids) != reference:
            only_first = sorted(reference - set(other.segment_ids))
            only_other = sorted(set(other.segment_ids) - reference)
            raise ValueError(
                f"predictions[0] and predictions[{position}] cover different segments: "
                f"{len(only_first)} only in predictions[0] {only_first[:10]}, "
                f"{len(only_other)} only in predictions[{position}] {only_other[:10]}"
            )
        aligned = other.select(first.segment_ids)
        for task in sums:
            sums[task] += aligned.logits[task]
    class_names = dict(first.class_names)
    for other in predictions[1:]:
        for task, names in other.class_names.items():
            class_names.setdefault(task, names)
    return replace(
        first,
        logits={task: (total / len(predictions)).astype(np.float32) for task, total in sums.items()},
        embeddings={},
        class_names=class_names,
        info={"fused": [p.info.get("source") or p.info.get("run") for p in predictions]},
    )


def _as_str(value: object, position: int) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if not isinstance(value, str):
        raise ValueError(f"segment id #{position} is {value!r} ({type(value).__name__}), not a string")
    return str(value)


def _block(name: str, value: object, n_rows: int) -> np.ndarray:
    array = np.asarray(value, dtype=np.float32)
    if array.ndim != 2 or array.shape[0] != n_rows:
        raise ValueError(f"{name} must have shape ({n_rows}, width), got {array.shape}")
    return array


def _array_column(name: str, values: np.ndarray) -> pl.Series:
    return pl.Series(name, values.astype(np.float32)).cast(pl.Array(pl.Float32, values.shape[1]))


def _matrix(column: pl.Series) -> np.ndarray:
    if column.len() == 0:
        width = column.dtype.size if isinstance(column.dtype, pl.Array) else 0
        return np.zeros((0, width), np.float32)
    return column.to_numpy().astype(np.float32)


def class_names_of(predictions: Predictions, task: str) -> list[str]:
    """The class names of ``task``, or the ids as strings when the file names none."""
    names = predictions.class_names.get(task)
    return list(names) if names else [str(i) for i in range(predictions.logits[task].shape[1])]

