"""The one loader of store streams into :class:`~egofeat.heads.data.HeadData`.

:func:`load_head_data` serves every task and protocol: classification runs, X-MIC (dense
streams resampled into bins of jitter candidates, labels in a given vocabulary), retrieval
(frame-pooled features, the segment-table columns relevancy needs), distillation (cached
teacher logits loaded on the same rows) and zero-shot scoring of arbitrary rows (class-prompt
rows of a text stream). Holding out part of the train set is :meth:`HeadData.holdout`.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
import torch
from torch import Tensor

from egofeat.heads.data import META_COLUMNS, UNLABELLED, HeadData, LoadReport
from egofeat.heads.jitter import JitteredData, NativeBins
from egofeat.store import STATUS_OK, LoadedStream

__all__ = ["dense_to_bins", "load_head_data"]

log = logging.getLogger(__name__)


def load_head_data(
    store: Any,
    streams: Sequence[str],
    *,
    tasks: Sequence[str] = ("verb", "noun"),
    splits: Sequence[str] | None = None,
    dataset: str | None = None,
    segment_ids: Sequence[str] | None = None,
    vocabularies: Mapping[str, Sequence[str]] | None = None,
    num_classes: Mapping[str, int] | None = None,
    missing_labels: Literal["raise", "drop"] = "raise",
    bins: int | None = None,
    per_bin: int = 1,
    pool: bool = False,
    meta_columns: Sequence[str] = (),
    cache_dir: str | os.PathLike[str] | None = None,
    native: NativeBins | None = None,
    context_views: Mapping[str, str] | None = None,
) -> HeadData:
    """Read ``streams`` and the labels of ``tasks`` from a feature store into a :class:`HeadData`.

    Rows are the segments of the store's segment table (in table order), restricted to
    ``splits`` and ``dataset`` when given, that have an ``ok`` manifest row in *every* stream;
    the others are dropped and counted in ``HeadData.load_report`` (also logged). With
    ``segment_ids``, the rows are exactly those ids, in that order (they need not be segments:
    e.g. the ``verb:3`` rows of a class-prompt text stream); each must be ok in every stream.

    Labels come from the table's ``{task}_class`` columns, else from the ``{task}`` name looked
    up in ``vocabularies`` (segments annotated with names only). A split where *no* segment has
    a label for a task (e.g. EPIC's test split) is kept with label :data:`UNLABELLED`, for
    prediction; a split where only *some* lack one raises (``missing_labels="raise"``) or drops
    them (``"drop"``).

    Class counts and names: ``vocabularies`` (task -> names by id) when given, else
    ``num_classes``, else the dataset's vocabularies as the store keeps them (EPIC: 97 verbs
    and 300 nouns, whatever the labels that occur), else (stores without vocabularies)
    ``max class id + 1`` over the whole table of the dataset, named by the ``{task}`` column.

    Frames: streams with a fixed number of frames per segment load as ``(N, T, D)``. A stream
    with a variable number (densely sampled) is resampled to ``bins`` equal bins of
    ``per_bin`` evenly spaced frames each (:func:`dense_to_bins`: jitter candidates for TSN-style
    sampling), or needs ``pool``. ``pool=True`` averages every row's frames: ``(N, 1, D)``
    float32 (heads and protocols that read only clip-level features).

    ``meta_columns`` are segment-table columns kept in ``HeadData.meta`` beside the default
    ones (e.g. ``verb_class``, ``all_noun_classes``, ``start_sec`` for retrieval relevancy).

    With ``cache_dir``, each stream is written once to a ``.npy`` memmap there and later
    loads map that file instead of holding the stream in RAM; the file name hashes the
    stream's provenance, its manifest and the requested rows, so a changed stream is re-read.

    ``native``: streams that hold every native frame of each segment (``--sampling native``)
    load as a :class:`~egofeat.heads.jitter.JitteredData`: the bin centres of X-MIC's rule as
    features, every frame kept for drawing any frame of a bin each training epoch (in RAM;
    ``cache_dir`` is not used). ``context_views`` adds feature keys (e.g.
    :func:`~egofeat.heads.jitter.context_view` names) holding a stream's conditioning frames
    under the rule's ``context_offset``.
    """
    if not streams:
        raise ValueError("give at least one stream name")
    views = {name: (name, False) for name in streams}
    if context_views:
        if native is None:
            raise ValueError("context views are native-frame data: give native=NativeBins(...) too")
        views |= {key: (stream, True) for key, stream in context_views.items()}
    if native is not None and pool:
        raise ValueError("native-frame data keeps every frame: it cannot also be pooled")
    handles = {name: store.stream(name) for name in dict.fromkeys(s for s, _ in views.values())}
    table = _segment_table(store, tasks, dataset, labels_needed=segment_ids is None,
                           vocabularies=vocabularies)
    stored = _stored_vocabularies(store, table, tasks)
    # ids in the table number the store's vocabulary: a given vocabulary in another order
    # (X-MIC's sorted Ego4D classes, say) takes the labels by their names
    renumber = ({t: list(stored[t]) for t in tasks if list(stored[t]) != list(vocabularies[t])}
                if vocabularies is not None and stored is not None else {})
    if vocabularies is None and num_classes is None:
        vocabularies = stored
    sizes = _class_counts(table, tasks, vocabularies, num_classes)
    names = ({t: list(vocabularies[t]) for t in tasks} if vocabularies
             else _class_names(table, tasks, sizes))
    if segment_ids is not None:
        table = _requested_rows(table, segment_ids)
    elif splits is not None:
        present = set(table["split"].unique().to_list())
        unknown = sorted(set(splits) - present)
        if unknown:
            raise KeyError(f"split(s) {unknown} not in the segment table; it has {sorted(present)}")
        table = table.filter(pl.col("split").is_in(list(splits)))

    requested = table.height
    dropped: dict[str, int] = {}
    examples: dict[str, list[str]] = {}
    keep = np.ones(table.height, dtype=bool)
    for name, stream in handles.items():
        status = _stream_status(stream)
        joined = table.select("segment_id").join(status, on="segment_id", how="left",
                                                 maintain_order="left")
        for reason, mask in (
            (f"not in stream {name!r}", joined["status"].is_null()),
            (f"error rows in stream {name!r}", joined["status"] == "error"),
        ):
            _count(reason, mask.fill_null(False).to_numpy(), table, dropped, examples)
        keep &= (joined["status"] == "ok").fill_null(False).to_numpy()
    if segment_ids is not None and not keep.all():
        lacking = table["segment_id"].filter(pl.Series(~keep)).head(5).to_list()
        raise ValueError(f"{int((~keep).sum())} requested rows have no ok row in every stream "
                         f"{list(streams)}, e.g. {lacking}")
    table = table.filter(pl.Series(keep))

    table, labels, unlabelled = _labels(table, tasks, names, missing_labels, dropped, examples,
                                        by_name=vocabularies is not None, renumber=renumber)
    report = LoadReport(requested, table.height, dropped, examples, unlabelled)
    if table.height == 0:
        raise ValueError(f"no segments left to load: {report}")
    if dropped:
        log.info("load_head_data: %s", report)

    ids = table["segment_id"].to_numpy().astype(str)
    kept = [c for c in (*META_COLUMNS, *meta_columns) if c in table.columns]
    missing_meta = [c for c in meta_columns if c not in table.columns]
    if missing_meta:
        raise KeyError(f"segment table lacks column(s) {missing_meta}; it has {table.columns}")
    common: dict[str, Any] = {
        "labels": labels,
        "segment_ids": ids,
        "meta": table.select(list(dict.fromkeys(kept))),
        "num_classes": sizes,
        "class_names": names,
        "provenance": {name: dict(stream.info.provenance) for name, stream in handles.items()},
        "load_report": report,
    }
    if native is not None:
        return _native_data(handles, ids, views, native, common)
    features = {
        name: _load_stream(name, stream, ids, cache_dir, bins=bins, per_bin=per_bin, pool=pool)
        for name, stream in handles.items()
    }
    return HeadData(features=features, **common)


def dense_to_bins(loaded: LoadedStream, bins: int, per_bin: int = 1) -> np.ndarray:
    """``(N, bins * per_bin, D)`` frames of a densely sampled stream: ``per_bin`` evenly spaced
    frames in each of ``bins`` equal bins of every segment (for odd ``per_bin`` the middle one
    is the bin centre; short segments repeat frames)."""
    lengths = np.diff(loaded.offsets)
    positions = (np.arange(bins)[:, None] + (np.arange(per_bin)[None, :] + 0.5) / per_bin).ravel()
    index = np.floor(positions[None, :] * lengths[:, None] / bins).astype(np.int64)
    index = np.minimum(index, lengths[:, None] - 1)
    return loaded.features[loaded.offsets[:-1, None] + index]


def _native_data(handles: Mapping[str, Any], ids: np.ndarray, views: Mapping[str, tuple[str, bool]],
                 native: NativeBins, common: Mapping[str, Any]) -> JitteredData:
    """Every stored frame of the rows (the banks) and X-MIC's evaluation frames of each view."""
    banks: dict[str, Tensor] = {}
    lengths: np.ndarray | None = None
    offsets = np.zeros(0, np.int64)
    for name, stream in handles.items():
        loaded = stream.load(segment_ids=list(ids))
        got = np.asarray(loaded.segment_ids).astype(str)
        if got.shape != ids.shape or not (got == ids).all():
            raise ValueError(f"stream {name!r} returned rows out of the requested order")
        if loaded.offsets is None:
            raise ValueError(
                f"stream {name!r} holds a fixed number of frames per segment; native-frame "
                "jitter reads every frame of a segment: extract it with --sampling native")
        row_lengths = np.diff(loaded.offsets).astype(np.int64)
        if lengths is None:
            lengths, offsets, first = row_lengths, loaded.offsets[:-1].astype(np.int64), name
        elif not np.array_equal(lengths, row_lengths):
            odd = str(ids[int(np.flatnonzero(lengths != row_lengths)[0])])
            raise ValueError(f"streams {first!r} and {name!r} hold different frames of segment "
                             f"{odd!r}: extract them in one run (the same --sampling native)")
        banks[name] = torch.from_numpy(np.ascontiguousarray(loaded.features))
    classified, context = native.frames(lengths)
    features = {key: banks[stream][torch.from_numpy(offsets[:, None] + (context if ctx else classified))]
                for key, (stream, ctx) in views.items()}
    return JitteredData(features=features, **common, banks=banks, views=dict(views),
                        row_offsets=offsets, row_lengths=lengths, sampling=native)


