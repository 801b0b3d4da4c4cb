"""TSN-style temporal jitter: one frame per bin, drawn in training.

Two ways, by what the store holds:

* **Stored candidates.** Streams extracted with ``--sampling oversampled --per-bin K`` (or
  dense streams resampled into bins by the loader) hold ``bins * K`` frames per segment, bin
  ``b`` in columns ``b*K .. b*K+K-1``. In training one frame per bin and sample is drawn
  (:class:`TemporalJitter`, the same frames in every listed stream, so the streams stay
  aligned); at evaluation the bin centre is read.
* **Native frames** (X-MIC's jitter exactly). Streams extracted with ``--sampling native`` hold
  every frame of each segment; :class:`NativeBins` is X-MIC's rule for which frame of a bin is
  read, and :class:`JitteredData` draws any of them every epoch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from egofeat.heads.data import HeadData

__all__ = [
    "CONTEXT_SUFFIX",
    "JitteredData",
    "NativeBins",
    "TemporalJitter",
    "batch_label",
    "batch_stream",
    "batch_streams",
    "context_view",
    "dense_bin_indices",
    "gather_frames",
    "oversampled_bin_indices",
]


def batch_streams(batch: Mapping) -> Mapping[str, Tensor]:
    """The stream features of a batch: the trainer's ``batch["features"]``, or a flat dict."""
    features = batch.get("features")
    return features if isinstance(features, Mapping) else batch


def batch_label(batch: Mapping, task: str) -> Tensor:
    """The labels of ``task`` in a batch (the trainer's ``batch["labels"]``, or a flat dict)."""
    labels = batch.get("labels")
    return _lookup(labels if isinstance(labels, Mapping) else batch, task, "labels")


def batch_stream(batch: Mapping, name: str) -> Tensor:
    """The features of stream ``name`` in a batch (KeyError listing the batch's streams)."""
    return _lookup(batch_streams(batch), name, "streams")


def _lookup(entries: Mapping[str, Tensor], name: str, what: str) -> Tensor:
    try:
        return entries[name]
    except KeyError:
        raise KeyError(f"batch {what} have no entry {name!r}; they are {sorted(entries)}") from None



