"""The manifest: one parquet row per (segment, stream) saying where its features are and how they were made."""

from __future__ import annotations

import polars as pl

#: Columns every manifest file has, in this order. Writers may add extra columns after them.
MANIFEST_SCHEMA: dict[str, pl.DataType] = {
    "segment_id": pl.Utf8(),
    "video_id": pl.Utf8(),
    "part_id": pl.Utf8(),
    "attempt": pl.Utf8(),
    "row": pl.Int32(),
    "offset": pl.Int64(),
    "n_frames": pl.Int32(),
    "frame_times": pl.List(pl.Float64()),
    "boxes": pl.List(pl.List(pl.Float32())),
    "status": pl.Utf8(),
    "error": pl.Utf8(),
}

STATUS_OK = "ok"
STATUS_ERROR = "error"
