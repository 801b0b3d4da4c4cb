"""The canonical segment table: its columns and its validator.

Every dataset adapter in :mod:`egofeat.sources` returns a polars DataFrame whose leading
columns are exactly :data:`SEGMENT_COLUMNS`, with the dtypes of :data:`SEGMENT_SCHEMA`;
dataset-specific extra columns follow. Times are in seconds on the source video.
"""

from __future__ import annotations

from collections.abc import Mapping, Sized
from pathlib import Path

import polars as pl

from egofeat.sources.errors import SegmentTableError
from egofeat.sources.parsing import parse_int_lists

SEGMENT_SCHEMA: dict[str, pl.DataType] = {
    "dataset": pl.Utf8(),
    "split": pl.Utf8(),
    "segment_id": pl.Utf8(),
    "video_id": pl.Utf8(),
    "participant_id": pl.Utf8(),
    "start_sec": pl.Float64(),
    "end_sec": pl.Float64(),
    "narration": pl.Utf8(),
    "verb": pl.Utf8(),
    "verb_class": pl.Int64(),
    "noun": pl.Utf8(),
    "noun_class": pl.Int64(),
    "all_noun_classes": pl.List(pl.Int64()),
}
SEGMENT_COLUMNS: tuple[str, ...] = tuple(SEGMENT_SCHEMA)

# Without these a row is not a segment; the other canonical columns may be absent (filled
# with nulls) or null (unknown, e.g. labels of test segments).
REQUIRED_COLUMNS: tuple[str, ...] = (
    "dataset",
    "split",
    "segment_id",
    "video_id",
    "start_sec",
    "end_sec",
)


def validate_segments(
    df: pl.DataFrame,
    *,
    source: str | Path | None = None,
    verb_vocab: Sized | None = None,
    noun_vocab: Sized | None = None,
) -> pl.DataFrame:
    """Check a segment table and return it with the canonical columns first, in schema dtypes.

    Required columns (``dataset, split, segment_id, video_id, start_sec, end_sec``) must be
    present and non-null; the other canonical columns are added as nulls when absent.
    Times must be finite, ``start_sec >= 0`` and ``end_sec >= start_sec``; segment ids must
    be unique within each dataset; class ids must lie in ``range(len(vocab))`` when a
    vocabulary is given (``all_noun_classes`` is checked against ``noun_vocab`` too).
    A string ``all_noun_classes`` column holding python-literal lists (``"[3, 7]"``) is parsed.

    Raises:
        SegmentTableError: naming ``source`` (the file the table came from), the row
            (1-based, in table order) and the column of the first problem found.
    """
    missing = [name for name in REQUIRED_COLUMNS if name not in df.columns]
    if missing:
        raise SegmentTableError(
            f"required column{'s' * (len(missing) > 1)} {', '.join(map(repr, missing))} "
            f"missing (columns present: {', '.join(df.columns) or 'none'})",
            file=source,
            column=missing[0],
            fix="add the column, or map it from a source column when loading",
        )
    df = df.with_columns(
        pl.lit(None, dtype=dtype).alias(name)
        for name, dtype in SEGMENT_SCHEMA.items()
        if name not in df.columns
    )
    df = _coerce(df, source)
    _check_required_not_null(df, source)
    _check_times(df, source)
    _check_unique_ids(df, source)
    if verb_vocab is not None:
        _check_class_ids(df, "verb_class", len(verb_vocab), source)
    if noun_vocab is not None:
        _check_class_ids(df, "noun_class", len(noun_vocab), source)
        _check_class_ids(df, "all_noun_classes", len(noun_vocab), source)
    extras = [name for name in df.columns if name not in SEGMENT_SCHEMA]
    return df.select(*SEGMENT_COLUMNS, *extras)


def validate_loaded(
    df: pl.DataFrame,
    *,
    source: str | Path,
    source_columns: Mapping[str, str],
    verb_vocab: Sized | None = None,
    noun_vocab: Sized | None = None,
) -> pl.DataFrame:
    """:func:`validate_segments` for a loader: errors name the file's own column.

    ``source_columns`` maps canonical names to the column of ``source`` they were read from
    (e.g. ``end_sec`` -> ``stop_timestamp``), so that a user can find the value to fix.
    """
    try:
        return validate_segments(df, source=source, verb_vocab=verb_vocab, noun_vocab=noun_vocab)
    except SegmentTableError as error:
        if error.column not in source_columns:
            raise
        raise SegmentTableError(
            error.problem,
            file=error.file,
            row=error.row,
            column=source_columns[error.column],
            fix=error.fix,
        ) from None


