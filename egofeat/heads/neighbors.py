"""Nearest-neighbour search over stored clip features, and EILEV-style in-context examples.

:class:`NeighborIndex` holds one L2-normalized feature per segment with its labels and does exact
cosine search: a float32 matrix product and ``argpartition`` in NumPy, or a flat inner-product
``faiss`` index when the optional ``faiss`` package is installed (``pip install egofeat[faiss]``).
Both are exact, so they return the same neighbours.

:func:`select_in_context_examples` picks the in-context examples of a query with EILEV's buckets
and quotas (``reference/heads.md`` §6): same-verb/other-noun and same-noun/other-verb examples,
never an exact (verb, noun) duplicate, the rest from other segments. Two samplers:

* ``"eilev-random"`` — EILEV's own (yukw777/EILEV ``eilev/data/frame.py``): seeded random draws
  inside the buckets, then at random from the rest;
* ``"similarity-ranked"`` — egofeat's kNN variant: the candidates most similar to the query
  first, in the buckets and in the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

try:  # optional extra: egofeat[faiss]
    import faiss
except ImportError:  # pragma: no cover - depends on the environment
    faiss = None

__all__ = [
    "NO_VERB_BUCKET",
    "SAMPLERS",
    "InContextExample",
    "NeighborIndex",
    "faiss_available",
    "select_in_context_examples",
]

NO_VERB_BUCKET = frozenset({"", "[other]"})
"""Verbs too vague to share: a query with one of these gets no verb bucket (as EILEV)."""

SAMPLERS = ("similarity-ranked", "eilev-random")
"""How examples are picked inside the buckets and from the rest (see the module docstring)."""

_QUERY_CHUNK = 256  # bounds the (queries x N) score block held at once (100 MB at N = 100k)


def faiss_available() -> bool:
    """Whether the optional ``faiss`` backend can be used."""
    return faiss is not None


@dataclass(frozen=True)
class InContextExample:
    """One selected example (or the query itself, last, with ``bucket == "query"``).

    ``bucket`` says why it was chosen: ``"verb"`` (same verb, other noun), ``"noun"`` (same noun,
    other verb) or ``"fill"`` (one of the rest, when the buckets ran short).
    """

    segment_id: str
    video_id: str
    frame_times: tuple[float, ...]
    verb: str
    noun: str
    similarity: float
    bucket: str


class NeighborIndex:
    """Exact cosine search over per-segment features, with the labels EILEV selection needs.

    Args:
        features: ``(N, D)`` one feature per segment (e.g. a stored clip embedding, or frame
            features averaged). Normalized to unit length here; an all-zero row is an error.
        segment_ids: ``N`` unique segment ids.
        verbs: ``N`` verb labels (``None`` is read as ``""``: no label).
        nouns: ``N`` noun labels (likewise).
        video_ids: ``N`` video ids.
        frame_times: ``N`` sequences of frame times in seconds (or an ``(N, T)`` array).
        backend: ``"numpy"``, ``"faiss"`` (raises if not installed) or ``"auto"`` (faiss when
            available).
    """

    def __init__(
        self,
        features: np.ndarray,
        segment_ids: Sequence[str],
        verbs: Sequence[str | None],
        nouns: Sequence[str | None],
        video_ids: Sequence[str],
        frame_times: Sequence[Sequence[float]] | np.ndarray,
        *,
        backend: Literal["auto", "numpy", "faiss"] = "auto",
    ) -> None:
        features = np.asarray(features, dtype=np.float32)
        if features.ndim != 2 or len(features) == 0:
            raise ValueError(f"features must be a non-empty (N, D) array, got {features.shape}")
        n = len(features)
        columns = {"segment_ids": segment_ids, "verbs": verbs, "nouns": nouns,
                   "video_ids": video_ids, "frame_times": frame_times}  # fmt: skip
        for name, column in columns.items():
            if len(column) != n:
                raise ValueError(f"{name} has {len(column)} entries but features has {n} rows")
        norms = np.linalg.norm(features, axis=1, keepdims=True)
        if not np.all(norms > 0):
            row = int(np.flatnonzero(norms[:, 0] == 0)[0])
            raise ValueError(
                f"feature row {row} (segment {segment_ids[row]!r}) is all zeros and has no "
                f"direction; drop the segment or fix its features"
            )
        self.features = features / norms
        self.segment_ids = [str(s) for s in segment_ids]
        self.video_ids = [str(v) for v in video_ids]
        self.verbs = ["" if v is None else str(v) for v in verbs]
        self.nouns = ["" if v is None else str(v) for v in nouns]
        self.frame_times = [tuple(float(t) for t in times) for times in frame_times]
        self._positions = {segment: i for i, segment in enumerate(self.segment_ids)}
        if len(self._positions) != n:
            duplicate = next(s for s in self.segment_ids if self.segment_ids.count(s) > 1)
            raise ValueError(f"segment id {duplicate!r} appears more than once")
        self._verb_vocab, self.verb_codes = _encode(self.verbs)
        self._noun_vocab, self.noun_codes = _encode(self.nouns)
        self.backend = _resolve_backend(backend)
        self._faiss_index = None
        if self.backend == "faiss":
            self._faiss_index = faiss.IndexFlatIP(self.features.shape[1])
            self._faiss_index.add(self.features)

    def __len__(self) -> int:
        return len(self.segment_ids)

    def __contains__(self, segment_id: object) -> bool:
        return segment_id in self._positions

    def position(self, segment_id: str) -> int:
        """Row of ``segment_id`` in the index."""
        try:
            return self._positions[segment_id]
        except KeyError:
            raise KeyError(f"segment {segment_id!r} is not in the index") from None

    def verb_code(self, verb: str) -> int:
        """Integer code of ``verb`` in this index (-1 if no segment has it)."""
        return self._verb_vocab.get(verb, -1)

    def noun_code(self, noun: str) -> int:
        """Integer code of ``noun`` in this index (-1 if no segment has it)."""
        return self._noun_vocab.get(noun, -1)

    def similarities(self, query: np.ndarray) -> np.ndarray:
        """Cosine similarity of one ``(D,)`` query with every indexed feature: ``(N,)``."""
        return self.features @ _unit_rows(np.asarray(query, dtype=np.float32)[None])[0]

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` most similar indexed segments for each query.

        Args:
            queries: ``(Q, D)`` query features, or one ``(D,)`` query.
            k: Neighbours per query (capped at the index size).

        Returns:
            ``(similarities, positions)``, each ``(Q, k)`` (or ``(k,)`` for a single query),
            best first.
        """
        single = np.ndim(queries) == 1
        queries = _unit_rows(np.atleast_2d(np.asarray(queries, dtype=np.float32)))
        if queries.shape[1] != self.features.shape[1]:
            raise ValueError(
                f"queries have dimension {queries.shape[1]}, the index {self.features.shape[1]}"
            )
        k = min(k, len(self))
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        if self._faiss_index is not None:
            scores, positions = self._faiss_index.search(queries, k)
        else:
            parts = [
                _top_k(queries[start : start + _QUERY_CHUNK] @ self.features.T, k)
                for start in range(0, len(queries), _QUERY_CHUNK)
            ]
            scores = np.concatenate([p[0] for p in parts])
            positions = np.concatenate([p[1] for p in parts])
        return (scores[0], positions[0]) if single else (scores, positions)

    def example(self, position: int, similarity: float, bucket: str) -> InContextExample:
        """The record of the segment at ``position``."""
        return InContextExample(
            segment_id=self.segment_ids[position],
            video_id=self.video_ids[position],
            frame_times=self.frame_times[position],
            verb=self.verbs[position],
            noun=self.nouns[position],
            similarity=float(similarity),
            bucket=bucket,
        )


