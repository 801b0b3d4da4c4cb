"""Hand-object detections: wire format, safe pickles, the union rule, box lookup, crops."""

from __future__ import annotations

import os
import pickle

import numpy as np
import polars as pl
import pytest

from egofeat.extract.boxes import HandObjectBoxes, UnionRule, crop
from egofeat.extract.detections import (
    BBox,
    FrameDetections,
    HandDetection,
    HandSide,
    HandState,
    ObjectDetection,
    ProtoDecodeError,
    decode_detections,
    load_detection_payloads,
)
from egofeat.extract.synthetic import (
    encode_detections,
    write_detections_pickle,
    write_synthetic_dataset,
)

CONTACT, FREE = HandState.PORTABLE_OBJECT, HandState.NO_CONTACT


def hand(box, score=0.9, state=CONTACT, offset=(0.0, 0.0), side=HandSide.RIGHT):
    return HandDetection(BBox(*box), score, state, offset, side)


def obj(box, score=0.5):
    return ObjectDetection(BBox(*box), score)


def frame(hands=(), objects=(), number=1, video="P01_01"):
    return FrameDetections(video, number, tuple(hands), tuple(objects))


# -- wire format ----------------------------------------------------------------------------


def test_encode_decode_round_trip():
    # Values exactly representable as float32 survive the round trip unchanged.
    original = frame(
        hands=[
            hand((0.25, 0.5, 0.375, 0.75), 0.875, CONTACT, (0.125, -0.0625), HandSide.RIGHT),
            hand((0.0, 0.0, 0.5, 0.5), 0.5, FREE, (0.0, 0.0), HandSide.LEFT),
        ],
        objects=[obj((0.5, 0.5, 1.0, 1.0), 0.25)],
        number=13404,
        video="P01_109",
    )
    assert decode_detections(encode_detections(original)) == original


def test_empty_message_decodes_to_defaults():
    assert decode_detections(b"") == FrameDetections("", 0, (), ())


def test_unknown_fields_are_skipped():
    payload = encode_detections(frame(hands=[hand((0.25, 0.25, 0.5, 0.5))], number=7))
    unknown = (
        bytes([9 << 3 | 0, 0x96, 0x01])  # varint 150
        + bytes([10 << 3 | 2, 3]) + b"abc"  # length-delimited
        + bytes([11 << 3 | 1]) + bytes(8)  # fixed64
        + bytes([12 << 3 | 5]) + bytes(4)  # fixed32
    )  # fmt: skip
    assert decode_detections(unknown + payload) == decode_detections(payload)


def test_negative_int32_and_unknown_enum_values():
    payload = bytes([2 << 3 | 0]) + bytes([0xFF] * 9 + [0x01])  # frame_number = -1
    assert decode_detections(payload).frame_number == -1
    odd_state = bytes([3 << 3 | 2, 2, 3 << 3 | 0, 9])  # a hand with state 9
    assert decode_detections(odd_state).hands[0].state == 9


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (bytes([3 << 3 | 2, 50, 1, 2]), "past the end"),
        (bytes([2 << 3 | 0, 0x80]), "truncated varint"),
        (bytes([2 << 3 | 5]) + bytes(4), "wire type 5, expected 0"),
        (bytes([3 << 3 | 3]), "unsupported wire type 3"),
    ],
)
def test_malformed_payloads_raise(payload, match):
    with pytest.raises(ProtoDecodeError, match=match):
        decode_detections(payload)


# -- the pickle container --------------------------------------------------------------------


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "P01_01.pkl"
    path.write_bytes(pickle.dumps([b"", _Exploit(marker)]))
    with pytest.raises(ValueError, match="refusing to unpickle .*calls .*system"):
        load_detection_payloads(path)
    assert not marker.exists()


def test_old_protocol_pickles_of_bytes_load(tmp_path):
    path = tmp_path / "P01_01.pkl"
    path.write_bytes(pickle.dumps([b"\x10\x01", b"\x10\x02"], protocol=2))
    assert load_detection_payloads(path) == [b"\x10\x01", b"\x10\x02"]


def test_a_pickle_of_something_else_is_refused(tmp_path):
    path = tmp_path / "P01_01.pkl"
    path.write_bytes(pickle.dumps({"frames": [b""]}))
    with pytest.raises(ValueError, match="list of bytes.*found dict"):
        load_detection_payloads(path)


def test_missing_pickle_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="P09_09.pkl"):
        load_detection_payloads(tmp_path / "P09_09.pkl")


