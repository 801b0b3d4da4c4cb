"""The canonical segment table, its validator, the shared parsers and the generic adapter."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

from egofeat.sources import (
    SEGMENT_COLUMNS,
    SEGMENT_SCHEMA,
    SegmentTableError,
    load_segments,
    parse_timestamp,
    validate_segments,
)
from egofeat.sources.parsing import parse_int_lists, parse_str_lists, parse_timestamps


def _table(**overrides) -> pl.DataFrame:
    columns = {
        "dataset": ["toy", "toy", "toy"],
        "split": ["train"] * 3,
        "segment_id": ["a", "b", "c"],
        "video_id": ["v1", "v1", "v2"],
        "start_sec": [0.0, 1.5, 2.0],
        "end_sec": [1.0, 3.0, 2.0],
    }
    columns.update(overrides)
    return pl.DataFrame(columns)


def test_schema_contract():
    assert SEGMENT_COLUMNS == (
        "dataset",
        "split",
        "segment_id",
        "video_id",
        "participant_id",
        "start_sec",
        "end_sec",
        "narration",
        "verb",
        "verb_class",
        "noun",
        "noun_class",
        "all_noun_classes",
    )
    assert SEGMENT_SCHEMA["start_sec"] == pl.Float64
    assert SEGMENT_SCHEMA["all_noun_classes"] == pl.List(pl.Int64)
    assert issubclass(SegmentTableError, ValueError)


def test_validate_fills_orders_and_coerces():
    df = _table(extra=[1, 2, 3], verb_class=["3", None, "4"]).select(
        "extra", "end_sec", "start_sec", "video_id", "segment_id", "split", "dataset", "verb_class"
    )
    out = validate_segments(df)
    assert out.columns == [*SEGMENT_COLUMNS, "extra"]
    assert out.schema == pl.Schema({**SEGMENT_SCHEMA, "extra": pl.Int64})
    assert out["verb_class"].to_list() == [3, None, 4]
    assert out["narration"].null_count() == 3


def test_validate_parses_literal_noun_lists():
    out = validate_segments(_table(all_noun_classes=["[1, 2]", "[]", None]))
    assert out["all_noun_classes"].to_list() == [[1, 2], [], None]


@pytest.mark.parametrize(
    ("overrides", "row", "column", "words"),
    [
        ({"start_sec": [0.0, None, 1.0]}, 2, "start_sec", "empty"),
        ({"end_sec": [1.0, 0.5, 2.0]}, 2, "end_sec", "before start_sec"),
        ({"start_sec": [0.0, -1.0, 1.0]}, 2, "start_sec", "negative"),
        ({"end_sec": [1.0, float("nan"), 2.0]}, 2, "end_sec", "nan"),
        ({"segment_id": ["a", "b", "a"]}, 3, "segment_id", "repeats row 1"),
        ({"start_sec": ["0", "x", "1"]}, 2, "start_sec", "cannot be read"),
    ],
)
def test_validate_errors_name_row_and_column(overrides, row, column, words):
    with pytest.raises(SegmentTableError) as caught:
        validate_segments(_table(**overrides), source="toy.csv")
    error = caught.value
    assert (error.file, error.row, error.column) == ("toy.csv", row, column)
    message = str(error)
    assert (
        f"toy.csv, row {row} (1-based data row, header not counted), column {column!r}" in message
    )
    assert words in message
    assert "Fix:" in message


def test_validate_missing_required_column():
    with pytest.raises(SegmentTableError, match="'video_id' missing") as caught:
        validate_segments(_table().drop("video_id"), source="toy.csv")
    assert caught.value.column == "video_id"
    assert caught.value.row is None


def test_segment_ids_are_unique_per_dataset_only():
    df = _table(dataset=["a", "b", "a"], segment_id=["x", "x", "y"])
    assert validate_segments(df).height == 3


def test_class_ids_checked_against_vocabularies():
    df = _table(verb_class=[0, 1, 2], noun_class=[0, 0, 0], all_noun_classes=[[0], [0, 5], [0]])
    validate_segments(df, verb_vocab=range(3), noun_vocab=range(6))
    with pytest.raises(SegmentTableError) as caught:
        validate_segments(df, verb_vocab=range(2))
    assert (caught.value.row, caught.value.column) == (3, "verb_class")
    with pytest.raises(SegmentTableError) as caught:
        validate_segments(df, noun_vocab=range(5))
    assert (caught.value.row, caught.value.column) == (2, "all_noun_classes")
    assert "outside the vocabulary of 5 classes" in str(caught.value)


def test_timestamps_parse_exactly():
    # Every hundredth of a second over two hours equals float() of its decimal value.
    ticks = pl.int_range(0, 2 * 3600 * 100, eager=True)
    text = pl.format(
        "{}:{}:{}.{}",
        (ticks // 360000).cast(pl.Utf8).str.zfill(2),
        (ticks // 6000 % 60).cast(pl.Utf8).str.zfill(2),
        (ticks // 100 % 60).cast(pl.Utf8).str.zfill(2),
        (ticks % 100).cast(pl.Utf8).str.zfill(2),
    )
    parsed = parse_timestamps(pl.select(text).to_series())
    expected = (ticks // 100).cast(pl.Utf8) + "." + (ticks % 100).cast(pl.Utf8).str.zfill(2)
    assert (parsed == expected.cast(pl.Float64)).all()
    assert parse_timestamp("01:02:03.456") == float(Decimal("3723.456"))
    assert parse_timestamp("00:00:07") == 7.0


@pytest.mark.parametrize("bad", ["1:2:3", "00:60:00.00", "00:00:61", "00-00-01", "", "00:00:01."])
def test_bad_timestamps_raise(bad):
    values = pl.Series("t", ["00:00:01.00", bad])
    if bad == "":
        # empty CSV fields arrive as nulls, which stay null
        values = values.replace("", None)
        assert parse_timestamps(values).to_list() == [1.0, None]
        return
    with pytest.raises(SegmentTableError, match="cannot parse") as caught:
        parse_timestamps(values, file="f.csv", column="start_timestamp")
    assert (caught.value.row, caught.value.column) == (2, "start_timestamp")


def test_literal_lists():
    ints = pl.Series(["[2]", "[13, 3]", "[]", None, "[ 4 ,5 ]"])
    assert parse_int_lists(ints).to_list() == [[2], [13, 3], [], None, [4, 5]]
    strings = pl.Series(["['cup', 'top:counter']", "[]", None, "[\"chef's knife\", 'x']"])
    assert parse_str_lists(strings).to_list() == [
        ["cup", "top:counter"],
        [],
        None,
        ["chef's knife", "x"],
    ]
    for parse, bad in ((parse_int_lists, "[1, x]"), (parse_str_lists, "['a', __import__('os')]")):
        with pytest.raises(SegmentTableError, match="cannot parse") as caught:
            parse(pl.Series("all", ["[1]" if parse is parse_int_lists else "['a']", bad]))
        assert (caught.value.row, caught.value.column) == (2, "all")


MAPPING = {"segment_id": "clip", "video_id": "video", "start_sec": "t0", "end_sec": "t1"}


def test_generic_csv(tmp_path: Path):
    path = tmp_path / "clips.csv"
    path.write_text("clip,video,t0,t1,label\nc1,v1,0.5,2.0,cut\nc2,v1,2.0,4.25,wash\n")
    df = load_segments(path, {**MAPPING, "verb": "label"}, dataset="mine", split="train")
    assert df.columns == [*SEGMENT_COLUMNS]
    assert df["start_sec"].to_list() == [0.5, 2.0]
    assert df["verb"].to_list() == ["cut", "wash"]
    assert df["dataset"].unique().to_list() == ["mine"]


def test_generic_tsv_timestamps_and_extras(tmp_path: Path):
    path = tmp_path / "clips.tsv"
    path.write_text(
        "clip\tvideo\tt0\tt1\tsplit\tscore\nc1\tv1\t00:01:00.50\t00:01:02.00\tval\t0.9\n"
    )
    df = load_segments(path, {**MAPPING, "split": "split"}, dataset="mine", time_format="timestamp")
    assert df.row(0, named=True)["start_sec"] == 60.5
    assert df["split"].to_list() == ["val"]
    assert df.columns[-1] == "score"


def test_generic_parquet(tmp_path: Path):
    path = tmp_path / "clips.parquet"
    pl.DataFrame(
        {"clip": ["a"], "video": ["v"], "t0": [1.0], "t1": [2.0], "nouns": [[3, 4]]}
    ).write_parquet(path)
    df = load_segments(path, {**MAPPING, "all_noun_classes": "nouns"}, dataset="d", split="s")
    assert df["all_noun_classes"].to_list() == [[3, 4]]


def test_generic_errors_name_source_columns(tmp_path: Path):
    path = tmp_path / "clips.csv"
    path.write_text("clip,video,t0,t1\nc1,v1,0.5,2.0\nc2,v1,5.0,4.0\n")
    with pytest.raises(SegmentTableError) as caught:
        load_segments(path, MAPPING, dataset="d", split="s")
    assert (caught.value.file, caught.value.row, caught.value.column) == (str(path), 2, "t1")
    with pytest.raises(SegmentTableError, match="does not have") as caught:
        load_segments(path, {**MAPPING, "end_sec": "stop"}, dataset="d", split="s")
    assert caught.value.column == "stop"
    with pytest.raises(ValueError, match="lacks 'end_sec'"):
        load_segments(
            path, {k: v for k, v in MAPPING.items() if k != "end_sec"}, dataset="d", split="s"
        )
    with pytest.raises(ValueError, match="lacks 'split'"):
        load_segments(path, MAPPING, dataset="d")
    with pytest.raises(ValueError, match="canonical columns"):
        load_segments(path, {**MAPPING, "colour": "t0"}, dataset="d", split="s")


def test_unreadable_tables(tmp_path: Path):
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("clip,video,t0,t1\nc1,v1,0.5,2.0,extra\n")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    for path in (ragged, empty):
        with pytest.raises(SegmentTableError, match="cannot be read as ','-separated") as caught:
            load_segments(path, MAPPING, dataset="d", split="s")
        assert caught.value.file == str(path)
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        load_segments(tmp_path / "missing.csv", MAPPING, dataset="d", split="s")