def select_in_context_examples(
    index: NeighborIndex,
    query_id: str,
    k: int = 16,
    verb_ratio: float = 0.5,
    *,
    sampler: Literal["similarity-ranked", "eilev-random"] = "similarity-ranked",
    order: Literal["shuffle", "similarity"] = "shuffle",
    seed: int | None = 0,
    rng: np.random.Generator | None = None,
    include_query: bool = True,
    queries: NeighborIndex | None = None,
) -> list[InContextExample]:
    """Choose ``k`` in-context examples for a query, with EILEV's buckets and quotas.

    Candidates never include the query segment itself or an exact (verb, noun) duplicate of it
    (so the model cannot copy the answer). Two buckets:

    * **verb**: same verb, different noun — none when the query's verb is in
      :data:`NO_VERB_BUCKET` (``""``, ``"[other]"``);
    * **noun**: same noun, different verb — none when the query has no noun (``""``).

    Quotas follow EILEV: while examples are missing and a bucket has candidates, take
    ``int(remaining * verb_ratio)`` from the verb bucket and the rest from the noun bucket (all
    from one bucket when the other is empty), so the split is redone on what remains when a
    bucket runs dry. A shortfall is then filled from the rest of the pool (bucket ``"fill"``).
    ``sampler`` says which candidates are taken: ``"eilev-random"`` draws them uniformly without
    replacement (EILEV's sampler), ``"similarity-ranked"`` takes the most similar to the query.

    Args:
        index: The pool to draw examples from.
        query_id: Segment id of the query.
        k: Number of in-context examples.
        verb_ratio: Share of the verb bucket in each draw (EILEV: 0.5).
        sampler: ``"similarity-ranked"`` or ``"eilev-random"`` (see above).
        order: ``"shuffle"`` — EILEV's order, the examples in a random order; ``"similarity"`` —
            most similar first.
        seed: Seed of the random draws and the shuffle when no ``rng`` is given.
        rng: The generator to draw from; pass one generator for a run of queries to draw as
            EILEV's pre-sampling does (one seed, the queries in turn).
        include_query: Append the query's own record last (``bucket="query"``), as EILEV
            places the query after its context.
        queries: Index holding the query when it is not in the pool (e.g. a val query against
            the train pool); defaults to ``index``.

    Returns:
        The examples in the chosen order, then the query if ``include_query``.
    """
    if not 0.0 <= verb_ratio <= 1.0:
        raise ValueError(f"verb_ratio must lie in [0, 1], got {verb_ratio}")
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    if order not in ("shuffle", "similarity"):
        raise ValueError(f"order must be 'shuffle' or 'similarity', got {order!r}")
    rng = rng if rng is not None else np.random.default_rng(seed)
    source = queries or index
    query_position = source.position(query_id)
    verb, noun = source.verbs[query_position], source.nouns[query_position]
    similarity = index.similarities(source.features[query_position])

    same_verb = index.verb_codes == index.verb_code(verb)
    same_noun = index.noun_codes == index.noun_code(noun)
    eligible = ~(same_verb & same_noun)
    if query_id in index:
        eligible[index.position(query_id)] = False
    if sampler == "eilev-random":
        def take(mask: np.ndarray, count: int) -> list[int]:
            return _drawn(mask, count, rng)
    else:
        def take(mask: np.ndarray, count: int) -> list[int]:
            return _ranked(mask, similarity)[:count]
    verb_bucket = eligible & same_verb & (verb not in NO_VERB_BUCKET)
    noun_bucket = eligible & same_noun & (noun != "")

    chosen: list[tuple[int, str]] = []
    while len(chosen) < k and (verb_bucket.any() or noun_bucket.any()):
        remaining = k - len(chosen)
        if not noun_bucket.any():
            from_verbs = remaining
        elif not verb_bucket.any():
            from_verbs = 0
        else:
            from_verbs = int(remaining * verb_ratio)
        for bucket, count, name in ((verb_bucket, from_verbs, "verb"),
                                    (noun_bucket, remaining - from_verbs, "noun")):
            picked = take(bucket, count)
            bucket[picked] = False
            chosen += [(p, name) for p in picked]
    if len(chosen) < k:
        rest = eligible.copy()
        rest[[p for p, _ in chosen]] = False
        chosen += [(p, "fill") for p in take(rest, k - len(chosen))]

    examples = [index.example(p, similarity[p], bucket) for p, bucket in chosen]
    if order == "similarity":
        examples.sort(key=lambda e: -e.similarity)
    else:
        examples = [examples[i] for i in rng.permutation(len(examples))]
    if include_query:
        examples.append(source.example(query_position, 1.0, "query"))
    return examples