# -- the union rule ---------------------------------------------------------------------------


def test_hand_is_matched_to_the_object_nearest_its_offset_point():
    detections = frame(
        hands=[hand((0.4, 0.4, 0.5, 0.5), offset=(0.3, 0.0))],  # points at (0.75, 0.45)
        objects=[obj((0.1, 0.4, 0.2, 0.5)), obj((0.7, 0.4, 0.8, 0.5)), obj((0.7, 0.9, 0.8, 1.0))],
    )
    rule = UnionRule()
    assert rule.interactions(detections) == {0: 1}
    assert rule.union(detections) == BBox(0.4, 0.4, 0.8, 0.5)


def test_no_candidate_object_leaves_the_hand_alone():
    detections = frame(
        hands=[hand((0.4, 0.4, 0.5, 0.5))], objects=[obj((0.0, 0.0, 0.1, 0.1), score=0.005)]
    )
    assert UnionRule().interactions(detections) == {}
    assert UnionRule().union(detections) == BBox(0.4, 0.4, 0.5, 0.5)


def test_hand_below_threshold_and_its_object_are_left_out():
    detections = frame(hands=[hand((0.4, 0.4, 0.5, 0.5), score=0.5)], objects=[obj((0, 0, 1, 1))])
    assert UnionRule().union(detections) is None
    assert UnionRule(hand_threshold=0.5).union(detections) == BBox(0.0, 0.0, 1.0, 1.0)


def test_two_hands_may_share_one_object():
    detections = frame(
        hands=[
            hand((0.1, 0.5, 0.2, 0.6), offset=(0.3, -0.2)),
            hand((0.6, 0.5, 0.7, 0.6), offset=(-0.2, -0.2)),
        ],
        objects=[obj((0.4, 0.3, 0.5, 0.4)), obj((0.9, 0.9, 1.0, 1.0))],
    )
    assert UnionRule().interactions(detections) == {0: 0, 1: 0}
    assert UnionRule().union(detections) == BBox(0.1, 0.3, 0.7, 0.6)


def test_matching_in_pixels_can_pick_another_object_than_in_normalized_units():
    # The offset points at (0.5, 0.5). Object A is 0.15 away in y, B 0.12 away in x: in
    # normalized units B is nearer (0.0144 < 0.0225), in 456x256 pixels A is
    # (38.4^2 = 1475 < 54.7^2 = 2994).
    detections = frame(
        hands=[hand((0.45, 0.45, 0.55, 0.55))],
        objects=[obj((0.45, 0.6, 0.55, 0.7)), obj((0.57, 0.45, 0.67, 0.55))],
    )
    assert UnionRule(frame_size=(456, 256)).interactions(detections) == {0: 0}
    assert UnionRule(frame_size=(1, 1)).interactions(detections) == {0: 1}


def test_strict_threshold_drops_a_hand_exactly_at_it():
    detections = frame(hands=[hand((0.4, 0.4, 0.5, 0.5), score=0.8)])
    assert UnionRule(strict=False).hands(detections) == [0]
    assert UnionRule(strict=True).hands(detections) == []


def test_hands_out_of_contact_count_but_match_nothing():
    detections = frame(
        hands=[hand((0.4, 0.4, 0.5, 0.5), state=FREE)], objects=[obj((0.6, 0.6, 0.7, 0.7))]
    )
    assert UnionRule().interactions(detections) == {}
    assert UnionRule().union(detections) == BBox(0.4, 0.4, 0.5, 0.5)
    assert UnionRule(require_contact=True).union(detections) is None


# -- per-frame boxes ---------------------------------------------------------------------------

BOX_2, BOX_4 = (0.1, 0.1, 0.3, 0.3), (0.5, 0.5, 0.7, 0.9)


def _boxes(**options) -> HandObjectBoxes:
    """Five frames of P01_01 (60 fps); only frames 2 and 4 have a confident hand."""
    frames = [frame(number=n) for n in range(1, 6)]
    frames[1] = frame(hands=[hand(BOX_2)], number=2)
    frames[3] = frame(hands=[hand(BOX_4)], number=4)
    payloads = [encode_detections(f) for f in frames]
    return HandObjectBoxes.from_detections(payloads, "P01_01", **options)


