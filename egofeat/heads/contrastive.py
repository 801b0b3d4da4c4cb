"""Contrastive objectives of egocentric video-text retrieval, and the samplers they draw from.

The losses of ``reference/heads.md`` §2 over embeddings of a batch:

* :func:`info_nce` — symmetric InfoNCE (EgoVLP's ``NormSoftmaxLoss``).
* :func:`ego_nce` — EgoNCE: clips sharing a verb and a noun count as positives, and an extra
  clip from the same video chunk can be appended as a hard negative
  (:class:`SameChunkNegatives`).
* :func:`max_margin` — MI-MM, EK-100 multi-instance retrieval's bidirectional hinge loss, with
  positives drawn by :func:`sample_positive_captions` / :class:`PositiveCaptionSampler` and an
  optional relevancy-adaptive margin.
* :func:`dual_softmax` — EgoVLP's test-time re-scoring of a similarity matrix.

:class:`ClipLabels` holds the verb / noun-set / video / time of every row those need;
:func:`zero_shot_similarity` scores stored features without any training.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F
from torch import Tensor

from egofeat.eval.mir import mir_relevancy, mir_relevancy_blocks

__all__ = [
    "OWN_CAPTION",
    "ClipLabels",
    "PositiveCaptionSampler",
    "SameChunkNegatives",
    "cosine_similarity_matrix",
    "distinct_captions",
    "dual_softmax",
    "ego_nce",
    "info_nce",
    "max_margin",
    "sample_positive_captions",
    "scene_negative_indices",
    "verbs_and_nouns",
    "zero_shot_similarity",
]

OWN_CAPTION = -1
"""Caption index returned by :func:`sample_positive_captions` for "use the video's own narration"."""


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
    so the doubled batch never holds duplicates. :class:`SameChunkNegatives` draws for a batch.

    Returns:
        ``(N,)`` int64 indices into the same clip list.
    """
    rng = rng or np.random.default_rng()
    negatives = SameChunkNegatives(video_ids, times_sec, chunk_sec)
    return negatives.sample(np.arange(len(negatives)), rng.random(len(negatives)))


def dual_softmax(S: Tensor, temperature: float = 500.0) -> Tensor:
    """EgoVLP's dual-softmax re-scoring of a retrieval similarity matrix (test time).

    ``S' = softmax(S / temperature, dim=1) * S``, then ``softmax(S', dim=0)``. EgoVLP applies it
    to the (text, video) matrix of raw dot products, so the first softmax runs over videos for
    each text and the second over texts for each video; pass ``S`` in that orientation to
    reproduce it, and transpose the result for video-to-text ranking.
    """
    return torch.softmax(torch.softmax(S / temperature, dim=1) * S, dim=0)


# ---- samplers ------------------------------------------------------------------------------


class SameChunkNegatives:
    """EgoNCE's scene-aware negatives, drawn for any batch of rows in O(batch).

    Clips are grouped into chunks ``(video_id, floor(time / chunk_sec))``. :meth:`sample` gives
    each requested row another clip of its chunk, uniformly, or any other clip when it is alone
    in its chunk, so a doubled batch never pairs a clip with itself.
    """

    def __init__(
        self, video_ids: Sequence[str], times_sec: Sequence[float], chunk_sec: float = 60.0
    ) -> None:
        if len(video_ids) != len(times_sec):
            raise ValueError(f"{len(video_ids)} video ids but {len(times_sec)} times")
        if len(video_ids) < 2:
            raise ValueError("same-chunk negatives need at least 2 clips")
        if not chunk_sec > 0:
            raise ValueError(f"chunk_sec must be positive, got {chunk_sec}")
        chunk_codes: dict[tuple[str, int], int] = {}
        chunks = np.fromiter(
            (
                chunk_codes.setdefault((str(video), math.floor(time / chunk_sec)), len(chunk_codes))
                for video, time in zip(video_ids, times_sec, strict=True)
            ),
            dtype=np.int64,
            count=len(video_ids),
        )
        self._order = np.argsort(chunks, kind="stable")  # rows grouped chunk by chunk
        _, starts, sizes = np.unique(chunks[self._order], return_index=True, return_counts=True)
        group = np.repeat(np.arange(len(starts)), sizes)  # chunk of each grouped position
        self._start = np.empty(len(chunks), dtype=np.int64)
        self._size = np.empty(len(chunks), dtype=np.int64)
        self._position = np.empty(len(chunks), dtype=np.int64)
        self._start[self._order] = starts[group]
        self._size[self._order] = sizes[group]
        self._position[self._order] = np.arange(len(chunks)) - starts[group]

    def __len__(self) -> int:
        return len(self._order)

    def sample(self, rows: np.ndarray, uniform: np.ndarray) -> np.ndarray:
        """A negative for each of ``rows``, chosen by one uniform ``[0, 1)`` draw per row."""
        rows = np.asarray(rows, dtype=np.int64)
        uniform = np.asarray(uniform, dtype=np.float64)
        if uniform.shape != rows.shape:
            raise ValueError(f"need one draw per row: {uniform.shape} draws, {rows.shape} rows")
        size = self._size[rows]
        step = 1 + np.floor(uniform * np.maximum(size - 1, 1)).astype(np.int64)  # 1 .. size-1
        same_chunk = self._order[self._start[rows] + (self._position[rows] + step) % size]
        anywhere = np.floor(uniform * (len(self) - 1)).astype(np.int64)
        anywhere += anywhere >= rows  # skip the row itself
        return np.where(size > 1, same_chunk, anywhere)


