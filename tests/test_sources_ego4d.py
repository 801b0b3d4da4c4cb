"""Ego4D FHO ``fho_main.json`` and the LTA files: action filter, labels, windows, ids and errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from egofeat.sources import (
    EILEV_WINDOW,
    SEGMENT_COLUMNS,
    XMIC_ORIGINAL_WINDOW,
    XMIC_WINDOW,
    CentralFrames,
    SegmentTableError,
    Vocabulary,
    Window,
    load_ego4d,
    load_ego4d_fho,
    load_ego4d_lta,
)

VERBS = Vocabulary.from_names(["cut_(chop,_slice)", "take_(pick,_grab,_get)"])
NOUNS = Vocabulary.from_names(["bag_(bag,_grocery)", "knife"])


def _action(
    uid: str,
    start: float,
    *,
    narration=None,
    text="#C C picks a bag",
    verb="take_(pick,_grab,_get)",
    noun="bag_(bag,_grocery)",
    **flags,
) -> dict:
    boxes = [
        {
            "object_type": "left_hand",
            "structured_noun": None,
            "instance_number": 1,
            "bbox": {"x": 1.0, "y": 2.0, "width": 3.0, "height": 4.0},
        },
        {
            "object_type": "object_of_change",
            "structured_noun": noun,
            "instance_number": 1,
            "bbox": {"x": 5.0, "y": 6.0, "width": 7.0, "height": 8.0},
        },
    ]
    return {
        "warnings": [],
        "uid": uid,
        "is_valid_action": flags.get("is_valid_action", True),
        "is_partial": False,
        "is_rejected": flags.get("is_rejected", False),
        "is_invalid_annotation": False,
        "reject_reason": None,
        "stage": 3,
        "start_sec": start,
        "end_sec": start + 8.0,
        "start_frame": int(start * 30),
        "end_frame": int((start + 8.0) * 30),
        "clip_start_sec": start - 100.0,
        "clip_end_sec": start - 92.0,
        "narration_timestamp_sec": start + 4.0 if narration is None else narration,
        "clip_narration_timestamp_sec": start - 96.0,
        "narration_text": text,
        "narration_annotation_uid": f"n-{uid}",
        "structured_verb": verb,
        "freeform_verb": None,
        "state_transition": None,
        "critical_frames": {
            "pre_45": 1,
            "pre_30": 2,
            "pre_15": 3,
            "pre_frame": 4,
            "contact_frame": 5,
            "pnr_frame": 6,
            "post_frame": 7,
        },
        "clip_critical_frames": None,
        "frames": [
            {"frame_type": "pre_frame", "frame_number": 4, "boxes": []},
            {"frame_type": "pnr_frame", "frame_number": 6, "boxes": boxes},
        ],
    }


def _video(uid: str, duration: float, actions: list[dict]) -> dict:
    return {
        "video_uid": uid,
        "video_metadata": {
            "video_start_pts": 0,
            "video_base_numerator": 1,
            "video_base_denominator": 30000,
            "duration_sec": duration,
            "num_frames": int(duration * 30),
            "fps": 30.0,
            "width": 1920,
            "height": 1080,
            "rotation": 0,
        },
        "annotated_intervals": [
            {
                "clip_id": "1",
                "clip_uid": f"clip-{uid}",
                "start_sec": 0.0,
                "end_sec": duration,
                "start_frame": 0,
                "end_frame": int(duration * 30),
                "clip_parent_start_sec": 0.0,
                "clip_parent_end_sec": duration,
                "clip_parent_start_frame": 0,
                "clip_parent_end_frame": int(duration * 30),
                "redacted": False,
                "narrated_actions": actions,
            },
        ],
    }


def _write(tmp_path: Path, videos: list[dict]) -> Path:
    path = tmp_path / "fho_main.json"
    path.write_text(
        json.dumps(
            {"version": "1", "date": "2022", "description": "FHO", "metadata": {}, "videos": videos}
        )
    )
    return path


@pytest.fixture
def fho(tmp_path: Path) -> Path:
    return _write(
        tmp_path,
        [
            _video(
                "vid-a",
                300.0,
                [
                    _action("a0", 10.0),
                    _action("a1", 20.0, is_rejected=True),
                    _action("a2", 30.0, is_valid_action=False),
                    _action("a3", 40.0, text="#O man X hands a knife"),
                    _action(
                        "a4", 50.0, text="#c   c cuts onion", verb="cut_(chop,_slice)", noun="knife"
                    ),
                    _action("a5", 60.0, verb="None"),
                    _action("a6", 70.0, verb="[other]", noun=None),
                    _action("a7", 80.0, verb="fold_(bend)"),
                ],
            ),
            _video("vid-b", 6.0, [_action("b0", 0.0, narration=1.0)]),
        ],
    )


def test_filter_labels_and_ids(fho: Path):
    df = load_ego4d_fho(fho, split="train", verb_vocab=VERBS, noun_vocab=NOUNS)
    assert df.columns[: len(SEGMENT_COLUMNS)] == list(SEGMENT_COLUMNS)
    assert df["action_uid"].to_list() == ["a0", "a4", "a5", "a6", "a7", "b0"]
    assert df["segment_id"].to_list()[:2] == ["vid-a_a0", "vid-a_a4"]
    assert df["verb"].to_list() == [
        "take_(pick,_grab,_get)",
        "cut_(chop,_slice)",
        None,
        None,
        "fold_(bend)",
        "take_(pick,_grab,_get)",
    ]
    assert df["verb_class"].to_list() == [1, 0, None, None, None, 1]
    assert df["noun"].to_list()[:4] == ["bag_(bag,_grocery)", "knife", "bag_(bag,_grocery)", None]
    assert df["noun_class"].to_list() == [0, 1, 0, None, 0, 0]
    assert df["all_noun_classes"].to_list() == [[0], [1], [0], None, [0], [0]]
    assert df["clip_uid"].to_list()[0] == "clip-vid-a"
    assert set(df["split"]) == {"train"} and set(df["dataset"]) == {"ego4d"}
    assert df["participant_id"].null_count() == df.height


def test_filter_options(fho: Path):
    everyone = load_ego4d_fho(fho, split="train", camera_wearer_only=False)
    assert "a3" in everyone["action_uid"].to_list()
    labelled = load_ego4d_fho(
        fho, split="train", verb_vocab=VERBS, noun_vocab=NOUNS, labelled_only=True
    )
    assert labelled["action_uid"].to_list() == ["a0", "a4", "b0"]
    no_vocab = load_ego4d_fho(fho, split="train", labelled_only=True)
    assert no_vocab["action_uid"].to_list() == ["a0", "a4", "a7", "b0"]
    only_b = load_ego4d_fho(fho, split="val", video_uids={"vid-b"})
    assert only_b["segment_id"].to_list() == ["vid-b_b0"]


def test_windows(fho: Path):
    action = load_ego4d_fho(fho, split="train")
    assert action.select("start_sec", "end_sec").row(0) == (10.0, 18.0)
    # X-MIC: central 4 s of [start, end + 0.9 s]
    xmic = load_ego4d_fho(fho, split="train", window="xmic")
    assert xmic.select("start_sec", "end_sec").row(0) == pytest.approx((12.45, 16.45))
    assert xmic.select("action_start_sec", "action_end_sec").row(0) == (10.0, 18.0)
    # EILEV: 8 s around the narration (here at 14 s); vid-b (6 s long) is shorter than 8 s
    eilev = load_ego4d_fho(fho, split="train", window="eilev")
    assert eilev.select("start_sec", "end_sec").row(0) == (10.0, 18.0)
    assert eilev.select("start_sec", "end_sec").row(-1) == (0.0, 6.0)
    assert load_ego4d_fho(fho, split="train", window=EILEV_WINDOW).equals(eilev)
    assert load_ego4d_fho(fho, split="train", window=XMIC_WINDOW).equals(xmic)
    with pytest.raises(ValueError, match="window must be one of"):
        load_ego4d_fho(fho, split="train", window="middle")


@pytest.mark.parametrize(
    ("narration", "duration", "expected"),
    [
        (100.0, 300.0, (96.0, 104.0)),  # centred
        (1.5, 300.0, (0.0, 8.0)),  # start clamped at 0, length kept
        (298.0, 300.0, (292.0, 300.0)),  # shifted to [dur - 8, dur]
        (3.0, 5.0, (0.0, 5.0)),  # shorter than the window
        (298.0, None, (294.0, 302.0)),  # unknown duration: no shift at the end
    ],
)
def test_eilev_window_placement(narration, duration, expected):
    assert EILEV_WINDOW.place(narration - 4.0, narration + 4.0, narration, duration) == expected


def test_window_falls_back_to_action_centre_without_narration():
    assert Window(2.0, "narration").place(10.0, 20.0, None, None) == (14.0, 16.0)
    with pytest.raises(ValueError, match="positive"):
        Window(0.0, "narration")


def test_malformed_files(tmp_path: Path):
    path = tmp_path / "fho_main.json"
    path.write_text("{not json")
    with pytest.raises(SegmentTableError, match="not valid JSON"):
        load_ego4d_fho(path, split="train")
    missing_uid = _action("x", 5.0)
    del missing_uid["uid"]
    path = _write(tmp_path, [_video("vid", 100.0, [_action("ok", 1.0), missing_uid])])
    with pytest.raises(SegmentTableError) as caught:
        load_ego4d_fho(path, split="train")
    assert caught.value.column == "uid"
    assert "videos[0].annotated_intervals[0].narrated_actions[1]" in str(caught.value)
    bad_time = _action("x", 5.0)
    bad_time["end_sec"] = "soon"
    path = _write(tmp_path, [_video("vid", 100.0, [bad_time])])
    with pytest.raises(SegmentTableError, match="not a number of seconds"):
        load_ego4d_fho(path, split="train")


def test_backwards_action_and_duplicate_uid_are_errors(tmp_path: Path):
    backwards = _action("x", 50.0)
    backwards["end_sec"] = 40.0
    path = _write(tmp_path, [_video("vid", 100.0, [_action("ok", 1.0), backwards])])
    with pytest.raises(SegmentTableError) as caught:
        load_ego4d_fho(path, split="train")
    assert (caught.value.row, caught.value.column) == (2, "end_sec")
    assert "vid_x" in str(caught.value)
    path = _write(tmp_path, [_video("vid", 100.0, [_action("x", 1.0), _action("x", 9.0)])])
    with pytest.raises(SegmentTableError, match="repeats row 1"):
        load_ego4d_fho(path, split="train")


def test_empty_file_gives_empty_table(tmp_path: Path):
    df = load_ego4d_fho(_write(tmp_path, []), split="train")
    assert df.height == 0
    assert df.columns[: len(SEGMENT_COLUMNS)] == list(SEGMENT_COLUMNS)


# ---- the LTA files (fho_lta_{train,val}.json, X-MIC's *_w_narrations variant) ----------------


def _lta_action(clip_uid: str, action_idx: int, start: float, end: float, *,
                verb: str | None = "take_(pick,_grab,_get)", noun: str | None = "knife",
                **extra) -> dict:
    """One entry of an LTA file's ``clips``, with the fields of the released files."""
    parent = 600.0  # the 5-minute clip starts 10 minutes into its video
    entry = {
        "clip_uid": clip_uid, "video_uid": f"video-{clip_uid}", "clip_id": 7,
        "action_idx": action_idx,
        "clip_parent_start_sec": parent, "clip_parent_end_sec": parent + 300.0,
        "clip_parent_start_frame": int(parent * 30), "clip_parent_end_frame": int((parent + 300) * 30),
        "interval_start_sec": start, "interval_end_sec": end,
        "interval_start_frame": int(start * 30), "interval_end_frame": int(end * 30),
        "action_clip_start_sec": start, "action_clip_end_sec": end,
        "action_clip_start_frame": int(start * 30), "action_clip_end_frame": int(end * 30),
    }
    if verb is not None:
        entry |= {"verb": verb, "verb_label": 89, "noun": noun, "noun_label": 250}
    return entry | extra


