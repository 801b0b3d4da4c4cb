"""Frame samplers and per-video extraction plans."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from egofeat.extract.plan import (
    FrameSampler,
    plan_videos,
)
from egofeat.sources import epic_jpeg_fps, jpeg_frame_number


def _segments(*rows: tuple[str, str, float, float]) -> pl.DataFrame:
    return pl.DataFrame(
        rows, schema=["segment_id", "video_id", "start_sec", "end_sec"], orient="row"
    )


# -- samplers -------------------------------------------------------------------------------


def test_uniform_takes_exact_bin_centres():
    np.testing.assert_array_equal(FrameSampler.uniform(4).times(0.0, 8.0), [1.0, 3.0, 5.0, 7.0])
    np.testing.assert_allclose(FrameSampler.uniform(2).times(10.0, 11.0), [10.25, 10.75])


def test_zero_length_segment_repeats_its_instant():
    np.testing.assert_array_equal(FrameSampler.uniform(3).times(2.0, 2.0), [2.0, 2.0, 2.0])


def test_random_draws_one_time_inside_each_bin_reproducibly():
    sampler = FrameSampler.random(8, seed=3)
    times = sampler.times(4.0, 12.0, "P01_11_7")
    bins = np.floor(times - 4.0).astype(int)
    np.testing.assert_array_equal(bins, np.arange(8))
    np.testing.assert_array_equal(times, sampler.times(4.0, 12.0, "P01_11_7"))
    assert not np.array_equal(times, sampler.times(4.0, 12.0, "P01_11_8"))
    assert not np.array_equal(times, FrameSampler.random(8, seed=4).times(4.0, 12.0, "P01_11_7"))


def test_random_is_not_the_uniform_centres():
    times = FrameSampler.random(16, seed=0).times(0.0, 16.0, "s")
    assert np.abs(times - (np.arange(16) + 0.5)).max() > 0.05


def test_dense_samples_the_video_wide_grid():
    sampler = FrameSampler.dense(fps=2.0)
    np.testing.assert_allclose(sampler.times(0.0, 3.0), [0.25, 0.75, 1.25, 1.75, 2.25, 2.75])
    # A segment starting off the grid gets the grid times inside it, so overlapping segments
    # share frames.
    np.testing.assert_allclose(sampler.times(0.6, 2.1), [0.75, 1.25, 1.75])
    assert sampler.times(10.0, 70.0).size == 120


def test_native_takes_every_frame_of_the_segment_on_the_video_grid(epic_dir):
    """EPIC: the JPEGs start_frame .. stop_frame - 1 of the annotations (X-MIC's features);
    Ego4D: the clip frames of X-MIC's window."""
    import polars as pl

    from egofeat.sources import load_epic100

    rows = load_epic100(epic_dir / "EPIC_100_validation.csv").head(300)
    rows = rows.filter(pl.col("start_frame") > 1)  # (EPIC numbers time 0 as JPEG 1, like 1/fps)
    sampler = FrameSampler.native()
    for row in rows.iter_rows(named=True):
        rate = epic_jpeg_fps(row["video_id"])
        frames = jpeg_frame_number(sampler.times(row["start_sec"], row["end_sec"], rate=rate), rate)
        expected = np.arange(row["start_frame"], max(row["stop_frame"], row["start_frame"] + 1))
        np.testing.assert_array_equal(frames, expected)
    assert rows.height > 250
    window = FrameSampler.native(30.0).times(367 / 30, 499 / 30)  # X-MIC's window of a clip action
    np.testing.assert_array_equal(jpeg_frame_number(window, 30.0), np.arange(367, 499))
    assert FrameSampler.native(30.0).times(1.0, 1.0).size == 1  # at least the frame shown at start
    with pytest.raises(ValueError, match="frame rate"):
        FrameSampler.native().times(0.0, 1.0, "s1")
    # per video, from the plan's rates: EPIC-55 at 60 fps, the extension at 50
    plan = plan_videos(_segments(("a", "P01_01", 1.0, 2.0), ("b", "P01_101", 1.0, 2.0)),
                       FrameSampler.native(), fps=epic_jpeg_fps)
    assert [v.segment_indices[0].size for v in plan] == [60, 50]
    assert FrameSampler.native().to_dict() == {"kind": "native", "fps": None}


def test_dense_short_segment_gets_the_cell_of_its_midpoint():
    np.testing.assert_allclose(FrameSampler.dense(fps=2.0).times(1.1, 1.2), [1.25])


def test_oversampled_centre_column_is_the_uniform_sampling():
    sampler = FrameSampler.oversampled(4, per_bin=5)
    times = sampler.times(0.0, 8.0)
    assert times.shape == (4, 5)
    assert sampler.center_index == 2
    np.testing.assert_allclose(times[:, sampler.center_index], FrameSampler.uniform(4).times(0, 8))
    np.testing.assert_allclose(times[0], [0.2, 0.6, 1.0, 1.4, 1.8])
    # Every sub-bin centre stays in its bin.
    np.testing.assert_array_equal(np.floor(times / 2.0), np.repeat(np.arange(4), 5).reshape(4, 5))


def test_clip_windows_with_a_stride_in_seconds_or_frames():
    expected = [[1.25, 1.75, 2.25, 2.75], [5.25, 5.75, 6.25, 6.75]]
    seconds = FrameSampler.clip(num_clips=2, clip_len=4, clip_stride=0.5)
    np.testing.assert_allclose(seconds.times(0.0, 8.0), expected)
    frames = FrameSampler.clip(2, 4, clip_stride=5, stride_unit="frame", fps=10.0)
    np.testing.assert_allclose(frames.times(0.0, 8.0), expected)


def test_clip_without_stride_spans_the_segment_like_lavila():
    times = FrameSampler.clip(num_clips=1, clip_len=4).times(0.0, 8.0)
    assert times.shape == (1, 4)
    np.testing.assert_allclose(times[0], [1.0, 3.0, 5.0, 7.0])


def test_clip_windows_are_clamped_into_the_segment():
    times = FrameSampler.clip(1, 5, clip_stride=1.0).times(10.0, 12.0)
    np.testing.assert_allclose(times[0], [10.0, 10.0, 11.0, 12.0, 12.0])


def test_sampler_provenance_lists_only_its_parameters():
    assert FrameSampler.uniform(8).to_dict() == {"kind": "uniform", "num_frames": 8}
    assert FrameSampler.random(4, seed=1).to_dict() == {
        "kind": "random",
        "num_frames": 4,
        "seed": 1,
    }
    assert FrameSampler.dense(2.0).to_dict() == {"kind": "dense", "fps": 2.0}
    assert FrameSampler.clip(1, 16).to_dict()["clip_len"] == 16


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: FrameSampler("sparse"), "unknown sampler kind"),
        (lambda: FrameSampler.uniform(0), "num_frames >= 1"),
        (lambda: FrameSampler.dense(0.0), "positive fps"),
        (lambda: FrameSampler.clip(1, 4, clip_stride=2, stride_unit="frame"), "native frame rate"),
    ],
)
def test_invalid_samplers_are_refused(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_times_refuse_a_reversed_segment():
    with pytest.raises(ValueError, match="segment 'x'"):
        FrameSampler.uniform(2).times(5.0, 4.0, "x")


# -- plans ----------------------------------------------------------------------------------


def test_overlapping_segments_share_frames():
    segments = _segments(
        ("b0", "B", 0.0, 1.0),
        ("a0", "A", 0.0, 4.0),
        ("a1", "A", 2.0, 6.0),
    )
    plan = plan_videos(segments, FrameSampler.uniform(4))
    # A: [0.5 1.5 2.5 3.5] + [2.5 3.5 4.5 5.5] -> 8 requested, 6 unique.
    # B: [0.125 0.375 0.625 0.875] -> 4 requested, 4 unique.
    assert [video.video_id for video in plan] == ["A", "B"]
    assert plan.n_requested_frames == 12
    assert plan.n_unique_frames == 10
    assert plan.dedup_ratio == pytest.approx(12 / 10)
    video_a = plan.videos[0]
    np.testing.assert_allclose(video_a.times, [0.5, 1.5, 2.5, 3.5, 4.5, 5.5])
    assert video_a.segment_ids == ("a0", "a1")
    np.testing.assert_array_equal(video_a.segment_indices[1], [2, 3, 4, 5])
    np.testing.assert_allclose(video_a.segment_times(0), [0.5, 1.5, 2.5, 3.5])


def test_segments_keep_their_input_order_within_a_video():
    segments = _segments(("late", "V", 5.0, 6.0), ("early", "V", 0.0, 1.0))
    (video,) = plan_videos(segments, FrameSampler.uniform(1)).videos
    assert video.segment_ids == ("late", "early")
    np.testing.assert_allclose(video.times, [0.5, 5.5])  # times are sorted
    assert [index.tolist() for index in video.segment_indices] == [[1], [0]]


def test_snapping_to_the_frame_merges_times_in_one_frame():
    segments = _segments(("s0", "V", 0.0, 1.0), ("s1", "V", 0.02, 1.02))
    sampler = FrameSampler.uniform(2)  # 0.25 0.75 and 0.27 0.77
    by_tolerance = plan_videos(segments, sampler)
    assert by_tolerance.n_unique_frames == 4
    by_frame = plan_videos(segments, sampler, fps=10.0)  # frames 2, 7 for both
    assert by_frame.n_unique_frames == 2
    assert by_frame.dedup_ratio == 2.0
    np.testing.assert_allclose(by_frame.videos[0].times, [0.25, 0.75])  # frame centres


def test_frame_rate_per_video_from_a_function_or_mapping():
    segments = _segments(("s0", "P01_11", 0.0, 1.0), ("s1", "P01_101", 0.0, 1.0))
    plan = plan_videos(segments, FrameSampler.uniform(2), fps=epic_jpeg_fps)
    assert [video.frame_rate for video in plan] == [50.0, 60.0]  # sorted: P01_101 first
    with pytest.raises(KeyError, match="P01_11"):
        plan_videos(segments, FrameSampler.uniform(2), fps={"P01_101": 50.0})


def test_tolerance_merges_near_identical_times():
    segments = _segments(("s0", "V", 0.0, 1.0), ("s1", "V", 0.0004, 1.0004))
    plan = plan_videos(segments, FrameSampler.uniform(2), tolerance_sec=1e-3)
    assert plan.n_unique_frames == 2


def test_plan_keeps_the_sampler_shape_per_segment():
    segments = _segments(("s0", "V", 0.0, 8.0))
    plan = plan_videos(segments, FrameSampler.oversampled(4, per_bin=3))
    assert plan.videos[0].segment_indices[0].shape == (4, 3)
    np.testing.assert_allclose(
        plan.videos[0].segment_times(0), FrameSampler.oversampled(4, 3).times(0.0, 8.0), atol=5e-4
    )


def test_dense_plan_counts_each_segment_separately():
    segments = _segments(("s0", "V", 0.0, 2.0), ("s1", "V", 1.0, 3.0))
    plan = plan_videos(segments, FrameSampler.dense(fps=2.0))
    assert (plan.n_requested_frames, plan.n_unique_frames) == (8, 6)


def test_participant_id_is_carried_when_present():
    segments = _segments(("s0", "P03_04", 0.0, 1.0)).with_columns(participant_id=pl.lit("P03"))
    assert plan_videos(segments, FrameSampler.uniform(1)).videos[0].participant_id == "P03"


@pytest.mark.parametrize(
    ("segments", "match"),
    [
        (_segments(("s0", "V", 0.0, 1.0)).drop("end_sec"), "end_sec"),
        (_segments(("s0", "V", 0.0, 1.0), ("s1", "V", 3.0, 2.0)), "row 2 .*'s1'"),
        (_segments(("s0", "V", -1.0, 1.0)), "row 1"),
        (_segments(("s0", "V", 0.0, 1.0), ("s0", "W", 0.0, 1.0)), "'s0' occurs 2 times"),
    ],
)
def test_bad_segment_tables_are_refused(segments, match):
    with pytest.raises(ValueError, match=match):
        plan_videos(segments, FrameSampler.uniform(2))


# -- the EPIC frame rule ----------------------------------------------------------------------


def test_epic_jpeg_fpss():
    assert epic_jpeg_fps("P01_11") == 60.0
    assert epic_jpeg_fps("P37_103") == 50.0
    with pytest.raises(ValueError, match="not an EPIC-KITCHENS video id"):
        epic_jpeg_fps("video_7")


def test_frame_numbers_are_one_based_floors():
    assert jpeg_frame_number(0.0, 60.0) == 1
    assert jpeg_frame_number(0.5, 60.0) == 30
    np.testing.assert_array_equal(jpeg_frame_number(np.array([0.01, 1.0, 2.999]), 50.0), [1, 50, 149])


def test_frame_rule_reproduces_the_epic_annotations(epic_dir):
    table = pl.read_csv(epic_dir / "EPIC_100_validation.csv")
    for time_column, frame_column in (
        ("start_timestamp", "start_frame"),
        ("stop_timestamp", "stop_frame"),
    ):
        seconds = np.array([_seconds(stamp) for stamp in table[time_column]])
        fps = np.array([epic_jpeg_fps(video) for video in table["video_id"]])
        np.testing.assert_array_equal(jpeg_frame_number(seconds, fps), table[frame_column].to_numpy())


def _seconds(stamp: str) -> float:
    hours, minutes, seconds = stamp.split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
