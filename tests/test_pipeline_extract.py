"""`egofeat extract` end to end on synthetic media (issue 3).

Videos are frame-index coded (:func:`write_video`: frame ``i`` shows ``i``), so a test can
read back which frame the pipeline encoded at each manifest time. One module-scoped dataset
of eight EPIC-shaped videos serves a clean run and a run in which most videos are broken in a
different way; the other tests build what they need in a few tenths of a second.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from typer.testing import CliRunner

from egofeat.cli import app
from egofeat.config import ExtractConfig
from egofeat.extract import DecodeJob, FrameSampler, decode_job, open_video
from egofeat.extract.encoders import create_encoder
from egofeat.extract.synthetic import (
    SYNTHETIC_NOUNS,
    SYNTHETIC_VERBS,
    read_frame_index,
    write_jpeg_folder,
    write_synthetic_dataset,
    write_video,
)
from egofeat.pipelines.executors import execute
from egofeat.pipelines.extract import prepare_extract
from egofeat.sources import class_texts, epic_jpeg_fps
from egofeat.store import STATUS_ERROR, STATUS_OK, FeatureStore, IncompatibleStreamError, layout

FPS = 15.0
SIZE = (96, 64)  # (width, height): the short side is the tiny encoder's 64 px, so no resize
STREAMS = ("tiny/full", "tiny/hand")
runner = CliRunner()


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny():
    return create_encoder("tiny")


# ---- media helpers ------------------------------------------------------------------------------


def video_path(root: Path, video_id: str) -> Path:
    return root / video_id.split("_")[0] / "videos" / f"{video_id}.MP4"


def annotation_files(root: Path) -> list[Path]:
    folder = root / "annotations"
    return [folder / "EPIC_100_train.csv", folder / "EPIC_100_validation.csv"]


def write_coded_dataset(root: Path, n_videos: int, segments_per_video: int) -> list[str]:
    """The synthetic EPIC-shaped dataset, its videos replaced by frame-index-coded ones."""
    dataset = write_synthetic_dataset(
        root, n_videos=n_videos, segments_per_video=segments_per_video, fps=FPS, size=SIZE
    )
    for video_id in dataset.video_ids:
        path = video_path(root, video_id)
        with open_video(path) as reader:
            n_frames = round(reader.duration_sec * FPS)
        write_video(path, n_frames, FPS, SIZE)
    return list(dataset.video_ids)


def _timestamp(seconds: float) -> str:
    minutes, secs = divmod(seconds, 60)
    return f"00:{int(minutes):02d}:{secs:05.2f}"


EPIC_COLUMNS = (
    "narration_id", "participant_id", "video_id", "narration_timestamp", "start_timestamp",
    "stop_timestamp", "start_frame", "stop_frame", "narration", "verb", "verb_class", "noun",
    "noun_class", "all_nouns", "all_noun_classes",
)  # fmt: skip


def write_epic_csv(path: Path, segments: Sequence[tuple[str, str, float, float]]) -> Path:
    """An EPIC-100 annotation CSV of ``(narration_id, video_id, start_sec, end_sec)`` rows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(EPIC_COLUMNS)
        for segment_id, video_id, start, end in segments:
            rate = epic_jpeg_fps(video_id)
            writer.writerow([
                segment_id, video_id.split("_")[0], video_id, _timestamp(start),
                _timestamp(start), _timestamp(end), max(1, math.floor(start * rate)),
                math.floor(end * rate), "take cup", "take", 0, "cup", 1, "['cup']", "[1]",
            ])  # fmt: skip
    return path


def set_stop_time(csv_path: Path, segment_id: str, stop_sec: float) -> None:
    """Move one segment's end in an EPIC CSV (e.g. past the end of its video)."""
    with csv_path.open(newline="") as file:
        rows = list(csv.reader(file))
    header = rows[0]
    stop, stop_frame = header.index("stop_timestamp"), header.index("stop_frame")
    for row in rows[1:]:
        if row[0] == segment_id:
            row[stop] = _timestamp(stop_sec)
            row[stop_frame] = str(math.floor(stop_sec * epic_jpeg_fps(row[2])))
    with csv_path.open("w", newline="") as file:
        csv.writer(file).writerows(rows)


