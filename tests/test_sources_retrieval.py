"""Retrieval sources: EK-100 MIR, EgoClip, EgoMCQ and Charades-Ego."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from egofeat.sources import (
    SEGMENT_COLUMNS,
    SegmentTableError,
    load_charades_classes,
    load_charades_ego,
    load_egoclip,
    load_egomcq,
    load_epic_mir,
    parse_charades_actions,
)

# --- EK-100 multi-instance retrieval -------------------------------------------------------


@pytest.fixture(scope="module")
def mir(epic_dir: Path):
    folder = epic_dir / "retrieval_annotations"
    return load_epic_mir(
        folder / "EPIC_100_retrieval_test.csv", folder / "EPIC_100_retrieval_test_sentence.csv"
    )


def test_real_mir_items(mir, epic_dir: Path):
    assert mir.videos.height == 9668
    assert mir.captions.height == 3842
    assert mir.captions["caption_index"].to_list() == list(range(3842))
    sentences = pl.read_csv(
        epic_dir / "retrieval_annotations" / "EPIC_100_retrieval_test_sentence.csv"
    )
    assert mir.captions["narration_id"].equals(sentences["narration_id"])
    # each caption carries its segment's labels and narration
    joined = mir.captions.join(
        mir.videos.with_row_index("row").with_columns(pl.col("row").cast(pl.Int64)),
        left_on="video_index",
        right_on="row",
    )
    assert (joined["narration_id"] == joined["segment_id"]).all()
    assert (joined["text"] == joined["narration"]).all()
    assert (joined["verb_class"] == joined["verb_class_right"]).all()


def test_mir_caption_text_is_the_referenced_narration(mir):
    # formats.md §1.3: 6 of the 7 appended sentence rows carry text shifted by one row.
    differ = mir.captions.filter(pl.col("text") != pl.col("sentence_text"))
    assert differ.height == 6
    assert differ["caption_index"].min() >= 3835
    assert mir.captions.filter(pl.col("narration_id") == "P01_14_59")["text"].item() == (
        "looking for something"
    )


def test_mir_train_sentence_format(tmp_path: Path):
    videos = tmp_path / "EPIC_100_retrieval_train.csv"
    videos.write_text(
        "narration_id,participant_id,video_id,narration_timestamp,start_timestamp,"
        "stop_timestamp,start_frame,stop_frame,narration,verb,verb_class,noun,noun_class,"
        "all_nouns,all_noun_classes\n"
        "P01_01_0,P01,P01_01,00:00:01.089,00:00:00.14,00:00:03.37,8,202,open door,open,3,"
        "door,3,['door'],[3]\n"
        "P01_01_1,P01,P01_01,00:00:02.629,00:00:04.37,00:00:06.17,262,370,turn on light,"
        "turn-on,6,light,114,['light'],[114]\n"
    )
    sentences = tmp_path / "EPIC_100_retrieval_train_sentence.csv"
    sentences.write_text(
        "narration_id,narration,verb_class,noun_classes,verb,nouns\n"
        "P01_01_1,turn on light,6,[114],turn-on,['light']\n"
        "P01_01_0,open door,3,[3],open,['door']\n"
    )
    items = load_epic_mir(videos, sentences)
    assert items.videos["split"].unique().to_list() == ["mir_train"]
    assert items.captions["video_index"].to_list() == [1, 0]
    assert items.captions["all_noun_classes"].to_list() == [[114], [3]]
    sentences.write_text("narration_id,narration\nP01_01_0,open door\nP09_99_9,fly\n")
    with pytest.raises(SegmentTableError) as caught:
        load_epic_mir(videos, sentences)
    assert (caught.value.file, caught.value.row, caught.value.column) == (
        str(sentences),
        2,
        "narration_id",
    )


# --- EgoClip ---------------------------------------------------------------------------------

EGOCLIP_HEADER = (
    "clip_idx\tvideo_uid\tvideo_dur\tnarration_source\tnarration_ind\tnarration_time\t"
    "clip_start\tclip_end\tclip_text\ttag_verb\ttag_noun"
)


def _egoclip(tmp_path: Path, rows: list[str]) -> Path:
    path = tmp_path / "egoclip.csv"
    path.write_text("\n".join([EGOCLIP_HEADER, *rows]) + "\n")
    return path


def test_egoclip(tmp_path: Path):
    path = _egoclip(
        tmp_path,
        [
            "0\t001e3e4e\t128.033333\tnarration_pass_1\t0\t3.3445\t2.967651\t3.721266\t"
            "#C C picks a bag of clothes from the floor\t[93]\t[192, 115, 12]",
            "1\t001e3e4e\t128.033333\tnarration_pass_2\t4\t5.0\t4.5\t5.5\t#C C drops it\t[]\t[]",
        ],
    )
    df = load_egoclip(path)
    assert df.columns[: len(SEGMENT_COLUMNS)] == list(SEGMENT_COLUMNS)
    first = df.row(0, named=True)
    assert first["segment_id"] == "0" and first["video_id"] == "001e3e4e"
    assert (first["start_sec"], first["end_sec"]) == (2.967651, 3.721266)
    assert first["all_noun_classes"] == [192, 115, 12] and first["tag_verb"] == [93]
    assert first["narration_sec"] == 3.3445 and first["narration_ind"] == 0
    assert df["tag_verb"].to_list()[1] == []
    assert df["split"].unique().to_list() == ["train"]


def test_egoclip_errors(tmp_path: Path):
    row = "0\tv\t10\tnarration_pass_1\t0\t3\t2\t4\t#C C x\t[1]\t[2]"
    path = _egoclip(tmp_path, [row, row.replace("0\t", "1\t", 1).replace("[2]", "[2,")])
    with pytest.raises(SegmentTableError) as caught:
        load_egoclip(path)
    assert (caught.value.row, caught.value.column) == (2, "tag_noun")
    path = _egoclip(tmp_path, [row, row.replace("\t2\t4\t", "\t5\t4\t").replace("0\t", "1\t", 1)])
    with pytest.raises(SegmentTableError) as caught:
        load_egoclip(path)
    assert (caught.value.row, caught.value.column) == (2, "clip_end")
    path = tmp_path / "egoclip.csv"
    path.write_text("clip_idx,video_uid\n0,v\n")
    with pytest.raises(SegmentTableError, match="tab-separated"):
        load_egoclip(path)


# --- EgoMCQ ----------------------------------------------------------------------------------


def _clip(video: str, start: float, text: str) -> dict:
    return {
        "video_uid": video,
        "clip_start": start,
        "clip_end": start + 1.5,
        "clip_text": text,
        "tag_verb": "[1]",
        "tag_noun": "[2]",
    }


def _question(answer: int, types: int) -> dict:
    return {
        "query": _clip("vq", 3.0, "#C C opens the door"),
        "choices": {
            str(k): _clip(f"v{k if types == 1 else 0}", 10.0 * k, f"clip {k}") for k in range(5)
        },
        "answer": answer,
        "types": types,
    }


def test_egomcq(tmp_path: Path):
    path = tmp_path / "egomcq.json"
    path.write_text(json.dumps({"0": _question(2, 1), "1": _question(4, 2)}))
    mcq = load_egomcq(path)
    assert mcq.questions["type"].to_list() == ["inter", "intra"]
    assert mcq.questions["answer"].to_list() == [2, 4]
    assert mcq.questions["query_text"].to_list()[0] == "#C C opens the door"
    assert mcq.choices.height == 10
    assert mcq.choices["segment_id"].to_list()[:2] == ["0_0", "0_1"]
    assert mcq.choices.filter(pl.col("question_id") == "1")["video_id"].unique().to_list() == ["v0"]
    answer = mcq.questions.join(
        mcq.choices, left_on=["question_id", "answer"], right_on=["question_id", "choice"]
    )
    assert answer["narration"].to_list() == ["clip 2", "clip 4"]


@pytest.mark.parametrize(
    ("change", "column"),
    [
        (lambda q: q.update(types=3), "types"),
        (lambda q: q.update(answer=5), "answer"),
        (lambda q: q["choices"].pop("4"), "4"),
        (lambda q: q["choices"]["1"].pop("clip_end"), "clip_end"),
        (lambda q: q.pop("query"), "query"),
    ],
)
def test_egomcq_errors(tmp_path: Path, change, column):
    question = _question(0, 1)
    change(question)
    path = tmp_path / "egomcq.json"
    path.write_text(json.dumps({"0": _question(1, 2), "1": question}))
    with pytest.raises(SegmentTableError) as caught:
        load_egomcq(path)
    assert caught.value.column == column
    assert "question '1'" in str(caught.value)


# --- Charades-Ego ----------------------------------------------------------------------------


def test_parse_charades_actions():
    assert parse_charades_actions("c092 11.90 21.20;c147 0.00 12.60") == [
        (92, 11.9, 21.2),
        (147, 0.0, 12.6),
    ]
    assert parse_charades_actions("") == [] and parse_charades_actions(None) == []
    with pytest.raises(ValueError, match="cNNN start end"):
        parse_charades_actions("c092 11.90")


def test_charades_ego(tmp_path: Path):
    path = tmp_path / "CharadesEgo_v1_test_only1st.csv"
    path.write_text(
        "id,subject,scene,quality,relevance,verified,script,objects,descriptions,actions,"
        "length\n"
        "005BU,P01,Kitchen,6,7,Yes,A person cooks.,pan;stove,A person cooks.,"
        '"c092 11.90 21.20;c147 0.00 12.60;c092 25.00 30.00",31.5\n'
        "00HFP,P02,Bedroom,5,6,Yes,A person sleeps.,bed,,,12.0\n"
    )
    df = load_charades_ego(path)
    assert df.columns[: len(SEGMENT_COLUMNS)] == list(SEGMENT_COLUMNS)
    assert df["split"].unique().to_list() == ["test"]
    assert df["segment_id"].to_list() == ["005BU", "00HFP"]
    assert df.select("start_sec", "end_sec").rows() == [(0.0, 31.5), (0.0, 12.0)]
    assert df["action_classes"].to_list() == [[92, 147], []]
    assert df["actions"].to_list()[0][1] == {"class_id": 147, "start_sec": 0.0, "end_sec": 12.6}
    path.write_text(path.read_text().replace("c147 0.00 12.60", "c147 zero 12.60"))
    with pytest.raises(SegmentTableError) as caught:
        load_charades_ego(path)
    assert (caught.value.row, caught.value.column) == (1, "actions")


def test_charades_classes(tmp_path: Path):
    path = tmp_path / "Charades_v1_classes.txt"
    path.write_text("c000 Holding some clothes\nc001 Putting clothes somewhere\n")
    classes = load_charades_classes(path)
    assert classes.names == ("Holding some clothes", "Putting clothes somewhere")
    path.write_text("c000 Holding some clothes\nc002 Putting clothes somewhere\n")
    with pytest.raises(SegmentTableError) as caught:
        load_charades_classes(path)
    assert caught.value.row == 2
