"""Shared parsers for annotation files: timestamps, python-literal lists and tables.

All parsers are vectorised over polars Series (EPIC-100 train has 67k rows, EgoClip 3.8M) and
raise :class:`SegmentTableError` naming the file, the 1-based data row and the column of the
first value they cannot read.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

import polars as pl

from egofeat.sources.errors import SegmentTableError

# HH:MM:SS with an optional decimal fraction, e.g. EPIC's 00:01:02.34 and 00:01:02.340.
_TIMESTAMP = r"^(\d+):([0-5]\d):([0-5]\d)(?:\.(\d{1,9}))?$"
# Lists the fast paths read; anything else goes through ast.literal_eval, one value at a time.
_INT_LIST = r"^\[\s*(?:-?\d+\s*(?:,\s*-?\d+\s*)*)?\]$"
_QUOTED_LIST = r"^\[(?:'[^'\\]*'(?:, '[^'\\]*')*)?\]$"


def parse_timestamp(text: str) -> float:
    """Seconds of one ``HH:MM:SS[.fff]`` timestamp, e.g. ``"00:01:02.34"`` -> ``62.34``.

    The result is the float nearest to the exact decimal value (as ``float("62.34")``).
    """
    series = parse_timestamps(pl.Series("timestamp", [text]))
    if series[0] is None:
        raise ValueError(f"empty timestamp {text!r}")
    return series[0]


def parse_timestamps(
    values: pl.Series, *, file: str | Path | None = None, column: str | None = None
) -> pl.Series:
    """Parse ``HH:MM:SS[.fff]`` strings to seconds (Float64); nulls stay null.

    Exact: the whole timestamp is turned into an integer count of ``10**-digits`` seconds
    and divided once, so ``00:01:02.34`` gives exactly ``float("62.34")`` (summing
    ``3600*h + 60*m + s`` in floats would not always).
    """
    parts = values.str.extract_groups(_TIMESTAMP).struct.unnest()
    hours, minutes, seconds, fraction = (parts[name] for name in parts.columns)
    _raise_on_first(
        values,
        values.is_not_null() & hours.is_null(),
        file,
        column,
        lambda value: f"cannot parse {value!r} as a timestamp",
        "write times as HH:MM:SS or HH:MM:SS.ff (minutes and seconds below 60)",
    )
    digits = fraction.str.len_chars().fill_null(0).cast(pl.Int64)
    whole = (hours.cast(pl.Int64) * 60 + minutes.cast(pl.Int64)) * 60 + seconds.cast(pl.Int64)
    ticks = whole * (10**digits) + fraction.cast(pl.Int64).fill_null(0)
    return (ticks.cast(pl.Float64) / (10.0**digits).cast(pl.Float64)).alias(values.name)


def parse_int_lists(
    values: pl.Series, *, file: str | Path | None = None, column: str | None = None
) -> pl.Series:
    """Parse python-literal integer lists (``"[2, 15]"``, ``"[]"``) to ``List(Int64)``."""
    simple = values.str.contains(_INT_LIST)
    _raise_on_first(
        values,
        values.is_not_null() & ~simple,
        file,
        column,
        lambda value: f"cannot parse {value!r} as a list of integers",
        'write the list like "[3]" or "[3, 41]"',
    )
    items = values.str.strip_chars("[] ").str.split(",")
    parsed = items.list.eval(
        pl.element().str.strip_chars().filter(pl.element().str.strip_chars() != "")
    )
    return parsed.cast(pl.List(pl.Int64)).alias(values.name)


def parse_str_lists(
    values: pl.Series, *, file: str | Path | None = None, column: str | None = None
) -> pl.Series:
    """Parse python-literal string lists (``"['plate', 'top:counter']"``) to ``List(Utf8)``.

    Lists of plain single-quoted items are split without evaluating anything; other values
    (double quotes, escapes) are read with :func:`ast.literal_eval`, which never runs code.
    """
    simple = values.str.contains(_QUOTED_LIST).fill_null(True)
    inner = values.str.slice(2, values.str.len_chars() - 4)
    parsed = (
        pl.select(
            pl.when(values == "[]")
            .then(pl.lit([], dtype=pl.List(pl.Utf8)))
            .otherwise(inner.str.split("', '"))
        )
        .to_series()
        .alias(values.name)
    )
    if simple.all():
        return parsed
    slow = {}
    for index in simple.not_().arg_true().to_list():
        slow[index] = _literal_str_list(values[index], index, file, column or values.name)
    return pl.Series(
        values.name,
        [slow.get(i, value) for i, value in enumerate(parsed.to_list())],
        dtype=pl.List(pl.Utf8),
    )


def read_table(path: str | Path, *, separator: str | None = None) -> pl.DataFrame:
    """Read a CSV, TSV or parquet annotation table.

    Delimited text is read with every column as a string so that each loader parses (and
    reports errors in) its own columns; the separator is ``\\t`` for ``.tsv``/``.tab``
    files and ``,`` otherwise, unless given. Parquet keeps its own dtypes.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    if path.suffix.lower() in (".parquet", ".pq"):
        return pl.read_parquet(path)
    if separator is None:
        separator = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    try:
        return pl.read_csv(path, separator=separator, infer_schema=False)
    except (pl.exceptions.ComputeError, pl.exceptions.NoDataError) as error:
        _check_utf8(path)  # a text encoding problem is not a separator problem
        reason = str(error).splitlines()[0]
        raise SegmentTableError(
            f"cannot be read as {'tab' if separator == chr(9) else repr(separator)}-separated "
            f"text ({reason})",
            file=path,
            fix="check the separator and that every row has as many fields as the header",
        ) from error


