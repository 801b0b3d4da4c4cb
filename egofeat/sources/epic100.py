"""EPIC-KITCHENS-100 annotation files -> the canonical segment table.

Reads the action-recognition CSVs (train/validation: 15 columns; test and the unlabelled UDA
``*_timestamps`` files: the first 8), the UDA files, the retrieval test CSV (the validation
file under another name) and, only when asked, their pickled pandas twins. Also reads the
small side files: class vocabularies, video info, unseen participants and tail classes.
"""

from __future__ import annotations

import re
from collections.abc import Sized
from functools import cached_property
from pathlib import Path

import polars as pl

from egofeat.sources.errors import SegmentTableError
from egofeat.sources.parsing import (
    cast_column,
    parse_int_lists,
    parse_str_lists,
    parse_timestamps,
    read_table,
    require_columns,
)
from egofeat.sources.schema import validate_loaded
from egofeat.sources.vocab import Vocabulary, load_epic_vocabularies

DATASET = "epic100"
TIMESTAMP_COLUMNS = (
    "narration_id",
    "participant_id",
    "video_id",
    "narration_timestamp",
    "start_timestamp",
    "stop_timestamp",
    "start_frame",
    "stop_frame",
)
LABEL_COLUMNS = (
    "narration",
    "verb",
    "verb_class",
    "noun",
    "noun_class",
    "all_nouns",
    "all_noun_classes",
)
EPIC_COLUMNS = TIMESTAMP_COLUMNS + LABEL_COLUMNS
# Where each canonical column comes from, so that validation errors name the file's column.
SOURCE_COLUMNS = {
    "segment_id": "narration_id",
    "start_sec": "start_timestamp",
    "end_sec": "stop_timestamp",
    "narration_sec": "narration_timestamp",
}
# Checked in order: the UDA and retrieval names also contain "train"/"test".
_SPLIT_PATTERNS = (
    (re.compile(r"uda_(source|target)_(train|val|test)"), r"uda_\1_\2"),
    (re.compile(r"retrieval_(train|test)"), r"mir_\1"),
    (re.compile(r"validation|(?<![a-z])val(?![a-z])"), "val"),
    (re.compile(r"train"), "train"),
    (re.compile(r"test"), "test"),
)


def infer_epic_split(path: str | Path) -> str:
    """Split named by an EPIC-100 file name.

    ``train``, ``val`` (``..._validation``), ``test``, ``uda_{source,target}_{train,val,test}``
    for the UDA files and ``mir_{train,test}`` for the retrieval copies of train/validation.
    """
    name = Path(path).stem.lower()
    for pattern, split in _SPLIT_PATTERNS:
        match = pattern.search(name)
        if match is not None:
            return match.expand(split)
    raise SegmentTableError(
        "cannot tell the split from the file name",
        file=path,
        fix="give the split with --split (e.g. train, val or test)",
    )


def load_epic100(
    path: str | Path,
    *,
    split: str | None = None,
    allow_pickle: bool = False,
    verb_classes: Sized | None = None,
    noun_classes: Sized | None = None,
) -> pl.DataFrame:
    """Load an EPIC-KITCHENS-100 segment file as a canonical segment table.

    ``segment_id`` is the ``narration_id``; times are the ``start``/``stop_timestamp`` in
    seconds; labels are null in the unlabelled files. Extra columns: ``start_frame``,
    ``stop_frame`` (1-based 60/50 fps JPEG numbers, see :mod:`egofeat.sources.epic_frames`),
    ``narration_sec`` (null where the file has no narration timestamp) and ``all_nouns``.
    Rows keep the file order.

    Args:
        path: a ``.csv`` file, or a ``.pkl`` twin (a pickled pandas DataFrame; needs pandas).
        split: the split to record; inferred from the file name when None
            (see :func:`infer_epic_split`).
        allow_pickle: load ``.pkl`` files. Off by default because unpickling can execute
            arbitrary code: only enable it for files you trust.
        verb_classes, noun_classes: vocabularies (anything with ``len``) that class ids must
            fall in, e.g. from :func:`egofeat.sources.load_epic_vocabularies`.

    Raises:
        SegmentTableError: naming the file, the 1-based data row and the column of the
            first bad value.
    """
    path = Path(path)
    split = split if split is not None else infer_epic_split(path)
    raw = _read_pickle(path, allow_pickle) if path.suffix.lower() == ".pkl" else _read_csv(path)
    return validate_loaded(
        _to_segments(raw, path, split),
        source=path,
        source_columns=SOURCE_COLUMNS,
        verb_vocab=verb_classes,
        noun_vocab=noun_classes,
    )