def _write_lta(path: Path, clips: list[dict], **header) -> Path:
    path.write_text(json.dumps({"version": "2", "date": "220101", "description": "LTA", **header,
                                "clips": clips}))
    return path


@pytest.fixture
def lta(tmp_path: Path) -> Path:
    return _write_lta(tmp_path / "fho_lta_val_w_narrations.json", [
        _lta_action("clip-1", 0, 10.0, 18.0, narration_text="#C C takes the knife"),
        _lta_action("clip-1", 1, 18.0, 26.0, verb="cut_(chop,_slice)", noun="bag_(bag,_grocery)",
                    narration_text=""),
        _lta_action("clip-2", 0, 295.0, 299.5, noun="[other]"),
    ])


def test_lta_segments_are_clip_actions(lta: Path):
    df = load_ego4d_lta(lta, verb_vocab=VERBS, noun_vocab=NOUNS)
    assert df.columns[: len(SEGMENT_COLUMNS)] == list(SEGMENT_COLUMNS)
    assert df["segment_id"].to_list() == ["clip-1_0", "clip-1_1", "clip-2_0"]
    assert df["video_id"].to_list() == ["clip-1", "clip-1", "clip-2"]  # X-MIC decodes clips
    assert df.select("start_sec", "end_sec").row(1) == (18.0, 26.0)
    assert set(df["split"]) == {"val"} and set(df["dataset"]) == {"ego4d"}  # from the file name
    assert df["verb_class"].to_list() == [1, 0, 1]
    assert df["noun_class"].to_list() == [1, 0, None]  # "[other]" is no noun
    assert df["noun"].to_list()[2] is None and df["all_noun_classes"].to_list()[0] == [1]
    assert df["narration"].to_list() == ["#C C takes the knife", None, None]
    assert df["video_uid"].to_list()[0] == "video-clip-1" and df["action_idx"].to_list() == [0, 1, 0]
    # on the full video's timeline instead: video_uid, times shifted by the clip's start
    video = load_ego4d_lta(lta, timeline="video")
    assert video["video_id"].to_list()[0] == "video-clip-1"
    assert video.select("start_sec", "end_sec").row(0) == (610.0, 618.0)
    # the split: given, else the file's own field, else its name
    assert set(load_ego4d_lta(lta, split="test")["split"]) == {"test"}
    named = _write_lta(lta.parent / "anything.json", [_lta_action("c", 0, 1.0, 2.0)], split="train")
    assert set(load_ego4d(named)["split"]) == {"train"}
    unnamed = _write_lta(lta.parent / "anything-else.json", [_lta_action("c", 0, 1.0, 2.0)])
    with pytest.raises(SegmentTableError, match="names no split"):
        load_ego4d_lta(unnamed)
    unlabelled = _write_lta(lta.parent / "fho_lta_test_unannotated.json",
                            [_lta_action("c", 0, 1.0, 2.0, verb=None)])
    table = load_ego4d(unlabelled)
    assert table["verb"].null_count() == 1 and set(table["split"]) == {"test_unannotated"}


