"""What `egofeat extract` checks before writing anything, `--dry-run`, and messages that name
the real cause (a folder where a video belongs, a symbolic link loop, a CSV that is not UTF-8)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import polars as pl
import pytest
import torch
from typer.testing import CliRunner

from egofeat.cli import app
from egofeat.extract.synthetic import write_synthetic_dataset
from egofeat.store import FeatureStore

torch.set_num_threads(1)
runner = CliRunner(env={"COLUMNS": "1000"})  # one-line messages stay one line


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("preflight") / "data", n_videos=4, segments_per_video=2)


@pytest.fixture
def data(source, tmp_path) -> Path:
    root = tmp_path / "data"
    shutil.copytree(source.root, root)
    return root


def args(root: Path, store: Path, *extra: str) -> list[str]:
    return ["extract", "--annotations", str(root / "annotations" / "EPIC_100_train.csv"),
            "--annotations", str(root / "annotations" / "EPIC_100_validation.csv"),
            "--videos", str(root), "--store", str(store), "--frames", "2", "--workers", "0", "--no-text", *extra]


def refused(argv: list[str]) -> str:
    """The one line of a run refused with exit status 2."""
    result = runner.invoke(app, argv)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output, lines
    return lines[0]


def test_a_wrong_videos_root_stops_before_the_store_is_created(data, tmp_path):
    store = tmp_path / "store"
    line = refused(args(data, store, "--videos", str(tmp_path / "typo")))
    assert f"--videos {tmp_path / 'typo'} does not exist" in line
    line = refused(args(data, store, "--videos", str(data / "P01")))
    assert "none of the 4 annotated videos found" in line and f"{data}/P01/P01/videos/P01_01.MP4" in line
    assert f"rerun with --videos {data} --layout epic-mp4" in line
    assert not store.exists()


def test_a_wrong_layout_is_named_with_the_one_that_finds_the_videos(data, tmp_path):
    store = tmp_path / "store"
    line = refused(args(data, store, "--layout", "flat"))
    assert f"(expected e.g. {data}/P01_01.mp4)" in line and f"--videos {data} --layout epic-mp4" in line
    for video in data.glob("P*/videos/*.MP4"):  # now they are flat
        video.rename(data / video.name)
    line = refused(args(data, store))
    assert f"rerun with --videos {data} --layout flat" in line and f"{data}/P01_01.MP4" in line
    assert not store.exists()


def test_a_store_that_exists_is_not_changed_by_a_refused_run(data, tmp_path):
    store = tmp_path / "store"
    assert runner.invoke(app, args(data, store, "--layout", "epic-mp4")).exit_code == 0
    files = sorted((p.relative_to(store), p.stat().st_mtime_ns) for p in store.rglob("*"))
    refused(args(data, store, "--videos", str(tmp_path)))
    assert sorted((p.relative_to(store), p.stat().st_mtime_ns) for p in store.rglob("*")) == files


def test_too_few_videos_stop_the_run_and_min_found_lets_it_go_ahead(source, data, tmp_path):
    for video_id in source.video_ids[1:]:
        next(data.glob(f"*/videos/{video_id}.MP4")).unlink()
    store = tmp_path / "store"
    line = refused(args(data, store, "--min-found", "0.5"))
    assert "only 1 of 4 annotated videos found" in line and "--min-found 0" in line
    result = runner.invoke(app, args(data, store, "--min-found", "0", "--json"))  # missing: error rows
    assert result.exit_code == 1, result.output
    summary = json.loads(result.stdout)
    assert summary["videos"]["found"] == 1 and summary["error_reasons"]["missing-video"]["rows"] == 6


def test_dry_run_prints_the_plan_and_writes_nothing(source, data, tmp_path):
    next(data.glob(f"*/videos/{source.video_ids[2]}.MP4")).unlink()
    store = tmp_path / "store"
    result = runner.invoke(app, args(data, store, "--crop", "both", "--boxes", str(data), "--dry-run", "--json"))
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert not store.exists() and not plan["store_exists"]
    assert (plan["videos"]["found"], plan["videos"]["missing"]) == (3, 1)
    assert plan["videos"]["missing_examples"] == {source.video_ids[2]: str(next(iter(
        data.glob("*/videos"))).parent.parent / source.video_ids[2].split("_")[0] / "videos" / f"{source.video_ids[2]}.MP4")}
    assert plan["segments"] == 8 and plan["parts_todo"] == plan["parts_planned"] == 4
    assert plan["unique_frames"] == plan["requested_frames"] == 16
    assert set(plan["streams"]) == {"tiny/full", "tiny/hand"}
    for stream in plan["streams"].values():
        assert stream["segments_todo"] == 8 and stream["feature_vectors"] == 16
        assert stream["estimated_bytes"] >= 16 * 64 * 2  # fp16 features, 64-d
    # after a run: the dry run says what is left, and estimates the store within reason
    assert runner.invoke(app, args(data, store, "--crop", "both", "--boxes", str(data))).exit_code == 1
    result = runner.invoke(app, args(data, store, "--crop", "both", "--boxes", str(data), "--dry-run"))
    assert result.exit_code == 0 and "0 to do of 4" in result.output and "nothing was written" in result.output
    written = sum(p.stat().st_size for p in (store / "streams" / "tiny" / "full").rglob("*") if p.is_file())
    assert 0.3 < plan["streams"]["tiny/full"]["estimated_bytes"] / written < 3


def test_a_folder_named_like_a_video_is_said_to_be_a_folder(source, data, tmp_path):
    video = next(data.glob(f"*/videos/{source.video_ids[0]}.MP4"))
    video.unlink()
    (video / "frame_0000000001.jpg").parent.mkdir()
    shutil.copy(next(data.glob("*/videos/*.MP4")), video / "frame_0000000001.jpg")
    store = tmp_path / "store"
    result = runner.invoke(app, args(data, store))
    assert result.exit_code == 1, result.output
    assert "1 unusable" in result.stderr and "is a folder, not a video file" in result.stderr
    errors = FeatureStore.open(store).stream("tiny/full").manifest().collect().filter(pl.col("status") == "error")
    assert errors.height == 2
    for error in errors["error"]:
        assert f"{video} is a folder, not a video file" in error and "--layout epic-frames" in error
        assert "EPIC-KITCHENS" not in error


def test_a_symbolic_link_loop_is_called_one(source, data, tmp_path):
    video = next(data.glob(f"*/videos/{source.video_ids[0]}.MP4"))
    video.unlink()
    os.symlink(video.name, video)  # a link to itself
    store = tmp_path / "store"
    assert runner.invoke(app, args(data, store)).exit_code == 1
    errors = FeatureStore.open(store).stream("tiny/full").manifest().collect().filter(pl.col("status") == "error")
    assert errors.height == 2
    for error in errors["error"]:
        assert f"video file {video} is a symbolic link loop" in error and "does not exist" not in error
    os.symlink(tmp_path / "loop", tmp_path / "loop")
    line = refused(args(data, store, "--videos", str(tmp_path / "loop")))
    assert f"--videos {tmp_path / 'loop'} is a symbolic link loop" in line


def test_a_csv_that_is_not_utf8_names_the_byte_and_row(data, tmp_path):
    csv = data / "annotations" / "EPIC_100_train.csv"
    lines = csv.read_bytes().split(b"\n")
    lines[3] = lines[3].replace(b"take", "tak\u00e9".encode("latin-1"), 1).replace(b"put", "p\u00fct".encode("latin-1"), 1)
    csv.write_bytes(b"\n".join(lines))
    line = refused(["segments", str(csv)])
    assert f"{csv}, row 3" in line and "not UTF-8 text: byte 0x" in line and "line 4" in line
    assert "iconv" in line and "separator" not in line
    line = refused(args(data, tmp_path / "store"))
    assert "not UTF-8 text" in line and not (tmp_path / "store").exists()