# ---- the segment table ---------------------------------------------------------------------


def _segment_table(store: Any, tasks: Sequence[str], dataset: str | None, *,
                   labels_needed: bool, vocabularies: Mapping[str, Sequence[str]] | None
                   ) -> pl.DataFrame:
    table = store.segments().collect()
    required = ["segment_id", "split"] if labels_needed else ["segment_id"]
    for task in tasks:
        if f"{task}_class" not in table.columns and not (vocabularies and task in table.columns):
            required.append(f"{task}_class")
    missing = [c for c in required if c not in table.columns]
    if missing and labels_needed:
        raise KeyError(
            f"segment table lacks column(s) {missing} for tasks {list(tasks)}; "
            f"it has {table.columns}"
        )
    if "dataset" in table.columns and table.height:
        datasets = sorted(table["dataset"].unique().to_list())
        if dataset is not None:
            if dataset not in datasets:
                raise KeyError(f"dataset {dataset!r} not in the segment table; it has {datasets}")
            table = table.filter(pl.col("dataset") == dataset)
        elif len(datasets) > 1 and labels_needed and tasks:
            raise ValueError(
                f"the segment table holds several datasets {datasets} whose class ids do not "
                f"share a vocabulary; pick one (data.dataset=NAME)"
            )
    return table


