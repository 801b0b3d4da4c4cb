"""Video-text retrieval projectors over stored features, and their contrastive losses.

A :class:`RetrievalProjector` maps stored per-frame video features and stored text features into
a shared, L2-normalized space (256-d, as EgoVLP and LaViLa). The losses are those of the
egocentric retrieval literature (``reference/heads.md`` §2):

* :func:`info_nce` — symmetric InfoNCE (EgoVLP's ``NormSoftmaxLoss``).
* :func:`ego_nce` — EgoNCE: clips sharing a verb and a noun count as positives, and an extra
  clip from the same video chunk can be appended as a hard negative.
* :func:`max_margin` — MI-MM, EK-100 multi-instance retrieval's bidirectional hinge loss, with
  positives drawn by :func:`sample_positive_captions` and an optional relevancy-adaptive margin.
* :func:`dual_softmax` — EgoVLP's test-time re-scoring of a similarity matrix.

:func:`zero_shot_similarity` scores stored features without any training.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "OWN_CAPTION",
    "RetrievalProjector",
    "cosine_similarity_matrix",
    "dual_softmax",
    "ego_nce",
    "info_nce",
    "max_margin",
    "sample_positive_captions",
    "scene_negative_indices",
    "zero_shot_similarity",
]

OWN_CAPTION = -1
"""Caption index returned by :func:`sample_positive_captions` for "use the video's own narration"."""

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


def cosine_similarity_matrix(a: Tensor, b: Tensor, eps: float = 1e-8) -> Tensor:
    """``(N, D)`` and ``(M, D)`` to the ``(N, M)`` matrix of cosine similarities."""
    return F.normalize(a, dim=-1, eps=eps) @ F.normalize(b, dim=-1, eps=eps).T


def zero_shot_similarity(video_feats: Tensor, text_feats: Tensor) -> Tensor:
    """Cosine between frame-averaged stored video features and stored text features.

    Args:
        video_feats: ``(B, T, D)`` per-frame features (or ``(B, D)`` pooled), in the same joint
            space as the text features (e.g. CLIP image and text embeddings).
        text_feats: ``(N, D)`` text features.

    Returns:
        ``(B, N)`` similarities.
    """
    pooled = video_feats.float().mean(dim=1) if video_feats.ndim == 3 else video_feats.float()
    return cosine_similarity_matrix(pooled, text_feats.float())


def info_nce(v: Tensor, t: Tensor, temperature: float = 0.05) -> Tensor:
    """Symmetric InfoNCE over a batch of paired embeddings (pairs on the diagonal).

    ``-mean_i log softmax_j(s_ij / τ)[i] - mean_j log softmax_i(s_ij / τ)[j]`` with cosine
    similarities ``s``: the **sum** of the video-to-text and text-to-video terms, as EgoVLP
    computes it (not their mean), so its scale is twice a mean-of-directions loss.
    """
    logits = cosine_similarity_matrix(v, t) / temperature
    target = torch.arange(len(logits), device=logits.device)
    return F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)


def ego_nce(
    v: Tensor,
    t: Tensor,
    verb_multihot: Tensor,
    noun_multihot: Tensor,
    temperature: float = 0.05,
    *,
    same_video_negatives: tuple[Tensor, Tensor, Tensor, Tensor] | None = None,
) -> Tensor:
    """EgoNCE: InfoNCE where every clip sharing ≥1 verb **and** ≥1 noun is also a positive.

    For each row, the loss is ``-log`` of the softmax mass on its positives (the diagonal plus
    action-sharing pairs), summed over both directions as in :func:`info_nce`.

    Args:
        v: ``(B, E)`` video embeddings.
        t: ``(B, E)`` text embeddings, paired with ``v``.
        verb_multihot: ``(B, V)`` multi-hot verbs, or ``(B,)`` class indices.
        noun_multihot: ``(B, N)`` multi-hot nouns, or ``(B,)`` class indices.
        temperature: Softmax temperature (EgoVLP: 0.05).
        same_video_negatives: Scene-aware negatives, ``(v, t, verbs, nouns)`` of one extra clip
            per sample from the same video chunk (see :func:`scene_negative_indices`). They are
            appended to the batch, doubling it; through the mask they still count as positives
            when they share a verb and a noun.
    """
    if same_video_negatives is not None:
        v_neg, t_neg, verb_neg, noun_neg = same_video_negatives
        v, t = torch.cat([v, v_neg]), torch.cat([t, t_neg])
        verb_multihot = torch.cat([verb_multihot, verb_neg])
        noun_multihot = torch.cat([noun_multihot, noun_neg])
    if not len(v) == len(t) == len(verb_multihot) == len(noun_multihot):
        raise ValueError(
            f"ego_nce: batch sizes differ (videos {len(v)}, texts {len(t)}, verbs "
            f"{len(verb_multihot)}, nouns {len(noun_multihot)})"
        )
    positives = _shares_a_label(verb_multihot) & _shares_a_label(noun_multihot)
    positives |= torch.eye(len(v), dtype=torch.bool, device=v.device)
    logits = cosine_similarity_matrix(v, t) / temperature
    return _positive_mass_loss(logits, positives) + _positive_mass_loss(logits.T, positives.T)


def _shares_a_label(labels: Tensor) -> Tensor:
    if labels.ndim == 1:
        return labels[:, None] == labels[None, :]
    labels = labels.float()
    return (labels @ labels.T) > 0


def _positive_mass_loss(logits: Tensor, positives: Tensor) -> Tensor:
    on_positives = logits.masked_fill(~positives, float("-inf")).logsumexp(dim=1)
    return (logits.logsumexp(dim=1) - on_positives).mean()


def max_margin(S: Tensor, margin: float = 0.2, weights: Tensor | None = None) -> Tensor:
    """MI-MM: bidirectional max-margin ranking over every off-diagonal pair.

    With positives on the diagonal of the ``(B, B)`` similarity matrix ``S``, the loss is the
    mean over ``i != j`` of ``relu(m_i - (S_ii - S_ij))`` and ``relu(m_i - (S_ii - S_ji))``. All
    other in-batch items are negatives; the "multi-instance" part is in how positives are drawn
    (:func:`sample_positive_captions`).

    Args:
        S: ``(B, B)`` similarities, rows and columns paired.
        margin: Base margin ``m`` (0.2 in EgoVLP / LaViLa).
        weights: Optional ``(B,)`` relevancy of each sampled positive; the margin of pair ``i``
            becomes ``weights[i] * margin`` (adaptive MI-MM).
    """
    if S.ndim != 2 or S.shape[0] != S.shape[1]:
        raise ValueError(f"max_margin needs a square similarity matrix, got {tuple(S.shape)}")
    n = len(S)
    if n < 2:
        raise ValueError("max_margin needs at least 2 pairs: there is nothing to rank against")
    if weights is None:
        margins = torch.full((n,), margin, dtype=S.dtype, device=S.device)
    else:
        margins = margin * torch.as_tensor(weights, dtype=S.dtype, device=S.device)
    positive = S.diagonal()[:, None]
    off_diagonal = ~torch.eye(n, dtype=torch.bool, device=S.device)
    rows = F.relu(margins[:, None] - (positive - S))  # item i against S_ij
    cols = F.relu(margins[:, None] - (positive - S.T))  # item i against S_ji
    return torch.cat([rows[off_diagonal], cols[off_diagonal]]).mean()


def sample_positive_captions(
    relevancy_rows: np.ndarray,
    threshold: float = 0.1,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one positive caption per training video, as MI-MM fine-tuning does.

    For each row, a caption ``j`` with ``relevancy > threshold`` is drawn uniformly. A row with
    none falls back to the video's own narration: index :data:`OWN_CAPTION` (-1) with weight 1.

    Args:
        relevancy_rows: ``(B, num_captions)`` rows of the relevancy matrix for the batch videos.
        threshold: Relevancy a caption must exceed (EK-100 recipes: 0.1).
        rng: Random generator (default: a fresh unseeded one).

    Returns:
        ``(caption_indices (B,), relevancies (B,))``; relevancies are the adaptive-margin weights.
    """
    relevancy_rows = np.asarray(relevancy_rows)
    if relevancy_rows.ndim != 2:
        raise ValueError(f"relevancy_rows must be 2-D (B, captions), got {relevancy_rows.shape}")
    rng = rng or np.random.default_rng()
    indices = np.full(len(relevancy_rows), OWN_CAPTION, dtype=np.int64)
    weights = np.ones(len(relevancy_rows), dtype=np.float32)
    for row, relevancy in enumerate(relevancy_rows):
        candidates = np.flatnonzero(relevancy > threshold)
        if len(candidates):
            indices[row] = rng.choice(candidates)
            weights[row] = relevancy[indices[row]]
    return indices, weights


