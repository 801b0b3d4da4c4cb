"""Any video id becomes a valid part id: spaces, unicode and punctuation, for every executor."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import torch
from typer.testing import CliRunner

from egofeat.cli import app
from egofeat.config import ExtractConfig
from egofeat.extract import plan_videos
from egofeat.extract.synthetic import write_video
from egofeat.pipelines.extract import build_sampler, load_annotations, plan_parts
from egofeat.store import STATUS_OK, FeatureStore, safe_part_id
from egofeat.store.layout import MAX_PART_ID, check_part_id

torch.set_num_threads(1)
ODD_IDS = ["P01 11", "Küche_03", "a/b:c*?"]


@pytest.mark.parametrize(
    "label", [*ODD_IDS, "a:b/c*?", "..", "-lead", "日本語", "x" * 500, "a..b", "", "Ǆ\u0301", "tab\there"]
)
def test_any_text_gives_a_valid_deterministic_part_id(label):
    part_id = safe_part_id(label)
    assert check_part_id(part_id) == part_id and len(part_id) <= MAX_PART_ID
    assert part_id.isascii() and safe_part_id(label) == part_id


def test_part_ids_are_readable_and_distinct_where_slugs_agree():
    assert safe_part_id("Küche_03").startswith("Kuche_03-")
    assert safe_part_id("P01 11").startswith("P01-11-")
    assert safe_part_id("a/b:c*?").startswith("a-b-c")
    # the same slug, different ids: the hash is of the exact text
    ids = [safe_part_id(t) for t in ("a/b", "a:b", "a b", "a-b", "a\u00a0b", "á-b")]
    assert len(set(ids)) == len(ids)
    # ids that were valid before keep their text: P01_11 + the caller's digest
    assert safe_part_id("P01_11", "0123456789abcdef") == "P01_11-0123456789ab"
    with pytest.raises(ValueError, match="hex digest"):
        safe_part_id("x", "not-hex")


def test_the_store_writes_parts_named_from_odd_ids(tmp_path):
    stream = FeatureStore.create(tmp_path / "s").create_stream("a", dim=4, provenance={}, frames_per_row=1)
    for i, video in enumerate(ODD_IDS):
        with stream.part_writer(safe_part_id(video)) as writer:
            writer.add(f"seg{i}", video, torch.ones(1, 4).numpy() * i)
    assert sorted(stream.committed_parts()) == sorted(safe_part_id(v) for v in ODD_IDS)
    assert stream.manifest().collect()["video_id"].to_list() == sorted(ODD_IDS, key=safe_part_id)
    with pytest.raises(ValueError, match="safe_part_id"):
        stream.part_writer("P01 11")


# ---- extraction ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    """Flat video files named by odd ids ("a/b:c*?" lives in a folder "a"), and a generic table."""
    root = tmp_path_factory.mktemp("odd-ids")
    rows = {"clip": [], "video": [], "t0": [], "t1": []}
    for n, video in enumerate(ODD_IDS):
        path = root / f"{video}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_video(path, 45, 15.0, (64, 48))
        for k in range(2):
            rows["clip"].append(f"{n}-{k}")
            rows["video"].append(video)
            rows["t0"].append(0.2 + k)
            rows["t1"].append(1.2 + k)
    pl.DataFrame(rows).write_csv(root / "clips.csv")
    return root


MAPPING = {"segment_id": "clip", "video_id": "video", "start_sec": "t0", "end_sec": "t1"}


def extract_args(root: Path, store: Path, *extra: str) -> list[str]:
    return ["extract", "--annotations", str(root / "clips.csv"), "--dataset", "generic",
            "--mapping", json.dumps(MAPPING), "--split", "val", "--layout", "flat",
            "--videos", str(root), "--store", str(store), "--frames", "2", "--workers", "0",
            "--no-text", "--json", *extra]


def test_plan_parts_names_every_part_validly(videos):
    options = ExtractConfig(annotations=[videos / "clips.csv"], videos=videos, store=Path("unused"),
                             dataset="generic", mapping=MAPPING, split="val", layout="flat", frames=2)
    plan = plan_videos(load_annotations(options)[0], build_sampler(options))
    parts = plan_parts(plan, {"s": set()}, videos_per_part=1)
    assert len(parts) == 3 and len({p.part_id for p in parts}) == 3
    for part in parts:
        assert check_part_id(part.part_id) == part.part_id
        assert part.part_id.startswith(safe_part_id(part.videos[0].video_id).rsplit("-", 1)[0])


def assert_every_segment_has_its_row(store: Path) -> None:
    rows = FeatureStore.open(store).stream("tiny/full").manifest().collect()
    assert sorted(rows["segment_id"]) == [f"{n}-{k}" for n in range(3) for k in range(2)]
    assert (rows["status"] == STATUS_OK).all(), rows.filter(pl.col("status") != STATUS_OK)["error"].to_list()
    assert sorted(set(rows["video_id"])) == sorted(ODD_IDS)


def test_serial_extraction_of_odd_video_ids(videos, tmp_path):
    result = CliRunner().invoke(app, extract_args(videos, tmp_path / "store"))
    assert result.exit_code == 0, result.output
    assert_every_segment_has_its_row(tmp_path / "store")


@pytest.mark.slow
def test_dask_extraction_of_odd_video_ids(videos, tmp_path):
    result = CliRunner().invoke(app, extract_args(videos, tmp_path / "store", "--executor", "dask",
                                                  "--dask-workers", "1"))
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    assert summary["failed_parts"] == [] and summary["done_parts"] == 3
    assert_every_segment_has_its_row(tmp_path / "store")


@pytest.mark.slow
def test_torchrun_extraction_of_odd_video_ids(videos, tmp_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "egofeat", *extract_args(videos, tmp_path / "store", "--executor", "torchrun")]
    result = subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_every_segment_has_its_row(tmp_path / "store")
