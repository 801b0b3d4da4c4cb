"""The decode planner on hand-made packet indexes: GOP-minimum, entry points, runs."""

from __future__ import annotations

import av
import numpy as np
import pytest

from egofeat.extract.gop import PacketIndex, Run
from egofeat.extract.synthetic import write_video


def closed_gops(n_gops: int, gop: int, reorder: bool = False) -> PacketIndex:
    """``n_gops`` GOPs of ``gop`` frames, pts = display number. With ``reorder``, each pair
    of frames after the keyframe is stored as (P, B): shown 2, 1, 4, 3, ... (decode order)."""
    pts = []
    for g in range(n_gops):
        shown = list(range(1, gop))
        if reorder:
            shown = [x for pair in zip(shown[1::2], shown[::2], strict=False) for x in pair]
            shown += list(range(1, gop))[len(shown):]
        pts += [g * gop] + [g * gop + s for s in shown]
    keys = np.zeros(len(pts), bool)
    keys[:: gop] = True
    return PacketIndex(np.array(pts), keys, np.ones(len(pts), np.int64))


def test_gop_minimum_is_the_union_of_keyframe_to_frame_ranges():
    index = closed_gops(4, 10)
    assert index.gop_minimum(np.array([0])) == 1
    assert index.gop_minimum(np.array([3, 7])) == 8  # one GOP, shared: 0..7
    assert index.gop_minimum(np.array([3, 7, 12, 39])) == 8 + 3 + 10
    assert index.gop_minimum(np.array([], np.int64)) == 0


def test_reordered_frames_need_the_packets_decoded_before_them():
    index = closed_gops(2, 7, reorder=True)  # decode order: 0 2 1 4 3 6 5 | 7 9 8 ...
    assert index.decode_position(np.array([1, 2])).tolist() == [2, 1]
    assert index.gop_minimum(np.array([1])) == 3  # packets 0, 2 (the P it refers to), 1
    assert index.gop_minimum(np.array([2])) == 2


def test_runs_seek_between_ranges_and_decode_through_small_gaps():
    index = closed_gops(6, 10)
    assert index.plan(np.array([2, 5, 31, 55])) == [Run(0, 5), Run(30, 31), Run(50, 55)]
    # Frame 9 ends GOP 0 and GOP 1 starts right after: decoded through, no seek.
    assert index.plan(np.array([9, 10])) == [Run(0, 10)]
    # One unwanted packet between ranges is worth a seek only when seek_cost < 1.
    assert index.plan(np.array([8, 10]), seek_cost=1) == [Run(0, 10)]
    assert index.plan(np.array([8, 10]), seek_cost=0) == [Run(0, 8), Run(10, 10)]
    runs = index.plan(np.array([8, 10]), seek_cost=1)
    wanted = np.array([8, 10])
    assert sum(run.packets for run in runs) - index.gop_minimum(wanted) == 1


def test_open_gop_leading_pictures_start_from_the_previous_keyframe():
    # Decode order: I0 P3 B1 B2 | I6 B4 B5 P9 ...: B4 and B5 are shown before I6 but decoded
    # after it, and refer to P3: they must be decoded from I0.
    pts = np.array([0, 3, 1, 2, 6, 4, 5, 9, 7, 8])
    keys = np.array([1, 0, 0, 0, 1, 0, 0, 0, 0, 0], bool)
    index = PacketIndex(pts, keys, np.ones(10, np.int64))
    assert index.entry_point(np.array([5, 4, 7])).tolist() == [0, 4, 4]
    assert index.plan(np.array([4])) == [Run(0, 5)]  # frame 4 is packet 5


def test_a_stream_without_a_leading_keyframe_is_entered_at_its_start():
    index = PacketIndex(np.arange(6), np.array([0, 0, 0, 1, 0, 0], bool), np.ones(6, np.int64))
    assert index.plan(np.array([1, 4])) == [Run(0, 4)]


def test_scan_reads_timestamps_and_keyframes_of_a_real_file(tmp_path):
    path = write_video(tmp_path / "v.mp4", 40, 20.0, gop=10)
    with av.open(str(path)) as container:
        index = PacketIndex.scan(container, container.streams.video[0])
        frame = next(container.decode(video=0))  # the scan rewound the container
        assert frame.pts == index.display_pts[0]
    assert len(index) == 40 and index.complete
    assert np.flatnonzero(index.keyframe).tolist() == [0, 10, 20, 30]
    step = index.display_pts[1] - index.display_pts[0]
    np.testing.assert_array_equal(np.diff(index.display_pts), step)


def test_scan_refuses_a_stream_without_timestamps(tmp_path):
    path = write_video(tmp_path / "v.h264", 10, 20.0)
    with av.open(str(path)) as container, pytest.raises(ValueError, match="no timestamps"):
        PacketIndex.scan(container, container.streams.video[0])
