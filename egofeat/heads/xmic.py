"""X-MIC: video-conditioned text classifiers over frozen CLIP features.

X-MIC (Kukleva et al., CVPR 2024) keeps CLIP frozen and learns a small adapter that turns a video
into a vector ``a``. That vector is added to every class text embedding, so each video gets its
own text classifier in CLIP's joint space::

    context tokens (B, T, S, D)  --intra-frame block--> mean over S --> + temporal embedding
        --inter-frame blocks--> mean over T --> adapter (D -> D/16 -> E, ReLU, ReLU) = a  (B, E)
    text_b = l2norm(class_text + 2.0 * a_b)                       (B, C, E), per video b
    logits = exp(logit_scale) * <l2norm(mean_T(classified)), text_b>

Which tensor is normalized where follows the reference code (``reference/xmic.md`` §1.3): each
context feature is L2-normalized before the transformer, class text embeddings are *not*
normalized before the video vector is added (only the sum is), and the classified feature is the
L2-normalized mean over frames of the frozen features, with no learnable parameters on that path.

The registered ``xmic`` head (:class:`XMICClassifier`) jitters frames in training
(:mod:`egofeat.heads.jitter`); the ``xmic`` task that trains it from store streams and class-name
text streams is :mod:`egofeat.heads.xmic_task`. :func:`zero_shot_logits` is the zero-shot CLIP
baseline.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from egofeat.heads.data import UNLABELLED
from egofeat.heads.jitter import TemporalJitter, batch_label, batch_stream
from egofeat.heads.registry import ANY_STREAM, register_head

__all__ = [
    "XMIC_BATCH_SIZE",
    "XMIC_BETAS",
    "XMIC_EPOCHS",
    "XMIC_LR",
    "XMIC_WARMUP_EPOCHS",
    "XMIC_WARMUP_MIN_LR",
    "XMIC_WEIGHT_DECAY",
    "XMIC_TRAINER",
    "XMICClassifier",
    "XMICConfig",
    "XMICHead",
    "zero_shot_logits",
]

# The X-MIC training recipe (reference/xmic.md §1.4).
XMIC_LR = 5e-4
XMIC_BETAS = (0.9, 0.98)
XMIC_WEIGHT_DECAY = 0.01
XMIC_EPOCHS = 15
XMIC_WARMUP_EPOCHS = 5
XMIC_WARMUP_MIN_LR = 1e-7
XMIC_BATCH_SIZE = 32
#: The recipe as trainer settings: AdamW (0.9, 0.98), weight decay 0.01 on every parameter, 15
#: epochs, the rate per epoch as Dassl's warm-up: 1e-7 in the first, then 1e-4, 2e-4, 3e-4,
#: 4e-4, then constant 5e-4; no clipping, no early stop.
XMIC_TRAINER: dict = {
    "epochs": XMIC_EPOCHS,
    "lr": XMIC_LR,
    "betas": list(XMIC_BETAS),
    "weight_decay": XMIC_WEIGHT_DECAY,
    "decay_all_parameters": True,
    "schedule": "constant",
    "warmup_epochs": XMIC_WARMUP_EPOCHS,
    "warmup_lr": XMIC_WARMUP_MIN_LR,
    "warmup_rule": "dassl",
    "step_on_epochs": True,
    "batch_size": XMIC_BATCH_SIZE,
    "grad_clip": None,
    "patience": None,
}


@dataclass(frozen=True)
class XMICConfig:
    """Hyper-parameters and input streams of an :class:`XMICHead`.

    The defaults are the published X-MIC model (ViT-B/16 CLIP features, 512-d): the classified
    stream is the hand crop, and the conditioning ("context") tokens per frame are
    ``[hand crop, full frame]``.

    Variants:

    * **Full frame only** (no hand crops): ``classified_stream`` and the single context stream are
      the full-frame stream. With one token per frame there is nothing for the intra-frame block
      to attend across (its query and key projections would never receive a gradient), so it is
      left out; the temporal (inter-frame) stack and the adapter are unchanged.
    * **Second encoder for the conditioning** (the paper's DINO branch): list the other encoder's
      streams in ``context_streams`` and their dimensions in ``context_dims``. A context stream
      whose dimension differs from ``width`` goes through its own ``Linear(dim, width)`` after
      L2 normalization. The classified stream must stay in the text space (``embed_dim``).

    Attributes:
        task: Label the head predicts (X-MIC trains one model per label type).
        classified_stream: Stream whose frame-mean is compared with the class text embeddings.
        context_streams: Streams stacked as tokens per frame for the conditioning branch.
        context_dims: Dimension of each context stream; ``None`` means all equal ``width``.
        embed_dim: Dimension of the joint image-text space (class text, classified features).
        width: Width of the conditioning transformer.
        heads: Attention heads in every block.
        intra_layers: Blocks attending across the context tokens of one frame.
        inter_layers: Blocks attending across frames.
        mlp_ratio: MLP hidden size of a block as a fraction of ``width`` (X-MIC: 1/4).
        adapter_ratio: The adapter bottleneck is ``width // adapter_ratio`` (X-MIC: 16).
        num_frames: Learned temporal positions; inputs may have at most this many frames.
        conditioning_scale: Fixed factor on the video vector before it is added to the text.
        adapter_output_relu: Whether the adapter ends with a ReLU (X-MIC: yes, so ``a >= 0``).
        logit_scale_init: Initial value of the trainable log logit scale (CLIP: ln 100).
    """

    task: str = "noun"
    classified_stream: str = "clip-vit-b16/hand"
    context_streams: tuple[str, ...] = ("clip-vit-b16/hand", "clip-vit-b16/full")
    context_dims: tuple[int, ...] | None = None
    embed_dim: int = 512
    width: int = 512
    heads: int = 4
    intra_layers: int = 1
    inter_layers: int = 2
    mlp_ratio: float = 0.25
    adapter_ratio: int = 16
    num_frames: int = 16
    conditioning_scale: float = 2.0
    adapter_output_relu: bool = True
    logit_scale_init: float = math.log(100.0)

    def __post_init__(self) -> None:
        if not self.context_streams:
            raise ValueError("XMICConfig.context_streams is empty: name at least one stream")
        if self.context_dims is not None and len(self.context_dims) != len(self.context_streams):
            raise ValueError(
                f"XMICConfig.context_dims has {len(self.context_dims)} entries but "
                f"context_streams has {len(self.context_streams)}: give one dim per stream"
            )
        if self.width % self.heads:
            raise ValueError(
                f"XMICConfig.width={self.width} is not divisible by heads={self.heads}"
            )
        if self.width // self.adapter_ratio < 1 or round(self.width * self.mlp_ratio) < 1:
            raise ValueError(
                f"XMICConfig.width={self.width} is too small for adapter_ratio="
                f"{self.adapter_ratio} / mlp_ratio={self.mlp_ratio}"
            )

    @property
    def resolved_context_dims(self) -> tuple[int, ...]:
        """Dimension of every context stream (``width`` where not given)."""
        return self.context_dims or (self.width,) * len(self.context_streams)


class ResidualAttentionBlock(nn.Module):
    """Pre-LN transformer block as in CLIP: ``x + MHA(LN(x))`` then ``x + MLP(LN(x))``."""

    def __init__(self, width: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        # open_clip's QuickGELU, the activation OpenAI CLIP was trained with; imported here so
        # that importing the heads does not load open_clip.
        from open_clip.transformer import QuickGELU

        hidden = round(width * mlp_ratio)
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), QuickGELU(), nn.Linear(hidden, width))

    def forward(self, x: Tensor) -> Tensor:
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


def _stack(layers: int, width: int, heads: int, mlp_ratio: float) -> nn.Sequential:
    return nn.Sequential(*(ResidualAttentionBlock(width, heads, mlp_ratio) for _ in range(layers)))


class XMICHead(nn.Module):
    """The X-MIC adapter and its video-conditioned text classifier.

    Args:
        class_embeddings: ``(C, embed_dim)`` frozen text embeddings of the class names, *not*
            normalized (X-MIC uses CLIP's raw text embeddings). Held as a non-persistent buffer:
            the vocabulary comes from a text stream, not from the checkpoint, so a trained
            adapter can be evaluated on another dataset's classes with
            :meth:`set_class_embeddings`.
        config: Hyper-parameters and stream names; the defaults are the published model
            (3,594,657 trainable parameters at 512-d).

    Calling the module on a batch dict returns ``{config.task: logits (B, C)}``; :meth:`logits`
    takes the tensors directly.
    """

    class_embeddings: Tensor

    def __init__(self, class_embeddings: Tensor, config: XMICConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or XMICConfig()
        self.context_projections = nn.ModuleList(
            nn.Identity() if dim == config.width else nn.Linear(dim, config.width)
            for dim in config.resolved_context_dims
        )
        # One token per frame leaves nothing to attend across: skip the block (see XMICConfig).
        intra_layers = config.intra_layers if len(config.context_streams) > 1 else 0
        self.intra_frame = _stack(intra_layers, config.width, config.heads, config.mlp_ratio)
        self.temporal_embedding = nn.Parameter(torch.empty(config.num_frames, config.width))
        self.inter_frame = _stack(config.inter_layers, config.width, config.heads, config.mlp_ratio)
        hidden = config.width // config.adapter_ratio
        adapter: list[nn.Module] = [
            nn.Linear(config.width, hidden),
            nn.ReLU(),
            nn.Linear(hidden, config.embed_dim),
        ]
        if config.adapter_output_relu:
            adapter.append(nn.ReLU())
        self.adapter = nn.Sequential(*adapter)
        self.logit_scale = nn.Parameter(torch.tensor(float(config.logit_scale_init)))
        nn.init.normal_(self.temporal_embedding, std=0.01)
        self.register_buffer("class_embeddings", torch.empty(0), persistent=False)
        self.set_class_embeddings(class_embeddings)

    def set_class_embeddings(self, class_embeddings: Tensor) -> None:
        """Replace the class vocabulary, e.g. with the target dataset's classes at evaluation."""
        if class_embeddings.ndim != 2 or class_embeddings.shape[1] != self.config.embed_dim:
            raise ValueError(
                f"class embeddings must be (num_classes, {self.config.embed_dim}), "
                f"got {tuple(class_embeddings.shape)}"
            )
        device = self.logit_scale.device
        self.class_embeddings = class_embeddings.detach().to(device=device, dtype=torch.float32)

    def conditioning(self, context: Sequence[Tensor]) -> Tensor:
        """The X-MIC vector ``a`` (B, embed_dim) from per-frame context tokens.

        Args:
            context: One ``(B, T, D_s)`` tensor per entry of ``config.context_streams``, frames
                aligned (the same sampled frame times in every stream).
        """
        frames = self._context_tokens(context)  # (B, T, S, W)
        batch, num_frames, tokens, width = frames.shape
        x = self.intra_frame(frames.reshape(batch * num_frames, tokens, width))
        x = x.mean(dim=1).reshape(batch, num_frames, width)
        x = x + self.temporal_embedding[:num_frames]
        x = self.inter_frame(x).mean(dim=1)
        return self.adapter(x)

    def logits(self, classified: Tensor, context: Sequence[Tensor]) -> Tensor:
        """Class scores ``(B, C)`` of videos under their own conditioned text classifiers.

        Args:
            classified: ``(B, T, embed_dim)`` features compared with the text (X-MIC: hand crops).
            context: Per-frame conditioning streams, as in :meth:`conditioning`.
        """
        if classified.ndim != 3 or classified.shape[-1] != self.config.embed_dim:
            raise ValueError(
                f"classified features must be (B, T, {self.config.embed_dim}), "
                f"got {tuple(classified.shape)}"
            )
        video = self.conditioning(context)
        text = self.class_embeddings + self.config.conditioning_scale * video[:, None, :]
        text = F.normalize(text, dim=-1)
        image = F.normalize(classified.float().mean(dim=1), dim=-1)
        return self.logit_scale.exp() * torch.einsum("be,bce->bc", image, text)

    def forward(self, batch: Mapping) -> dict[str, Tensor]:
        """``{task: logits (B, C)}`` from a batch holding the configured streams ``(B, T, D)``.

        The batch is the trainer's layout (``{"features": {stream: ...}, "labels": {task: ...}}``)
        or a flat dict of streams and labels.
        """
        classified = batch_stream(batch, self.config.classified_stream)
        context = [batch_stream(batch, name) for name in self.config.context_streams]
        return {self.config.task: self.logits(classified, context)}

    def loss(self, batch: Mapping) -> Tensor:
        """X-MIC's objective: plain cross-entropy (no smoothing); unlabelled rows are skipped."""
        logits = self(batch)[self.config.task]
        labels = batch_label(batch, self.config.task)
        return F.cross_entropy(logits, labels.long(), ignore_index=UNLABELLED)

    def _context_tokens(self, context: Sequence[Tensor]) -> Tensor:
        streams = self.config.context_streams
        if len(context) != len(streams):
            raise ValueError(
                f"expected {len(streams)} context streams {streams}, got {len(context)}"
            )
        shape = context[0].shape[:2]
        tokens = []
        dims = self.config.resolved_context_dims
        for name, dim, features, project in zip(
            streams, dims, context, self.context_projections, strict=True
        ):
            if features.shape != (*shape, dim):
                raise ValueError(
                    f"context stream {name!r} has shape {tuple(features.shape)}, expected "
                    f"{(*shape, dim)}: (B, T) as the first stream, and its configured dim"
                )
            # X-MIC L2-normalizes raw context features before anything learned sees them.
            tokens.append(project(F.normalize(features.float(), dim=-1)))
        if shape[1] > self.config.num_frames:
            raise ValueError(
                f"context has {shape[1]} frames but the head has {self.config.num_frames} temporal "
                f"positions: sample at most num_frames frames (see TemporalJitter)"
            )
        return torch.stack(tokens, dim=2)


def zero_shot_logits(video_feats: Tensor, class_text: Tensor, logit_scale: float = 100.0) -> Tensor:
    """Zero-shot CLIP classification as X-MIC's baseline (``trainers/zsclip_segments.py``):
    each frame L2-normalized, averaged over frames, the mean normalized again, and its cosine
    with each normalized class text.

    Args:
        video_feats: ``(B, T, D)`` frame features (or ``(B, D)`` already pooled).
        class_text: ``(C, D)`` class text embeddings.
        logit_scale: Multiplier on the cosine (CLIP's learned value is about 100).

    Returns:
        ``(B, C)`` logits.
    """
    features = video_feats.float()
    pooled = F.normalize(features, dim=-1).mean(dim=1) if features.ndim == 3 else features
    return logit_scale * F.normalize(pooled, dim=-1) @ F.normalize(class_text.float(), dim=-1).T


# --- the registered head --------------------------------------------------------------------


class XMICClassifier(nn.Module):
    """The registered ``xmic`` head: one :class:`XMICHead` per task, temporal jitter, and the
    class vocabularies, behind the trainer's ``forward(batch) -> {task: logits}`` interface.

    * **Vocabularies.** Each task's class text embeddings are a persistent buffer
      ``class_text_<task>``, so a checkpoint carries the vocabulary it was trained with (an
      all-zero one, i.e. never set, is refused at the first forward). Set them with
      :meth:`set_class_embeddings`; :meth:`set_evaluation_vocabulary` swaps in another
      dataset's classes for eval mode only (cross-dataset evaluation), without saving them.
    * **Temporal jitter.** When the streams hold ``bins * K`` frames per segment (extracted with
      ``--sampling oversampled --per-bin K``), a training-mode forward reads one random frame per
      bin, drawn from torch's global RNG (seeded, and saved in checkpoints, by the trainer); an
      eval-mode forward reads the bin centres.

    Args:
        config: the per-task model; its ``task`` is replaced by each task of ``num_classes``.
        num_classes: classes per task (each task gets its own adapter, as X-MIC trains one
            model per label type).
        stored_frames: frames per segment in the streams, a multiple of ``config.num_frames``.
    """

    def __init__(
        self, config: XMICConfig, num_classes: Mapping[str, int], stored_frames: int
    ) -> None:
        super().__init__()
        if stored_frames % config.num_frames:
            raise ValueError(
                f"the streams hold {stored_frames} frames per segment, not a multiple of "
                f"bins={config.num_frames}: extract them with --frames BINS --sampling "
                f"oversampled --per-bin K, or set head.bins to the sampler's frame count"
            )
        self.heads = nn.ModuleDict(
            {task: XMICHead(torch.zeros(count, config.embed_dim), replace(config, task=task))
             for task, count in num_classes.items()}
        )
        for task, count in num_classes.items():
            self.register_buffer(f"class_text_{task}", torch.zeros(count, config.embed_dim))
        streams = dict.fromkeys((config.classified_stream, *config.context_streams))
        self.jitter = (
            TemporalJitter(list(streams), num_bins=config.num_frames, seed=None)
            if stored_frames > config.num_frames
            else None
        )
        self._evaluation_text: dict[str, Tensor] = {}

    def set_class_embeddings(self, task: str, embeddings: Tensor) -> None:
        """The ``(C, embed_dim)`` class text embeddings of ``task`` (saved with the weights)."""
        current = self._class_text(task)
        if tuple(embeddings.shape) != tuple(current.shape):
            raise ValueError(
                f"{task} class embeddings must be {tuple(current.shape)} (the head's classes), "
                f"got {tuple(embeddings.shape)}; use set_evaluation_vocabulary for other classes"
            )
        current.copy_(embeddings.detach().to(current))

    def set_evaluation_vocabulary(self, task: str, embeddings: Tensor | None) -> None:
        """Classify ``task`` over these ``(C', embed_dim)`` classes in eval mode (None: undo)."""
        self._class_text(task)  # checks the task
        if embeddings is None:
            self._evaluation_text.pop(task, None)
        else:
            self._evaluation_text[task] = embeddings.detach().float()

    def forward(self, batch: Mapping) -> dict[str, Tensor]:
        if self.jitter is not None:
            batch = self.jitter(batch, train=self.training)
        outputs = {}
        for task, head in self.heads.items():
            text = None if self.training else self._evaluation_text.get(task)
            if text is None:
                text = self._class_text(task)
                if not bool(text.any()):
                    raise ValueError(
                        f"the xmic head's {task} class embeddings were never set: load them from "
                        f"a text stream with set_class_embeddings({task!r}, ...)"
                    )
            head.set_class_embeddings(text)
            outputs.update(head(batch))
        return outputs

    def _class_text(self, task: str) -> Tensor:
        if task not in self.heads:
            raise KeyError(f"the xmic head has no task {task!r}; tasks: {list(self.heads)}")
        return getattr(self, f"class_text_{task}")


@register_head("xmic", task="xmic")
def xmic(
    *,
    in_dims,
    num_frames,
    num_classes,
    classified: str | None = None,
    context: list[str] | None = None,
    bins: int | None = None,
    width: int | None = None,
    heads: int = 4,
    class_text: str | None = None,
) -> XMICClassifier:
    """X-MIC adapter (video-conditioned text classifier; class embeddings from a text stream).

    ``classified``: the stream compared with the class text (default: the first stream, e.g. the
    hand crop); ``context``: the conditioning streams, tokens per frame (default: all streams,
    e.g. ``[hand, full]``; another encoder's streams for the DINO variant); ``bins``: temporal
    bins (default: the stored frame count, i.e. no jitter; ``egofeat train`` sets it from the
    streams' sampling); ``width``: of the conditioning transformer (default: the classified
    stream's dim); ``class_text``: the text stream of the class names, ``{task}`` and
    ``{dataset}`` filled in (read by the ``xmic`` task; default: found by name, see
    :class:`~egofeat.heads.xmic_task.XMICTask`).
    """
    del class_text  # resolved and loaded by the task; kept in the spec as provenance
    if ANY_STREAM in in_dims:
        raise ValueError("the xmic head needs named streams: in_dims={'clip/hand': 512, ...}")
    streams = list(in_dims)
    classified = classified or streams[0]
    context = list(context or streams)
    unknown = [name for name in (classified, *context) if name not in in_dims]
    if unknown:
        raise ValueError(f"xmic streams {unknown} are not among the head's inputs {streams}")
    embed_dim = in_dims[classified]
    width = width or embed_dim
    context_dims = tuple(in_dims[name] for name in context)
    config = XMICConfig(
        classified_stream=classified,
        context_streams=tuple(context),
        context_dims=None if set(context_dims) == {width} else context_dims,
        embed_dim=embed_dim,
        width=width,
        heads=heads,
        num_frames=bins or num_frames,
    )
    return XMICClassifier(config, num_classes, num_frames)
