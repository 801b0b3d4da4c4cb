"""`egofeat info / query / export` on a small store."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from egofeat.cli import app
from egofeat.store import FeatureStore

runner = CliRunner()


@pytest.fixture
def store_path(tmp_path):
    store = FeatureStore.create(tmp_path / "store")
    store.add_segments(pl.DataFrame({"dataset": ["d"] * 3, "split": ["train", "train", "val"],
                                     "segment_id": ["a", "b", "c"], "video_id": ["v", "v", "w"]}))
    stream = store.create_stream("clip/full", dim=4, provenance={"encoder": "tiny"}, frames_per_row=2)
    with stream.part_writer("p") as writer:
        writer.add("b", "v", np.full((2, 4), 2.0))
        writer.add("a", "v", np.full((2, 4), 1.0))
        writer.add_error("c", "w", "truncated file w.mp4")
    return tmp_path / "store"


def test_info_json(store_path):
    result = runner.invoke(app, ["info", str(store_path), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["segments"] == 3
    (stream,) = data["streams"]
    assert (stream["name"], stream["ok"], stream["errors"], stream["frames_per_row"]) == ("clip/full", 2, 1, 2)
    assert stream["provenance"]["encoder"] == "tiny"


def test_info_table(store_path):
    result = runner.invoke(app, ["info", str(store_path)])
    assert result.exit_code == 0 and "clip/full" in result.output


def test_query_json(store_path):
    sql = "SELECT m.status, s.split FROM manifest m JOIN segments s ON m.segment_id = s.segment_id ORDER BY s.split"
    result = runner.invoke(app, ["query", str(store_path), sql, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == [{"status": "ok", "split": "train"}, {"status": "ok", "split": "train"},
                                         {"status": "error", "split": "val"}]


def test_export_npy_in_segment_order(store_path, tmp_path):
    out = tmp_path / "out" / "full.npy"
    result = runner.invoke(app, ["export", str(store_path), "--stream", "clip/full", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.with_suffix(".segment_ids.txt").read_text().split() == ["a", "b"]
    np.testing.assert_array_equal(np.load(out)[:, 0, 0], [1.0, 2.0])


def test_export_parquet(store_path, tmp_path):
    out = tmp_path / "full.parquet"
    assert runner.invoke(app, ["export", str(store_path), "--stream", "clip/full", "--out", str(out)]).exit_code == 0
    table = pq.read_table(out)
    assert table.column("segment_id").to_pylist() == ["a", "b"]
    assert table.schema.metadata[b"frames"] == b"2"
    assert len(table.column("features")[0]) == 8


def test_user_errors_are_one_line_exit_2(store_path, tmp_path):
    result = runner.invoke(app, ["info", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "no egofeat store" in result.output
    result = runner.invoke(app, ["export", str(store_path), "--stream", "nope", "--out", str(tmp_path / "x.npy")])
    assert result.exit_code == 2 and "clip/full" in result.output
    result = runner.invoke(app, ["export", str(store_path), "--stream", "clip/full", "--out", str(tmp_path / "x.csv")])
    assert result.exit_code == 2 and ".npy or .parquet" in result.output