@dataclass(frozen=True)
class ClipLabels:
    """Labels of N clips, row-aligned with the data a retrieval head trains or is scored on.

    Args:
        verbs: ``(N,)`` verb class ids.
        noun_sets: N collections of noun class ids (EPIC's ``all_noun_classes``), each non-empty.
        video_ids: ``(N,)`` video of each clip.
        times_sec: ``(N,)`` time of each clip (e.g. its middle), for same-chunk negatives.
    """

    verbs: np.ndarray
    noun_sets: tuple[tuple[int, ...], ...]
    video_ids: np.ndarray
    times_sec: np.ndarray

    def __post_init__(self) -> None:
        verbs = np.asarray(self.verbs, dtype=np.int64)
        nouns = tuple(tuple(sorted({int(n) for n in nouns})) for nouns in self.noun_sets)
        columns = {"noun_sets": len(nouns), "video_ids": len(self.video_ids),
                   "times_sec": len(self.times_sec)}  # fmt: skip
        for name, length in columns.items():
            if length != len(verbs):
                raise ValueError(f"ClipLabels: {len(verbs)} verbs but {length} {name}")
        empty = next((row for row, classes in enumerate(nouns) if not classes), None)
        if empty is not None:
            raise ValueError(f"ClipLabels: clip {empty} has no noun class; relevancy needs one")
        object.__setattr__(self, "verbs", verbs)
        object.__setattr__(self, "noun_sets", nouns)
        object.__setattr__(self, "video_ids", np.asarray(self.video_ids).astype(str))
        object.__setattr__(self, "times_sec", np.asarray(self.times_sec, dtype=np.float64))

    @classmethod
    def from_frame(cls, frame: pl.DataFrame, what: str = "the segment table") -> ClipLabels:
        """Labels of a frame's rows: ``verb_class``, ``all_noun_classes`` (else ``[noun_class]``),
        ``video_id`` and the middle of ``start_sec``..``end_sec`` (0 when absent)."""
        verbs, nouns = verbs_and_nouns(frame, what)
        times = np.zeros(frame.height)
        if {"start_sec", "end_sec"} <= set(frame.columns):
            middle = frame.select((pl.col("start_sec") + pl.col("end_sec")) / 2).to_series()
            times = middle.fill_null(0.0).to_numpy()
        videos = frame["video_id"].fill_null("").to_numpy() if "video_id" in frame.columns else np.full(frame.height, "")
        return cls(verbs, tuple(tuple(n) for n in nouns), videos, times)

    def __len__(self) -> int:
        return len(self.verbs)

    def noun_multihot(self) -> Tensor:
        """``(N, max noun + 1)`` bool multi-hot of the noun sets."""
        multihot = torch.zeros(len(self), 1 + max(max(n) for n in self.noun_sets), dtype=torch.bool)
        for row, nouns in enumerate(self.noun_sets):
            multihot[row, list(nouns)] = True
        return multihot

    def relevancy(self, video_rows: np.ndarray, caption_rows: np.ndarray) -> np.ndarray:
        """EK-100 MIR relevancy (float32) of clips ``video_rows`` against clips ``caption_rows``."""
        return mir_relevancy(
            self.verbs[video_rows],
            [self.noun_sets[row] for row in video_rows],
            self.verbs[caption_rows],
            [self.noun_sets[row] for row in caption_rows],
        )


def verbs_and_nouns(frame: pl.DataFrame, what: str) -> tuple[np.ndarray, list[list[int]]]:
    """Verb classes and noun-class sets (``all_noun_classes``, else ``[noun_class]``) of rows."""
    has_nouns = "all_noun_classes" in frame.columns or "noun_class" in frame.columns
    if "verb_class" not in frame.columns or not has_nouns:
        raise KeyError(f"{what} needs columns verb_class and all_noun_classes (or noun_class): "
                       f"MIR relevancy is built from them; it has {frame.columns}")
    nouns = pl.col("all_noun_classes") if "all_noun_classes" in frame.columns else None
    if "noun_class" in frame.columns:
        single = pl.concat_list(pl.col("noun_class"))
        nouns = single if nouns is None else nouns.fill_null(single)
    labels = frame.select(pl.col("segment_id"), pl.col("verb_class"), nouns.alias("nouns"))
    unlabelled = labels.filter(pl.col("verb_class").is_null() | pl.col("nouns").is_null())
    if unlabelled.height:
        raise ValueError(
            f"{what}: {unlabelled.height} segments have no verb or noun class (e.g. "
            f"{unlabelled['segment_id'].head(3).to_list()}); retrieval needs both"
        )
    return labels["verb_class"].to_numpy().astype(np.int64), labels["nouns"].to_list()