def _read_csv(path: Path) -> pl.DataFrame:
    raw = read_table(path)
    require_columns(raw, TIMESTAMP_COLUMNS, file=path, what="an EPIC-100 segment file")
    casts = {
        name: cast_column(raw[name], pl.Int64(), file=path, column=name)
        for name in ("start_frame", "stop_frame")
    }
    if _has_labels(raw, path):
        casts.update(
            verb_class=cast_column(raw["verb_class"], pl.Int64(), file=path, column="verb_class"),
            noun_class=cast_column(raw["noun_class"], pl.Int64(), file=path, column="noun_class"),
            all_nouns=parse_str_lists(raw["all_nouns"], file=path, column="all_nouns"),
            all_noun_classes=parse_int_lists(
                raw["all_noun_classes"], file=path, column="all_noun_classes"
            ),
        )
    return raw.with_columns(**casts)


def _read_pickle(path: Path, allow_pickle: bool) -> pl.DataFrame:
    if not allow_pickle:
        raise SegmentTableError(
            "refusing to unpickle: loading a pickle can execute arbitrary code",
            file=path,
            fix=f"rerun with --allow-pickle if you trust this file, or load the CSV twin "
            f"{path.with_suffix('.csv').name} instead",
        )
    try:
        import pandas as pd
    except ImportError as error:
        raise ImportError(
            f"reading {path.name} needs pandas (pip install pandas); or load the CSV twin"
        ) from error
    frame = pd.read_pickle(path)
    if not isinstance(frame, pd.DataFrame):
        raise SegmentTableError(
            f"holds a {type(frame).__name__}, not a pandas DataFrame",
            file=path,
            fix="use an EPIC-100 annotation pickle, or its CSV twin",
        )
    # The EPIC pickles are indexed by narration_id; unindexed copies have it as a column.
    if "narration_id" not in frame.columns:
        frame = frame.reset_index()
    raw = pl.from_pandas(frame)
    require_columns(raw, TIMESTAMP_COLUMNS, file=path, what="an EPIC-100 segment file")
    _has_labels(raw, path)
    return raw


def _has_labels(raw: pl.DataFrame, path: Path) -> bool:
    present = [name for name in LABEL_COLUMNS if name in raw.columns]
    if present:
        require_columns(raw, LABEL_COLUMNS, file=path, what="a labelled EPIC-100 segment file")
    return bool(present)


def _to_segments(raw: pl.DataFrame, path: Path, split: str) -> pl.DataFrame:
    for name in ("narration_id", "video_id", "start_timestamp", "stop_timestamp"):
        _require_values(raw, name, path)
    times = {
        name: parse_timestamps(raw[column], file=path, column=column)
        for name, column in (
            ("start_sec", "start_timestamp"),
            ("end_sec", "stop_timestamp"),
            ("narration_sec", "narration_timestamp"),
        )
    }
    raw = raw.with_columns(**times)
    labelled = "verb_class" in raw.columns

    def label(name: str, dtype: pl.DataType) -> pl.Expr:
        return pl.col(name) if labelled else pl.lit(None, dtype=dtype).alias(name)

    return raw.select(
        pl.lit(DATASET).alias("dataset"),
        pl.lit(split).alias("split"),
        pl.col("narration_id").alias("segment_id"),
        "video_id",
        "participant_id",
        "start_sec",
        "end_sec",
        label("narration", pl.Utf8()),
        label("verb", pl.Utf8()),
        label("verb_class", pl.Int64()),
        label("noun", pl.Utf8()),
        label("noun_class", pl.Int64()),
        label("all_noun_classes", pl.List(pl.Int64())),
        "start_frame",
        "stop_frame",
        "narration_sec",
        label("all_nouns", pl.List(pl.Utf8())),
    )


def _require_values(raw: pl.DataFrame, column: str, path: Path) -> None:
    empty = raw[column].is_null()
    if empty.any():
        raise SegmentTableError(
            "value is empty",
            file=path,
            row=int(empty.arg_true()[0]) + 1,
            column=column,
            fix=f"every EPIC-100 segment needs a {column}",
        )


