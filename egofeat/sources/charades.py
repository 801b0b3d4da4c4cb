"""Charades-Ego: untrimmed, multi-label videos -> one segment per video."""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl

from egofeat.sources.errors import SegmentTableError
from egofeat.sources.parsing import cast_column, read_table, require_columns
from egofeat.sources.schema import validate_loaded
from egofeat.sources.vocab import Vocabulary

CHARADES_COLUMNS = ("id", "subject", "script", "actions", "length")
_ACTION = re.compile(r"^c(\d{3}) (\d+(?:\.\d*)?) (\d+(?:\.\d*)?)$")
_CLASS_LINE = re.compile(r"^c(\d{3}) (.+)$")
ActionList = list[tuple[int, float, float]]


def parse_charades_actions(text: str | None) -> ActionList:
    """``"c092 11.90 21.20;c147 0.00 12.60"`` -> ``[(92, 11.9, 21.2), (147, 0.0, 12.6)]``.

    Empty or missing text means no actions. Raises ``ValueError`` for any other format.
    """
    if text is None or not text.strip():
        return []
    actions = []
    for item in text.split(";"):
        match = _ACTION.match(item.strip())
        if match is None:
            raise ValueError(f"cannot parse action {item!r}: expected 'cNNN start end'")
        actions.append((int(match.group(1)), float(match.group(2)), float(match.group(3))))
    return actions


def load_charades_ego(path: str | Path, *, split: str | None = None) -> pl.DataFrame:
    """Load ``CharadesEgo_v1_{train,test}_only1st.csv`` (or ``_only3rd``) as a segment table.

    One row per video (Charades-Ego is evaluated per untrimmed video, multi-label):
    ``segment_id`` = ``video_id`` = ``id``, times ``[0, length]``, ``participant_id`` =
    ``subject``, ``narration`` = ``script``. Extras: ``action_classes`` (the distinct class
    ids, sorted: the multi-hot ground truth) and ``actions`` (every annotated interval as
    ``{class_id, start_sec, end_sec}``, in file order).
    The split is ``train``/``test`` from the file name unless given.
    """
    path = Path(path)
    if split is None:
        split = _infer_split(path)
    raw = read_table(path)
    require_columns(raw, CHARADES_COLUMNS, file=path, what="a Charades-Ego CSV")
    actions = []
    for row, text in enumerate(raw["actions"].to_list(), start=1):
        try:
            actions.append(parse_charades_actions(text))
        except ValueError as error:
            raise SegmentTableError(
                str(error),
                file=path,
                row=row,
                column="actions",
                fix="write actions like 'c092 11.90 21.20;c147 0.00 12.60' (or leave empty)",
            ) from None
    fields = {"class_id": pl.Int64, "start_sec": pl.Float64, "end_sec": pl.Float64}
    action_column = pl.Series(
        "actions",
        [[dict(zip(fields, action, strict=True)) for action in video] for video in actions],
        dtype=pl.List(pl.Struct(fields)),
    )
    table = raw.select(
        pl.lit("charades_ego").alias("dataset"),
        pl.lit(split).alias("split"),
        pl.col("id").alias("segment_id"),
        pl.col("id").alias("video_id"),
        pl.col("subject").alias("participant_id"),
        pl.lit(0.0).alias("start_sec"),
        end_sec=cast_column(raw["length"], pl.Float64(), file=path, column="length"),
        narration=pl.col("script"),
    ).with_columns(
        action_column,
        action_classes=action_column.list.eval(
            pl.element().struct.field("class_id").unique().sort()
        ),
    )
    return validate_loaded(
        table,
        source=path,
        source_columns={"segment_id": "id", "video_id": "id", "end_sec": "length"},
    )


def load_charades_classes(path: str | Path) -> Vocabulary:
    """``Charades_v1_classes.txt``: lines ``c000 Holding some clothes``; id = the number."""
    path = Path(path)
    names = []
    for row, line in enumerate(path.read_text().splitlines(), start=1):
        match = _CLASS_LINE.match(line.strip())
        if match is None or int(match.group(1)) != row - 1:
            raise SegmentTableError(
                f"expected 'c{row - 1:03d} <class name>', found {line!r}",
                file=path,
                row=row,
                fix="one class per line, numbered c000, c001, ... in order",
            )
        names.append(match.group(2))
    return Vocabulary.from_names(names)


def _infer_split(path: Path) -> str:
    name = path.stem.lower()
    for split in ("train", "test"):
        if split in name:
            return split
    raise SegmentTableError(
        "cannot tell the split from the file name", file=path, fix="give the split with --split train or --split test"
    )