def test_box_at_frame_or_time_with_the_epic_rule():
    boxes = _boxes()
    np.testing.assert_allclose(boxes.box_at(2).as_tuple(), BOX_2, atol=1e-7)
    # 60 fps: t = 4.5 / 60 s is frame 4.
    np.testing.assert_allclose(boxes.box_at(time_sec=4.5 / 60).as_tuple(), BOX_4, atol=1e-7)
    with pytest.raises(ValueError, match="exactly one"):
        boxes.box_at()


def test_full_frame_fallback():
    boxes = _boxes(fallback="full")
    assert boxes.box_at(3) == BBox.full()
    assert boxes.box_at(99) == BBox.full()  # past the last frame
    times = np.array([1.5, 2.5, 3.5]) / 60
    np.testing.assert_array_equal(boxes.detected_at(times), [False, True, False])
    np.testing.assert_allclose(boxes.boxes_at(times)[1], BOX_2, atol=1e-7)


def test_nearest_fallback_prefers_the_earlier_frame_on_a_tie():
    boxes = _boxes(fallback="nearest")
    np.testing.assert_allclose(boxes.box_at(1).as_tuple(), BOX_2, atol=1e-7)
    np.testing.assert_allclose(boxes.box_at(3).as_tuple(), BOX_2, atol=1e-7)  # 2 and 4 tie
    np.testing.assert_allclose(boxes.box_at(5).as_tuple(), BOX_4, atol=1e-7)
    np.testing.assert_allclose(boxes.box_at(40).as_tuple(), BOX_4, atol=1e-7)
    assert not boxes.detected_at(np.array([3.5 / 60]))[0]


def test_nearest_fallback_without_any_box_is_the_full_frame():
    payloads = [encode_detections(frame(number=n)) for n in range(1, 4)]
    boxes = HandObjectBoxes.from_detections(payloads, "P01_01", fallback="nearest")
    assert boxes.box_at(2) == BBox.full()


def test_margin_and_square_are_applied_in_pixels_and_clamped():
    grown = _boxes(margin=0.5)
    np.testing.assert_allclose(grown.box_at(2).as_tuple(), (0.0, 0.0, 0.4, 0.4), atol=1e-6)
    np.testing.assert_allclose(grown.box_at(4).as_tuple(), (0.4, 0.3, 0.8, 1.0), atol=1e-6)
    square = _boxes(square=True).box_at(4)  # 91.2 x 102.4 px in 456x256 -> 102.4 px square
    assert square.width * 456 == pytest.approx(square.height * 256)
    assert square.height == pytest.approx(0.4)
    assert _boxes(square=True, margin=0.5).box_at(3) == BBox.full()  # fallback stays full


def test_params_record_the_rule():
    params = _boxes(fallback="nearest", margin=0.1).params()
    assert params == {
        "source": "detections",
        "hand_threshold": 0.8,
        "object_threshold": 0.01,
        "strict": False,
        "require_contact": False,
        "match_space": "pixels of 456x256",
        "fps": 60.0,
        "fallback": "nearest",
        "margin": 0.1,
        "square": False,
    }


def test_out_of_order_payloads_are_reported():
    payloads = [encode_detections(frame(number=2)), encode_detections(frame(number=1))]
    with pytest.raises(ValueError, match="element 0 should be frame 1 but holds frame 2"):
        HandObjectBoxes.from_detections(payloads, "P01_01").box_at(1)


def test_writer_and_reader_round_trip(tmp_path):
    frames = [
        frame(
            hands=[hand((0.25, 0.25, 0.5, 0.5), score=0.875, offset=(0.25, 0.0))],
            objects=[obj((0.625, 0.25, 0.75, 0.5))],
            number=n,
            video="P02_101",
        )
        for n in range(1, 51)
    ]
    path = write_detections_pickle(tmp_path / "P02" / "hand-objects" / "P02_101.pkl", frames)
    assert [decode_detections(p) for p in load_detection_payloads(path)] == frames
    boxes = HandObjectBoxes.from_folder(tmp_path, "P02_101")
    assert boxes.fps == 50.0 and boxes.n_frames == 50
    assert boxes.box_at(time_sec=0.5) == BBox(0.25, 0.25, 0.75, 0.5)


