"""EPIC-KITCHENS-100 multi-instance retrieval (MIR): relevancy, mAP and nDCG.

Definitions (``reference/formats.md`` §4), for a similarity matrix S (videos × captions) and
the graded relevancy R of the same shape:

- **Relevancy**: ``R[i, j] = 0.5 · [verb_i == verb_j] + 0.5 · IoU(nouns_i, nouns_j)`` over
  noun-class *sets*; R == 1 iff the verb and the noun set are both equal.
- **mAP** (as JPoSE, EgoVLP and LaViLa compute it, and as published numbers use): rank each
  query's items by ``(-S).argsort()`` (numpy's default sort); only positions holding an item
  with R == 1 contribute, but the precision there is *graded*,
  ``p(k) = Σ_{i≤k} R[q, ranked_i] / k``; AP = Σ over those positions of p(k) / #{R[q] == 1}.
  This is higher than textbook binary AP, which counts only R == 1 items above k.
- **nDCG**: graded gains ``R / log2(1 + position)`` summed over the first ``K_q = #{R[q] > 0}``
  positions of ``argsort(S)[::-1]``, divided by the same sum over R sorted descending.
- **Directions**: video→text queries the rows of S and R; text→video the rows of Sᵀ and Rᵀ;
  reports give both and their mean, ×100.

Ties in S are ordered exactly as those two argsort calls order them (they differ, as in the
reference code); with continuous similarities this never matters.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np

_QUERIES_PER_BATCH = 128  # keeps each batch's (queries × gallery) float64 temporaries small
_TRANSPOSE_TILE = 512  # rows per tile: a tiled transpose copy stays in cache, a plain one doesn't


def _noun_sets(name: str, noun_sets: Sequence[Iterable[int]]) -> list[np.ndarray]:
    sets = [np.unique(np.asarray(list(nouns), dtype=np.int64)) for nouns in noun_sets]
    for row, nouns in enumerate(sets):
        if not nouns.size:
            raise ValueError(f"{name}[{row}] is empty: every item needs at least one noun class")
        if nouns[0] < 0:
            raise ValueError(f"{name}[{row}] has a negative noun class {nouns[0]}")
    return sets


def _multi_hot(sets: list[np.ndarray], n_nouns: int) -> np.ndarray:
    multi_hot = np.zeros((len(sets), n_nouns), dtype=np.float32)
    rows = np.repeat(np.arange(len(sets)), [nouns.size for nouns in sets])
    columns = np.concatenate(sets) if sets else np.zeros(0, dtype=np.int64)
    multi_hot[rows, columns] = 1.0
    return multi_hot


def mir_relevancy_blocks(
    video_verbs: Sequence[int],
    video_noun_sets: Sequence[Iterable[int]],
    caption_verbs: Sequence[int],
    caption_noun_sets: Sequence[Iterable[int]],
    *,
    rows_per_block: int = 2048,
) -> Iterator[tuple[slice, np.ndarray]]:
    """Yield the relevancy matrix in blocks of video rows, as ``(rows, R[rows])``.

    For the train split (67,217 × 15,989, 4.3 GB dense in float32) this keeps only one
    ``rows_per_block × captions`` float32 block in memory at a time.

    Args:
        video_verbs: (V,) verb class of each video.
        video_noun_sets: V collections of noun classes (``all_noun_classes``).
        caption_verbs: (C,) verb class of each caption.
        caption_noun_sets: C collections of noun classes (those of the caption's segment).
        rows_per_block: video rows per yielded block.
    """
    video_verbs = np.asarray(video_verbs, dtype=np.int64)
    caption_verbs = np.asarray(caption_verbs, dtype=np.int64)
    if video_verbs.shape != (len(video_noun_sets),):
        raise ValueError(
            f"{video_verbs.shape[0]} video verbs but {len(video_noun_sets)} video noun sets"
        )
    if caption_verbs.shape != (len(caption_noun_sets),):
        raise ValueError(
            f"{caption_verbs.shape[0]} caption verbs but {len(caption_noun_sets)} caption noun sets"
        )
    if rows_per_block < 1:
        raise ValueError(f"rows_per_block must be at least 1, got {rows_per_block}")
    video_sets = _noun_sets("video_noun_sets", video_noun_sets)
    caption_sets = _noun_sets("caption_noun_sets", caption_noun_sets)
    n_nouns = 1 + max((int(nouns[-1]) for nouns in [*video_sets, *caption_sets]), default=-1)
    videos = _multi_hot(video_sets, n_nouns)
    captions_t = np.ascontiguousarray(_multi_hot(caption_sets, n_nouns).T)
    video_sizes = videos.sum(axis=1)
    caption_sizes = captions_t.sum(axis=0)
    for start in range(0, len(video_verbs), rows_per_block):
        rows = slice(start, min(start + rows_per_block, len(video_verbs)))
        # Set sizes are small integers, so these float32 products and sums are exact.
        intersection = videos[rows] @ captions_t
        union = video_sizes[rows, None] + caption_sizes[None, :] - intersection
        same_verb = video_verbs[rows, None] == caption_verbs[None, :]
        yield rows, 0.5 * same_verb.astype(np.float32) + 0.5 * (intersection / union)


def mir_relevancy(
    video_verbs: Sequence[int],
    video_noun_sets: Sequence[Iterable[int]],
    caption_verbs: Sequence[int],
    caption_noun_sets: Sequence[Iterable[int]],
) -> np.ndarray:
    """Dense float32 relevancy matrix (videos × captions); see :func:`mir_relevancy_blocks`."""
    relevancy = np.empty((len(video_verbs), len(caption_verbs)), dtype=np.float32)
    for rows, block in mir_relevancy_blocks(
        video_verbs, video_noun_sets, caption_verbs, caption_noun_sets
    ):
        relevancy[rows] = block
    return relevancy


def _check_pair(similarity: np.ndarray, relevancy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    similarity = np.asarray(similarity)
    relevancy = np.asarray(relevancy)
    if similarity.ndim != 2 or similarity.shape != relevancy.shape or not similarity.size:
        raise ValueError(
            f"similarity {similarity.shape} and relevancy {relevancy.shape} must be non-empty "
            "2-D matrices of the same shape (queries × gallery)"
        )
    if not np.issubdtype(similarity.dtype, np.floating):
        similarity = similarity.astype(np.float64)
    if not np.isfinite(similarity).all():
        raise ValueError("similarity has NaN or infinite values")
    if relevancy.size and (relevancy.min() < 0 or relevancy.max() > 1):
        raise ValueError("relevancy values must lie in [0, 1]")
    return similarity, relevancy


def _query_scores(
    similarity: np.ndarray, relevancy: np.ndarray, direction: str
) -> tuple[np.ndarray, np.ndarray]:
    """Per-query AP and nDCG (fractions) for the rows of checked ``similarity``."""
    n_queries, n_items = similarity.shape
    no_match = np.nonzero(~(relevancy == 1).any(axis=1))[0]
    if no_match.size:
        raise ValueError(
            f"{direction}: queries {no_match[:10].tolist()} ({no_match.size} in all) have no "
            "item with relevancy 1, so their AP is undefined; check the relevancy matrix's "
            "orientation and row/column order"
        )
    discount = 1.0 / np.log2(np.arange(2, n_items + 2))
    ap = np.empty(n_queries)
    ndcg = np.empty(n_queries)
    for start in range(0, n_queries, _QUERIES_PER_BATCH):
        rows = slice(start, min(start + _QUERIES_PER_BATCH, n_queries))
        s = np.ascontiguousarray(similarity[rows])
        r = np.ascontiguousarray(relevancy[rows])

        order = np.argsort(-s, axis=1)
        ranked = _gather_rows(r, order).astype(np.float64)
        # AP terms exist only where R == 1, but their precision counts graded relevance.
        query, position = np.nonzero(ranked == 1)
        graded_precision = np.cumsum(ranked, axis=1)[query, position] / (position + 1)
        n_batch = s.shape[0]
        ap[rows] = np.bincount(query, graded_precision, n_batch) / np.bincount(query, None, n_batch)

        # nDCG ranks by argsort(S)[::-1]; it equals the order above unless a row has ties.
        sorted_s = _gather_rows(s, order)
        for row in np.nonzero((sorted_s[:, 1:] == sorted_s[:, :-1]).any(axis=1))[0]:
            ranked[row] = r[row, np.argsort(s[row])[::-1]]
        depth = (r > 0).sum(axis=1)
        cut = int(depth.max())
        within = np.arange(cut) < depth[:, None]
        ideal = np.sort(r, axis=1)[:, ::-1][:, :cut]
        dcg = (ranked[:, :cut] * discount[:cut] * within).sum(axis=1)
        ndcg[rows] = dcg / (ideal * discount[:cut] * within).sum(axis=1)
    return ap, ndcg


def _gather_rows(values: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """``values[i, columns[i]]`` for every row i (a flat take: faster than take_along_axis)."""
    offsets = np.arange(0, values.size, values.shape[1])[:, None]
    return np.take(values.ravel(), columns + offsets)


def _transposed(matrix: np.ndarray) -> np.ndarray:
    """C-contiguous transpose, copied tile by tile."""
    out = np.empty(matrix.shape[::-1], dtype=matrix.dtype)
    for start in range(0, matrix.shape[0], _TRANSPOSE_TILE):
        out[:, start : start + _TRANSPOSE_TILE] = matrix[start : start + _TRANSPOSE_TILE].T
    return out


def mir_map(similarity: np.ndarray, relevancy: np.ndarray) -> float:
    """mAP (×100) of the rows of ``similarity`` as queries, with graded precision (see module)."""
    similarity, relevancy = _check_pair(similarity, relevancy)
    return 100.0 * float(_query_scores(similarity, relevancy, "queries")[0].mean())


def mir_ndcg(similarity: np.ndarray, relevancy: np.ndarray) -> float:
    """nDCG@K_q (×100) of the rows of ``similarity`` as queries (see module)."""
    similarity, relevancy = _check_pair(similarity, relevancy)
    return 100.0 * float(_query_scores(similarity, relevancy, "queries")[1].mean())


def mir_metrics(similarity: np.ndarray, relevancy: np.ndarray) -> dict[str, float]:
    """EK-100 MIR report for a videos × captions similarity matrix, ×100.

    Returns:
        ``map_v2t``, ``map_t2v``, ``map_avg``, ``ndcg_v2t``, ``ndcg_t2v``, ``ndcg_avg``.
    """
    similarity, relevancy = _check_pair(similarity, relevancy)
    ap_v2t, ndcg_v2t = _query_scores(similarity, relevancy, "video→text")
    ap_t2v, ndcg_t2v = _query_scores(_transposed(similarity), _transposed(relevancy), "text→video")
    metrics = {
        "map_v2t": 100.0 * float(ap_v2t.mean()),
        "map_t2v": 100.0 * float(ap_t2v.mean()),
        "ndcg_v2t": 100.0 * float(ndcg_v2t.mean()),
        "ndcg_t2v": 100.0 * float(ndcg_t2v.mean()),
    }
    metrics["map_avg"] = (metrics["map_v2t"] + metrics["map_t2v"]) / 2
    metrics["ndcg_avg"] = (metrics["ndcg_v2t"] + metrics["ndcg_t2v"]) / 2
    return {key: metrics[key] for key in sorted(metrics)}


def score_mir(similarity: np.ndarray, relevancy: np.ndarray) -> tuple[dict[str, float], dict[str, int]]:
    """:func:`mir_metrics`, leaving out videos and captions without any item of relevancy 1.

    Their AP is undefined (the official split has none). Returns the metrics and the counts left
    out (``videos_without_match``, ``captions_without_match``).
    """
    rows = (relevancy == 1).any(axis=1)
    columns = (relevancy[rows] == 1).any(axis=0)
    if not (rows.all() and columns.all()):
        similarity = similarity[np.ix_(rows, columns)]
        relevancy = relevancy[np.ix_(rows, columns)]
    dropped = {"videos_without_match": int((~rows).sum()),
               "captions_without_match": int((~columns).sum())}
    return mir_metrics(similarity, relevancy), dropped