def oversampled_bin_indices(
    batch_size: int,
    num_bins: int,
    per_bin: int,
    *,
    train: bool,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Frame columns to read from a stream stored with ``per_bin`` frames in each of ``num_bins``.

    Bin ``b`` occupies columns ``b * per_bin .. b * per_bin + per_bin - 1``. In training one frame
    per bin and per sample is drawn uniformly (TSN-style jitter, as X-MIC trains); at evaluation
    the bin-centre frame is read, index ``(per_bin - 1) // 2`` within the bin (the earlier of the
    two middle frames when ``per_bin`` is even).

    Returns:
        ``(batch_size, num_bins)`` int64 column indices.
    """
    starts = torch.arange(num_bins) * per_bin
    if not train:
        return (starts + (per_bin - 1) // 2).expand(batch_size, num_bins).clone()
    offsets = torch.randint(per_bin, (batch_size, num_bins), generator=generator)
    return starts + offsets


def dense_bin_indices(
    lengths: Tensor,
    num_bins: int,
    *,
    train: bool,
    generator: torch.Generator | None = None,
) -> Tensor:
    """TSN sampling from densely stored frames: split each segment's frames into equal bins.

    Segment ``i`` has ``lengths[i]`` frames; bin ``b`` covers frames
    ``[b * n / num_bins, (b + 1) * n / num_bins)``. Training draws a uniform frame in each bin,
    evaluation takes the frame at the bin centre. Segments shorter than ``num_bins`` repeat frames.

    Returns:
        ``(len(lengths), num_bins)`` int64 frame indices.
    """
    lengths = torch.as_tensor(lengths, dtype=torch.float64)
    if lengths.ndim != 1 or bool((lengths < 1).any()):
        raise ValueError(f"lengths must be a 1-D tensor of positive frame counts, got {lengths}")
    if train:
        position = torch.rand((len(lengths), num_bins), generator=generator, dtype=torch.float64)
    else:
        position = torch.full((len(lengths), num_bins), 0.5, dtype=torch.float64)
    bin_width = lengths[:, None] / num_bins
    index = ((torch.arange(num_bins) + position) * bin_width).floor().long()
    return torch.minimum(index, lengths[:, None].long() - 1)


def gather_frames(features: Tensor, indices: Tensor) -> Tensor:
    """Pick ``features[b, indices[b, t]]``: ``(B, N, D)`` and ``(B, T)`` give ``(B, T, D)``."""
    expanded = indices.to(features.device)[..., None].expand(-1, -1, features.shape[-1])
    return features.gather(1, expanded)


class TemporalJitter:
    """Sample the same frames from several streams of a batch, as X-MIC's data loader does.

    Streams must be stored oversampled: ``num_bins * K`` frames per segment (bin ``b`` in columns
    ``b*K .. b*K+K-1``). Every listed stream of a sample is read at the same indices so the
    classified and context features stay aligned; other batch entries pass through unchanged.

    The generator is reseeded from ``(seed, epoch)`` by :meth:`set_epoch`, so the jitter of an
    epoch is reproducible given the batch order. With ``seed=None`` the frames are drawn from
    torch's global RNG instead, which :class:`~egofeat.heads.trainer.Trainer` seeds and saves in
    its checkpoints, so a resumed run jitters exactly as an uninterrupted one.
    """

    def __init__(self, streams: Sequence[str], num_bins: int = 16, seed: int | None = 0) -> None:
        self.streams = tuple(streams)
        self.num_bins = num_bins
        self.seed = seed
        self.generator = torch.Generator() if seed is not None else None
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Restart the random stream for ``epoch`` (nothing to do with the global RNG)."""
        if self.generator is not None:
            self.generator.manual_seed(self.seed * 1_000_003 + epoch)

    def __call__(self, batch: Mapping, *, train: bool) -> dict:
        """A copy of ``batch`` (trainer layout or flat) with the listed streams jittered."""
        features = batch_streams(batch)
        first = batch_stream(batch, self.streams[0])
        batch_size, columns = first.shape[:2]
        if columns % self.num_bins:
            raise ValueError(
                f"stream {self.streams[0]!r} has {columns} frames per segment, not a multiple of "
                f"{self.num_bins} bins: store it with K frames per bin (num_bins * K frames)"
            )
        indices = oversampled_bin_indices(
            batch_size,
            self.num_bins,
            columns // self.num_bins,
            train=train,
            generator=self.generator,
        )
        jittered = dict(features)
        for name in self.streams:
            stream = batch_stream(batch, name)
            if stream.shape[:2] != first.shape[:2]:
                raise ValueError(
                    f"stream {name!r} has shape {tuple(stream.shape)} but {self.streams[0]!r} "
                    f"has {tuple(first.shape)}: jittered streams must share frame sampling"
                )
            jittered[name] = gather_frames(stream, indices)
        return jittered if features is batch else {**batch, "features": jittered}


# ---- native-frame jitter: any stored frame of a bin, as X-MIC's loaders draw ------------------

Span = Literal["to-last", "to-end"]

#: suffix of the feature key under which a stream's conditioning frames are held
CONTEXT_SUFFIX = "@context"


def context_view(stream: str) -> str:
    """The feature key of ``stream``'s conditioning frames (``"clip/hand@context"``), which
    differ from its classified frames where conditioning is offset (X-MIC on Ego4D)."""
    return f"{stream}{CONTEXT_SUFFIX}"


