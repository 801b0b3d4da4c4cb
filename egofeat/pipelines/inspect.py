"""Looking into a store: summaries, SQL queries and exports to plain arrays."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from egofeat.store import STATUS_OK, FeatureStore


def store_info(path: str | Path) -> dict[str, Any]:
    """Summary of a store: segments per dataset/split, and per stream counts and provenance."""
    return FeatureStore.open(path).info()


def query_store(path: str | Path, sql: str) -> pl.DataFrame:
    """Run polars SQL over a store's tables ``segments`` and ``manifest``."""
    return FeatureStore.open(path).sql(sql)


def export_stream(path: str | Path, stream_name: str, out: str | Path) -> dict[str, Any]:
    """Write a stream's ok features in segment-table order to ``.npy`` (+ ids file) or ``.parquet``.

    ``.npy``: the (N, T, D) array, and ``<out>.segment_ids.txt`` with one id per line.
    ``.parquet``: columns ``segment_id`` and ``features`` (a flat float32 list per row; the file's
    metadata holds ``frames`` and ``dim``). Streams with a variable number of frames per row export
    to parquet only. Returns counts, including segments skipped because their rows are errors.
    """
    store = FeatureStore.open(path)
    stream = store.stream(stream_name)
    out = Path(out)
    order = store.segments().select("segment_id").collect()["segment_id"]
    ok = set(stream.manifest().filter(pl.col("status") == STATUS_OK).select("segment_id").collect()["segment_id"].to_list())
    ids = [s for s in order.to_list() if s in ok]
    unlisted = sorted(ok - set(ids))  # rows whose segment is not in the table keep store order at the end
    loaded = stream.load(ids + unlisted)
    suffix = out.suffix.lower()
    out.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".npy":
        if loaded.offsets is not None:
            raise ValueError(f"stream {stream_name!r} has a variable number of frames per row: export to .parquet")
        np.save(out, loaded.features)
        ids_file = out.with_suffix(".segment_ids.txt")
        ids_file.write_text("\n".join(loaded.segment_ids.tolist()) + "\n")
        files = [str(out), str(ids_file)]
    elif suffix == ".parquet":
        _write_parquet(out, loaded, stream.info.dim, stream.info.frames_per_row)
        files = [str(out)]
    else:
        raise ValueError(f"unknown export format {out.suffix!r}: use .npy or .parquet")
    manifest_rows = stream.manifest().select(pl.len()).collect().item()
    return {"stream": stream_name, "rows": len(loaded), "skipped_error_rows": manifest_rows - len(ok), "files": files}


def _write_parquet(out: Path, loaded: Any, dim: int, frames: int | None) -> None:
    rows = [loaded.row(i).astype(np.float32).ravel() for i in range(len(loaded))]
    flat = np.concatenate(rows) if rows else np.zeros(0, np.float32)
    offsets = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int32)
    table = pa.table(
        {
            "segment_id": pa.array(loaded.segment_ids.tolist(), pa.string()),
            "features": pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat)),
        }
    )
    table = table.replace_schema_metadata({"frames": str(frames), "dim": str(dim)})
    pq.write_table(table, out)