def _stored_vocabularies(store: Any, table: pl.DataFrame, tasks: Sequence[str]) -> dict[str, list[str]] | None:
    """The store's vocabularies of the table's one dataset for ``tasks``, when it has them all."""
    lookup = getattr(store, "vocabulary", None)  # stores of other kinds may keep none
    if lookup is None or not tasks or "dataset" not in table.columns or table["dataset"].n_unique() != 1:
        return None
    dataset = table["dataset"][0]
    found = {task: lookup(dataset, task) for task in tasks}
    if any(v is None for v in found.values()):
        return None
    return {task: vocabulary["name"].to_list() for task, vocabulary in found.items()}


def _requested_rows(table: pl.DataFrame, segment_ids: Sequence[str]) -> pl.DataFrame:
    """``segment_ids`` in order, with their segment-table columns where they are segments."""
    wanted = pl.DataFrame({"segment_id": [str(s) for s in segment_ids]}, schema={"segment_id": pl.Utf8})
    if wanted["segment_id"].n_unique() != wanted.height:
        raise ValueError("segment_ids repeat an id: give each row once")
    if not table.height:
        return wanted
    return wanted.join(table, on="segment_id", how="left", maintain_order="left")


def _class_counts(table: pl.DataFrame, tasks: Sequence[str],
                  vocabularies: Mapping[str, Sequence[str]] | None,
                  num_classes: Mapping[str, int] | None) -> dict[str, int]:
    if vocabularies is not None:
        return {task: len(vocabularies[task]) for task in tasks}
    if num_classes is not None:
        return {task: int(num_classes[task]) for task in tasks}
    sizes = {}
    for task in tasks:
        top = table[f"{task}_class"].max() if f"{task}_class" in table.columns else None
        if top is None:
            raise ValueError(f"no segment has a {task}_class label; pass num_classes explicitly")
        sizes[task] = int(top) + 1
    return sizes


