"""A writer process for the store tests: parts of two streams, resuming what a killed run left.

    python tests/store_writer.py STORE N_PARTS [DELAY_S]

STORE is a folder or an fsspec URL. The run creates the store and stream ``a/full`` (4 frames
of 8 dims a row), then for each part p: adds its segments to the segment table, writes part
``p<p>`` (4 ok rows and an error row) under its lease, consolidates the manifest and records a
plan, then sleeps DELAY_S; stream ``b/x`` is created half-way and gets the parts from then on.
The row r of part p holds ``p + r / 8`` everywhere (exact in float16), so a reader can check every
value it sees (:func:`expected`). Like an extraction run, it cleans up first and skips
committed parts, so running it again after a kill finishes the store.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import polars as pl

ROWS, FRAMES, DIM = 4, 4, 8
STREAMS = ("a/full", "b/x")


def expected(segment_id: str) -> np.ndarray:
    """The features of a segment ``"<p>:<r>"``."""
    p, r = (int(x) for x in segment_id.split(":"))
    return np.full((FRAMES, DIM), p + r / 8, dtype=np.float16)


def part_id(p: int) -> str:
    return f"p{p:03d}"


def run(root: str, n_parts: int, delay: float = 0.0) -> None:
    from egofeat.store import FeatureStore

    store = FeatureStore.create(root)

    def open_stream(name: str):
        stream = store.create_stream(name, dim=DIM, provenance={"test": name}, frames_per_row=FRAMES)
        stream.cleanup()
        return stream

    streams = [open_stream(STREAMS[0])]
    for p in range(n_parts):
        if p == n_parts // 2:
            streams.append(open_stream(STREAMS[1]))
        ids = [f"{p}:{r}" for r in range(ROWS + 1)]
        store.add_segments(pl.DataFrame({"dataset": "t", "split": "train", "segment_id": ids,
                                         "video_id": f"v{p}"}))
        for stream in streams:
            if stream.is_committed(part_id(p)):
                continue
            lease = stream.claim(part_id(p))
            assert lease is not None, "another writer holds the part"
            with lease, stream.part_writer(part_id(p)) as writer:
                for sid in ids[:ROWS]:
                    writer.add(sid, f"v{p}", expected(sid))
                writer.add_error(ids[ROWS], f"v{p}", "broken on purpose")
            stream.consolidate()
            stream.record_plan([part_id(q) for q in range(n_parts)], plan_key="plan", run_id="run")
        time.sleep(delay)


if __name__ == "__main__":
    run(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]) if len(sys.argv) > 3 else 0.0)
