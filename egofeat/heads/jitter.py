"""TSN-style temporal jitter over stored frames: one frame per bin, drawn in training.

Streams extracted with ``--sampling oversampled --per-bin K`` (or dense streams resampled into
bins by the loader) hold ``bins * K`` frames per segment, bin ``b`` in columns
``b*K .. b*K+K-1``. In training one frame per bin and sample is drawn (the same frames in every
listed stream, so the streams stay aligned); at evaluation the bin centre is read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

__all__ = [
    "TemporalJitter",
    "batch_label",
    "batch_stream",
    "batch_streams",
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
