"""Heads over per-frame features: linear probe, MLP, TSN, multi-scale TRN and a TSM-style head.

Every head takes a batch dict and returns a dict task -> logits ``(B, C_task)``. The batch
carries its inputs under ``batch["features"]``: stream name -> float tensor ``(B, T, D_stream)``.
Streams named in ``in_dims`` are concatenated per frame on the feature axis, in ``in_dims``
order; a stream with a single frame (T=1, e.g. a clip-level embedding) is repeated over the
other streams' frames. Streams in the batch that the head was not built for are ignored, so a
batch may carry extra inputs (e.g. cached teacher logits) for the loss.

Architectures follow the EPIC-KITCHENS TSN/TRN/TSM baselines, moved onto stored per-frame
vectors (see ``reference/heads.md`` §7). Two options bring them closer to the C1 code (the
``tsn-c1`` / ``trn-c1`` / ``tsm-c1-features`` recipes set them):

* ``init_std``: the per-frame layer after the dropout (TSN's classifier, TRN's bottleneck, the
  TSM-style head's classifier) starts from ``N(0, init_std)`` weights and zero biases (C1: 0.001)
  instead of torch's default.
* ``bins``: TSN-style segment sampling over a stream stored with ``bins * K`` frames per segment
  (``--sampling oversampled --per-bin K``): training reads one random frame of each bin, the same
  frames in every stream (:mod:`egofeat.heads.jitter`); evaluation reads every stored frame for
  TSN (C1 tests TSN on 25 frames; its consensus is a mean, so it takes any count) and the bin
  centres for TRN and the TSM-style head (they need ``bins`` frames).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from egofeat.heads.jitter import gather_frames, oversampled_bin_indices
from egofeat.heads.registry import ANY_STREAM, register_head

__all__ = [
    "Dropout",
    "FrameBins",
    "LinearHead",
    "MLPHead",
    "ShiftMLPBlock",
    "StreamInput",
    "TRNHead",
    "TSMHead",
    "TSNHead",
    "TaskClassifier",
    "sample_subsets",
    "temporal_shift",
]


class Dropout(nn.Dropout):
    """Inverted dropout, like ``nn.Dropout``, drawing its mask as ``uniform >= p``.

    On CPU, torch's dropout draws the mask through ``bernoulli_``, which made it ~20% of a TRN
    training step over 16 frames; a uniform draw and a compare is about 2x faster for the same
    distribution. CUDA keeps torch's fused kernel.
    """

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.is_cuda or self.p == 1.0:
            return F.dropout(x, self.p, training=True)
        keep = (torch.rand_like(x) >= self.p).to(x.dtype).mul_(1.0 / (1.0 - self.p))
        return x * keep


class StreamInput(nn.Module):
    """Selects the head's streams from ``batch["features"]`` and joins them per frame."""

    def __init__(self, in_dims: Mapping[str, int]) -> None:
        super().__init__()
        self.in_dims = dict(in_dims)
        self.dim = sum(self.in_dims.values())

    def _select(self, features: Mapping[str, Tensor]) -> list[Tensor]:
        if ANY_STREAM in self.in_dims:
            if len(features) != 1:
                raise ValueError(
                    f"this head was built with an int in_dims (one stream of any name) but the "
                    f"batch has {len(features)} streams {sorted(features)}; build it with "
                    f"in_dims={{name: dim}} to say which streams it reads"
                )
            chosen = list(features.items())
            dims = [self.in_dims[ANY_STREAM]]
        else:
            missing = [name for name in self.in_dims if name not in features]
            if missing:
                raise KeyError(f"batch has no stream(s) {missing}; it has {sorted(features)}")
            chosen = [(name, features[name]) for name in self.in_dims]
            dims = list(self.in_dims.values())
        for (name, x), dim in zip(chosen, dims, strict=True):
            if x.ndim != 3 or x.shape[-1] != dim:
                raise ValueError(
                    f"stream {name!r}: expected a (batch, frames, {dim}) tensor, "
                    f"got shape {tuple(x.shape)}"
                )
        frames = {x.shape[1] for _, x in chosen} - {1}
        if len(frames) > 1:
            shapes = {name: tuple(x.shape) for name, x in chosen}
            raise ValueError(f"streams have different frame counts and none is 1: {shapes}")
        return [x for _, x in chosen]

    def forward(self, features: Mapping[str, Tensor], *, pool: bool = False) -> Tensor:
        """float32 ``(B, T, D)`` features, or their time-mean ``(B, D)`` when ``pool`` is set."""
        xs = self._select(features)
        if pool:  # averaging in float32 reads fp16 inputs without a full-size fp32 copy
            return torch.cat([x.mean(dim=1, dtype=torch.float32) for x in xs], dim=-1)
        if len(xs) == 1:
            return xs[0].float()
        frames = max(x.shape[1] for x in xs)
        # join in the stored dtype (fp16: half the bytes), then convert once
        return torch.cat([x.expand(-1, frames, -1) for x in xs], dim=-1).float()