def _check_utf8(path: Path) -> None:
    """Raise :class:`SegmentTableError` naming the first byte of ``path`` that is not UTF-8."""
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        start = data.rfind(b"\n", 0, error.start) + 1
        raise SegmentTableError(
            f"not UTF-8 text: byte 0x{data[error.start]:02X} at byte offset {error.start} (line "
            f"{line}, character {error.start - start + 1}, after "
            f"{data[start:error.start][-30:].decode('utf-8', 'replace')!r})",
            file=path, row=line - 1 if line > 1 else None,
            fix=f"re-save it as UTF-8, e.g. iconv -f latin1 -t utf-8 {path.name} > utf8-{path.name}",
        ) from None


def require_columns(
    df: pl.DataFrame, columns: tuple[str, ...] | list[str], *, file: str | Path, what: str
) -> None:
    """Raise :class:`SegmentTableError` naming the first of ``columns`` missing from ``df``."""
    for name in columns:
        if name not in df.columns:
            raise SegmentTableError(
                f"column {name!r} missing; {what} has the columns {', '.join(columns)} "
                f"(found: {', '.join(df.columns)})",
                file=file,
                column=name,
                fix=f"use {what} as released, or add the missing column",
            )


def cast_column(
    values: pl.Series,
    dtype: pl.DataType,
    *,
    file: str | Path | None = None,
    column: str | None = None,
) -> pl.Series:
    """Cast string values to ``dtype``, naming the row of the first value that does not fit."""
    cast = values.str.strip_chars().cast(dtype, strict=False)
    _raise_on_first(
        values,
        values.is_not_null() & cast.is_null(),
        file,
        column,
        lambda value: f"value {value!r} is not a {dtype}",
        f"make every {column or values.name} value a {dtype}, or leave it empty where unknown",
    )
    return cast


def _raise_on_first(
    values: pl.Series,
    bad: pl.Series,
    file: str | Path | None,
    column: str | None,
    problem: Callable[[str], str],
    fix: str,
) -> None:
    if not bad.any():
        return
    index = int(bad.arg_true()[0])
    raise SegmentTableError(
        problem(values[index]), file=file, row=index + 1, column=column or values.name, fix=fix
    )


def _literal_str_list(
    value: str, index: int, file: str | Path | None, column: str | None
) -> list[str]:
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        parsed = None
    if not isinstance(parsed, list) or not all(isinstance(item, str) for item in parsed):
        raise SegmentTableError(
            f"cannot parse {value!r} as a list of strings",
            file=file,
            row=index + 1,
            column=column,
            fix="write the list like \"['plate']\" or \"['plate', 'top:counter']\"",
        )
    return parsed
