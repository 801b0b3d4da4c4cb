"""EPIC-KITCHENS-100 annotation files: the real files, and every error on small ones."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from egofeat.sources import (
    SEGMENT_COLUMNS,
    EpicAnnotations,
    SegmentTableError,
    Vocabulary,
    infer_epic_split,
    load_epic100,
    load_epic_vocabularies,
    load_tail_classes,
    load_unseen_participants,
    load_video_info,
)

HEADER = (
    "narration_id,participant_id,video_id,narration_timestamp,start_timestamp,stop_timestamp,"
    "start_frame,stop_frame,narration,verb,verb_class,noun,noun_class,all_nouns,all_noun_classes"
)
ROWS = [
    "P01_11_0,P01,P01_11,00:00:00.560,00:00:00.00,00:00:01.89,1,113,take plate,take,0,plate,2,"
    "['plate'],[2]",
    "P01_11_1,P01,P01_11,,00:00:01.56,00:00:02.45,93,147,put down plate,put-down,1,plate,2,"
    "['plate'],[2]",
    "P01_11_2,P01,P01_11,00:08:01.229,00:08:02.13,00:08:03.00,28927,28980,put cup into cupboard,"
    "put-into,5,cup,13,\"['cup', 'cupboard']\",\"[13, 3]\"",
]
EXTRAS = ["start_frame", "stop_frame", "narration_sec", "all_nouns"]


def _write(tmp_path: Path, rows: list[str], header: str = HEADER, name="EPIC_100_train.csv"):
    path = tmp_path / name
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def test_small_train_file(tmp_path: Path):
    df = load_epic100(_write(tmp_path, ROWS))
    assert df.columns == [*SEGMENT_COLUMNS, *EXTRAS]
    assert df["split"].unique().to_list() == ["train"]
    assert df["segment_id"].to_list() == ["P01_11_0", "P01_11_1", "P01_11_2"]
    assert df["start_sec"].to_list() == [0.0, 1.56, 482.13]
    assert df["end_sec"].to_list() == [1.89, 2.45, 483.0]
    assert df["narration_sec"].to_list() == [0.56, None, 481.229]
    assert df["all_nouns"].to_list() == [["plate"], ["plate"], ["cup", "cupboard"]]
    assert df["all_noun_classes"].to_list() == [[2], [2], [13, 3]]
    assert df["start_frame"].to_list() == [1, 93, 28927]


def test_unlabelled_file_has_null_labels(tmp_path: Path):
    header = ",".join(HEADER.split(",")[:8])
    rows = [",".join(row.split(",")[:8]) for row in ROWS[:2]]
    df = load_epic100(_write(tmp_path, rows, header, "EPIC_100_test_timestamps.csv"))
    assert df["split"].to_list() == ["test", "test"]
    for column in (
        "narration",
        "verb",
        "verb_class",
        "noun_class",
        "all_noun_classes",
        "all_nouns",
    ):
        assert df[column].null_count() == 2, column


def _error(tmp_path: Path, rows: list[str], header: str = HEADER, **kwargs) -> SegmentTableError:
    path = _write(tmp_path, rows, header)
    with pytest.raises(SegmentTableError) as caught:
        load_epic100(path, **kwargs)
    error = caught.value
    assert error.file == str(path)
    assert str(path) in str(error)
    return error


def test_error_missing_column(tmp_path: Path):
    header = HEADER.replace("stop_timestamp,", "")
    rows = [row.replace(",00:00:01.89,", ",") for row in ROWS[:1]]
    error = _error(tmp_path, rows, header)
    assert (error.row, error.column) == (None, "stop_timestamp")
    assert "column 'stop_timestamp'" in str(error) and "missing" in str(error)


def test_error_missing_label_column(tmp_path: Path):
    header = HEADER.rsplit(",", 1)[0]
    rows = [row.rsplit(",", 1)[0] for row in ROWS[:2]]
    error = _error(tmp_path, rows, header)
    assert error.column == "all_noun_classes"


def test_error_unparsable_time(tmp_path: Path):
    rows = [ROWS[0], ROWS[1].replace("00:00:01.56", "00:00:1.56"), ROWS[2]]
    error = _error(tmp_path, rows)
    assert (error.row, error.column) == (2, "start_timestamp")
    assert "row 2 (1-based data row, header not counted), column 'start_timestamp'" in str(error)
    assert "'00:00:1.56'" in str(error)


def test_error_empty_time(tmp_path: Path):
    error = _error(tmp_path, [ROWS[0], ROWS[1], ROWS[2].replace("00:08:03.00", "")])
    assert (error.row, error.column) == (3, "stop_timestamp")


def test_error_end_before_start(tmp_path: Path):
    rows = [ROWS[0], ROWS[1], ROWS[2].replace("00:08:03.00", "00:08:01.00")]
    error = _error(tmp_path, rows)
    assert (error.row, error.column) == (3, "stop_timestamp")
    assert "before start_sec" in str(error) and "P01_11_2" in str(error)


def test_error_duplicate_segment_id(tmp_path: Path):
    rows = [ROWS[0], ROWS[1], ROWS[2].replace("P01_11_2", "P01_11_0")]
    error = _error(tmp_path, rows)
    assert (error.row, error.column) == (3, "narration_id")
    assert "'P01_11_0'" in str(error) and "repeats row 1" in str(error)


def test_error_class_outside_vocabulary(tmp_path: Path):
    verbs = Vocabulary.from_names(["take", "put", "open"])
    nouns = Vocabulary.from_names([f"n{i}" for i in range(14)])
    error = _error(tmp_path, ROWS, verb_classes=verbs, noun_classes=nouns)
    assert (error.row, error.column) == (3, "verb_class")
    assert "outside the vocabulary of 3 classes" in str(error)
    error = _error(tmp_path, ROWS, noun_classes=Vocabulary.from_names(["a", "b", "c", "d"]))
    assert (error.row, error.column) == (3, "noun_class")


def test_error_bad_class_id_and_list(tmp_path: Path):
    error = _error(tmp_path, [ROWS[0], ROWS[1].replace(",put-down,1,", ",put-down,one,")])
    assert (error.row, error.column) == (2, "verb_class")
    error = _error(tmp_path, [ROWS[0], ROWS[1].replace("['plate'],[2]", "['plate'],[2")])
    assert (error.row, error.column) == (2, "all_noun_classes")


@pytest.mark.parametrize(
    ("name", "split"),
    [
        ("EPIC_100_train.csv", "train"),
        ("EPIC_100_validation.pkl", "val"),
        ("EPIC_100_test_timestamps.csv", "test"),
        ("EPIC_100_uda_source_train.csv", "uda_source_train"),
        ("EPIC_100_uda_target_test_timestamps.csv", "uda_target_test"),
        ("EPIC_100_uda_source_val.csv", "uda_source_val"),
        ("EPIC_100_retrieval_test.csv", "mir_test"),
    ],
)
def test_split_from_file_name(name, split):
    assert infer_epic_split(name) == split


def test_split_unknown_needs_argument(tmp_path: Path):
    path = _write(tmp_path, ROWS[:1], name="segments.csv")
    with pytest.raises(SegmentTableError, match="give the split with --split"):
        load_epic100(path)
    assert load_epic100(path, split="mine")["split"].to_list() == ["mine"]


# --- the real files -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vocabularies(epic_dir: Path) -> tuple[Vocabulary, Vocabulary]:
    return load_epic_vocabularies(epic_dir)


@pytest.fixture(scope="module")
def validation(epic_dir: Path, vocabularies) -> pl.DataFrame:
    verbs, nouns = vocabularies
    return load_epic100(
        epic_dir / "EPIC_100_validation.csv", verb_classes=verbs, noun_classes=nouns
    )


def test_real_vocabularies(vocabularies):
    verbs, nouns = vocabularies
    assert (len(verbs), len(nouns)) == (97, 300)
    assert verbs.name(0) == "take" and verbs.index("put") == 1
    assert nouns.name(0) == "tap" and nouns.index("plate") == 2
    assert "teaspoon" in nouns.instances[1]
    assert nouns.categories[0] == "appliances"
    assert list(verbs)[:2] == ["take", "put"]
    with pytest.raises(KeyError, match="not one of the 97 classes"):
        verbs.index("levitate")
    assert verbs.get("levitate") is None


def test_real_validation(validation):
    assert validation.height == 9668
    assert validation["split"].unique().to_list() == ["val"]
    assert validation["verb_class"].n_unique() == 78
    assert validation["noun_class"].n_unique() == 211
    assert validation["video_id"].n_unique() == 138
    assert validation["narration_sec"].null_count() == 70
    assert validation.null_count().select(SEGMENT_COLUMNS[:7]).sum_horizontal().item() == 0
    first = validation.row(0, named=True)
    assert (first["segment_id"], first["start_sec"], first["end_sec"]) == ("P01_11_0", 0.0, 1.89)


def test_real_test_file(epic_dir: Path):
    test = load_epic100(epic_dir / "EPIC_100_test_timestamps.csv")
    assert test.height == 13092
    assert test["split"].unique().to_list() == ["test"]
    assert test["verb_class"].null_count() == 13092
    assert test["all_noun_classes"].null_count() == 13092


def test_real_uda_source_train(epic_dir: Path, vocabularies):
    verbs, nouns = vocabularies
    uda = load_epic100(
        epic_dir / "UDA_annotations" / "EPIC_100_uda_source_train.csv",
        verb_classes=verbs,
        noun_classes=nouns,
    )
    assert uda.height == 16115
    assert uda["split"].unique().to_list() == ["uda_source_train"]


def test_real_pickles_refused_then_equal(epic_dir: Path, validation):
    for stem in ("EPIC_100_validation", "EPIC_100_test_timestamps"):
        pkl = epic_dir / f"{stem}.pkl"
        with pytest.raises(SegmentTableError, match="arbitrary code") as caught:
            load_epic100(pkl)
        assert "--allow-pickle" in str(caught.value)
        assert f"{stem}.csv" in str(caught.value)
        csv = (
            validation if stem == "EPIC_100_validation" else load_epic100(epic_dir / f"{stem}.csv")
        )
        assert load_epic100(pkl, allow_pickle=True).equals(csv)


def test_real_side_files(epic_dir: Path):
    assert load_unseen_participants(
        epic_dir / "EPIC_100_unseen_participant_ids_validation.csv"
    ) == {"P18", "P32"}
    assert len(load_tail_classes(epic_dir / "EPIC_100_tail_verbs.csv")) == 86
    assert len(load_tail_classes(epic_dir / "EPIC_100_tail_nouns.csv")) == 228
    info = load_video_info(epic_dir / "EPIC_100_video_info.csv")
    assert info.columns == ["video_id", "duration_sec", "fps", "width", "height"]
    assert info.height == 700
    p12 = info.filter(pl.col("video_id") == "P12_05").row(0, named=True)
    assert (p12["width"], p12["height"]) == (1920, 1440)
    assert info.filter(pl.col("fps") == 50.0).height == 268


def test_epic_annotations_folder(epic_dir: Path, validation):
    annotations = EpicAnnotations(epic_dir)
    assert annotations.segments("val").equals(validation)
    assert annotations.unseen_participants("test") == {"P33", "P34", "P36"}
    assert 10 in annotations.tail_verbs and len(annotations.tail_nouns) == 228
    assert annotations.video_info.height == 700
    assert len(annotations.verbs) == 97
    unseen = validation.filter(pl.col("participant_id").is_in(annotations.unseen_participants()))
    assert unseen.height == 1065
    tail = validation.filter(
        pl.col("verb_class").is_in(annotations.tail_verbs)
        | pl.col("noun_class").is_in(annotations.tail_nouns)
    )
    assert tail.height == 3105
    if not (epic_dir / "EPIC_100_train.csv").exists():
        with pytest.raises(FileNotFoundError, match="EPIC_100_train.csv"):
            annotations.segments("train")