def _drawn(mask: np.ndarray, count: int, rng: np.random.Generator) -> list[int]:
    """``count`` positions where ``mask`` holds, drawn uniformly without replacement (all of
    them, in position order, when there are no more)."""
    if count <= 0:
        return []
    positions = np.flatnonzero(mask)
    if len(positions) <= count:
        return positions.tolist()
    return rng.choice(positions, size=count, replace=False).tolist()


def _ranked(mask: np.ndarray, similarity: np.ndarray) -> list[int]:
    """Positions where ``mask`` holds, most similar first (ties: lower position first)."""
    positions = np.flatnonzero(mask)
    return positions[np.argsort(-similarity[positions], kind="stable")].tolist()


def _top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    n = scores.shape[1]
    if k < n:  # partition the scores themselves: negating would copy the whole block
        candidates = np.argpartition(scores, n - k, axis=1)[:, n - k :]
    else:
        candidates = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    candidate_scores = np.take_along_axis(scores, candidates, axis=1)
    order = np.lexsort((candidates, -candidate_scores), axis=1)
    return (
        np.take_along_axis(candidate_scores, order, axis=1),
        np.take_along_axis(candidates, order, axis=1).astype(np.int64),
    )


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if not np.all(norms > 0):
        raise ValueError("a query feature is all zeros and has no direction")
    return x / norms


def _encode(labels: list[str]) -> tuple[dict[str, int], np.ndarray]:
    vocab: dict[str, int] = {}
    codes = np.fromiter((vocab.setdefault(label, len(vocab)) for label in labels), np.int64)
    return vocab, codes


def _resolve_backend(backend: str) -> str:
    if backend == "auto":
        return "faiss" if faiss_available() else "numpy"
    if backend == "faiss" and not faiss_available():
        raise ImportError("backend='faiss' needs the faiss package: pip install 'egofeat[faiss]'")
    if backend not in ("numpy", "faiss"):
        raise ValueError(f"backend must be 'auto', 'numpy' or 'faiss', got {backend!r}")
    return backend