def _class_names(table: pl.DataFrame, tasks: Sequence[str], sizes: Mapping[str, int]) -> dict[str, list[str]]:
    names = {}
    for task in tasks:
        found: dict[int, str] = {}
        if task in table.columns and f"{task}_class" in table.columns:
            pairs = table.select(f"{task}_class", task).drop_nulls()
            for (class_id, name), _ in Counter(pairs.iter_rows()).most_common():
                found.setdefault(int(class_id), str(name))
        names[task] = [found.get(i, str(i)) for i in range(sizes[task])]
    return names


def _stream_status(stream: Any) -> pl.DataFrame:
    """One row per segment id of a stream: ``ok`` if any manifest row is ok, else ``error``."""
    manifest = stream.manifest().select("segment_id", "status").collect()
    return manifest.group_by("segment_id").agg(
        pl.when((pl.col("status") == STATUS_OK).any())
        .then(pl.lit("ok"))
        .otherwise(pl.lit("error"))
        .alias("status")
    )


def _count(reason: str, mask: np.ndarray, table: pl.DataFrame, dropped: dict[str, int],
           examples: dict[str, list[str]]) -> None:
    count = int(mask.sum())
    if count:
        dropped[reason] = dropped.get(reason, 0) + count
        examples.setdefault(reason, table["segment_id"].filter(pl.Series(mask)).head(3).to_list())


# ---- labels --------------------------------------------------------------------------------


def _labels(
    table: pl.DataFrame,
    tasks: Sequence[str],
    names: Mapping[str, Sequence[str]],
    missing_labels: str,
    dropped: dict[str, int],
    examples: dict[str, list[str]],
    *,
    by_name: bool,
    renumber: Mapping[str, Sequence[str]],
) -> tuple[pl.DataFrame, dict[str, Tensor], dict[str, list[str]]]:
    """Class ids per task (``{task}_class``, else the name's id), the rows kept, and the splits
    left unlabelled; ``renumber``: task -> the names the table's ids stand for, when ``names``
    orders them otherwise."""
    if missing_labels not in ("raise", "drop"):
        raise ValueError(f"missing_labels must be 'raise' or 'drop', got {missing_labels!r}")
    ids = {task: _class_ids(table, task, names[task], by_name, renumber.get(task)) for task in tasks}
    split = table["split"] if "split" in table.columns else pl.Series([None] * table.height, dtype=pl.Utf8)
    unlabelled: dict[str, list[str]] = {}
    drop = np.zeros(table.height, dtype=bool)
    for task, values in ids.items():
        missing = values.is_null()
        if by_name and task in table.columns:  # a name the vocabulary lacks ("[other]"): no label
            missing = missing & table[task].is_null()
        frame = pl.DataFrame({"split": split, "missing": missing})
        per_split = frame.group_by("split", maintain_order=True).agg(
            pl.col("missing").sum().alias("missing"), pl.len().alias("rows"))
        for name, missing, rows in per_split.iter_rows():
            if missing == 0:
                continue
            if missing == rows:
                unlabelled.setdefault(task, []).append(name)
                continue
            rows_missing = (frame["split"].eq_missing(name) & frame["missing"]).to_numpy()
            if missing_labels == "raise":
                bad = table["segment_id"].filter(pl.Series(rows_missing)).head(5).to_list()
                raise ValueError(
                    f"{missing} of {rows} segments of split {name!r} have no {task}_class "
                    f"(e.g. {bad}); leave them out with --set data.missing_labels=drop "
                    "(load_head_data(..., missing_labels='drop') in Python)"
                )
            _count(f"no {task}_class in split {name!r}", rows_missing, table, dropped, examples)
            drop |= rows_missing
    keep = pl.Series(~drop)
    labels = {
        task: torch.from_numpy(values.filter(keep).fill_null(UNLABELLED).cast(pl.Int64).to_numpy().copy())
        for task, values in ids.items()
    }
    for task, values in labels.items():
        size = len(names[task])
        if len(values) and int(values.max()) >= size:
            raise ValueError(f"{task} class id {int(values.max())} is outside the {size} {task} "
                             "classes of the vocabulary: give the vocabulary the ids refer to")
    return table.filter(keep), labels, unlabelled