def test_xmic_original_window_is_the_central_frames_of_its_decode(lta: Path):
    # X-MIC decodes [10, 18.9) s at 30 fps: 267 frames, taken as 8 s of 33 frames each; it keeps
    # frames [133 - 2*33, 133 + 2*33) = [67, 199) of the decode, i.e. clip frames 367..498.
    assert XMIC_ORIGINAL_WINDOW.frames(10.0, 18.0, 300.0) == (367, 499)
    df = load_ego4d_lta(lta, window="xmic-original")
    start, end = df.select("start_sec", "end_sec").row(0)
    assert (start, end) == pytest.approx((367 / 30, 499 / 30))
    assert (int(start * 30), int(end * 30)) == (367, 499)  # exactly on the frame boundaries
    assert end - start == pytest.approx(4.4)
    assert df.select("action_start_sec", "action_end_sec").row(0) == (10.0, 18.0)
    # near the clip's end the decode stops at 300 s: 150 frames, [75 - 36, 75 + 36)
    assert XMIC_ORIGINAL_WINDOW.frames(295.0, 299.5, 300.0) == (8850 + 39, 8850 + 111)
    assert df.select("end_sec").row(2)[0] == pytest.approx((8850 + 111) / 30)
    # egofeat's reading keeps exactly 4 s; both are choices of load_ego4d
    assert load_ego4d(lta, window="xmic").select("start_sec", "end_sec").row(0) == pytest.approx(
        (12.45, 16.45))
    # a decode of fewer than 8 frames (no frame per "second"): its middle frame
    assert CentralFrames(fps=10.0, end_pad=0.0).frames(0.0, 0.5, None) == (2, 3)
    with pytest.raises(ValueError, match="window must be one of"):
        load_ego4d_lta(lta, window="middle")


def test_load_ego4d_reads_either_format(lta: Path, fho: Path):
    assert load_ego4d(lta).equals(load_ego4d_lta(lta))
    assert load_ego4d(fho, split="train").equals(load_ego4d_fho(fho, split="train"))
    with pytest.raises(SegmentTableError, match="--split"):
        load_ego4d(fho)
    bad = lta.parent / "fho_lta_train.json"
    bad.write_text(json.dumps({"annotations": []}))
    with pytest.raises(SegmentTableError, match="'clips' .* or 'videos'"):
        load_ego4d(bad)
    missing = _lta_action("clip-9", 0, 1.0, 2.0)
    del missing["clip_uid"]
    with pytest.raises(SegmentTableError) as caught:
        load_ego4d_lta(_write_lta(bad, [missing]))
    assert caught.value.column == "clip_uid" and "clips[0]" in str(caught.value)
