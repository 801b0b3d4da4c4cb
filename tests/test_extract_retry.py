"""`egofeat extract --retry-errors`, and an exit status that tells the truth about the stream.

A video missing at the first run gives error rows (reason ``missing-video``, retryable); once
it is copied in, ``--retry-errors`` rewrites exactly the part holding them: those rows become
ok, the part's other rows and every other part stay bit for bit, and the store equals a clean
run. Rows a retry cannot help (a segment past the end of its video) are left alone. Whoever
wrote them, error rows of the requested segments make the exit status 1.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import torch
from test_pipeline_crash import CHILD_ENV, assert_same_as
from test_pipeline_extract import set_stop_time
from typer.testing import CliRunner

from egofeat.cli import app
from egofeat.extract.synthetic import write_synthetic_dataset
from egofeat.store import FeatureStore
from egofeat.store.crashpoints import CRASH_AT_ENV

torch.set_num_threads(1)
STREAMS = ("tiny/full", "tiny/hand")


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("retry") / "data", n_videos=4, segments_per_video=3)


@pytest.fixture
def data(source, tmp_path) -> Path:
    """A copy of the dataset this test may break."""
    root = tmp_path / "data"
    shutil.copytree(source.root, root)
    return root


def args(root: Path, store: Path, *extra: str, annotations: tuple[str, ...] = ("train", "validation")) -> list[str]:
    files = [arg for name in annotations for arg in ("--annotations", str(root / "annotations" / f"EPIC_100_{name}.csv"))]
    return ["extract", *files, "--videos", str(root), "--store", str(store), "--frames", "3", "--workers", "0",
            "--crop", "both", "--boxes", str(root), "--videos-per-part", "2", "--no-text", "--json", *extra]


def run(argv: list[str]) -> tuple[int, dict]:
    result = CliRunner().invoke(app, argv)
    assert result.exit_code in (0, 1), result.output
    return result.exit_code, json.loads(result.stdout)


def video(root: Path, video_id: str) -> Path:
    return root / video_id.split("_")[0] / "videos" / f"{video_id}.MP4"


def snapshot(store: Path) -> dict[str, tuple[pl.DataFrame, dict[str, bytes], dict[str, dict]]]:
    """Per stream: the manifest, each ok row's feature bytes, the commit records."""
    out = {}
    for name in STREAMS:
        stream = FeatureStore.open(store).stream(name)
        loaded = stream.load()
        features = {sid: loaded.features[i].tobytes() for i, sid in enumerate(loaded.segment_ids)}
        out[name] = (stream.manifest().collect(), features, stream.committed_parts())
    return out


def test_a_missing_video_copied_in_is_retried_and_nothing_else_changes(source, data, tmp_path):
    missing = source.video_ids[1]  # shares its part with video 0
    held = tmp_path / "held.MP4"
    shutil.move(video(data, missing), held)
    store = tmp_path / "store"

    code, summary = run(args(data, store))
    assert code == 1 and summary["videos"]["missing"] == 1
    assert summary["error_rows"] == dict.fromkeys(STREAMS, 3)
    assert summary["error_reasons"] == {"missing-video": {"rows": 6, "retryable": 6}}
    info = json.loads(CliRunner().invoke(app, ["info", str(store), "--json"]).stdout)
    assert {s["name"]: s["error_reasons"] for s in info["streams"]} == dict.fromkeys(
        STREAMS, {"missing-video": {"rows": 3, "retryable": 3}})

    # without --retry-errors the rerun does nothing, and still says the stream has errors
    code, again = run(args(data, store))
    assert code == 1 and again["nothing_to_do"] and again["errors_from_other_runs"] == 6

    before = snapshot(store)
    shutil.move(held, video(data, missing))
    code, retried = run(args(data, store, "--retry-errors"))
    assert code == 0, retried
    assert retried["retried_parts"] == 1 and retried["done_parts"] == 1
    assert retried["ok"] == dict.fromkeys(STREAMS, 3) and retried["error_rows"] == dict.fromkeys(STREAMS, 0)
    after = snapshot(store)
    redone = set(before["tiny/full"][0].filter(pl.col("video_id") == missing)["segment_id"])
    for name in STREAMS:
        (old_rows, old_features, old_records), (new_rows, new_features, new_records) = before[name], after[name]
        assert new_rows["segment_id"].is_unique().all() and new_rows.height == old_rows.height
        assert (new_rows["status"] == "ok").all()
        for sid, data_bytes in old_features.items():  # every ok row, in the retried part too
            assert new_features[sid] == data_bytes, (name, sid)
        retried_part = new_rows.filter(pl.col("video_id") == missing)["part_id"].unique().item()
        shared = new_rows.filter((pl.col("part_id") == retried_part) & ~pl.col("segment_id").is_in(list(redone)))
        assert shared.height == 3, "the retried part also holds another video's ok rows"
        for part_id, record in old_records.items():
            if part_id == retried_part:
                assert new_records[part_id]["replaced"] == [record["attempt"]]
            else:
                assert new_records[part_id] == record, "a part without error rows was rewritten"
    # this run's summary counts this run's work: the redone segments' frames only
    assert 0 < retried["unique_frames"] <= 3 * len(redone)

    reference = tmp_path / "reference"
    code, _ = run(args(data, reference))
    assert code == 0
    assert_same_as(store, reference)


def test_rows_a_retry_cannot_help_are_left_alone(data, tmp_path):
    csv = data / "annotations" / "EPIC_100_train.csv"
    segment = pl.read_csv(csv)["narration_id"][0]
    set_stop_time(csv, segment, 600.0)
    store = tmp_path / "store"
    code, summary = run(args(data, store))
    assert code == 1 and summary["error_reasons"] == {"past-end": {"rows": 2, "retryable": 0}}
    records = snapshot(store)["tiny/full"][2]
    code, again = run(args(data, store, "--retry-errors"))
    assert code == 1 and again["nothing_to_do"] and again["retried_parts"] == 0
    assert snapshot(store)["tiny/full"][2] == records


def test_exit_status_counts_only_the_requested_segments(source, data, tmp_path):
    validation = source.validation_video_ids[0]
    video(data, validation).unlink()
    store = tmp_path / "store"
    code, _ = run(args(data, store))
    assert code == 1
    code, summary = run(args(data, store, annotations=("train",)))  # the train segments are all ok
    assert code == 0 and summary["nothing_to_do"] and summary["error_rows"] == dict.fromkeys(STREAMS, 0)


def test_a_resumed_run_exits_1_for_error_rows_an_earlier_run_wrote(source, data, tmp_path):
    video(data, source.video_ids[0]).unlink()  # in the first part
    store = tmp_path / "store"
    argv = args(data, store, "--videos-per-part", "1")
    killed = subprocess.run([sys.executable, "-m", "egofeat", *argv], env={**CHILD_ENV, CRASH_AT_ENV: "after_part:1"},
                            capture_output=True, text=True, timeout=180)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    code, summary = run(argv)
    assert code == 1 and summary["errors"] == dict.fromkeys(STREAMS, 0)
    assert summary["error_rows"] == dict.fromkeys(STREAMS, 3) and summary["errors_from_other_runs"] == 6