@dataclass(frozen=True)
class NativeBins:
    """X-MIC's temporal bins over every stored (native) frame of a segment.

    With ``n`` frames stored, X-MIC's loaders split ``[0, n - 1)`` (``span="to-last"``: EPIC,
    Dassl's data manager, ``linspace(start_frame, stop_frame - 1, 16, endpoint=False)``) or
    ``[0, n)`` (``"to-end"``: Ego4D, ``datasets/ego4d_helper.py``) into ``bins`` bins of width
    ``step``. Training reads frame ``int(b * step) + r`` of bin ``b``, ``r`` uniform in
    ``[0, int(step))`` (``0`` when ``int(step) == 0``): any native frame of the bin. Evaluation
    reads ``int(b * step + step / 2)``.

    ``context_offset`` (X-MIC's Ego4D loader): the conditioning frames are the classified ones
    jittered a second time in training (``+ r'``, drawn as ``r``) and shifted by another half
    bin at evaluation (``int(i + step / 2)``). An index past the last stored frame reads the
    last one (X-MIC's decode holds frames beyond its window there; a store holds the window).
    """

    bins: int = 16
    span: Span = "to-last"
    context_offset: bool = False

    def __post_init__(self) -> None:
        if self.bins < 1:
            raise ValueError(f"bins must be >= 1, got {self.bins}")
        if self.span not in ("to-last", "to-end"):
            raise ValueError(f"span must be 'to-last' or 'to-end', not {self.span!r}")

    def frames(self, lengths: np.ndarray, rng: np.random.Generator | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """``(classified, context)`` frame indices ``(N, bins)`` within each segment of
        ``lengths`` frames: random draws with ``rng`` (training), bin centres without."""
        lengths = np.asarray(lengths, dtype=np.int64)
        if lengths.ndim != 1 or (lengths < 1).any():
            raise ValueError("every segment needs at least one stored frame")
        span = lengths - 1 if self.span == "to-last" else lengths
        step = span.astype(np.float64) / self.bins  # exact: bins is X-MIC's 16, a power of two
        starts = np.arange(self.bins)[None, :] * step[:, None]
        last = (lengths - 1)[:, None]
        if rng is None:
            classified = np.floor(starts + step[:, None] / 2).astype(np.int64)
            context = (np.floor(classified + step[:, None] / 2).astype(np.int64)
                       if self.context_offset else classified)
        else:
            width = np.maximum(np.floor(step), 1)[:, None]  # int(step) candidates, or the one
            classified = np.floor(starts).astype(np.int64) + _draw(rng, width, starts.shape)
            context = (classified + _draw(rng, width, starts.shape)
                       if self.context_offset else classified)
        return np.minimum(classified, last), np.minimum(context, last)


def _draw(rng: np.random.Generator, width: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Uniform integers in ``[0, width)`` per row."""
    return np.floor(rng.random(shape) * width).astype(np.int64)


@dataclass
class JitteredData(HeadData):
    """A :class:`HeadData` whose training rows draw any native frame of each bin, every epoch.

    ``features`` hold the evaluation frames (bin centres, :class:`NativeBins`), so predicting,
    validating and zero-shot scoring read it as any ``HeadData``; ``banks`` hold every stored
    frame of the rows (stream -> ``(F, D)``, rows at ``row_offsets``, ``row_lengths`` frames
    each), and :meth:`epoch` draws a plain ``HeadData`` of jittered frames from them, which the
    :class:`~egofeat.heads.trainer.Trainer` trains on each epoch. ``views`` name the stream and
    whether the conditioning rule applies to each feature key (see :func:`context_view`).
    Subsets share the banks.
    """

    banks: dict[str, Tensor] = field(default_factory=dict)
    views: dict[str, tuple[str, bool]] = field(default_factory=dict)
    row_offsets: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    row_lengths: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    sampling: NativeBins = field(default_factory=NativeBins)

    def __post_init__(self) -> None:
        super().__post_init__()
        rows = len(self.segment_ids)
        if self.row_offsets.shape != (rows,) or self.row_lengths.shape != (rows,):
            raise ValueError(f"row_offsets and row_lengths must have {rows} entries")
        unknown = {stream for stream, _ in self.views.values()} - set(self.banks)
        if unknown or not set(self.features) <= set(self.views):
            raise ValueError(f"every feature key needs a view of a bank: views {self.views}, "
                             f"banks {sorted(self.banks)}")

    def plain(self) -> HeadData:
        """The same rows as a plain :class:`HeadData` of the evaluation frames."""
        return HeadData(**{f.name: getattr(self, f.name) for f in fields(HeadData)})

    def epoch(self, seed: int, epoch: int) -> HeadData:
        """The rows with one frame per bin drawn anew, reproducibly from ``(seed, epoch)``."""
        rng = np.random.default_rng([seed, epoch, 0x5EED])
        classified, context = self.sampling.frames(self.row_lengths, rng)
        features = {}
        for key in self.features:
            stream, is_context = self.views[key]
            index = self.row_offsets[:, None] + (context if is_context else classified)
            features[key] = self.banks[stream][torch.from_numpy(index)]
        return replace(self.plain(), features=features, load_report=None)

    def subset(self, rows: np.ndarray | Tensor | Sequence[int] | slice) -> JitteredData:
        positions = np.arange(len(self))[rows] if isinstance(rows, slice) else (
            rows.cpu().numpy() if isinstance(rows, Tensor) else np.asarray(rows))
        if positions.dtype == bool:
            positions = np.flatnonzero(positions)
        positions = positions.astype(np.int64)
        chosen = self.plain().subset(positions)
        return JitteredData(**{f.name: getattr(chosen, f.name) for f in fields(HeadData)},
                            banks=self.banks, views=self.views, sampling=self.sampling,
                            row_offsets=self.row_offsets[positions],
                            row_lengths=self.row_lengths[positions])

    def time_mean(self, chunk_rows: int = 128) -> HeadData:
        """Time-means of the evaluation frames (a plain ``HeadData``: nothing left to jitter)."""
        return self.plain().time_mean(chunk_rows)