def distinct_captions(text_features: np.ndarray) -> np.ndarray:
    """Rows holding the first occurrence of each distinct text feature, ascending.

    Segments with the same narration have the same stored text feature: the distinct rows are
    the distinct captions, as a sentence file lists them.
    """
    flat = np.ascontiguousarray(np.asarray(text_features).reshape(len(text_features), -1))
    _, first = np.unique(flat, axis=0, return_index=True)
    return np.sort(first)


class PositiveCaptionSampler:
    """MI-MM's positive captions, drawn per batch from a sparse table of relevant captions.

    For a video, every gallery caption whose relevancy exceeds ``threshold`` is equally likely,
    as :func:`sample_positive_captions` draws from full relevancy rows; a video with none gets
    its own caption (its own row) with weight 1.

    Relevancy depends only on the (verb, noun set) of the two clips, so clips and captions are
    grouped by that label pair (EK-100 train: 6,799 pairs for 15,989 sentences). The relevancy
    of every clip pair against every caption pair is computed once, in row blocks
    (:func:`~egofeat.eval.mir.mir_relevancy_blocks`), keeping only the relevant entries; a
    batch then draws in O(batch × log).

    Args:
        labels: labels of every row the sampler may be asked about.
        caption_rows: rows whose text forms the caption gallery (default: every row).
        threshold: relevancy a caption must exceed (EK-100 recipes: 0.1).
    """

    def __init__(
        self, labels: ClipLabels, caption_rows: np.ndarray | None = None, threshold: float = 0.1
    ) -> None:
        rows = np.arange(len(labels)) if caption_rows is None else np.asarray(caption_rows)
        if rows.size == 0:
            raise ValueError("the caption gallery is empty")
        pairs: dict[tuple[int, tuple[int, ...]], int] = {}
        label_pairs = zip(labels.verbs.tolist(), labels.noun_sets, strict=True)
        self._pair_of_row = np.fromiter(
            (pairs.setdefault(pair, len(pairs)) for pair in label_pairs),
            dtype=np.int64,
            count=len(labels),
        )
        gallery_pairs = self._pair_of_row[rows]
        order = np.argsort(gallery_pairs, kind="stable")
        self._members = rows[order].astype(np.int64)  # gallery rows grouped pair by pair
        found, self._starts, self._counts = np.unique(
            gallery_pairs[order], return_index=True, return_counts=True
        )
        self._build_candidates(list(pairs), found, threshold)

    def _build_candidates(self, pairs: list, gallery: np.ndarray, threshold: float) -> None:
        """Per clip pair, its relevant gallery pairs (CSR), their relevancy, and the running
        count of gallery captions over all entries (so a draw is one ``searchsorted``)."""
        candidates, relevancies, sizes = [], [], np.zeros(len(pairs), dtype=np.int64)
        blocks = mir_relevancy_blocks(
            [verb for verb, _ in pairs],
            [nouns for _, nouns in pairs],
            [pairs[g][0] for g in gallery],
            [pairs[g][1] for g in gallery],
            rows_per_block=512,
        )
        for block_rows, block in blocks:
            pair, column = np.nonzero(block > threshold)
            candidates.append(column.astype(np.int32))
            relevancies.append(block[pair, column])
            sizes[block_rows] = np.bincount(pair, minlength=block.shape[0])
        self._offsets = np.concatenate([[0], np.cumsum(sizes)])
        self._candidates = np.concatenate(candidates)
        self._relevancy = np.concatenate(relevancies)
        # Each candidate pair weighs as many captions as it holds: uniform over captions.
        self._mass = np.concatenate([[0], np.cumsum(self._counts[self._candidates])])

    def sample(self, rows: np.ndarray, uniform: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One positive caption per row of ``rows``, from ``(len(rows), 2)`` uniform draws.

        Returns:
            ``(caption rows (B,), relevancies (B,))``; the relevancies are the adaptive-margin
            weights.
        """
        rows = np.asarray(rows, dtype=np.int64)
        uniform = np.asarray(uniform, dtype=np.float64)
        if uniform.shape != (len(rows), 2):
            raise ValueError(f"need two draws per row: {uniform.shape} for {len(rows)} rows")
        if not len(self._candidates):  # no clip has a relevant caption: all fall back
            return rows.copy(), np.ones(len(rows), dtype=np.float32)
        pair = self._pair_of_row[rows]
        start, stop = self._offsets[pair], self._offsets[pair + 1]
        low, high = self._mass[start], self._mass[stop]
        found = high > low
        # Draw one of the row's relevant captions by its running index; find its entry.
        caption = low + np.floor(uniform[:, 0] * (high - low)).astype(np.int64)
        entry = np.searchsorted(self._mass, caption, side="right") - 1
        entry = np.minimum(entry, len(self._candidates) - 1)  # rows without any: unused entry
        gallery = self._candidates[entry]
        within = np.floor(uniform[:, 1] * self._counts[gallery]).astype(np.int64)
        captions = np.where(found, self._members[self._starts[gallery] + within], rows)
        weights = np.where(found, self._relevancy[entry], 1.0)
        return captions, weights.astype(np.float32)