class FrameBins(nn.Module):
    """TSN-style segment sampling of ``(B, bins * K, D)`` frames (see the module docstring).

    Training draws one of the ``K`` frames of each bin per sample (torch's global RNG, which the
    trainer seeds and checkpoints); evaluation keeps every frame (``eval_frames="all"``) or the
    bin centres (``"centres"``). ``bins=None`` passes the frames through.
    """

    def __init__(self, bins: int | None, eval_frames: str = "centres") -> None:
        super().__init__()
        if bins is not None and bins < 1:
            raise ValueError(f"bins must be >= 1, got {bins}")
        if eval_frames not in ("all", "centres"):
            raise ValueError(f"eval_frames must be 'all' or 'centres', got {eval_frames!r}")
        self.bins = bins
        self.eval_frames = eval_frames

    def forward(self, x: Tensor) -> Tensor:
        if self.bins is None:
            return x
        frames = x.shape[1]
        if frames % self.bins:
            raise ValueError(
                f"the stream has {frames} frames per segment, not a multiple of head.bins="
                f"{self.bins}: extract it with --frames {self.bins} (and --sampling oversampled "
                f"--per-bin K), or set head.bins to a divisor of {frames}"
            )
        if not self.training and self.eval_frames == "all":
            return x
        index = oversampled_bin_indices(x.shape[0], self.bins, frames // self.bins, train=self.training)
        return gather_frames(x, index)


def _init_normal(layers: list[nn.Linear], std: float | None) -> None:
    """``N(0, std)`` weights and zero biases (the C1 baselines' new layer); ``None``: keep
    torch's default initialisation."""
    if std is None:
        return
    for layer in layers:
        nn.init.normal_(layer.weight, 0.0, std)
        nn.init.zeros_(layer.bias)


class TaskClassifier(nn.Module):
    """One linear layer per task: ``(B, D)`` -> {task: ``(B, C_task)``}."""

    def __init__(self, in_features: int, num_classes: Mapping[str, int]) -> None:
        super().__init__()
        self.tasks = nn.ModuleDict(
            {task: nn.Linear(in_features, count) for task, count in num_classes.items()}
        )

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return {task: layer(x) for task, layer in self.tasks.items()}


def _split_tasks(logits: Tensor, num_classes: Mapping[str, int]) -> dict[str, Tensor]:
    return dict(zip(num_classes, logits.split(list(num_classes.values()), dim=-1), strict=True))


class LinearHead(nn.Module):
    """Linear probe on the time-mean feature."""

    #: reads only each stream's time-mean, so trainers may average the frames once, up front
    time_pooled = True

    def __init__(
        self, in_dims: Mapping[str, int], num_classes: Mapping[str, int], dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.input = StreamInput(in_dims)
        self.dropout = Dropout(dropout)
        self.classifier = TaskClassifier(self.input.dim, num_classes)

    def forward(self, batch: Mapping) -> dict[str, Tensor]:
        return self.classifier(self.dropout(self.input(batch["features"], pool=True)))


class MLPHead(nn.Module):
    """One hidden layer (GELU, dropout) on the time-mean feature."""

    time_pooled = True

    def __init__(
        self,
        in_dims: Mapping[str, int],
        num_classes: Mapping[str, int],
        hidden: int = 512,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.input = StreamInput(in_dims)
        self.hidden = nn.Sequential(nn.Linear(self.input.dim, hidden), nn.GELU(), Dropout(dropout))
        self.classifier = TaskClassifier(hidden, num_classes)

    def forward(self, batch: Mapping) -> dict[str, Tensor]:
        return self.classifier(self.hidden(self.input(batch["features"], pool=True)))


class TSNHead(nn.Module):
    """TSN: per-frame dropout and a shared linear classifier, then average consensus.

    Averaging per-frame logits of a linear layer equals the layer applied to the mean of the
    (dropped-out) frames, which is what is computed. It differs from :class:`LinearHead` by
    dropping features independently in every frame. ``bins`` and ``init_std``: see the module
    docstring (at evaluation TSN reads every stored frame).
    """

    def __init__(
        self,
        in_dims: Mapping[str, int],
        num_classes: Mapping[str, int],
        dropout: float = 0.5,
        *,
        bins: int | None = None,
        init_std: float | None = None,
    ) -> None:
        super().__init__()
        self.input = StreamInput(in_dims)
        self.frames = FrameBins(bins, eval_frames="all")
        self.dropout = Dropout(dropout)
        self.classifier = TaskClassifier(self.input.dim, num_classes)
        _init_normal(list(self.classifier.tasks.values()), init_std)

    def forward(self, batch: Mapping) -> dict[str, Tensor]:
        frames = self.dropout(self.frames(self.input(batch["features"])))
        return self.classifier(frames.mean(dim=1))


def sample_subsets(
    num_frames: int, size: int, count: int, generator: torch.Generator | None = None
) -> Tensor:
    """``count`` distinct order-preserving ``size``-subsets of ``range(num_frames)``, ``(count, size)``.

    Uniform without replacement. When few of the subsets are wanted they are drawn as sorted
    random frame sets, rejecting duplicates (enumerating C(T, k) would not fit in memory for
    long T); otherwise the space is small (under ``2 * count``) and is enumerated.
    """
    total = math.comb(num_frames, size)
    if count > total:
        raise ValueError(f"only {total} {size}-subsets of {num_frames} frames, asked for {count}")
    if 2 * count <= total:
        drawn: dict[tuple[int, ...], None] = {}
        while len(drawn) < count:
            subset = torch.randperm(num_frames, generator=generator)[:size].sort().values
            drawn.setdefault(tuple(subset.tolist()), None)
        return torch.tensor(list(drawn), dtype=torch.long).view(count, size)
    ranks = set(torch.randperm(total, generator=generator)[:count].tolist())
    combos = itertools.combinations(range(num_frames), size)
    picked = [subset for rank, subset in enumerate(combos) if rank in ranks]
    return torch.tensor(picked, dtype=torch.long).view(count, size)


class TRNHead(nn.Module):
    """Multi-scale Temporal Relation Network over per-frame features.

    Frames go through dropout and a shared ``Linear(D, bottleneck)``. For every scale
    ``k = T, T-1, ..., 2`` an MLP ``g_k = ReLU -> Linear(k*bottleneck, hidden) -> ReLU ->
    Linear(hidden, C)`` reads order-preserving k-subsets of frames (concatenated); the output is
    the sum over scales and subsets. Scale T uses the one full tuple; smaller scales use
    ``m_k = min(max_subsets, C(T, k))`` subsets.

    * Training draws the ``m_k`` subsets at random on every forward pass (torch's global RNG,
      shared by the batch), as the reference implementation does.
    * Evaluation is deterministic: each scale uses a fixed set of ``min(eval_subsets, C(T, k))``
      subsets, drawn once at construction from ``eval_seed`` and stored as buffers (so a
      checkpoint evaluates the same way everywhere). Their mean is multiplied by ``m_k``, which
      makes the eval output an estimate of the *expected* training-time sum; when
      ``eval_subsets >= C(T, k)`` it is that expectation exactly. The default (3, as many as
      training uses) keeps evaluation as cheap as a training forward pass; raise it for a
      lower-variance estimate (``eval_subsets=70`` averages every subset when T=8).

    With T=1 there is no relation of two frames; a single scale ``k=1`` reads the one frame.
    ``bins`` (T is then ``bins``) and ``init_std`` (of the bottleneck): see the module docstring.
    """

    def __init__(
        self,
        in_dims: Mapping[str, int],
        num_frames: int,
        num_classes: Mapping[str, int],
        bottleneck: int = 256,
        hidden: int = 256,
        dropout: float = 0.5,
        max_subsets: int = 3,
        eval_subsets: int = 3,
        eval_seed: int = 0,
        *,
        bins: int | None = None,
        init_std: float | None = None,
    ) -> None:
        super().__init__()
        if max_subsets < 1 or eval_subsets < 1:
            raise ValueError(
                f"max_subsets and eval_subsets must be >= 1, got {max_subsets}, {eval_subsets}"
            )
        self.input = StreamInput(in_dims)
        self.frames = FrameBins(bins, eval_frames="centres")
        num_frames = bins or num_frames
        self.num_frames = num_frames
        self.num_classes = dict(num_classes)
        self.dropout = Dropout(dropout)
        self.frame_fc = nn.Linear(self.input.dim, bottleneck)
        _init_normal([self.frame_fc], init_std)
        self.scales = list(range(num_frames, 1, -1)) or [1]
        self.train_counts = [min(max_subsets, math.comb(num_frames, k)) for k in self.scales]
        total_classes = sum(self.num_classes.values())
        self.relations = nn.ModuleList(
            nn.ModuleDict(
                {"fc1": nn.Linear(k * bottleneck, hidden), "fc2": nn.Linear(hidden, total_classes)}
            )
            for k in self.scales
        )
        generator = torch.Generator().manual_seed(eval_seed)
        for k in self.scales:
            count = min(eval_subsets, math.comb(num_frames, k))
            self.register_buffer(
                f"eval_subsets_{k}", sample_subsets(num_frames, k, count, generator)
            )

    def _all_subsets(self, size: int) -> Tensor:
        subsets = list(itertools.combinations(range(self.num_frames), size))
        return torch.tensor(subsets, dtype=torch.long).view(len(subsets), size)

    def _relation(self, index: int, frames: Tensor, subsets: Tensor, weight: float) -> Tensor:
        """``weight * sum_s g_k(frames[:, subsets[s]])`` for the scale at ``index``, where
        ``frames`` already went through g_k's leading ReLU."""
        layers = self.relations[index]
        batch, count = frames.shape[0], subsets.shape[0]
        tuples = frames.index_select(1, subsets.flatten()).reshape(batch, count, -1)
        hidden = F.relu(layers["fc1"](tuples))
        # fc2 is affine, so it is applied once to the (weighted) sum over subsets.
        pooled = hidden.sum(dim=1)
        if weight != 1.0:
            pooled = pooled * weight
        return F.linear(pooled, layers["fc2"].weight) + layers["fc2"].bias * (weight * count)

    def forward(self, batch: Mapping) -> dict[str, Tensor]:
        x = self.frames(self.input(batch["features"]))
        if x.shape[1] != self.num_frames:
            raise ValueError(
                f"TRN head was built for {self.num_frames} frames, got {x.shape[1]}; "
                f"rebuild it with num_frames={x.shape[1]} or resample the stream"
            )
        # g_k starts with a ReLU on the concatenated frames: apply it once per frame instead.
        frames = F.relu(self.frame_fc(self.dropout(x)))
        logits = 0
        for index, (k, count) in enumerate(zip(self.scales, self.train_counts, strict=True)):
            if self.training:
                if count == math.comb(self.num_frames, k):
                    subsets = self._all_subsets(k)
                else:
                    subsets = sample_subsets(self.num_frames, k, count)
                subsets, weight = subsets.to(x.device), 1.0
            else:
                subsets = getattr(self, f"eval_subsets_{k}")
                weight = count / subsets.shape[0]
            logits = logits + self._relation(index, frames, subsets, weight)
        return _split_tasks(logits, self.num_classes)


def temporal_shift(x: Tensor, fold_div: int = 8) -> Tensor:
    """TSM's shift on ``(B, T, C)``: channels ``[0, C/8)`` take frame t+1's value, channels
    ``[C/8, 2C/8)`` frame t-1's, the rest stay; ends are zero-padded."""
    fold = x.shape[-1] // fold_div
    shifted = torch.zeros_like(x)
    shifted[:, :-1, :fold] = x[:, 1:, :fold]
    shifted[:, 1:, fold : 2 * fold] = x[:, :-1, fold : 2 * fold]
    shifted[:, :, 2 * fold :] = x[:, :, 2 * fold :]
    return shifted


class ShiftMLPBlock(nn.Module):
    """Residual block ``x + MLP(LayerNorm(temporal_shift(x)))``."""

    def __init__(self, width: int, mlp_ratio: float, dropout: float, fold_div: int) -> None:
        super().__init__()
        self.fold_div = fold_div
        self.norm = nn.LayerNorm(width)
        inner = int(width * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(width, inner), nn.GELU(), Dropout(dropout), nn.Linear(inner, width)
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.mlp(self.norm(temporal_shift(x, self.fold_div)))


class TSMHead(nn.Module):
    """TSM-style head (not TSM itself): shift-MLP blocks over frames, mean over T, classifier.

    TSM shifts channels of *intermediate* backbone maps, which frozen final features no longer
    have; this head applies the same 1/8-forward, 1/8-backward zero-padded shift to a projection
    of the stored features inside residual MLP blocks. ``dropout`` is the dropout before the
    classifier, ``block_dropout`` the one inside the blocks (default: ``dropout``); ``bins`` and
    ``init_std`` (of the classifier): see the module docstring.
    """

    def __init__(
        self,
        in_dims: Mapping[str, int],
        num_classes: Mapping[str, int],
        width: int = 256,
        depth: int = 2,
        mlp_ratio: float = 2.0,
        dropout: float = 0.5,
        fold_div: int = 8,
        *,
        block_dropout: float | None = None,
        bins: int | None = None,
        init_std: float | None = None,
    ) -> None:
        super().__init__()
        self.input = StreamInput(in_dims)
        self.frames = FrameBins(bins, eval_frames="centres")
        self.proj = nn.Linear(self.input.dim, width)
        inner = dropout if block_dropout is None else block_dropout
        self.blocks = nn.Sequential(
            *(ShiftMLPBlock(width, mlp_ratio, inner, fold_div) for _ in range(depth))
        )
        self.norm = nn.LayerNorm(width)
        self.dropout = Dropout(dropout)
        self.classifier = TaskClassifier(width, num_classes)
        _init_normal(list(self.classifier.tasks.values()), init_std)

    def forward(self, batch: Mapping) -> dict[str, Tensor]:
        x = self.blocks(self.proj(self.frames(self.input(batch["features"]))))
        return self.classifier(self.dropout(self.norm(x).mean(dim=1)))


@register_head("linear")
def linear(*, in_dims, num_frames, num_classes, dropout: float = 0.0) -> LinearHead:
    """Linear probe on the time-mean of the (concatenated) stream features."""
    return LinearHead(in_dims, num_classes, dropout=dropout)


@register_head("mlp")
def mlp(*, in_dims, num_frames, num_classes, hidden: int = 512, dropout: float = 0.5) -> MLPHead:
    """MLP (one GELU hidden layer) on the time-mean feature."""
    return MLPHead(in_dims, num_classes, hidden=hidden, dropout=dropout)


@register_head("tsn")
def tsn(*, in_dims, num_frames, num_classes, dropout: float = 0.5, bins: int | None = None,
        init_std: float | None = None) -> TSNHead:
    """TSN: per-frame dropout + linear, average consensus."""
    return TSNHead(in_dims, num_classes, dropout=dropout, bins=bins, init_std=init_std)


@register_head("trn")
def trn(*, in_dims, num_frames, num_classes, bottleneck: int = 256, hidden: int = 256,
        dropout: float = 0.5, max_subsets: int = 3, eval_subsets: int = 3, eval_seed: int = 0,
        bins: int | None = None, init_std: float | None = None) -> TRNHead:
    """Multi-scale TRN; deterministic fixed subsets at evaluation."""
    return TRNHead(in_dims, num_frames, num_classes, bottleneck=bottleneck, hidden=hidden, dropout=dropout,
                   max_subsets=max_subsets, eval_subsets=eval_subsets, eval_seed=eval_seed, bins=bins,
                   init_std=init_std)


@register_head("tsm")
def tsm(*, in_dims, num_frames, num_classes, width: int = 256, depth: int = 2, mlp_ratio: float = 2.0,
        dropout: float = 0.5, fold_div: int = 8, block_dropout: float | None = None, bins: int | None = None,
        init_std: float | None = None) -> TSMHead:
    """TSM-style temporal-shift MLP head."""
    return TSMHead(in_dims, num_classes, width=width, depth=depth, mlp_ratio=mlp_ratio, dropout=dropout,
                   fold_div=fold_div, block_dropout=block_dropout, bins=bins, init_std=init_std)