def _first_row(df: pl.DataFrame, mask: pl.Expr) -> tuple[int, dict] | None:
    """(1-based row, row values) of the first row where ``mask`` holds, or None."""
    hits = df.with_row_index("__row").filter(mask).head(1)
    if hits.height == 0:
        return None
    record = hits.row(0, named=True)
    return record.pop("__row") + 1, record


def _segment_hint(record: dict) -> str:
    segment_id = record.get("segment_id")
    return f" (segment {segment_id!r})" if segment_id is not None else ""


def _coerce(df: pl.DataFrame, source: str | Path | None) -> pl.DataFrame:
    casts = {}
    for name, dtype in SEGMENT_SCHEMA.items():
        current = df.schema[name]
        if current == dtype:
            continue
        if name == "all_noun_classes" and current == pl.Utf8:
            casts[name] = parse_int_lists(df[name], file=source, column=name)
            continue
        if current == pl.Null:
            casts[name] = pl.Series(name, [None] * df.height, dtype=dtype)
            continue
        cast = df[name].cast(dtype, strict=False)
        bad = df[name].is_not_null() & cast.is_null()
        if bad.any():
            row = int(bad.arg_true()[0]) + 1
            raise SegmentTableError(
                f"value {df[name][row - 1]!r} cannot be read as {dtype}",
                file=source,
                row=row,
                column=name,
                fix=f"make every {name} value a {dtype} (or empty where unknown)",
            )
        casts[name] = cast
    return df.with_columns(**casts) if casts else df


def _check_required_not_null(df: pl.DataFrame, source: str | Path | None) -> None:
    for name in REQUIRED_COLUMNS:
        found = _first_row(df, pl.col(name).is_null())
        if found is not None:
            row, record = found
            raise SegmentTableError(
                f"{name} is empty{_segment_hint(record)}",
                file=source,
                row=row,
                column=name,
                fix=f"every segment needs a {name}",
            )


def _check_times(df: pl.DataFrame, source: str | Path | None) -> None:
    for name in ("start_sec", "end_sec"):
        found = _first_row(df, ~pl.col(name).is_finite())
        if found is not None:
            row, record = found
            raise SegmentTableError(
                f"{name} is {record[name]}{_segment_hint(record)}",
                file=source,
                row=row,
                column=name,
                fix="give a finite time in seconds",
            )
    found = _first_row(df, pl.col("start_sec") < 0)
    if found is not None:
        row, record = found
        raise SegmentTableError(
            f"start_sec {record['start_sec']} is negative{_segment_hint(record)}",
            file=source,
            row=row,
            column="start_sec",
            fix="times are seconds from the start of the video, so they are >= 0",
        )
    found = _first_row(df, pl.col("end_sec") < pl.col("start_sec"))
    if found is not None:
        row, record = found
        raise SegmentTableError(
            f"end_sec {record['end_sec']} is before start_sec {record['start_sec']}"
            f"{_segment_hint(record)}",
            file=source,
            row=row,
            column="end_sec",
            fix="check that start and end are not swapped and use the same units",
        )


def _check_unique_ids(df: pl.DataFrame, source: str | Path | None) -> None:
    key = pl.struct("dataset", "segment_id")
    found = _first_row(df, key.is_duplicated() & ~key.is_first_distinct())
    if found is None:
        return
    row, record = found
    first, _ = _first_row(
        df,
        (pl.col("dataset") == record["dataset"]) & (pl.col("segment_id") == record["segment_id"]),
    )
    raise SegmentTableError(
        f"segment_id {record['segment_id']!r} of dataset {record['dataset']!r} repeats row {first}",
        file=source,
        row=row,
        column="segment_id",
        fix="segment ids must be unique within a dataset; drop the duplicate or rename it",
    )


def _check_class_ids(df: pl.DataFrame, name: str, size: int, source: str | Path | None) -> None:
    if name == "all_noun_classes":
        outside = pl.col(name).list.eval((pl.element() < 0) | (pl.element() >= size)).list.any()
    else:
        outside = (pl.col(name) < 0) | (pl.col(name) >= size)
    found = _first_row(df, outside.fill_null(False))
    if found is None:
        return
    row, record = found
    raise SegmentTableError(
        f"class id {record[name]} is outside the vocabulary of {size} classes "
        f"(ids 0..{size - 1}){_segment_hint(record)}",
        file=source,
        row=row,
        column=name,
        fix="check that the annotations and the class-vocabulary file belong together",
    )
