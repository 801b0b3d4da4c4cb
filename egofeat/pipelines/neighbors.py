"""In-context examples from a store: EILEV's selection over one stream's features.

:func:`in_context_examples` indexes a stream (each segment's frames averaged), labelled with the
segment table's ``verb`` and ``noun`` names and the manifest's video ids and frame times, and
picks each query's examples with :func:`~egofeat.heads.neighbors.select_in_context_examples`:
verb and noun bucket quotas, no exact (verb, noun) duplicate of the query, and inside the
buckets either EILEV's seeded random draws (``sampler="eilev-random"``, the ``eilev-incontext``
recipe: one generator seeded once, the queries drawn in turn, as EILEV pre-samples) or the most
similar first (``"similarity-ranked"``). The search is exact (NumPy, or faiss when installed).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from egofeat.heads import load_head_data
from egofeat.heads.neighbors import NeighborIndex, select_in_context_examples
from egofeat.store import STATUS_OK, FeatureStore


class NeighborOptions(BaseModel):
    """How examples are selected (see :func:`~egofeat.heads.neighbors.select_in_context_examples`).

    ``splits`` restricts the pool examples are drawn from; a query may come from any split.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    sampler: Literal["similarity-ranked", "eilev-random"] = Field(
        "similarity-ranked", description="similarity-ranked (most similar first) | eilev-random (EILEV's seeded random draws).")
    k: int = Field(16, ge=1, description="In-context examples per query.")
    verb_ratio: float = Field(0.5, ge=0, le=1, description="Share of same-verb / other-noun examples in each draw (EILEV: 0.5).")
    splits: list[str] | None = Field(None, description="Draw examples from these splits only (a query may come from any).")
    order: Literal["shuffle", "similarity"] = Field("shuffle", description="shuffle (EILEV's order) | similarity.")
    seed: int | None = Field(0, description="Seed of the random draws and the shuffle.")
    backend: Literal["auto", "numpy", "faiss"] = Field("auto", description="auto | numpy | faiss (exact either way).")


def stream_index(
    store: FeatureStore,
    stream: str,
    segment_ids: Sequence[str] | None = None,
    *,
    backend: Literal["auto", "numpy", "faiss"] = "auto",
) -> NeighborIndex:
    """A :class:`NeighborIndex` over a stream's ``ok`` rows (all, or ``segment_ids``, in order)."""
    handle = store.stream(stream)
    rows = (
        handle.manifest()
        .filter(pl.col("status") == STATUS_OK)
        .select("segment_id", "video_id", "frame_times")
        .unique("segment_id", keep="first", maintain_order=True)
        .collect()
    )
    if segment_ids is not None:
        wanted = pl.DataFrame({"segment_id": list(segment_ids)}, schema={"segment_id": pl.Utf8})
        rows = wanted.join(rows, on="segment_id", how="left", maintain_order="left")
    if rows.height == 0:
        raise ValueError(f"stream {stream!r} has no ok rows to search among")
    table = store.segments().collect()
    labels = [c for c in ("verb", "noun") if c in table.columns]
    rows = rows.join(table.select("segment_id", *labels), on="segment_id", how="left", maintain_order="left")
    ids = rows["segment_id"].to_list()
    blank = [""] * rows.height
    return NeighborIndex(
        load_head_data(store, [stream], tasks=(), segment_ids=ids, pool=True).features[stream][:, 0].numpy(),
        segment_ids=ids,
        verbs=rows["verb"].to_list() if "verb" in labels else blank,
        nouns=rows["noun"].to_list() if "noun" in labels else blank,
        video_ids=rows["video_id"].fill_null("").to_list(),
        frame_times=[times or () for times in rows["frame_times"].to_list()],
        backend=backend,
    )


def in_context_examples(
    store_path: str | Path,
    stream: str,
    queries: Sequence[str],
    options: NeighborOptions = NeighborOptions(),
    *,
    record: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """EILEV's in-context examples of each query segment, from a store stream.

    Returns a summary: the pool size, the backend, the options, ``record`` (e.g. the recipe
    applied), and per query its ``examples`` (segment id, video id, frame times, verb, noun,
    similarity to the query, bucket), in the chosen order and followed by the query itself
    (bucket ``"query"``), as EILEV places the query last.
    """
    if not queries:
        raise ValueError("give at least one --query SEGMENT_ID")
    started = time.perf_counter()
    store = FeatureStore.open(store_path)
    pool_ids = None
    if options.splits:
        table = store.segments().select("segment_id", "split").collect()
        pool_ids = table.filter(pl.col("split").is_in(list(options.splits)))["segment_id"].to_list()
        ok = store.stream(stream).manifest().filter(pl.col("status") == STATUS_OK)
        ok_ids = set(ok.select("segment_id").collect()["segment_id"].to_list())
        pool_ids = [segment for segment in pool_ids if segment in ok_ids]
        if not pool_ids:
            raise ValueError(f"no segment of split(s) {list(options.splits)} is in stream {stream!r}")
    index = stream_index(store, stream, pool_ids, backend=options.backend)
    outside = [query for query in dict.fromkeys(queries) if query not in index]
    query_index = stream_index(store, stream, outside, backend="numpy") if outside else None
    loaded = time.perf_counter()
    results = []
    shared = np.random.default_rng(options.seed) if options.sampler == "eilev-random" else None
    for query in queries:
        examples = select_in_context_examples(
            index, query, options.k, options.verb_ratio, sampler=options.sampler, order=options.order,
            seed=options.seed, rng=shared, queries=query_index if query in outside else None,
        )  # fmt: skip
        results.append({"query": query, "examples": [dataclasses.asdict(e) for e in examples]})
    return {
        "store": str(store.path), "stream": stream, "pool": len(index), "backend": index.backend,
        "sampler": options.sampler, "k": options.k, "verb_ratio": options.verb_ratio,
        "order": options.order, "seed": options.seed,
        "seconds_loading": round(loaded - started, 3),
        "seconds_selecting": round(time.perf_counter() - loaded, 4), **(record or {}),
        "results": results,
    }  # fmt: skip
