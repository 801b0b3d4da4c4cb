"""Training data for heads: stream features and labels in RAM, aligned by segment id.

:class:`HeadData` holds, for N segments, one ``(N, T, D)`` tensor per stream (fp16 as stored,
or fp32), one label vector per task and a polars frame of per-segment metadata. Batches are
gathered by indexing those tensors (:meth:`HeadData.batch`), with no per-sample Python on the
hot path; :class:`HeadDataset` wraps the same data as a ``torch.utils.data.Dataset`` for people
who bring their own loop.

:func:`load_head_data` builds a :class:`HeadData` from a feature store.

A batch is a plain dict::

    {"features": {stream: float32 (B, T, D)}, "labels": {task: int64 (B,)}, "index": int64 (B,)}

``index`` holds the rows of the batch in the :class:`HeadData`, so a loss can look up anything
else aligned with it. Label ``-1`` (:data:`UNLABELLED`) marks a segment without a label (e.g. a
test split).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
import torch
from torch import Tensor

__all__ = [
    "UNLABELLED",
    "HeadData",
    "HeadDataset",
    "LoadReport",
    "load_head_data",
]

log = logging.getLogger(__name__)

UNLABELLED = -1
"""Label of a segment without one; cross-entropy ignores it (``ignore_index=-1``)."""

META_COLUMNS = ("segment_id", "dataset", "split", "video_id", "participant_id")

Batch = dict[str, Any]


@dataclass(frozen=True)
class LoadReport:
    """What :func:`load_head_data` kept and dropped, and why.

    ``dropped`` maps a reason to a count; a segment can count under several reasons (e.g.
    missing from two streams), ``kept`` is exact. ``examples`` holds a few segment ids per reason.
    """

    requested: int
    kept: int
    dropped: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)
    unlabelled: dict[str, list[str]] = field(default_factory=dict)

    def __str__(self) -> str:
        lines = [f"kept {self.kept} of {self.requested} segments"]
        for reason, count in self.dropped.items():
            lines.append(f"  dropped {count}: {reason} (e.g. {', '.join(self.examples[reason])})")
        for task, splits in self.unlabelled.items():
            lines.append(f"  no {task} labels in split(s) {splits}: kept for prediction only")
        return "\n".join(lines)


@dataclass
class HeadData:
    """Per-segment stream features and labels, aligned by row.

    Args:
        features: stream name -> ``(N, T, D)`` float tensor (fp16 or fp32). All streams share
            T, except streams with T=1, which heads repeat over the frames.
        labels: task -> ``(N,)`` int64 class ids, :data:`UNLABELLED` where unknown.
        segment_ids: ``(N,)`` string ids; defaults to ``"0" .. "N-1"``.
        meta: one row per segment (``segment_id``, ``participant_id``, ``split``, ...);
            defaults to a frame of the segment ids.
        num_classes: task -> class count; defaults to ``max label + 1``.
        class_names: task -> names indexed by class id; defaults to the ids as strings.
        provenance: stream name -> provenance dict of the features (checkpoints keep it).
        load_report: what the loader dropped, when built by :func:`load_head_data`.
    """

    features: dict[str, Tensor]
    labels: dict[str, Tensor]
    segment_ids: np.ndarray | None = None
    meta: pl.DataFrame | None = None
    num_classes: dict[str, int] | None = None
    class_names: dict[str, list[str]] | None = None
    provenance: dict[str, dict[str, Any]] = field(default_factory=dict)
    load_report: LoadReport | None = None

    def __post_init__(self) -> None:
        n = self._check_tensors()
        if self.segment_ids is None:
            self.segment_ids = np.arange(n).astype(str)
        self.segment_ids = np.asarray(self.segment_ids).astype(str)
        if len(self.segment_ids) != n:
            raise ValueError(f"{len(self.segment_ids)} segment ids for {n} rows")
        if self.meta is None:
            self.meta = pl.DataFrame({"segment_id": self.segment_ids})
        if self.meta.height != n:
            raise ValueError(f"meta has {self.meta.height} rows for {n} segments")
        if self.num_classes is None:
            self.num_classes = {
                task: int(y.max()) + 1 if n else 0 for task, y in self.labels.items()
            }
        self._check_labels()
        if self.class_names is None:
            self.class_names = {t: [str(i) for i in range(c)] for t, c in self.num_classes.items()}

    def _check_tensors(self) -> int:
        """Validate feature and label shapes and dtypes; returns the row count."""
        if not self.features:
            raise ValueError("HeadData needs at least one feature stream")
        rows = {name: int(x.shape[0]) for name, x in self.features.items()}
        rows.update({f"labels[{task}]": int(y.shape[0]) for task, y in self.labels.items()})
        if len(set(rows.values())) != 1:
            raise ValueError(f"features and labels have different row counts: {rows}")
        for name, x in self.features.items():
            if x.ndim != 3 or not x.is_floating_point():
                raise ValueError(
                    f"features[{name!r}] must be a float (N, T, D) tensor, "
                    f"got {x.dtype} {tuple(x.shape)}"
                )
        frames = {int(x.shape[1]) for x in self.features.values()} - {1}
        if len(frames) > 1:
            shapes = {name: tuple(x.shape) for name, x in self.features.items()}
            raise ValueError(f"streams must share their frame count (or have 1): {shapes}")
        for task, y in self.labels.items():
            if y.dtype != torch.int64 or y.ndim != 1:
                raise ValueError(f"labels[{task!r}] must be an int64 (N,) tensor, got {y.dtype}")
        return next(iter(rows.values()))

    def _check_labels(self) -> None:
        for task, y in self.labels.items():
            count = self.num_classes.get(task)
            if count is None:
                raise ValueError(f"num_classes lacks task {task!r}")
            if len(y) and (int(y.max()) >= count or int(y.min()) < UNLABELLED):
                raise ValueError(
                    f"labels[{task!r}] range [{int(y.min())}, {int(y.max())}] does not fit "
                    f"{count} classes (use {UNLABELLED} for unlabelled segments)"
                )

    def __len__(self) -> int:
        return len(self.segment_ids)

    def __repr__(self) -> str:
        streams = {name: f"{tuple(x.shape)} {x.dtype}" for name, x in self.features.items()}
        return f"HeadData(n={len(self)}, features={streams}, tasks={self.tasks})"

    @property
    def tasks(self) -> list[str]:
        return list(self.labels)

    @property
    def in_dims(self) -> dict[str, int]:
        """Stream name -> feature dimension, as heads take it."""
        return {name: int(x.shape[-1]) for name, x in self.features.items()}

    @property
    def device(self) -> torch.device:
        return next(iter(self.features.values())).device

    @property
    def num_frames(self) -> int:
        """Frames per segment (the largest T over streams)."""
        return max(int(x.shape[1]) for x in self.features.values())

    def labelled(self, task: str) -> np.ndarray:
        """Boolean mask of rows with a label for ``task``."""
        return (self.labels[task] != UNLABELLED).cpu().numpy()

    # ---- selecting rows -----------------------------------------------------------------
    def subset(self, rows: np.ndarray | Tensor | Sequence[int] | slice) -> HeadData:
        """The rows selected by a boolean mask, integer indices (in that order) or a slice.

        Features are copied (``index_select``), so a subset does not keep its parent alive.
        """
        if isinstance(rows, slice):
            positions = np.arange(len(self))[rows]
        else:
            positions = rows.cpu().numpy() if isinstance(rows, Tensor) else np.asarray(rows)
            if positions.dtype == bool:
                if positions.shape != (len(self),):
                    raise ValueError(f"mask has shape {positions.shape}, expected ({len(self)},)")
                positions = np.flatnonzero(positions)
        positions = positions.astype(np.int64)
        index = torch.from_numpy(positions).to(self.device)
        return replace(
            self,
            features={n: x.index_select(0, index) for n, x in self.features.items()},
            labels={t: y.index_select(0, index.to(y.device)) for t, y in self.labels.items()},
            segment_ids=self.segment_ids[positions],
            meta=self.meta[positions],
            load_report=None,
        )

    def split(self, name: str) -> HeadData:
        """Rows whose ``split`` metadata column equals ``name``."""
        if "split" not in self.meta.columns:
            raise KeyError("this HeadData has no 'split' column in its metadata")
        mask = (self.meta["split"] == name).to_numpy()
        if not mask.any():
            raise KeyError(
                f"no rows in split {name!r}; splits: {sorted(self.meta['split'].unique())}"
            )
        return self.subset(mask)

    def holdout(
        self, fraction: float, *, seed: int = 0, group_by: str | None = None
    ) -> tuple[HeadData, HeadData]:
        """Split off a random ``fraction`` of rows (or of ``group_by`` groups, e.g. videos) as a
        validation set, so early stopping need not look at the evaluation split."""
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"fraction must be in (0, 1), got {fraction}")
        generator = torch.Generator().manual_seed(seed)
        if group_by is None:
            keys = np.arange(len(self))
        else:
            if group_by not in self.meta.columns:
                raise KeyError(f"no metadata column {group_by!r}; columns: {self.meta.columns}")
            keys = self.meta[group_by].cast(pl.Utf8).to_numpy().astype(str)
        groups = np.unique(keys)
        order = torch.randperm(len(groups), generator=generator).numpy()
        if len(groups) < 2:
            raise ValueError(f"cannot hold out a fraction of {len(groups)} group(s)")
        count = min(max(1, round(fraction * len(groups))), len(groups) - 1)
        held = groups[order[:count]]
        mask = np.isin(keys, held)
        return self.subset(~mask), self.subset(mask)

    # ---- devices and dtypes -------------------------------------------------------------
    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> HeadData:
        """A copy with features (and labels) on ``device`` and features cast to ``dtype``."""
        return replace(
            self,
            features={n: x.to(device=device, dtype=dtype) for n, x in self.features.items()},
            labels={t: y.to(device=device) for t, y in self.labels.items()},
        )

    def time_mean(self, chunk_rows: int = 128) -> HeadData:
        """A copy whose streams are averaged over frames: float32 ``(N, 1, D)``.

        Computed a few rows at a time: the fp32 temporaries stay in cache (about 3x faster
        than whole-array means) and no full-size fp32 copy is ever made.
        """
        means = {}
        for name, x in self.features.items():
            out = torch.empty(x.shape[0], 1, x.shape[2], dtype=torch.float32, device=x.device)
            for start in range(0, x.shape[0], chunk_rows):
                rows = slice(start, start + chunk_rows)
                out[rows] = x[rows].mean(dim=1, keepdim=True, dtype=torch.float32)
            means[name] = out
        return replace(self, features=means)

    # ---- batches ------------------------------------------------------------------------
    def batch(self, index: Tensor, device: torch.device | str | None = None) -> Batch:
        """Gather rows ``index`` into a batch dict; features become float32 on ``device``."""
        if index.device != self.device:
            index = index.to(self.device)
        non_blocking = torch.device(device or "cpu").type == "cuda"
        features = {
            name: x.index_select(0, index).to(device, non_blocking=non_blocking).float()
            for name, x in self.features.items()
        }
        labels = {
            task: y.index_select(0, index).to(device, non_blocking=non_blocking)
            for task, y in self.labels.items()
        }
        return {"features": features, "labels": labels, "index": index.to(device)}

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
        device: torch.device | str | None = None,
    ) -> Iterator[Batch]:
        """Batches in row order, or in a random order drawn from ``generator``."""
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            yield self.batch(order[start : start + batch_size], device)

    def num_batches(self, batch_size: int, *, drop_last: bool = False) -> int:
        return len(self) // batch_size if drop_last else -(-len(self) // batch_size)

    def as_dataset(self) -> HeadDataset:
        return HeadDataset(self)


class HeadDataset(torch.utils.data.Dataset):
    """Map-style dataset over a :class:`HeadData`: item i is one segment as a batch-like dict
    (features ``(T, D)`` float32, labels 0-d int64, ``index``); the default ``collate_fn``
    stacks items into the batch layout the heads take."""

    def __init__(self, data: HeadData) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> Batch:
        return {
            "features": {name: x[i].float() for name, x in self.data.features.items()},
            "labels": {task: y[i] for task, y in self.data.labels.items()},
            "index": torch.tensor(i),
        }


# ---- loading from a feature store --------------------------------------------------------


def load_head_data(
    store: Any,
    streams: Sequence[str],
    *,
    tasks: Sequence[str] = ("verb", "noun"),
    splits: Sequence[str] | None = None,
    dataset: str | None = None,
    missing_labels: Literal["raise", "drop"] = "raise",
    num_classes: Mapping[str, int] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> HeadData:
    """Read ``streams`` and the labels of ``tasks`` from a feature store into a :class:`HeadData`.

    Rows are the segments of the store's segment table (in table order), restricted to
    ``splits`` and ``dataset`` when given, that have an ``ok`` manifest row in *every* stream;
    the others are dropped and counted in ``HeadData.load_report`` (also logged).

    Labels come from the table's ``{task}_class`` columns. A split where *no* segment has a
    label for a task (e.g. EPIC's test split) is kept with label :data:`UNLABELLED`, for
    prediction. A split where only *some* segments lack one raises (``missing_labels="raise"``)
    or drops them (``"drop"``).

    ``num_classes`` defaults to ``max class id + 1`` over the whole table of the dataset (all
    splits), so train and val loaded separately agree; class names come from the ``{task}``
    column (the most frequent name per id).

    With ``cache_dir``, each stream is written once to a ``.npy`` memmap there and later
    loads map that file instead of holding the stream in RAM; the file name hashes the
    stream's provenance, its manifest and the requested rows, so a changed stream is re-read.
    """
    if not streams:
        raise ValueError("give at least one stream name")
    handles = {name: store.stream(name) for name in streams}
    table = _segment_table(store, tasks, dataset)
    vocab_sizes = dict(num_classes) if num_classes else _num_classes(table, tasks)
    names = _class_names(table, tasks, vocab_sizes)
    if splits is not None:
        unknown = sorted(set(splits) - set(table["split"].unique().to_list()))
        if unknown:
            raise KeyError(
                f"split(s) {unknown} not in the segment table; it has "
                f"{sorted(table['split'].unique().to_list())}"
            )
        table = table.filter(pl.col("split").is_in(list(splits)))

    requested = table.height
    dropped: dict[str, int] = {}
    examples: dict[str, list[str]] = {}
    keep = np.ones(table.height, dtype=bool)
    for name, stream in handles.items():
        status = _stream_status(stream)
        joined = table.select("segment_id").join(status, on="segment_id", how="left")
        for reason, mask in (
            (f"not in stream {name!r}", joined["status"].is_null()),
            (f"error rows in stream {name!r}", joined["status"] == "error"),
        ):
            _count(reason, mask.fill_null(False).to_numpy(), table, dropped, examples)
        keep &= (joined["status"] == "ok").fill_null(False).to_numpy()
    table = table.filter(pl.Series(keep))

    table, unlabelled = _check_labels(table, tasks, missing_labels, dropped, examples)
    report = LoadReport(requested, table.height, dropped, examples, unlabelled)
    if table.height == 0:
        raise ValueError(f"no segments left to load: {report}")
    if dropped:
        log.info("load_head_data: %s", report)

    ids = table["segment_id"].to_numpy().astype(str)
    features = {
        name: _load_stream(name, stream, ids, cache_dir) for name, stream in handles.items()
    }
    labels = {
        task: torch.from_numpy(
            table[f"{task}_class"].fill_null(UNLABELLED).cast(pl.Int64).to_numpy().copy()
        )
        for task in tasks
    }
    meta = table.select([c for c in META_COLUMNS if c in table.columns])
    return HeadData(
        features=features,
        labels=labels,
        segment_ids=ids,
        meta=meta,
        num_classes=vocab_sizes,
        class_names=names,
        provenance={name: dict(stream.info.provenance) for name, stream in handles.items()},
        load_report=report,
    )


def _segment_table(store: Any, tasks: Sequence[str], dataset: str | None) -> pl.DataFrame:
    table = store.segments().collect()
    required = ["segment_id", "split", *(f"{task}_class" for task in tasks)]
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise KeyError(
            f"segment table lacks column(s) {missing} for tasks {list(tasks)}; "
            f"it has {table.columns}"
        )
    if "dataset" in table.columns:
        datasets = sorted(table["dataset"].unique().to_list())
        if dataset is not None:
            if dataset not in datasets:
                raise KeyError(f"dataset {dataset!r} not in the segment table; it has {datasets}")
            table = table.filter(pl.col("dataset") == dataset)
        elif len(datasets) > 1:
            raise ValueError(
                f"the segment table holds several datasets {datasets} whose class ids do not "
                f"share a vocabulary; pass dataset=... to pick one"
            )
    return table


def _num_classes(table: pl.DataFrame, tasks: Sequence[str]) -> dict[str, int]:
    sizes = {}
    for task in tasks:
        top = table[f"{task}_class"].max()
        if top is None:
            raise ValueError(f"no segment has a {task}_class label; pass num_classes explicitly")
        sizes[task] = int(top) + 1
    return sizes


def _class_names(
    table: pl.DataFrame, tasks: Sequence[str], sizes: Mapping[str, int]
) -> dict[str, list[str]]:
    names = {}
    for task in tasks:
        found: dict[int, str] = {}
        if task in table.columns:
            pairs = table.select(f"{task}_class", task).drop_nulls()
            counts = Counter(pairs.iter_rows())
            for (class_id, name), _ in counts.most_common():
                found.setdefault(int(class_id), str(name))
        names[task] = [found.get(i, str(i)) for i in range(sizes[task])]
    return names


def _stream_status(stream: Any) -> pl.DataFrame:
    """One row per segment id of a stream: ``ok`` if any manifest row is ok, else ``error``."""
    manifest = stream.manifest().select("segment_id", "status").collect()
    return manifest.group_by("segment_id").agg(
        pl.when((pl.col("status") == "ok").any())
        .then(pl.lit("ok"))
        .otherwise(pl.lit("error"))
        .alias("status")
    )


def _count(
    reason: str,
    mask: np.ndarray,
    table: pl.DataFrame,
    dropped: dict[str, int],
    examples: dict[str, list[str]],
) -> None:
    count = int(mask.sum())
    if count:
        dropped[reason] = dropped.get(reason, 0) + count
        examples.setdefault(reason, table["segment_id"].filter(pl.Series(mask)).head(3).to_list())


def _check_labels(
    table: pl.DataFrame,
    tasks: Sequence[str],
    missing_labels: str,
    dropped: dict[str, int],
    examples: dict[str, list[str]],
) -> tuple[pl.DataFrame, dict[str, list[str]]]:
    if missing_labels not in ("raise", "drop"):
        raise ValueError(f"missing_labels must be 'raise' or 'drop', got {missing_labels!r}")
    unlabelled: dict[str, list[str]] = {}
    drop = np.zeros(table.height, dtype=bool)
    for task in tasks:
        column = f"{task}_class"
        per_split = table.group_by("split", maintain_order=True).agg(
            pl.col(column).is_null().sum().alias("missing"), pl.len().alias("rows")
        )
        for split, missing, rows in per_split.iter_rows():
            if missing == 0:
                continue
            if missing == rows:
                unlabelled.setdefault(task, []).append(split)
                continue
            mask = ((pl.col("split") == split) & pl.col(column).is_null()).alias("m")
            rows_missing = table.select(mask)["m"].to_numpy()
            if missing_labels == "raise":
                ids = table["segment_id"].filter(pl.Series(rows_missing)).head(5).to_list()
                raise ValueError(
                    f"{missing} of {rows} segments of split {split!r} have no {column} "
                    f"(e.g. {ids}); pass missing_labels='drop' to leave them out"
                )
            reason = f"no {column} in split {split!r}"
            _count(reason, rows_missing, table, dropped, examples)
            drop |= rows_missing
    return table.filter(pl.Series(~drop)), unlabelled


def _load_stream(
    name: str, stream: Any, ids: np.ndarray, cache_dir: str | os.PathLike[str] | None
) -> Tensor:
    if cache_dir is None:
        array = _checked(name, stream.load(segment_ids=list(ids)), ids)
        return torch.from_numpy(array)
    path = Path(cache_dir) / f"{_safe(name)}-{_cache_key(stream, ids)}.npy"
    if not path.exists():
        _write_cache(name, stream, ids, path)
    # copy-on-write: a writable view for torch, and the file is never modified.
    return torch.from_numpy(np.load(path, mmap_mode="c"))


def _checked(name: str, loaded: Any, ids: np.ndarray) -> np.ndarray:
    if getattr(loaded, "offsets", None) is not None:
        raise ValueError(
            f"stream {name!r} has a variable number of frames per segment; heads need a fixed "
            f"number (extract it with a fixed frame count per segment)"
        )
    got = np.asarray(loaded.segment_ids).astype(str)
    if got.shape != ids.shape or not (got == ids).all():
        raise ValueError(f"stream {name!r} returned rows out of the requested order")
    features = np.asarray(loaded.features)
    if features.ndim != 3:
        raise ValueError(f"stream {name!r}: expected (N, T, D) features, got {features.shape}")
    return features


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _cache_key(stream: Any, ids: np.ndarray) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps(stream.info.provenance, sort_keys=True, default=str).encode())
    buffer = io.BytesIO()
    stream.manifest().collect().write_ipc(buffer, compression="uncompressed")
    digest.update(buffer.getvalue())
    digest.update("\n".join(ids.tolist()).encode())
    return digest.hexdigest()[:20]


def _write_cache(
    name: str, stream: Any, ids: np.ndarray, path: Path, chunk_rows: int = 4096
) -> None:
    """Fill a ``.npy`` memmap chunk by chunk, so the stream never has to fit in RAM."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".partial-{os.getpid()}")
    out = None
    for start in range(0, len(ids), chunk_rows):
        chunk = ids[start : start + chunk_rows]
        features = _checked(name, stream.load(segment_ids=list(chunk)), chunk)
        if out is None:
            shape = (len(ids), *features.shape[1:])
            out = np.lib.format.open_memmap(partial, mode="w+", dtype=features.dtype, shape=shape)
        out[start : start + len(chunk)] = features
    out.flush()
    del out
    os.replace(partial, path)
