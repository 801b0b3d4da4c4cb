"""Training data for heads: stream features and labels in RAM, aligned by segment id.

:class:`HeadData` holds, for N segments, one ``(N, T, D)`` tensor per stream (fp16 as stored,
or fp32), one label vector per task and a polars frame of per-segment metadata. Batches are
gathered by indexing those tensors (:meth:`HeadData.batch`), with no per-sample Python on the
hot path; :class:`HeadDataset` wraps the same data as a ``torch.utils.data.Dataset`` for people
who bring their own loop.

:func:`~egofeat.heads.loading.load_head_data` builds a :class:`HeadData` from a feature store.

A batch is a plain dict::

    {"features": {stream: float32 (B, T, D)}, "labels": {task: int64 (B,)}, "index": int64 (B,)}

``index`` holds the rows of the batch in the :class:`HeadData`, so a loss can look up anything
else aligned with it. Label ``-1`` (:data:`UNLABELLED`) marks a segment without a label (e.g. a
test split).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import polars as pl
import torch
from torch import Tensor

from egofeat.eval.scoring import UNLABELLED  # cross-entropy's ignore_index, too

__all__ = [
    "UNLABELLED",
    "HeadData",
    "HeadDataset",
    "LoadReport",
]


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

    def with_streams(self, names: Sequence[str]) -> HeadData:
        """The same rows with only the streams ``names`` (their provenance too)."""
        missing = [name for name in names if name not in self.features]
        if missing:
            raise KeyError(f"no stream(s) {missing}; this HeadData has {sorted(self.features)}")
        return replace(
            self,
            features={name: self.features[name] for name in names},
            provenance={k: v for k, v in self.provenance.items() if k in names},
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
