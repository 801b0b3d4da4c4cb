"""Video layouts, readers (decord, PyAV, JPEG folders), decode jobs and the worker pool.

Media come from :mod:`egofeat.extract.synthetic`: every frame shows its own index, so a test
knows exactly which frame a decoder returned.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from egofeat.extract import (
    DecodeJob,
    DecodePool,
    VideoDecodeError,
    VideoLayout,
    decode_job,
    open_video,
)
from egofeat.extract.reader_pyav import PyAVReader
from egofeat.extract.reader_torchcodec import torchcodec_available
from egofeat.extract.synthetic import (
    encode_video,
    read_frame_index,
    write_jpeg_folder,
    write_synthetic_dataset,
    write_video,
)

FPS = 25.0
N_FRAMES = 75  # 3 s
try:
    import decord  # noqa: F401 - only whether it is there

    HAS_DECORD = True
except ImportError:  # no wheels outside x86-64
    HAS_DECORD = False
DECORD = pytest.param(
    "decord", marks=pytest.mark.skipif(not HAS_DECORD, reason="decord is not installed")
)
# Whether torchcodec loads is asked inside the tests: importing it (and torch) at module import
# would slow down every decode worker that imports this module for its openers.
TORCHCODEC = pytest.param(
    "torchcodec",
    marks=pytest.mark.skipif(importlib.util.find_spec("torchcodec") is None,
                             reason="torchcodec is not installed"),
)


def _usable(backend: str) -> None:
    if backend == "torchcodec" and (problem := torchcodec_available()) is not None:
        pytest.skip(problem)


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="module")
def cfr_video(media) -> Path:
    return write_video(media / "cfr.mp4", N_FRAMES, FPS, gop=10)


# Variable frame rate: 20 frames 20 ms apart, 20 frames 100 ms apart, 20 frames 40 ms apart.
VFR_PTS = np.concatenate(
    [np.arange(20) * 0.02, 0.4 + np.arange(20) * 0.1, 2.4 + np.arange(20) * 0.04]
)


@pytest.fixture(scope="module")
def vfr_video(media) -> Path:
    return write_video(media / "vfr.MP4", len(VFR_PTS), FPS, pts=VFR_PTS)


def _inside_frames(n_frames: int, fps: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random frame numbers and times strictly inside them (away from frame boundaries)."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, n_frames, size=20)
    return frames, (frames + rng.uniform(0.1, 0.9, size=frames.size)) / fps


def _indices(images: np.ndarray) -> list[int]:
    return [read_frame_index(image) for image in images]


# -- layouts ------------------------------------------------------------------------------------


def test_epic_layout_presets(tmp_path):
    mp4 = VideoLayout.preset("epic-mp4", tmp_path)
    assert mp4.resolve("P01_11") == tmp_path / "P01" / "videos" / "P01_11.MP4"
    frames = VideoLayout.preset("epic-frames", tmp_path)
    assert frames.resolve("P01_11", "P01") == tmp_path / "P01" / "rgb_frames" / "P01_11"


def test_flat_layout_tries_the_usual_extensions(tmp_path):
    (tmp_path / "clip_3.mkv").write_bytes(b"x")
    flat = VideoLayout.preset("flat", tmp_path)
    assert flat.resolve("clip_3") == tmp_path / "clip_3.mkv"
    assert flat.resolve("clip_4") == tmp_path / "clip_4.mp4"  # missing: the first candidate


def test_custom_layout_templates(tmp_path):
    layout = VideoLayout(tmp_path, "{participant_id}/{video_id}/video.mp4")
    assert layout.resolve("P02_07") == tmp_path / "P02" / "P02_07" / "video.mp4"
    with pytest.raises(ValueError, match="unknown field.*split"):
        VideoLayout(tmp_path, "{split}/{video_id}.mp4")
    with pytest.raises(ValueError, match="unknown video layout 'youtube'"):
        VideoLayout.preset("youtube", tmp_path)


# -- readers ------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", [DECORD, TORCHCODEC, "pyav"])
def test_frames_at_times_are_the_frames_shown_then(cfr_video, backend):
    _usable(backend)
    frames, times = _inside_frames(N_FRAMES, FPS)
    with open_video(cfr_video, backend) as reader:
        assert reader.backend == backend
        assert reader.size == (64, 48)
        assert reader.fps == pytest.approx(FPS)
        assert reader.duration_sec == pytest.approx(N_FRAMES / FPS, abs=1e-4)
        decoded = reader.read_at(times)
    assert decoded.images.shape == (times.size, 48, 64, 3)
    assert decoded.images.dtype == np.uint8
    assert _indices(decoded.images) == frames.tolist()
    np.testing.assert_allclose(decoded.times, frames / FPS, atol=1e-4)


@pytest.mark.parametrize("backend", [DECORD, TORCHCODEC, "pyav"])
def test_frame_boundaries_and_rgb_order(cfr_video, backend):
    _usable(backend)
    with open_video(cfr_video, backend) as reader:
        decoded = reader.read_at([0.0, 2.2, 0.04, 0.0399])
    assert _indices(decoded.images) == [0, 55, 1, 0]
    # Block 0 of frame 1 is "on": yellow, so red and green are high and blue is low.
    red, green, blue = decoded.images[2][: 48 // 4, : 64 // 4].reshape(-1, 3).mean(axis=0)
    assert red > 150 and green > 150 and blue < 100


def test_pyav_decodes_each_gop_once_and_nothing_after_the_last_wanted_frame(media):
    path = write_video(media / "long.mp4", 450, 15.0, gop=15)  # 30 s, a keyframe every second
    frames = np.array([420, 15, 300, 16, 0, 449])
    with open_video(path, "pyav") as reader:
        decoded = reader.read_at((frames + 0.5) / 15.0)
        stats = reader.stats
    assert _indices(decoded.images) == frames.tolist()
    # Shown-order cost from each frame's keyframe: 1 + 2 (15, 16) + 1 + 1 + 15 (435..449);
    # in decode order B-frames come after the frames they refer to: a few more or less.
    assert abs(stats.gop_minimum - 20) <= 3 * 5
    # no GOP twice, nothing past a range; of those packets, disposable B-frames nobody asked
    # for (x264 makes many) are not even decoded
    assert stats.frames_decoded + stats.frames_skipped == stats.gop_minimum
    assert stats.frames_skipped > 0
    assert stats.seeks == 5  # one per keyframe range: 0, 15, 300, 420, 435


def test_pyav_decodes_through_when_a_seek_would_skip_almost_nothing(media):
    path = write_video(media / "through.mp4", 60, 15.0, gop=15)
    # The last frame of GOP 0 and the first of GOP 1: one range, decoded through, one seek.
    with open_video(path, "pyav") as reader:
        decoded = reader.read_at([14.5 / 15, 15.5 / 15])
        assert _indices(decoded.images) == [14, 15]
        assert reader.stats.seeks == 1
        # at most seek_cost packets between the two ranges were decoded on the way
        stats = reader.stats
        extra = stats.frames_decoded + stats.frames_skipped - stats.gop_minimum
        assert 0 <= extra <= reader.seek_cost


def test_pyav_decodes_from_the_start_when_a_seek_lands_late(media, monkeypatch):
    path = write_video(media / "late_seek.mp4", 150, 15.0, gop=15)
    with open_video(path, "pyav") as reader:
        honest = reader._seek

        def landing_late(run):
            # What a broken index does: the seek lands on a keyframe after the one asked for.
            honest(run)
            if run.first > 0:
                stream = reader._stream
                target = int(reader.index.pts[run.first] + 1 / stream.time_base)
                reader._container.seek(target, stream=stream)

        monkeypatch.setattr(reader, "_seek", landing_late)
        decoded = reader.read_at([7.05, 3.05])
        assert not reader.seek_ok
        assert "decoded from the start" in reader.stats.notes[0]
    assert _indices(decoded.images) == [105, 45]


@pytest.mark.parametrize("backend", [DECORD, TORCHCODEC, "pyav", "auto"])
def test_time_past_the_end_is_an_error_naming_video_and_duration(cfr_video, backend):
    _usable(backend)
    with open_video(cfr_video, backend) as reader:
        last = reader.read_at([3.0 + 0.5 / FPS])  # within one frame past the end
        assert _indices(last.images) == [N_FRAMES - 1]
        with pytest.raises(
            VideoDecodeError, match=r"cfr.mp4: time 3.500 s is past the end .*3.000 s"
        ):
            reader.read_at([1.0, 3.5])


def test_variable_frame_rate_files_are_read_by_their_timestamps(vfr_video):
    times = np.array([0.5, 1.01, 2.39, 0.1, 2.2, 0.0, 2.5, 3.15])
    # Frame shown at t: the last pts <= t.
    expected = (np.searchsorted(VFR_PTS, times, side="right") - 1).tolist()
    with open_video(vfr_video) as reader:
        assert (reader.backend, reader.fallback_reason) == ("pyav", None)
        decoded = reader.read_at(times)
    assert _indices(decoded.images) == expected
    np.testing.assert_allclose(decoded.times, VFR_PTS[expected], atol=1e-3)


@pytest.mark.skipif(not HAS_DECORD, reason="decord is not installed")
def test_decord_alone_refuses_variable_frame_rate(vfr_video):
    with pytest.raises(VideoDecodeError, match="variable frame rate; backend='pyav'"):
        open_video(vfr_video, "decord")


def test_frames_come_back_in_request_order_with_duplicates(cfr_video):
    with open_video(cfr_video, "pyav") as reader:
        decoded = reader.read_at([2.0, 0.5, 2.0, 1.0])
        empty = reader.read_at([])
    assert _indices(decoded.images) == [50, 12, 50, 25]
    assert empty.images.shape == (0, 48, 64, 3)


def test_jpeg_folders_follow_the_epic_frame_rule(media):
    folder = write_jpeg_folder(media / "P01_01", 30)  # 60 fps: 0.5 s
    with open_video(folder) as reader:
        assert (reader.backend, reader.fps, reader.duration_sec) == ("frames", 60.0, 0.5)
        decoded = reader.read_at([0.0, 0.01, 0.1, 0.49, 0.505])
        assert _indices(decoded.images) == [1, 1, 6, 29, 30]  # last file clamps
        np.testing.assert_allclose(decoded.times, np.array([1, 1, 6, 29, 30]) / 60)
        with pytest.raises(VideoDecodeError, match="P01_01: time 0.600 s is past the end"):
            reader.read_at([0.6])


def test_extension_frame_folders_are_50_fps(media):
    folder = write_jpeg_folder(media / "P01_101", 60)
    with open_video(folder) as reader:
        assert reader.fps == 50.0
        assert _indices(reader.read_at([1.0]).images) == [50]


def test_other_frame_folders_need_a_frame_rate(media):
    folder = write_jpeg_folder(media / "kitchen_cam", 10)
    with pytest.raises(VideoDecodeError, match="kitchen_cam.*named by EPIC video ids"):
        open_video(folder)
    with open_video(folder, fps=10.0) as reader:
        assert _indices(reader.read_at([0.55]).images) == [5]


# -- decode jobs ---------------------------------------------------------------------------------


def test_job_returns_resized_frames_and_crops(media):
    path = write_video(media / "big.mp4", 20, 10.0, size=(320, 240))
    boxes = np.array([[0.0, 0.0, 0.25, 0.25], [0.0, 0.0, 1.0, 1.0]])
    result = decode_job(
        DecodeJob("k", path, np.array([0.35, 1.05]), boxes=boxes, crop_size=32, short_side=120)
    )
    assert result.ok, result.error
    assert result.frames.shape == (2, 120, 160, 3)
    assert _indices(result.frames) == [3, 10]
    assert result.crops.shape == (2, 32, 32, 3)
    # Frame 3 has bit 0 on: the top-left block, cropped alone, is yellow.
    assert result.crops[0, ..., 0].mean() > 150 and result.crops[0, ..., 2].mean() < 100
    np.testing.assert_allclose(result.times, [0.3, 1.0], atol=1e-4)
    assert result.backend == "pyav"
    assert result.frames_decoded + result.frames_skipped == result.gop_minimum
    assert result.decode_sec > 0


@pytest.mark.parametrize("backend", [DECORD, TORCHCODEC, "pyav"])
def test_every_backend_scales_frames_alike_and_crops_from_the_full_frame(media, backend):
    _usable(backend)
    path = write_video(media / "hd.mp4", 10, 10.0, size=(640, 360))
    boxes = np.array([[0.0, 0.0, 0.25, 0.25]] * 2)
    job = DecodeJob("k", path, np.array([0.35, 0.55]), backend=backend, boxes=boxes,
                    crop_size=32, crop_square=False, short_side=90)
    result, reference = decode_job(job), decode_job(DecodeJob("r", path, job.times, short_side=None))
    assert result.ok, result.error
    assert result.frames.shape == (2, 90, 160, 3) and _indices(result.frames) == [3, 5]
    # the crop is the top-left code block of the full frame, not of the scaled one
    block = reference.frames[0, :90, :160].astype(float).mean(axis=(0, 1))
    np.testing.assert_allclose(result.crops[0].astype(float).mean(axis=(0, 1)), block, atol=12)


def test_cuda_decoding_falls_back_to_the_cpu_per_video_and_says_why(cfr_video):
    # No GPU here: NVDEC (torchcodec on cuda) cannot open the file, PyAV on the CPU reads it.
    result = decode_job(DecodeJob("k", cfr_video, np.array([0.5, 1.01]), device="cuda"))
    assert result.ok, result.error
    assert result.backend == "pyav" and _indices(result.frames) == [12, 25]
    assert result.fallback_reason.startswith("decoded on the CPU: ")
    assert "cuda" in result.fallback_reason or "torchcodec" in result.fallback_reason


class _FailingGpuReader(PyAVReader):
    backend = "torchcodec"

    def decode(self, selection, on_frame):
        raise VideoDecodeError(f"{self.path}: NVDEC error: unsupported chroma format")


def gpu_failing_opener(path, backend="auto", device="cpu", **options):
    """A CUDA decoder that opens every file and fails decoding it; the CPU one works."""
    if device != "cpu":
        return _FailingGpuReader(path, options.get("threads", 1))
    return open_video(path, backend, device=device, **options)


def test_a_video_nvdec_fails_on_midway_is_decoded_again_on_the_cpu(cfr_video):
    job = DecodeJob("k", cfr_video, np.array([0.5, 1.01]), device="cuda:0")
    result = decode_job(job, opener=gpu_failing_opener)
    assert result.ok and result.backend == "pyav" and _indices(result.frames) == [12, 25]
    assert "decoded on the CPU" in result.fallback_reason and "NVDEC error" in result.fallback_reason
    # asked for a backend explicitly, the failure is the result
    explicit = decode_job(DecodeJob("k", cfr_video, job.times, backend="torchcodec",
                                    device="cuda:0"), opener=gpu_failing_opener)
    assert not explicit.ok and "NVDEC error" in explicit.error


def test_job_boxes_must_match_times(cfr_video):
    result = decode_job(DecodeJob("k", cfr_video, np.array([0.1, 0.2]), boxes=np.zeros((3, 4))))
    assert not result.ok
    assert "2 times but boxes of shape (3, 4)" in result.error


def _truncated_copy(source: Path, target: Path, fraction: float) -> Path:
    data = source.read_bytes()
    target.write_bytes(data[: int(len(data) * fraction)])
    return target


@pytest.mark.parametrize(
    ("name", "make", "message"),
    [
        ("missing.mp4", lambda path, video: None, "does not exist"),
        ("empty.mp4", lambda path, video: path.write_bytes(b""), "is empty (0 bytes)"),
        (
            "text.MP4",
            lambda path, video: path.write_text("not a video\n" * 50),
            "not a readable video",
        ),
        ("cut.mp4", lambda path, video: _truncated_copy(video, path, 0.5), "truncated"),
    ],
)
def test_broken_inputs_become_error_results(tmp_path, cfr_video, name, make, message):
    path = tmp_path / name
    make(path, cfr_video)
    result = decode_job(DecodeJob("k", path, np.array([0.5])))
    assert not result.ok
    assert str(path) in result.error and message in result.error
    assert result.frames is None and result.times is None


def test_truncated_file_with_index_first_fails_while_decoding(tmp_path):
    rng = np.random.default_rng(0)
    noise = (rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(100))
    whole = encode_video(
        tmp_path / "whole.mp4", noise, 25.0, container_options={"movflags": "faststart"}
    )
    cut = _truncated_copy(whole, tmp_path / "cut.mp4", 0.6)
    early = decode_job(DecodeJob("early", cut, np.array([0.1])))
    assert early.ok, early.error  # frames before the cut are fine
    late = decode_job(DecodeJob("late", cut, np.array([0.1, 3.9])))
    assert not late.ok
    assert "cut.mp4" in late.error and "truncated or corrupt" in late.error


# -- the pool ------------------------------------------------------------------------------------


def crashing_opener(path, backend="auto", **options):
    """Opens videos, except that a path containing 'crash' kills the worker like a segfault."""
    if "crash" in str(path):
        os.kill(os.getpid(), signal.SIGSEGV)
    return open_video(path, backend, **options)


def test_pool_survives_hangs_and_crashes_and_keeps_job_order(media, cfr_video):
    fifo = media / "hang.mp4"
    os.mkfifo(fifo)  # opening a FIFO with no writer blocks forever, like a stuck decoder
    paths = [cfr_video, fifo, cfr_video, media / "crash.mp4", cfr_video]
    jobs = [DecodeJob(f"job{i}", path, np.array([i * 0.2 + 0.01])) for i, path in enumerate(paths)]
    with DecodePool(workers=2, prefetch=1, timeout_sec=8.0, opener=crashing_opener) as pool:
        results = list(pool.imap(jobs))
        assert [r.key for r in results] == [job.key for job in jobs]
        assert [r.ok for r in results] == [True, False, True, False, True]
        assert [_indices(results[i].frames) for i in (0, 2, 4)] == [[0], [10], [20]]
        assert "hang.mp4: decoding timed out after 8 s" in results[1].error
        assert "crash.mp4: the decode worker died (killed by SIGSEGV)" in results[3].error
        # Fresh workers replaced the lost ones: the pool keeps working.
        again = list(pool.imap(jobs[:1]))
        assert again[0].ok


def test_pool_replaces_a_worker_that_died_while_idle(cfr_video):
    job = DecodeJob("a", cfr_video, np.array([0.5]))
    with DecodePool(workers=1, timeout_sec=30.0) as pool:
        assert next(pool.imap([job])).ok
        (worker,) = pool._slots
        worker.process.kill()
        worker.process.join()
        assert next(pool.imap([job])).ok


def test_pool_prefetch_is_bounded(cfr_video):
    pulled = []

    def jobs():
        for i in range(6):
            pulled.append(i)
            yield DecodeJob(f"job{i}", cfr_video, np.array([0.5]))

    with DecodePool(workers=1, prefetch=1, timeout_sec=30.0) as pool:
        results = pool.imap(jobs())
        next(results)
        assert len(pulled) <= 2  # workers + prefetch
        assert sum(1 for _ in results) == 5


def test_workers_never_rerun_the_parents_main_script(cfr_video, tmp_path):
    """A script (like the ``egofeat`` command) that starts a pool is not re-run in its workers:
    they need only the pool's module, and re-running a main that imports torch costs seconds."""
    marker = tmp_path / "imports.txt"
    script = tmp_path / "main_script.py"
    script.write_text(
        "import os, sys\n"
        f"open({str(marker)!r}, 'a').write(f'{{os.getpid()}}\\n')\n"
        "import numpy as np\n"
        "from egofeat.extract import DecodeJob, DecodePool\n"
        "if __name__ == '__main__':\n"
        "    with DecodePool(workers=2, timeout_sec=60.0) as pool:\n"
        f"        jobs = [DecodeJob(str(i), {str(cfr_video)!r}, np.array([0.5])) for i in range(2)]\n"
        "        assert all(result.ok for result in pool.imap(jobs))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    subprocess.run([sys.executable, str(script)], check=True, env=env, timeout=120)
    assert len(marker.read_text().split()) == 1  # the parent alone ran the script


def test_pool_refuses_an_opener_workers_cannot_import():
    with pytest.raises(ValueError, match="module-level function"):
        DecodePool(workers=1, opener=lambda path, backend, **options: open_video(path))


def test_in_process_pool_decodes_one_job_per_step(cfr_video, tmp_path):
    pulled = []

    def jobs():
        for key, path in (("a", cfr_video), ("b", tmp_path / "nothing.mp4")):
            pulled.append(key)
            yield DecodeJob(key, path, np.array([1.01]))

    results = DecodePool(workers=0).imap(jobs())
    first = next(results)
    assert pulled == ["a"]
    assert _indices(first.frames) == [25]
    second = next(results)
    assert not second.ok and "does not exist" in second.error


# -- the synthetic dataset -------------------------------------------------------------------------


def test_synthetic_dataset_is_epic_shaped_and_decodable(tmp_path):
    dataset = write_synthetic_dataset(tmp_path, n_videos=3, segments_per_video=3, seed=1)
    assert dataset.video_ids == ("P01_01", "P01_02", "P02_101")
    assert dataset.validation_video_ids == ("P02_101",)
    train = pl.read_csv(dataset.annotations_dir / "EPIC_100_train.csv")
    validation = pl.read_csv(dataset.annotations_dir / "EPIC_100_validation.csv")
    assert train.columns[:3] == ["narration_id", "participant_id", "video_id"]
    assert len(train.columns) == 15
    assert (train.height, validation.height) == (6, 3)
    # Extension videos number their frames at 50 fps.
    row = validation.row(0, named=True)
    assert row["start_frame"] == max(1, int(_seconds(row["start_timestamp"]) * 50))
    verbs = pl.read_csv(dataset.annotations_dir / "EPIC_100_verb_classes.csv")
    assert verbs["key"].to_list() == list(dataset.verbs)

    layout = VideoLayout.preset("epic-mp4", dataset.videos_root)
    first = train.row(0, named=True)
    with open_video(layout.resolve(first["video_id"])) as reader:
        assert reader.size == (160, 90)
        middle = reader.read_at([_seconds(first["start_timestamp"]) + 0.3]).images[0]
        idle = reader.read_at([0.1]).images[0]
    # The object of the segment's noun is on screen during the action, not before it.
    colours = {"plate": (250, 250, 250), "cup": (200, 30, 30), "knife": (40, 60, 220),
               "pan": (30, 30, 30), "bowl": (40, 170, 60), "spoon": (230, 140, 20)}  # fmt: skip
    colour = np.array(colours[first["noun"]])
    assert _pixels_near(middle, colour) > 30
    assert _pixels_near(idle, colour) < 5


def _seconds(stamp: str) -> float:
    hours, minutes, seconds = stamp.split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def _pixels_near(image: np.ndarray, colour: np.ndarray) -> int:
    return int((np.abs(image.astype(int) - colour).max(axis=-1) < 30).sum())


# -- native decoder output ---------------------------------------------------------------------


def noisy_opener(path, backend="auto", **options):
    """Prints on file descriptor 2 as FFmpeg and decord do, then opens (or fails on 'bad')."""
    os.write(2, f"[mov,mp4,m4a,3gp,3g2,mj2 @ 0x55] moov atom not found in {path}\n".encode())
    if "bad" in str(path):
        raise VideoDecodeError(f"{path}: not a readable video")
    return open_video(path, backend, **options)


@pytest.mark.parametrize("workers", [0, 1])
def test_native_decoder_output_goes_to_the_result_not_the_terminal(capfd, cfr_video, workers):
    jobs = [DecodeJob("bad", cfr_video.with_name("bad.mp4"), np.array([0.5])),
            DecodeJob("good", cfr_video, np.array([0.5]))]
    with DecodePool(workers=workers, timeout_sec=60.0, opener=noisy_opener) as pool:
        bad, good = pool.imap(jobs)
    assert "moov atom not found" not in capfd.readouterr().err
    assert "not a readable video" in bad.error and "[decoder output: [mov,mp4" in bad.error
    assert good.ok and "moov atom not found" in good.diagnostics and "decoder output" not in (
        good.error or "")


@pytest.mark.skipif(not HAS_DECORD, reason="decord is not installed")
def test_decord_messages_on_a_broken_file_are_captured(capfd, tmp_path, cfr_video):
    broken = tmp_path / "headless.mp4"
    broken.write_bytes(cfr_video.read_bytes()[-2000:])
    result = decode_job(DecodeJob("k", broken, np.array([0.5]), backend="decord"))
    assert not result.ok and "moov atom not found" in result.error
    assert "moov atom" not in capfd.readouterr().err
