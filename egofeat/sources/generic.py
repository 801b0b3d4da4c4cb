"""Any annotated video set -> the canonical segment table, through a column mapping."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import polars as pl

from egofeat.sources.errors import SegmentTableError
from egofeat.sources.parsing import parse_timestamps, read_table
from egofeat.sources.schema import REQUIRED_COLUMNS, SEGMENT_COLUMNS, validate_loaded

TimeFormat = Literal["seconds", "timestamp"]


def load_segments(
    path: str | Path,
    mapping: Mapping[str, str],
    *,
    dataset: str,
    split: str | None = None,
    time_format: TimeFormat = "seconds",
) -> pl.DataFrame:
    """Load a CSV, TSV or parquet file of segments as a canonical segment table.

    Args:
        path: the file (``.tsv``/``.tab`` are tab-separated, ``.parquet`` is parquet).
        mapping: canonical column -> source column, e.g.
            ``{"segment_id": "clip", "video_id": "video", "start_sec": "t0", "end_sec": "t1"}``.
            ``segment_id``, ``video_id``, ``start_sec`` and ``end_sec`` must be mapped, and
            ``split`` too unless given as an argument; unmapped canonical columns are null.
            Source columns that are not mapped are kept as extra columns.
        dataset: the value of the ``dataset`` column.
        split: the value of the ``split`` column for every row (instead of mapping it).
        time_format: ``"seconds"`` (numbers) or ``"timestamp"`` (``HH:MM:SS[.ff]`` strings)
            for the mapped ``start_sec``/``end_sec`` columns.

    Raises:
        SegmentTableError: a mapped column is missing from the file, or a value is bad
            (the message names the file, the 1-based data row and the source column).
    """
    path = Path(path)
    _check_mapping(mapping, split, path)
    raw = read_table(path)
    for canonical, column in mapping.items():
        if column not in raw.columns:
            raise SegmentTableError(
                f"mapping reads {canonical} from column {column!r}, which the file does not "
                f"have (columns: {', '.join(raw.columns)})",
                file=path,
                column=column,
                fix="correct the mapping's source column name",
            )
    mapped = {canonical: raw[column].alias(canonical) for canonical, column in mapping.items()}
    if time_format == "timestamp":
        for name in ("start_sec", "end_sec"):
            mapped[name] = parse_timestamps(
                mapped[name].cast(pl.Utf8), file=path, column=mapping[name]
            ).alias(name)
    elif time_format != "seconds":
        raise ValueError(f"time_format must be 'seconds' or 'timestamp', not {time_format!r}")
    table = pl.DataFrame(list(mapped.values())).with_columns(pl.lit(dataset).alias("dataset"))
    if split is not None:
        table = table.with_columns(pl.lit(split).alias("split"))
    used = set(mapping.values())
    extras = [
        raw[column]
        for column in raw.columns
        if column not in used and column not in SEGMENT_COLUMNS
    ]
    if extras:
        table = table.hstack(extras)
    return validate_loaded(table, source=path, source_columns=dict(mapping))


def _check_mapping(mapping: Mapping[str, str], split: str | None, path: Path) -> None:
    unknown = [name for name in mapping if name not in SEGMENT_COLUMNS or name == "dataset"]
    if unknown:
        raise ValueError(
            f"mapping keys must be canonical columns ({', '.join(SEGMENT_COLUMNS[1:])}); "
            f"got {', '.join(map(repr, unknown))}"
        )
    if split is not None and "split" in mapping:
        raise ValueError("give the split either as split=... or in the mapping, not both")
    needed = [name for name in REQUIRED_COLUMNS if name != "dataset"]
    if split is not None:
        needed.remove("split")
    missing = [name for name in needed if name not in mapping]
    if missing:
        raise ValueError(
            f"mapping for {path.name} lacks {', '.join(map(repr, missing))}: add e.g. "
            f"{{{missing[0]!r}: '<column of {path.name}>'}}"
            + (" (or give the split with --split)" if "split" in missing else "")
        )
