"""`egofeat extract` on containers, timings and annotation tables beyond the EPIC MP4s.

MPEG-TS (decord returns frames of the wrong GOP from it: PyAV must read it), Matroska,
variable-frame-rate files (read by PyAV) with long GOPs or a segment far past their end, a
raw H.264 stream, whose unknown duration must not turn its decode error into "past the end"
rows, and a generic annotation table over flat video files.
"""

from __future__ import annotations

import shutil

import numpy as np
import polars as pl
import pytest
import torch
from test_pipeline_extract import FPS, SIZE, write_epic_csv
from typer.testing import CliRunner

from egofeat.cli import app
from egofeat.config import ExtractConfig
from egofeat.extract import DecodeJob, FrameSampler, decode_job
from egofeat.extract.encoders import create_encoder
from egofeat.extract.synthetic import read_frame_index, write_video
from egofeat.pipelines.executors import execute
from egofeat.store import STATUS_ERROR, STATUS_OK, FeatureStore

SEGMENTS = [("P01_01_0", "P01_01", 0.2, 1.7), ("P01_01_1", "P01_01", 1.5, 3.9)]


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def extract(root, layout, segments=SEGMENTS, **options):
    annotations = write_epic_csv(root / "EPIC_100_validation.csv", segments)
    summary = execute(
        ExtractConfig(
            annotations=[annotations],
            videos=root,
            store=root / "store",
            layout=layout,
            text=False,
            progress=False,
            **{"workers": 0, **options},
        )
    )
    rows = FeatureStore.open(root / "store").stream("tiny/full").manifest().collect()
    return summary, rows.sort("segment_id")


@pytest.mark.parametrize("extension", ["ts", "mkv"])
def test_other_containers_give_the_frames_shown_at_the_sampled_times(tmp_path, extension):
    # a keyframe every second: frames of the wrong GOP would be 15 frames off
    path = write_video(tmp_path / f"P01_01.{extension}", int(4 * FPS), FPS, SIZE, gop=15)
    summary, rows = extract(tmp_path, f"{{video_id}}.{extension}")
    assert not summary.failed and rows.height == 2
    features = FeatureStore.open(tmp_path / "store").stream("tiny/full").load(rows["segment_id"])
    tiny = create_encoder("tiny")
    for i, (_, _, start, end) in enumerate(SEGMENTS):
        asked = FrameSampler.uniform(8).times(start, end)
        shown = np.asarray(rows["frame_times"][i])
        assert ((shown <= asked + 1e-3) & (asked < shown + 1 / FPS)).all()
        result = decode_job(DecodeJob("check", path, shown, short_side=64))
        assert [read_frame_index(f) for f in result.frames] == np.floor(asked * FPS).tolist()
        np.testing.assert_allclose(features.features[i], tiny.encode(result.frames), atol=2e-3)


def variable_rate_pts(n_frames: int) -> np.ndarray:
    """Every tenth frame shown twice as long: decord refuses such files, PyAV reads them."""
    steps = [2 / FPS if i % 10 == 9 else 1 / FPS for i in range(n_frames - 1)]
    return np.cumsum([0.0, *steps]).round(3)


def test_pyav_reads_times_further_than_its_seek_gap_after_a_keyframe(tmp_path):
    # One keyframe every 10 s: the seek for the segment's first time (9.1 s) lands at 0 s, more
    # than the reader's seek gap (5 s) before it, and it must decode on rather than seek again.
    pts = variable_rate_pts(200)
    write_video(tmp_path / "P01_01.mp4", 200, FPS, SIZE, pts=pts, gop=150)
    segments = [("P01_01_0", "P01_01", 9.0, 11.0)]
    # A worker with a timeout: a hang shows up as a "timed out" row instead of a stuck test.
    summary, rows = extract(tmp_path, "{video_id}.mp4", segments, workers=1, decode_timeout=20.0)
    assert not summary.failed, rows["error"].to_list()
    asked = FrameSampler.uniform(8).times(9.0, 11.0)
    shown_index = np.searchsorted(pts, asked + 1e-9, side="right") - 1
    np.testing.assert_allclose(rows["frame_times"][0], pts[shown_index], atol=1e-3)
    result = decode_job(DecodeJob("check", tmp_path / "P01_01.mp4", asked, short_side=64))
    assert [read_frame_index(f) for f in result.frames] == shown_index.tolist()