def test_synthetic_dataset_boxes_hold_hand_and_object(tmp_path):
    dataset = write_synthetic_dataset(tmp_path, n_videos=2, segments_per_video=2)
    annotations = pl.read_csv(dataset.annotations_dir / "EPIC_100_train.csv")
    row = annotations.row(0, named=True)
    boxes = HandObjectBoxes.from_folder(dataset.videos_root, row["video_id"])
    start_frame, stop_frame = row["start_frame"], row["stop_frame"]
    assert boxes.n_frames >= stop_frame
    middle = boxes.box_at((start_frame + stop_frame) // 2)
    hand_only = boxes.box_at(stop_frame + 10)  # between actions: the idle hand alone
    assert middle.width * middle.height > 2 * hand_only.width * hand_only.height


# -- parquet tables ----------------------------------------------------------------------------


def test_boxes_from_a_parquet_table_of_frames(tmp_path):
    path = tmp_path / "boxes.parquet"
    pl.DataFrame(
        {
            "video_id": ["P01_01", "P01_01", "P01_01", "P01_02"],
            "frame": [2, 2, 3, 1],
            "left": [0.1, 0.3, None, 0.0],
            "top": [0.1, 0.2, None, 0.0],
            "right": [0.2, 0.5, None, 1.0],
            "bottom": [0.3, 0.4, None, 1.0],
        }
    ).write_parquet(path)
    boxes = HandObjectBoxes.from_parquet(path, "P01_01", fallback="nearest")
    assert boxes.box_at(2) == BBox(0.1, 0.1, 0.5, 0.4)  # two rows of one frame are united
    assert boxes.box_at(3) == BBox(0.1, 0.1, 0.5, 0.4)  # null row: nearest frame's box
    assert boxes.params()["source"] == "parquet"
    with pytest.raises(ValueError, match="no rows for video 'P09_09'"):
        HandObjectBoxes.from_parquet(path, "P09_09")


def test_boxes_from_a_parquet_table_of_times(tmp_path):
    path = tmp_path / "boxes.parquet"
    pl.DataFrame(
        {
            "video_id": ["v"],
            "time_sec": [1.0],
            "left": [0.5],
            "top": [0.5],
            "right": [0.6],
            "bottom": [0.7],
        }
    ).write_parquet(path)
    boxes = HandObjectBoxes.from_parquet(path, "v", fps=10.0)
    assert boxes.box_at(time_sec=1.05) == BBox(0.5, 0.5, 0.6, 0.7)
    assert boxes.box_at(time_sec=1.15) == BBox.full()


def test_parquet_boxes_must_be_normalized(tmp_path):
    path = tmp_path / "boxes.parquet"
    pl.DataFrame(
        {
            "video_id": ["v"],
            "frame": [4],
            "left": [10.0],
            "top": [0.0],
            "right": [20.0],
            "bottom": [1.0],
        }
    ).write_parquet(path)
    with pytest.raises(ValueError, match="boxes.parquet: the box of frame 4 .* not normalized"):
        HandObjectBoxes.from_parquet(path, "v", fps=30.0)


# -- crops -------------------------------------------------------------------------------------


def _quadrants(width=200, height=100) -> np.ndarray:
    image = np.zeros((height, width, 3), np.uint8)
    image[: height // 2, : width // 2] = (255, 0, 0)
    image[: height // 2, width // 2 :] = (0, 255, 0)
    image[height // 2 :, : width // 2] = (0, 0, 255)
    image[height // 2 :, width // 2 :] = (255, 255, 255)
    return image


def test_crop_cuts_the_box_and_resizes():
    patch = crop(_quadrants(), (0.0, 0.0, 0.5, 0.5), square=False, size=32)
    assert patch.shape == (32, 32, 3)
    assert (patch == (255, 0, 0)).all()


def test_square_crop_is_shifted_inside_the_image():
    image = np.arange(100)[None, :, None].repeat(50, axis=0).repeat(3, axis=2).astype(np.uint8)
    patch = crop(image, (0.9, 0.4, 1.0, 0.6), square=True, size=None)  # 10 x 10 px at the edge
    assert patch.shape == (10, 10, 3)
    assert patch[0, :, 0].tolist() == list(range(90, 100))
    wide = crop(image, (0.0, 0.4, 1.0, 0.6), square=True, size=None)  # capped at the height
    assert wide.shape == (50, 50, 3)
    assert wide[0, :, 0].tolist() == list(range(25, 75))


def test_crop_margin_is_clamped_to_the_image():
    patch = crop(_quadrants(), (0.0, 0.0, 0.5, 0.5), margin=0.5, square=False, size=None)
    assert patch.shape == (75, 150, 3)


def test_degenerate_box_still_gives_a_pixel():
    patch = crop(_quadrants(), (0.7, 0.7, 0.7, 0.7), square=False, size=8)
    assert patch.shape == (8, 8, 3)
    assert (patch == 255).all()