def load_video_info(path: str | Path) -> pl.DataFrame:
    """``EPIC_100_video_info.csv`` as ``video_id, duration_sec, fps, width, height``."""
    raw = read_table(path)
    require_columns(
        raw, ("video_id", "duration", "fps", "resolution"), file=path, what="video info"
    )
    size = raw["resolution"].str.extract_groups(r"^(\d+)x(\d+)$").struct.unnest()
    bad = raw["resolution"].is_null() | size[size.columns[0]].is_null()
    if bad.any():
        row = int(bad.arg_true()[0]) + 1
        raise SegmentTableError(
            f"resolution {raw['resolution'][row - 1]!r} is not WIDTHxHEIGHT",
            file=path,
            row=row,
            column="resolution",
            fix="write resolutions like 1920x1080",
        )
    return pl.DataFrame(
        {
            "video_id": raw["video_id"],
            "duration_sec": cast_column(
                raw["duration"], pl.Float64(), file=path, column="duration"
            ),
            "fps": cast_column(raw["fps"], pl.Float64(), file=path, column="fps"),
            "width": size[size.columns[0]].cast(pl.Int64),
            "height": size[size.columns[1]].cast(pl.Int64),
        }
    )


def load_unseen_participants(path: str | Path) -> frozenset[str]:
    """Participant ids of ``EPIC_100_unseen_participant_ids_{validation,test}.csv``."""
    raw = read_table(path)
    require_columns(raw, ("participant_id",), file=path, what="an unseen-participants file")
    return frozenset(raw["participant_id"].drop_nulls().to_list())


def load_tail_classes(path: str | Path) -> frozenset[int]:
    """Class ids of ``EPIC_100_tail_verbs.csv`` (column ``verb``) or ``..._tail_nouns.csv``."""
    raw = read_table(path)
    if raw.width != 1 or raw.columns[0] not in ("verb", "noun"):
        raise SegmentTableError(
            f"expected one column 'verb' or 'noun', found {', '.join(raw.columns)}",
            file=path,
            column=raw.columns[0],
            fix="use EPIC_100_tail_verbs.csv or EPIC_100_tail_nouns.csv",
        )
    column = raw.columns[0]
    return frozenset(cast_column(raw[column], pl.Int64(), file=path, column=column).to_list())


class EpicAnnotations:
    """The standard EPIC-KITCHENS-100 annotation files of one folder.

    The folder is a checkout of ``epic-kitchens-100-annotations`` (file names as released).
    Files are read on first use; missing files raise ``FileNotFoundError`` naming them.
    """

    SEGMENT_FILES = {
        "train": "EPIC_100_train.csv",
        "val": "EPIC_100_validation.csv",
        "test": "EPIC_100_test_timestamps.csv",
    }

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"EPIC-100 annotation folder not found: {self.root}")

    def __repr__(self) -> str:
        return f"EpicAnnotations({str(self.root)!r})"

    def path(self, name: str) -> Path:
        """Path of annotation file ``name``; ``FileNotFoundError`` if it is not there."""
        path = self.root / name
        if not path.is_file():
            raise FileNotFoundError(f"{name} not found in {self.root}")
        return path

    def segments(self, split: str) -> pl.DataFrame:
        """Segment table of ``split`` (``train``, ``val`` or ``test``), class ids checked."""
        if split not in self.SEGMENT_FILES:
            raise ValueError(f"split must be one of {', '.join(self.SEGMENT_FILES)}, not {split!r}")
        return load_epic100(
            self.path(self.SEGMENT_FILES[split]),
            split=split,
            verb_classes=self.verbs,
            noun_classes=self.nouns,
        )

    @cached_property
    def _vocabularies(self) -> tuple[Vocabulary, Vocabulary]:
        return load_epic_vocabularies(self.root)

    @property
    def verbs(self) -> Vocabulary:
        """The 97 verb classes."""
        return self._vocabularies[0]

    @property
    def nouns(self) -> Vocabulary:
        """The 300 noun classes."""
        return self._vocabularies[1]

    def unseen_participants(self, split: str = "val") -> frozenset[str]:
        """Participants unseen in training, for ``val`` (P18, P32) or ``test``."""
        suffix = {"val": "validation", "test": "test"}.get(split)
        if suffix is None:
            raise ValueError(f"unseen participants exist for 'val' and 'test', not {split!r}")
        return load_unseen_participants(self.path(f"EPIC_100_unseen_participant_ids_{suffix}.csv"))

    @cached_property
    def tail_verbs(self) -> frozenset[int]:
        """Verb classes of the tail (the rarest classes, 20% of training instances)."""
        return load_tail_classes(self.path("EPIC_100_tail_verbs.csv"))

    @cached_property
    def tail_nouns(self) -> frozenset[int]:
        """Noun classes of the tail."""
        return load_tail_classes(self.path("EPIC_100_tail_nouns.csv"))

    @cached_property
    def video_info(self) -> pl.DataFrame:
        """``video_id, duration_sec, fps, width, height`` of the 700 videos."""
        return load_video_info(self.path("EPIC_100_video_info.csv"))