def scene_negative_indices(
    video_ids: Sequence[str],
    times_sec: Sequence[float],
    chunk_sec: float = 60.0,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """For each clip, another clip from the same ``chunk_sec`` chunk of the same video.

    Chunks are ``(video_id, floor(time / chunk_sec))`` as in EgoNCE's scene-aware negatives
    (60 s). A clip alone in its chunk gets a random clip from anywhere else (a plain negative),
    so the doubled batch never holds duplicates.

    Returns:
        ``(N,)`` int64 indices into the same clip list.
    """
    if len(video_ids) != len(times_sec):
        raise ValueError(f"{len(video_ids)} video ids but {len(times_sec)} times")
    if len(video_ids) < 2:
        raise ValueError("scene_negative_indices needs at least 2 clips")
    rng = rng or np.random.default_rng()
    chunks: dict[tuple[str, int], list[int]] = {}
    for i, (video, time) in enumerate(zip(video_ids, times_sec, strict=True)):
        chunks.setdefault((video, int(np.floor(time / chunk_sec))), []).append(i)
    out = np.empty(len(video_ids), dtype=np.int64)
    for members in chunks.values():
        for position, i in enumerate(members):
            if len(members) > 1:
                other = rng.integers(len(members) - 1)
                out[i] = members[other + (other >= position)]
            else:
                other = rng.integers(len(video_ids) - 1)
                out[i] = other + (other >= i)
    return out


def dual_softmax(S: Tensor, temperature: float = 500.0) -> Tensor:
    """EgoVLP's dual-softmax re-scoring of a retrieval similarity matrix (test time).

    ``S' = softmax(S / temperature, dim=1) * S``, then ``softmax(S', dim=0)``. EgoVLP applies it
    to the (text, video) matrix of raw dot products, so the first softmax runs over videos for
    each text and the second over texts for each video; pass ``S`` in that orientation to
    reproduce it, and transpose the result for video-to-text ranking.
    """
    return torch.softmax(torch.softmax(S / temperature, dim=1) * S, dim=0)