def test_segment_far_past_the_end_of_a_pyav_video_is_an_error_row_not_a_hang(tmp_path):
    # The last keyframe is at ~3.3 s; the second segment asks for times from 20.5 s on, so the
    # reader seeks for them and lands more than its seek gap (5 s) before them.
    write_video(tmp_path / "P01_01.mp4", 60, FPS, SIZE, pts=variable_rate_pts(60), gop=15)
    segments = [SEGMENTS[0], ("P01_01_1", "P01_01", 20.0, 28.0)]
    # A worker with a timeout: a hang shows up as a "timed out" row instead of a stuck test.
    summary, rows = extract(tmp_path, "{video_id}.mp4", segments, workers=1, decode_timeout=20.0)
    assert rows["status"].to_list() == [STATUS_OK, STATUS_ERROR]
    error = rows["error"][1]
    assert "segment P01_01_1" in error and "past the end of video P01_01" in error, error
    assert summary.errors == {"tiny/full": 1}


def test_a_video_of_unknown_duration_keeps_its_own_decode_error(tmp_path):
    # A raw H.264 stream has no duration (NaN) and cannot seek: every segment fails to decode,
    # and its rows must say so rather than call the segments "past the end" of the video.
    write_video(tmp_path / "P01_01.h264", int(4 * FPS), FPS, SIZE)
    summary, rows = extract(tmp_path, "{video_id}.h264")
    assert summary.failed and (rows["status"] == STATUS_ERROR).all()
    for error in rows["error"]:
        assert "P01_01.h264" in error and "decoding failed" in error and "past the end" not in error
    assert rows.filter(pl.col("error").is_null()).height == 0


def test_a_generic_annotation_table_over_flat_video_files(tmp_path):
    write_video(tmp_path / "kitchen_a.mp4", int(4 * FPS), FPS, SIZE)
    table = {"clip": ["a0", "a1"], "video": ["kitchen_a"] * 2, "t0": [0.2, 1.5], "t1": [1.7, 3.9]}
    pl.DataFrame(table).write_csv(tmp_path / "clips.csv")
    mapping = {"segment_id": "clip", "video_id": "video", "start_sec": "t0", "end_sec": "t1"}
    options = ExtractConfig(
        annotations=[tmp_path / "clips.csv"],
        videos=tmp_path,
        store=tmp_path / "store",
        dataset="generic",
        mapping=mapping,
        split="val",
        layout="flat",
        workers=0,
        progress=False,
    )
    summary = execute(options)
    assert summary.ok == {"tiny/full": 2} and not summary.failed
    store = FeatureStore.open(tmp_path / "store")
    segments = store.segments().collect().sort("segment_id")
    assert segments.select("dataset", "split", "segment_id").rows() == [
        ("clips", "val", "a0"),
        ("clips", "val", "a1"),
    ]
    rows = store.stream("tiny/full").manifest().collect().sort("segment_id")
    asked = FrameSampler.uniform(8).times(1.5, 3.9)
    shown = np.asarray(rows["frame_times"][1])
    assert ((shown <= asked + 1e-3) & (asked < shown + 1 / FPS)).all()


def test_decoding_on_a_missing_gpu_falls_back_per_video_and_the_summary_says_so(tmp_path):
    # No CUDA device here: every video is decoded on the CPU, and the summary counts them.
    (tmp_path / "cpu").mkdir()
    for video_id in ("P01_01", "P01_02"):
        write_video(tmp_path / f"{video_id}.mp4", int(4 * FPS), FPS, SIZE)
    segments = [*SEGMENTS, ("P01_02_0", "P01_02", 0.5, 2.5)]
    summary, rows = extract(tmp_path, "{video_id}.mp4", segments, decode_device="cuda")
    assert not summary.failed and rows.height == 3
    ((reason, count),) = summary.decode_fallbacks.items()
    assert count == 2 and reason.startswith("decoded on the CPU: ") and "<video>" in reason
    features = FeatureStore.open(tmp_path / "store").stream("tiny/full").load(rows["segment_id"])
    for video_id in ("P01_01", "P01_02"):
        shutil.copy(tmp_path / f"{video_id}.mp4", tmp_path / "cpu" / f"{video_id}.mp4")
    cpu_summary, cpu_rows = extract(tmp_path / "cpu", "{video_id}.mp4", segments)
    assert cpu_summary.decode_fallbacks == {}
    cpu = FeatureStore.open(tmp_path / "cpu" / "store").stream("tiny/full").load(rows["segment_id"])
    np.testing.assert_array_equal(features.features, cpu.features)


def test_a_decode_device_other_than_cpu_or_cuda_is_refused(tmp_path):
    with pytest.raises(ValueError, match="decode_device"):
        ExtractConfig(annotations=[tmp_path / "a.csv"], videos=tmp_path, store=tmp_path / "s",
                      decode_device="gpu")
    result = CliRunner().invoke(app, ["extract", "--annotations", str(tmp_path / "a.csv"), "--videos",
                                      str(tmp_path), "--store", str(tmp_path / "s"), "--decode-device", "gpu"])
    assert result.exit_code == 2 and "--decode-device: string should match pattern" in result.output