def _class_ids(table: pl.DataFrame, task: str, names: Sequence[str], by_name: bool,
               numbered_by: Sequence[str] | None = None) -> pl.Series:
    ids = (table[f"{task}_class"].cast(pl.Int64) if f"{task}_class" in table.columns
           else pl.Series([None] * table.height, dtype=pl.Int64))
    lookup = {name: i for i, name in enumerate(names)}
    if numbered_by is not None:  # the store's id -> its name -> that name's id in ``names``
        moved = {old: lookup.get(name) for old, name in enumerate(numbered_by)}
        ids = ids.replace_strict(moved, default=None, return_dtype=pl.Int64)
    if by_name and task in table.columns:
        ids = ids.fill_null(table[task].replace_strict(lookup, default=None, return_dtype=pl.Int64))
    return ids


# ---- features ------------------------------------------------------------------------------


def _load_stream(name: str, stream: Any, ids: np.ndarray, cache_dir: str | os.PathLike[str] | None,
                 *, bins: int | None, per_bin: int, pool: bool) -> Tensor:
    shape = {"bins": bins, "per_bin": per_bin, "pool": pool}
    if cache_dir is None:
        return torch.from_numpy(_read(name, stream, ids, **shape))
    path = Path(cache_dir) / f"{_safe(name)}-{_cache_key(stream, ids, shape)}.npy"
    if not path.exists():
        _write_cache(name, stream, ids, path, shape)
    # copy-on-write: a writable view for torch, and the file is never modified.
    return torch.from_numpy(np.load(path, mmap_mode="c"))


def _read(name: str, stream: Any, ids: np.ndarray, *, bins: int | None, per_bin: int, pool: bool) -> np.ndarray:
    """Features of ``ids`` in that order, shaped as :func:`load_head_data` says."""
    loaded = stream.load(segment_ids=list(ids))
    got = np.asarray(loaded.segment_ids).astype(str)
    if got.shape != ids.shape or not (got == ids).all():
        raise ValueError(f"stream {name!r} returned rows out of the requested order")
    if loaded.offsets is not None:
        if pool:
            sums = np.add.reduceat(loaded.features.astype(np.float32), loaded.offsets[:-1], axis=0)
            return (sums / np.diff(loaded.offsets)[:, None])[:, None, :]
        if bins is None:
            raise ValueError(
                f"stream {name!r} has a variable number of frames per segment; resample it into "
                "bins (e.g. head.bins / --bins) or extract it with a fixed frame count"
            )
        return np.ascontiguousarray(dense_to_bins(loaded, bins, per_bin))
    features = np.asarray(loaded.features)
    if features.ndim != 3:
        raise ValueError(f"stream {name!r}: expected (N, T, D) features, got {features.shape}")
    if pool:
        pooled = np.empty((len(features), 1, features.shape[2]), dtype=np.float32)
        for start in range(0, len(features), 4096):  # bounded float32 temporaries
            rows = slice(start, start + 4096)
            pooled[rows, 0] = features[rows].mean(axis=1, dtype=np.float32)
        return pooled
    return features


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _cache_key(stream: Any, ids: np.ndarray, shape: Mapping[str, Any]) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps(stream.info.provenance, sort_keys=True, default=str).encode())
    digest.update(json.dumps(dict(shape), sort_keys=True).encode())
    buffer = io.BytesIO()
    stream.manifest().collect().write_ipc(buffer, compression="uncompressed")
    digest.update(buffer.getvalue())
    digest.update("\n".join(ids.tolist()).encode())
    return digest.hexdigest()[:20]


def _write_cache(name: str, stream: Any, ids: np.ndarray, path: Path, shape: Mapping[str, Any],
                 chunk_rows: int = 4096) -> None:
    """Fill a ``.npy`` memmap chunk by chunk, so the stream never has to fit in RAM."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".partial-{os.getpid()}")
    out = None
    for start in range(0, len(ids), chunk_rows):
        chunk = ids[start : start + chunk_rows]
        features = _read(name, stream, chunk, **shape)
        if out is None:
            out = np.lib.format.open_memmap(partial, mode="w+", dtype=features.dtype,
                                            shape=(len(ids), *features.shape[1:]))
        out[start : start + len(chunk)] = features
    out.flush()
    del out
    os.replace(partial, path)
