"""The manifest: one parquet row per (segment, stream) saying where its features are and how they were made."""

from __future__ import annotations

import polars as pl

#: Columns every manifest file has, in this order. Writers may add extra columns after them.
#: ``error_reason`` and ``retryable`` came later: parts written before them lack both (readers
#: add them as nulls, see :func:`with_error_columns`).
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
    "error_reason": pl.Utf8(),
    "retryable": pl.Boolean(),
}

STATUS_OK = "ok"
STATUS_ERROR = "error"

#: Why a row is an error row -> whether doing it again can give another result (the input
#: may have changed: a video copied in, a file replaced, a worker that hung). Rows of parts
#: written before reasons were recorded read as reason null, retryable null (counted as
#: retryable: doing them again costs a decode, never a wrong row).
ERROR_REASONS: dict[str, bool] = {
    "missing-video": True,        # no file or frame folder at the video's path
    "unreadable-video": True,     # a file that cannot be opened or decoded (corrupt, empty, a folder)
    "decode-timeout": True,       # the decoder hung and its worker was killed
    "decoder-crashed": True,      # the decoding process died (e.g. a segfault in a native decoder)
    "missing-boxes": True,        # hand-object detections of the video missing or unreadable
    "past-end": False,            # the segment needs frames past the end of its video
    "non-finite-features": False,  # the encoder gave NaN/inf for these frames
    "other": True,
}


def is_retryable(reason: str | None) -> bool:
    """Whether an error row of ``reason`` is worth doing again (unknown reasons: yes)."""
    return ERROR_REASONS.get(reason or "other", True)


def with_error_columns(frame: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame | pl.LazyFrame:
    """``frame`` with ``error_reason`` and ``retryable`` (null where a part predates them)."""
    names = frame.collect_schema().names()
    missing = [pl.lit(None, dtype).alias(name) for name, dtype in MANIFEST_SCHEMA.items()
               if name in ("error_reason", "retryable") and name not in names]
    return frame.with_columns(missing) if missing else frame