def extract_cli(*args: str | Path) -> tuple[int, dict | None, str]:
    """Run `egofeat extract ... --json`; (exit code, parsed summary or None, all output)."""
    result = runner.invoke(app, ["extract", *map(str, args), "--json"])
    try:
        summary = json.loads(result.stdout)
    except json.JSONDecodeError:
        summary = None
    return result.exit_code, summary, result.output


def manifest(store: Path, stream: str) -> pl.DataFrame:
    return FeatureStore.open(store).stream(stream).manifest().collect()


def features_by_id(store: Path, stream: str) -> dict[str, np.ndarray]:
    loaded = FeatureStore.open(store).stream(stream).load()
    return {sid: loaded.row(i) for i, sid in enumerate(loaded.segment_ids)}


# ---- a clean run and a broken run of the same eight videos ------------------------------------


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("dataset")
    return root, write_coded_dataset(root, n_videos=8, segments_per_video=3)


def _extract_args(root: Path, store: Path) -> list[str | Path]:
    args: list[str | Path] = []
    for path in annotation_files(root):
        args += ["--annotations", path]
    return [*args, "--videos", root, "--store", store, "--crop", "both", "--boxes", root]


@pytest.fixture(scope="module")
def clean(dataset, tmp_path_factory):
    root, _ = dataset
    store = tmp_path_factory.mktemp("clean") / "store"
    code, summary, output = extract_cli(*_extract_args(root, store), "--workers", "0")
    return store, code, summary, output


#: how each video of the broken run is broken, and what its error rows must say
BROKEN = {
    "P01_01": ("missing", "does not exist"),
    "P01_02": ("empty", "is empty (0 bytes)"),
    "P02_01": ("truncated", "the file is truncated, corrupt or not a video"),
    "P02_02": ("text file", "not a readable video"),
    "P04_101": ("hangs", "decoding timed out after 5 s; the worker was killed"),
}
NO_PICKLE, PAST_END, UNTOUCHED = "P03_01", "P03_02", "P04_01"


