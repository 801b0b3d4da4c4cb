"""Video-text retrieval on stored features: projectors, their loss, and the ``retrieval`` task.

A :class:`RetrievalProjector` maps stored per-frame video features and stored text features into
a shared, L2-normalized space (256-d, as EgoVLP and LaViLa); the objectives are those of
:mod:`egofeat.heads.contrastive` (InfoNCE, EgoNCE, MI-MM).

Training through the shared trainer: the registered ``"retrieval"`` head (:class:`RetrievalHead`)
reads a video and a text stream from each batch and carries its :class:`RetrievalObjective`;
:class:`RetrievalLoss` is the matching ``loss_fn``. It looks up per-row
:class:`~egofeat.heads.contrastive.ClipLabels` through the batch's ``index`` to find EgoNCE's
action-sharing positives and same-chunk negatives and MI-MM's relevant captions. Its random draws
come from torch's global generator, which the trainer seeds and checkpoints, so a resumed run
draws what an uninterrupted one would.

The ``retrieval`` task (:class:`RetrievalTask`) validates every epoch by MIR mAP / nDCG on the
val split, where the captions are the split's distinct narrations (one per distinct stored text
feature) and relevancy comes from the segment table's ``verb_class`` and ``all_noun_classes``;
its predictions are the unit ``video`` and ``text`` embeddings of every segment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from egofeat.eval import Predictions
from egofeat.eval.mir import score_mir
from egofeat.heads.contrastive import (
    ClipLabels,
    PositiveCaptionSampler,
    SameChunkNegatives,
    distinct_captions,
    ego_nce,
    info_nce,
    max_margin,
)
from egofeat.heads.data import HeadData
from egofeat.heads.predict import predict
from egofeat.heads.registry import register_head, register_task
from egofeat.heads.tasks import Subsets, Task
from egofeat.heads.trainer import FitResult

__all__ = [
    "LOSSES",
    "MONITOR",
    "MirValidation",
    "RetrievalHead",
    "RetrievalLoss",
    "RetrievalObjective",
    "RetrievalProjector",
    "RetrievalTask",
]

MONITOR = "val_map_avg"
"""Metric a retrieval run early-stops on, unless the config names another."""
#: segment-table columns MIR relevancy and same-chunk negatives read
LABEL_COLUMNS = ("verb_class", "all_noun_classes", "noun_class", "start_sec", "end_sec")

_HEADS = ("linear", "relu-linear", "mlp")


def _projection(kind: str, in_dim: int, out_dim: int, hidden_dim: int | None) -> nn.Module:
    if kind == "linear":
        return nn.Linear(in_dim, out_dim)
    if kind == "relu-linear":  # EgoVLP's text projection
        return nn.Sequential(nn.ReLU(), nn.Linear(in_dim, out_dim))
    if kind == "mlp":
        hidden = hidden_dim or in_dim
        return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))
    raise ValueError(f"unknown projection {kind!r}; choose one of {_HEADS}")


class RetrievalProjector(nn.Module):
    """Project stored video and text features into a joint space for retrieval.

    The video side averages its frames, then projects; the text side projects the stored text
    feature. Both outputs are L2-normalized, so their dot product is a cosine similarity.

    Args:
        video_dim: Dimension of the stored per-frame video features.
        text_dim: Dimension of the stored text features.
        embed_dim: Joint space dimension (EgoVLP / LaViLa: 256).
        video_head: ``"linear"``, ``"relu-linear"`` (ReLU then linear, EgoVLP's text side) or
            ``"mlp"`` (linear, ReLU, linear).
        text_head: As ``video_head``, for the text side.
        hidden_dim: Hidden width of ``"mlp"`` heads (default: the input dimension).
    """

    def __init__(
        self,
        video_dim: int,
        text_dim: int,
        embed_dim: int = 256,
        *,
        video_head: str = "linear",
        text_head: str = "linear",
        hidden_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.video_projection = _projection(video_head, video_dim, embed_dim, hidden_dim)
        self.text_projection = _projection(text_head, text_dim, embed_dim, hidden_dim)

    def encode_video(self, video: Tensor) -> Tensor:
        """``(B, T, Dv)`` frames (or ``(B, Dv)`` pooled) to ``(B, embed_dim)`` unit vectors."""
        pooled = video.float().mean(dim=1) if video.ndim == 3 else video.float()
        return F.normalize(self.video_projection(pooled), dim=-1)

    def encode_text(self, text: Tensor) -> Tensor:
        """``(B, Dt)`` text features to ``(B, embed_dim)`` unit vectors."""
        return F.normalize(self.text_projection(text.float()), dim=-1)

    def forward(self, video: Tensor, text: Tensor) -> tuple[Tensor, Tensor]:
        """Embed paired videos ``(B, T, Dv)`` and texts ``(B, Dt)``: ``(v_emb, t_emb)``."""
        return self.encode_video(video), self.encode_text(text)


# ---- the trainable head and its loss -------------------------------------------------------

LOSSES = ("infonce", "egonce", "mimm")
"""Losses of :class:`RetrievalObjective`: InfoNCE, EgoNCE and MI-MM."""


@dataclass(frozen=True)
class RetrievalObjective:
    """How a retrieval head is trained; the head carries it, so checkpoints record it.

    Args:
        loss: ``"infonce"``, ``"egonce"`` or ``"mimm"`` (see the module docstring).
        temperature: InfoNCE / EgoNCE softmax temperature (EgoVLP: 0.05).
        margin: MI-MM margin (EgoVLP / LaViLa: 0.2).
        adaptive_margin: MI-MM margin scaled by the relevancy of the sampled positive.
        positive_threshold: MI-MM draws positives among captions with relevancy above it.
        same_video_negatives: EgoNCE appends one clip of the same video chunk per sample.
        chunk_sec: EgoNCE's chunk length for those negatives (60 s).
    """

    loss: str = "infonce"
    temperature: float = 0.05
    margin: float = 0.2
    adaptive_margin: bool = False
    positive_threshold: float = 0.1
    same_video_negatives: bool = True
    chunk_sec: float = 60.0

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"unknown retrieval loss {self.loss!r}; choose one of {LOSSES}")
        if not (self.temperature > 0 and self.margin >= 0 and self.chunk_sec > 0):
            raise ValueError(
                f"retrieval objective needs temperature > 0, margin >= 0, chunk_sec > 0; got {self}"
            )


class RetrievalHead(nn.Module):
    """A :class:`RetrievalProjector` over two streams of a trainer batch.

    ``forward(batch)`` gives ``{"video": (B, E), "text": (B, E)}``: unit embeddings of each row's
    clip (frames of ``video_stream`` averaged, then projected) and of its caption (the
    ``text_stream`` feature, projected). ``objective`` says how it is trained.
    """

    time_pooled = True  # reads only each stream's time-mean: the trainer averages frames once

    def __init__(
        self,
        video_stream: str,
        text_stream: str,
        projector: RetrievalProjector,
        objective: RetrievalObjective,
    ) -> None:
        super().__init__()
        self.video_stream = video_stream
        self.text_stream = text_stream
        self.projector = projector
        self.objective = objective

    def encode_video(self, video: Tensor) -> Tensor:
        """``(B, T, Dv)`` or frame-averaged ``(B, Dv)`` features to unit embeddings."""
        return self.projector.encode_video(video)

    def encode_text(self, text: Tensor) -> Tensor:
        """``(B, 1, Dt)`` (as streams store it) or ``(B, Dt)`` features to unit embeddings."""
        return self.projector.encode_text(text.float().mean(dim=1) if text.ndim == 3 else text)

    def forward(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        features = batch["features"]
        return {
            "video": self.encode_video(features[self.video_stream]),
            "text": self.encode_text(features[self.text_stream]),
        }


Projection = Literal["linear", "relu-linear", "mlp"]


@register_head("retrieval", task="retrieval")
def retrieval(
    *,
    in_dims: Mapping[str, int],
    num_frames: int,
    num_classes: Mapping[str, int],
    text_stream: str | None = None,
    embed_dim: int = 256,
    video_head: Projection = "linear",
    text_head: Projection = "linear",
    hidden_dim: int | None = None,
    loss: Literal["infonce", "egonce", "mimm"] = "infonce",
    temperature: float = 0.05,
    margin: float = 0.2,
    adaptive_margin: bool = False,
    positive_threshold: float = 0.1,
    same_video_negatives: bool = True,
    chunk_sec: float = 60.0,
) -> RetrievalHead:
    """Video-text projector over two streams: a video stream and a text stream.

    The text stream is ``text_stream``, or else the one stream with a ``text`` path part (as in
    ``clip-vit-b16/text/narration``). The other options are those of
    :class:`RetrievalProjector` and :class:`RetrievalObjective`.
    """
    streams = list(in_dims)
    if len(streams) != 2:
        raise ValueError(
            f"the retrieval head takes two streams, a video stream and a text stream "
            f"(--stream VIDEO,TEXT); got {streams}"
        )
    if text_stream is None:
        texts = [name for name in streams if "text" in name.split("/")]
        if len(texts) != 1:
            raise ValueError(
                f"cannot tell which of {streams} is the text stream; set head.text_stream=NAME"
            )
        text_stream = texts[0]
    if text_stream not in streams:
        raise ValueError(f"head.text_stream={text_stream!r} is not one of the streams {streams}")
    video_stream = next(name for name in streams if name != text_stream)
    projector = RetrievalProjector(
        in_dims[video_stream],
        in_dims[text_stream],
        embed_dim,
        video_head=video_head,
        text_head=text_head,
        hidden_dim=hidden_dim,
    )
    objective = RetrievalObjective(
        loss, temperature, margin, adaptive_margin, positive_threshold, same_video_negatives,
        chunk_sec,
    )  # fmt: skip
    return RetrievalHead(video_stream, text_stream, projector, objective)


class RetrievalLoss:
    """The trainer's ``loss_fn`` for a :class:`RetrievalHead` trained on ``data``.

    * ``infonce``: :func:`info_nce` over the batch's (clip, own caption) pairs.
    * ``egonce``: :func:`ego_nce`, positives sharing the verb class and a noun class, plus one
      same-chunk negative per sample when ``same_video_negatives`` (embedded with the head).
    * ``mimm``: :func:`max_margin` between the batch clips and one positive caption per clip,
      drawn from the gallery by :class:`PositiveCaptionSampler`.

    A final batch of one clip has nothing to rank against: MI-MM gives it a zero loss.

    Args:
        head: the head being trained.
        data: the training data (a :class:`~egofeat.heads.data.HeadData`); the batch ``index``
            values are its rows.
        labels: :class:`ClipLabels` of those rows (EgoNCE and MI-MM need them).
        caption_rows: MI-MM's caption gallery, as rows of ``data`` (default: every row).
    """

    def __init__(
        self,
        head: RetrievalHead,
        data: Any,
        labels: ClipLabels | None = None,
        caption_rows: np.ndarray | None = None,
    ) -> None:
        self.head, self.data, self.objective = head, data, head.objective
        if labels is None and self.objective.loss != "infonce":
            raise ValueError(f"loss {self.objective.loss!r} needs ClipLabels of the training rows")
        if labels is not None and len(labels) != len(data):
            raise ValueError(f"{len(labels)} clip labels for {len(data)} training rows")
        self._verbs = self._nouns = self._negatives = self._positives = None
        if self.objective.loss == "egonce":
            self._verbs = torch.from_numpy(labels.verbs)
            self._nouns = labels.noun_multihot()
            if self.objective.same_video_negatives:
                self._negatives = SameChunkNegatives(
                    labels.video_ids, labels.times_sec, self.objective.chunk_sec
                )
        elif self.objective.loss == "mimm":
            self._positives = PositiveCaptionSampler(
                labels, caption_rows, self.objective.positive_threshold
            )

    def __call__(self, outputs: Mapping[str, Tensor], batch: Mapping[str, Any]) -> Tensor:
        video, text = outputs["video"], outputs["text"]
        if self.objective.loss == "infonce":
            return info_nce(video, text, self.objective.temperature)
        rows = batch["index"].cpu()
        if self.objective.loss == "egonce":
            return self._ego_nce(video, text, rows)
        return self._max_margin(video, rows)

    def _ego_nce(self, video: Tensor, text: Tensor, rows: Tensor) -> Tensor:
        device = video.device
        verbs, nouns = self._verbs[rows].to(device), self._nouns[rows].to(device)
        negatives = None
        if self._negatives is not None:
            others = torch.from_numpy(self._negatives.sample(rows.numpy(), _uniform(len(rows))))
            embedded = self.head(self.data.batch(others, device=device))
            negatives = (
                embedded["video"],
                embedded["text"],
                self._verbs[others].to(device),
                self._nouns[others].to(device),
            )
        return ego_nce(
            video, text, verbs, nouns, self.objective.temperature, same_video_negatives=negatives
        )

    def _max_margin(self, video: Tensor, rows: Tensor) -> Tensor:
        if len(rows) < 2:
            return video.sum() * 0.0
        captions, weights = self._positives.sample(rows.numpy(), _uniform(len(rows), 2))
        stored = self.data.features[self.head.text_stream]
        text = self.head.encode_text(
            stored.index_select(0, torch.from_numpy(captions)).to(video.device)
        )
        margin_weights = None
        if self.objective.adaptive_margin:
            margin_weights = torch.from_numpy(weights).to(video.device)
        return max_margin(video @ text.T, self.objective.margin, margin_weights)


def _uniform(*shape: int) -> np.ndarray:
    """Uniform [0, 1) draws from torch's global generator (seeded and checkpointed by the
    trainer, so resumed runs draw the same numbers)."""
    return torch.rand(shape, dtype=torch.float64).numpy()


@dataclass
class MirValidation:
    """Scores a retrieval head on a split: each video against the split's distinct captions.

    Embeddings are computed in fp32 whatever precision training used, so that `egofeat eval`
    reproduces the scores.
    """

    caption_rows: np.ndarray
    relevancy: np.ndarray
    batch_size: int = 1024
    device: Any = "auto"

    @classmethod
    def of(cls, data: HeadData, text_stream: str, *, labels: ClipLabels | None = None,
           **kwargs: Any) -> MirValidation:
        """The validation of ``data``: its distinct captions, relevancy from ``labels`` (default:
        the segment-table columns of ``data.meta``)."""
        captions = distinct_captions(data.features[text_stream].cpu().numpy())
        labels = labels or ClipLabels.from_frame(data.meta)
        return cls(captions, labels.relevancy(np.arange(len(labels)), captions), **kwargs)

    def scores(self, embeddings: Mapping[str, np.ndarray]) -> dict[str, float]:
        similarity = embeddings["video"] @ embeddings["text"][self.caption_rows].T
        return score_mir(similarity, self.relevancy)[0]

    def __call__(self, model: nn.Module, data: HeadData) -> dict[str, float]:
        embedded = predict(model, data, self.batch_size, device=self.device, precision="fp32")
        return {f"val_{key}": value for key, value in self.scores(embedded).items()}


@register_task("retrieval")
class RetrievalTask(Task):
    """Video-text projectors trained with InfoNCE / EgoNCE / MI-MM, validated by MIR."""

    monitor = MONITOR

    def load_options(self) -> dict[str, Any]:
        columns = self.store.segments().collect_schema().names()
        return {"meta_columns": [c for c in LABEL_COLUMNS if c in columns]}

    def fit(self, model: nn.Module, train: HeadData, val: HeadData | None, *,
            run_dir: str | Path | None = None, resume: bool = False) -> FitResult:
        # The head reads frame means, and the loss gathers extra rows from them.
        train = train.time_mean()
        return super().fit(model, train, None if val is None else val.time_mean(),
                           run_dir=run_dir, resume=resume)

    def loss(self, model: nn.Module, train: HeadData) -> RetrievalLoss:
        captions = distinct_captions(train.features[model.text_stream].cpu().numpy())
        return RetrievalLoss(model, train, ClipLabels.from_frame(train.meta), caption_rows=captions)

    def validation(self, model: nn.Module, train: HeadData, val: HeadData | None) -> MirValidation | None:
        if val is None:
            return None
        return MirValidation.of(val, model.text_stream, batch_size=self.config.trainer.eval_batch_size,
                                device=self.config.trainer.device)

    def run_summary(self, model: nn.Module, train: HeadData) -> dict[str, Any]:
        captions = distinct_captions(train.features[model.text_stream].cpu().numpy())
        return {"loss": model.objective.loss, "train_captions": len(captions)}

    def predict(self, model: nn.Module, data: HeadData, *, split: str = "",
                device: str = "auto") -> Predictions:
        embedded = predict(model, data, self.config.trainer.eval_batch_size, device=device,
                           precision="fp32")
        return Predictions(data.segment_ids.tolist(), embeddings=embedded,
                           rows=data.meta.select([c for c in ("split", "dataset", "video_id")
                                                  if c in data.meta.columns]),
                           info=self.describe(split) | {"loss": model.objective.loss,
                                                        "text_stream": model.text_stream})

    def metrics(self, predictions: Predictions, data: HeadData,
                subsets: Subsets | None = None) -> dict[str, float]:
        """MIR mAP / nDCG of the embeddings over the split's distinct narrations."""
        validation = MirValidation.of(data, predictions.info["text_stream"])
        return validation.scores(predictions.embeddings)