@pytest.fixture(scope="module")
def broken(dataset, tmp_path_factory):
    source, video_ids = dataset
    root = tmp_path_factory.mktemp("broken") / "data"
    shutil.copytree(source, root)
    assert video_ids == [*list(BROKEN)[:4], NO_PICKLE, PAST_END, UNTOUCHED, "P04_101"]
    paths = {video_id: video_path(root, video_id) for video_id in BROKEN}
    paths["P01_01"].unlink()
    paths["P01_02"].write_bytes(b"")
    whole = paths["P02_01"].read_bytes()
    paths["P02_01"].write_bytes(whole[: len(whole) // 2])
    paths["P02_02"].write_text("this is not a video\n" * 20)
    # Opening a FIFO without a writer blocks forever, like a decoder stuck in native code. It
    # is the last video, so the worker that hangs on it is already warm when its clock starts.
    paths["P04_101"].unlink()
    os.mkfifo(paths["P04_101"])
    (root / "P03" / "hand-objects" / f"{NO_PICKLE}.pkl").unlink()
    set_stop_time(annotation_files(root)[1], f"{PAST_END}_2", 60.0)
    store = root.parent / "store"
    code, summary, output = extract_cli(
        *_extract_args(root, store), "--workers", "1", "--decode-timeout", "5"
    )
    return root, store, code, summary, output


def test_clean_run_exits_0_with_every_segment_ok(clean):
    store, code, summary, output = clean
    assert code == 0, output
    assert not summary["failed"] and not summary["nothing_to_do"]
    assert summary["ok"] == dict.fromkeys(STREAMS, 24)
    for stream in STREAMS:
        rows = manifest(store, stream)
        assert rows.height == 24 and (rows["status"] == STATUS_OK).all()
        assert rows["error"].is_null().all() and (rows["n_frames"] == 8).all()


def test_broken_inputs_end_as_error_rows_and_exit_1(broken, clean):
    _, store, code, summary, output = broken
    assert code == 1, output
    assert summary["failed"]
    segments = set(FeatureStore.open(store).segments().collect()["segment_id"])
    assert len(segments) == 24
    for stream in STREAMS:
        rows = manifest(store, stream)
        # every segment exactly once, ok or error; an error row says why and has no features
        assert sorted(rows["segment_id"]) == sorted(segments)
        assert set(rows["status"]) == {STATUS_OK, STATUS_ERROR}
        errors = rows.filter(pl.col("status") == STATUS_ERROR)
        assert errors["error"].str.len_chars().min() > 20 and (errors["n_frames"] == 0).all()
        assert summary["errors"][stream] == errors.height
        assert summary["ok"][stream] == rows.height - errors.height
    # full: P03_01 (its pickle only matters to hand crops), P03_02 but its last, P04_01
    assert summary["ok"] == {"tiny/full": 3 + 2 + 3, "tiny/hand": 2 + 3}


@pytest.mark.parametrize("video_id", list(BROKEN))
def test_error_rows_name_the_broken_file_and_say_what_is_wrong(broken, video_id):
    root, store, *_ = broken
    _, message = BROKEN[video_id]
    for stream in STREAMS:
        rows = manifest(store, stream).filter(pl.col("video_id") == video_id)
        assert rows.height == 3 and (rows["status"] == STATUS_ERROR).all()
        for error in rows["error"]:
            assert str(video_path(root, video_id)) in error and message in error, error


def test_missing_hand_object_pickle_fails_the_hand_stream_only(broken, clean):
    root, store, *_ = broken
    full = manifest(store, "tiny/full").filter(pl.col("video_id") == NO_PICKLE)
    assert (full["status"] == STATUS_OK).all()
    hand = manifest(store, "tiny/hand").filter(pl.col("video_id") == NO_PICKLE)
    pickle = root / "P03" / "hand-objects" / f"{NO_PICKLE}.pkl"
    for error in hand["error"]:
        assert f"hand-object boxes of video {NO_PICKLE}" in error and str(pickle) in error
    got, want = features_by_id(store, "tiny/full"), features_by_id(clean[0], "tiny/full")
    for sid in full["segment_id"]:
        np.testing.assert_array_equal(got[sid], want[sid])


def test_segment_past_the_end_spares_the_other_segments_of_its_video(broken, clean):
    _, store, *_ = broken
    for stream in STREAMS:
        rows = manifest(store, stream).filter(pl.col("video_id") == PAST_END).sort("segment_id")
        assert rows["status"].to_list() == [STATUS_OK, STATUS_OK, STATUS_ERROR]
        error = rows["error"][2]
        assert f"segment {PAST_END}_2" in error and f"past the end of video {PAST_END}" in error
        got, want = features_by_id(store, stream), features_by_id(clean[0], stream)
        for sid in rows["segment_id"][:2]:
            # the same frames as in a clean run (fp16 storage; batches differ in size)
            np.testing.assert_allclose(got[sid], want[sid], rtol=1e-3, atol=1e-3)
    untouched = manifest(store, "tiny/full").filter(pl.col("video_id") == UNTOUCHED)
    assert (untouched["status"] == STATUS_OK).all()


# ---- what the features are -----------------------------------------------------------------------


def test_features_are_the_encoder_on_the_frames_shown_at_the_manifest_times(dataset, clean, tiny):
    root, _ = dataset
    store = FeatureStore.open(clean[0])
    segments = store.segments().collect()
    rows = manifest(clean[0], "tiny/full").join(segments, on="segment_id")
    features = features_by_id(clean[0], "tiny/full")
    sampler = FrameSampler.uniform(8)
    for row in rows.iter_rows(named=True):
        asked = sampler.times(row["start_sec"], row["end_sec"])
        shown = np.asarray(row["frame_times"])
        # the frame shown at each sampled time: it starts at or before it, the next one after
        assert ((shown <= asked + 1e-6) & (asked < shown + 1 / FPS)).all()
        result = decode_job(
            DecodeJob(row["segment_id"], video_path(root, row["video_id"]), shown, short_side=64)
        )
        assert result.ok, result.error
        indices = [read_frame_index(frame) for frame in result.frames]
        assert np.abs(np.asarray(indices) - np.floor(asked * FPS + 1e-6)).max() <= 1
        np.testing.assert_allclose(shown, np.asarray(indices) / FPS, atol=1e-3)
        np.testing.assert_allclose(
            features[row["segment_id"]], tiny.encode(result.frames), rtol=2e-3, atol=2e-3
        )


def test_hand_stream_records_its_boxes_and_encodes_crops_of_them(dataset, clean, tiny):
    root, _ = dataset
    rows = manifest(clean[0], "tiny/hand")
    features = features_by_id(clean[0], "tiny/hand")
    for row in rows.head(6).iter_rows(named=True):
        boxes = np.asarray(row["boxes"], dtype=np.float32)
        assert boxes.shape == (8, 4)
        assert (boxes >= 0).all() and (boxes <= 1).all()
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        job = DecodeJob(
            row["segment_id"],
            video_path(root, row["video_id"]),
            np.asarray(row["frame_times"]),
            boxes=boxes,
            crop_size=64,
            crop_margin=0.0,
            crop_square=False,
            full_frames=False,
        )
        result = decode_job(job)
        assert result.ok, result.error
        np.testing.assert_allclose(
            features[row["segment_id"]], tiny.encode(result.crops), rtol=2e-3, atol=2e-3
        )
    assert manifest(clean[0], "tiny/full")["boxes"].is_null().all()


def test_provenance_records_encoder_weights_sampling_and_crop_rule(clean, tiny):
    store = FeatureStore.open(clean[0])
    full, hand = (store.stream(name).info for name in STREAMS)
    for info in (full, hand):
        provenance = info.provenance
        assert provenance["encoder"] == "tiny" and provenance["weights_hash"] == tiny.weights_hash
        assert provenance["sampling"] == {"kind": "uniform", "num_frames": 8}
        assert provenance["preprocessing"] == tiny.preprocessing.to_dict()
        assert info.frames_per_row == 8 and info.dim == 64 and info.dtype == "float16"
    assert full.provenance["crop"] == {"rule": "full frame"}
    crop = hand.provenance["crop"]
    assert "union of hands" in crop["rule"]
    assert (crop["hand_threshold"], crop["object_threshold"]) == (0.8, 0.01)
    assert (crop["margin"], crop["square"], crop["fallback"]) == (0.0, True, "full")


# ---- overlapping segments ----------------------------------------------------------------------


def test_overlapping_segments_share_frames_decoded_and_encoded_once(tmp_path, monkeypatch):
    # Windows of 2 s every 0.5 s with 4 bins of 0.5 s: window k samples 0.25 + 0.5 * (k..k+3).
    # P01_01: 5 windows ask 20 times of 8 distinct ones; P01_02: 3 windows ask 12 of 6.
    windows = {"P01_01": 5, "P01_02": 3}
    segments = []
    for video_id, count in windows.items():
        write_video(video_path(tmp_path, video_id), int(6 * FPS), FPS, SIZE)
        segments += [(f"{video_id}_{k}", video_id, 0.5 * k, 0.5 * k + 2.0) for k in range(count)]
    annotations = write_epic_csv(tmp_path / "EPIC_100_validation.csv", segments)
    options = ExtractConfig(
        annotations=[annotations],
        videos=tmp_path,
        store=tmp_path / "store",
        frames=4,
        workers=0,
        progress=False,
    )
    prepared = prepare_extract(options)
    encoder = prepared.runner.encoders[0]
    encoded: list[int] = []
    encode = encoder.encode
    monkeypatch.setattr(
        encoder, "encode", lambda frames: encoded.append(len(frames)) or encode(frames)
    )
    summary = execute(options, prepared=prepared)
    assert (summary.requested_frames, summary.unique_frames) == (20 + 12, 8 + 6)
    assert summary.dedup_ratio == round(32 / 14, 3)
    assert sum(encoded) == 8 + 6 and len(encoded) == 2  # one batch per video
    loaded = FeatureStore.open(tmp_path / "store").stream("tiny/full").load()
    rows = dict(zip(loaded.segment_ids, loaded.features, strict=True))
    times = {
        r["segment_id"]: r["frame_times"]
        for r in manifest(tmp_path / "store", "tiny/full").iter_rows(named=True)
    }
    for k in range(4):  # window k's frames 1..3 are window k+1's frames 0..2
        np.testing.assert_array_equal(rows[f"P01_01_{k}"][1:], rows[f"P01_01_{k + 1}"][:3])
        assert times[f"P01_01_{k}"][1:] == times[f"P01_01_{k + 1}"][:3]


# ---- resume -----------------------------------------------------------------------------------


def test_resume_redoes_nothing_then_only_an_uncommitted_part_and_refuses_a_new_config(
    dataset, clean, tmp_path
):
    root, _ = dataset
    store = tmp_path / "store"
    shutil.copytree(clean[0], store)
    args = [*_extract_args(root, store), "--workers", "0"]

    code, summary, _ = extract_cli(*args)
    assert code == 0 and summary["nothing_to_do"] and summary["planned_parts"] == 0
    result = runner.invoke(app, ["extract", *map(str, args)])
    assert result.exit_code == 0 and "nothing to do" in result.output

    # A crash after writing a part but before its commit record: only that part is redone.
    stream = FeatureStore.open(store).stream("tiny/full")
    before = stream.committed_parts()
    crashed = sorted(before)[3]
    (store / layout.STREAMS_DIR / "tiny" / "full" / layout.COMMITS_DIR / f"{crashed}.json").unlink()
    code, summary, output = extract_cli(*args)
    assert code == 0, output
    assert (summary["planned_parts"], summary["done_parts"]) == (1, 1)
    assert summary["ok"] == {"tiny/full": 3, "tiny/hand": 0}
    after = FeatureStore.open(store).stream("tiny/full").committed_parts()
    assert set(after) == set(before)
    assert [p for p in after if after[p]["attempt"] != before[p]["attempt"]] == [crashed]
    assert len(FeatureStore.open(store).stream("tiny/full").uncommitted_attempts()) == 0
    assert manifest(store, "tiny/full").height == 24

    # Another configuration is refused, with a hint; --tag writes a new stream beside it.
    code, _, output = extract_cli(*args, "--frames", "4")
    assert code == 2
    assert "frames_per_row: 8 in the stream, 4 in this write" in output and "--tag" in output
    with pytest.raises(IncompatibleStreamError):
        prepare_extract(
            ExtractConfig(
                annotations=annotation_files(root),
                videos=root,
                store=store,
                frames=4,
                progress=False,
            )
        )
    code, summary, output = extract_cli(*args, "--frames", "4", "--tag", "f4", "--no-text")
    assert code == 0, output
    assert summary["streams"] == ["tiny/full-f4", "tiny/hand-f4"]
    assert FeatureStore.open(store).stream("tiny/full-f4").load().features.shape == (24, 4, 64)


# ---- other layouts and samplings -----------------------------------------------------------------


def test_epic_jpeg_frame_folders(tmp_path, tiny):
    # P01_01 is an EPIC-55 id (60 fps frame files), P01_101 an extension id (50 fps).
    for video_id in ("P01_01", "P01_101"):
        write_jpeg_folder(
            tmp_path / "P01" / "rgb_frames" / video_id, int(4 * epic_jpeg_fps(video_id)), SIZE
        )
    annotations = write_epic_csv(tmp_path / "EPIC_100_validation.csv", [
        ("P01_01_0", "P01_01", 0.4, 1.9), ("P01_01_1", "P01_01", 2.0, 3.7), ("P01_101_0", "P01_101", 1.1, 3.3),
    ])  # fmt: skip
    code, summary, output = extract_cli(
        "--annotations",
        annotations,
        "--videos",
        tmp_path,
        "--store",
        tmp_path / "store",
        "--layout",
        "epic-frames",
        "--workers",
        "0",
        "--no-text",
    )
    assert code == 0, output
    assert summary["ok"] == {"tiny/full": 3}
    features = features_by_id(tmp_path / "store", "tiny/full")
    for row in manifest(tmp_path / "store", "tiny/full").iter_rows(named=True):
        start, end = {"P01_01_0": (0.4, 1.9), "P01_01_1": (2.0, 3.7), "P01_101_0": (1.1, 3.3)}[
            row["segment_id"]
        ]
        rate = epic_jpeg_fps(row["video_id"])
        numbers = np.floor(FrameSampler.uniform(8).times(start, end) * rate)  # the EPIC frame rule
        np.testing.assert_allclose(row["frame_times"], numbers / rate)
        with open_video(tmp_path / "P01" / "rgb_frames" / row["video_id"]) as reader:
            # frame starts n / rate may floor to n - 1 in float64: read at the frames' centres
            frames = reader.read_at((numbers + 0.5) / rate).images
        assert [read_frame_index(frame) for frame in frames] == numbers.astype(int).tolist()
        np.testing.assert_allclose(
            features[row["segment_id"]], tiny.encode(frames), rtol=2e-3, atol=2e-3
        )


@pytest.fixture
def two_videos(tmp_path) -> tuple[Path, Path, list[tuple[str, str, float, float]]]:
    segments = [
        ("P01_01_0", "P01_01", 0.3, 1.6),
        ("P01_01_1", "P01_01", 1.2, 3.9),
        ("P01_02_0", "P01_02", 0.0, 0.2),
    ]
    for video_id in ("P01_01", "P01_02"):
        write_video(video_path(tmp_path, video_id), int(4 * FPS), FPS, SIZE)
    return tmp_path, write_epic_csv(tmp_path / "EPIC_100_validation.csv", segments), segments


def test_oversampled_rows_hold_bins_times_per_bin_frames(two_videos):
    root, annotations, segments = two_videos
    common = {
        "annotations": [annotations],
        "videos": root,
        "store": root / "store",
        "frames": 4,
        "workers": 0,
        "progress": False,
        "text": False,
    }
    execute(ExtractConfig(**common, sampling="oversampled", per_bin=3))
    execute(ExtractConfig(**common, tag="uniform"))
    store = FeatureStore.open(root / "store")
    over, uniform = store.stream("tiny/full"), store.stream("tiny/full-uniform")
    assert over.info.frames_per_row == 12
    assert over.info.provenance["sampling"] == {
        "kind": "oversampled",
        "num_frames": 4,
        "per_bin": 3,
    }
    sampler = FrameSampler.oversampled(4, per_bin=3)
    for row in over.manifest().collect().iter_rows(named=True):
        start, end = next((s, e) for sid, _, s, e in segments if sid == row["segment_id"])
        asked = sampler.times(start, end).ravel()  # bin-major: bin 0's three times, then bin 1's
        shown = np.asarray(row["frame_times"])
        assert row["n_frames"] == 12 and ((shown <= asked + 1e-6) & (asked < shown + 1 / FPS)).all()
    # With an odd per_bin the middle column of each bin is the uniform sampling.
    loaded, reference = over.load(), uniform.load([s[0] for s in segments])
    centre = loaded.features.reshape(len(loaded), 4, 3, -1)[:, :, sampler.center_index]
    np.testing.assert_allclose(centre, reference.features, rtol=1e-3, atol=1e-3)


def test_dense_rows_hold_a_variable_number_of_frames(two_videos):
    root, annotations, segments = two_videos
    summary = execute(
        ExtractConfig(
            annotations=[annotations],
            videos=root,
            store=root / "store",
            sampling="dense",
            fps=4.0,
            workers=0,
            progress=False,
            text=False,
        )
    )
    assert not summary.failed
    stream = FeatureStore.open(root / "store").stream("tiny/full")
    assert stream.info.frames_per_row is None
    expected = {sid: FrameSampler.dense(4.0).times(s, e).size for sid, _, s, e in segments}
    rows = stream.manifest().collect()
    assert dict(zip(rows["segment_id"], rows["n_frames"], strict=True)) == expected
    assert len(set(expected.values())) == 3  # 5, 11 and 1 frames
    loaded = stream.load()
    assert loaded.features.shape == (sum(expected.values()), 64)
    assert [loaded.row(i).shape[0] for i in range(len(loaded))] == [
        expected[s] for s in loaded.segment_ids
    ]


def test_native_rows_hold_every_frame_of_the_segment(two_videos):
    root, annotations, segments = two_videos
    options = dict(annotations=[annotations], videos=root, store=root / "store", sampling="native",
                   fps=FPS, workers=0, progress=False, text=False)
    assert not execute(ExtractConfig(**options)).failed
    stream = FeatureStore.open(root / "store").stream("tiny/full")
    assert stream.info.frames_per_row is None
    assert stream.info.provenance["sampling"] == {"kind": "native", "fps": FPS}
    rows = stream.manifest().collect()
    expected = {sid: max(int(e * FPS), int(s * FPS) + 1) - int(s * FPS) for sid, _, s, e in segments}
    assert dict(zip(rows["segment_id"], rows["n_frames"], strict=True)) == expected
    for times in rows["frame_times"]:  # consecutive frames of the 15 fps video, none repeated
        np.testing.assert_allclose(np.diff(times), 1 / FPS, rtol=1e-6)
    with pytest.raises(ValueError, match="native needs --fps"):
        ExtractConfig(**{**options, "fps": None, "dataset": "generic"})


# ---- text streams and the demo -------------------------------------------------------------------


def test_text_streams_hold_class_prompts_and_narrations(clean, tiny):
    store = FeatureStore.open(clean[0])
    assert clean[2]["text_streams"] == [
        "tiny/text/epic100/noun-names",
        "tiny/text/epic100/verb-names",
        "tiny/text/narration",
    ]
    for task, names in (("verb", SYNTHETIC_VERBS), ("noun", SYNTHETIC_NOUNS)):
        stream = store.stream(f"tiny/text/epic100/{task}-names")
        rows = stream.manifest().collect()
        texts = class_texts("epic100", names)  # X-MIC's readable form
        assert rows["segment_id"].to_list() == [f"{task}:{i}" for i in range(len(names))]
        assert rows["text"].to_list() == texts and rows["class_name"].to_list() == list(names)
        np.testing.assert_allclose(
            stream.load(rows["segment_id"]).features[:, 0],
            tiny.encode_text(texts),
            rtol=1e-5,
            atol=1e-6,
        )
    narration = store.stream("tiny/text/narration")
    segments = store.segments().collect().sort("segment_id")
    loaded = narration.load(segments["segment_id"])
    np.testing.assert_allclose(
        loaded.features[:, 0],
        tiny.encode_text(segments["narration"].to_list()),
        rtol=1e-5,
        atol=1e-6,
    )
    assert narration.info.provenance["weights_hash"] == tiny.weights_hash


def test_demo_json_reports_store_streams_and_counts(tmp_path):
    # A small dataset where the demo looks for its own keeps this test quick.
    write_synthetic_dataset(tmp_path / "dataset", n_videos=3, segments_per_video=4)
    result = runner.invoke(app, ["demo", "--out", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert FeatureStore.open(summary["store"]).stream_names() == sorted(summary["streams"])
    assert {"tiny/full", "tiny/hand", "tiny/text/narration"} <= set(summary["streams"])
    assert summary["extract"]["ok"] == {"tiny/full": 12, "tiny/hand": 12}
    assert summary["extract"]["segments"] == 12 and not summary["extract"]["failed"]
    gain = summary["distill_gain"]  # both numbers and their difference (the margin: test_pipeline_distill)
    assert gain["recipe"] == "mmdistill-iccv23" and gain["student_stream"] == "synthetic/rgb"
    for task in ("verb", "noun", "action"):
        assert gain[task]["gain"] == pytest.approx(gain[task]["distilled"] - gain[task]["ce_only"])
