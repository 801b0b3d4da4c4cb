"""docs/FORMAT.md is true: zarr + polars alone read a store written by egofeat."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import polars as pl

from egofeat.store import FeatureStore


def test_format_doc_recipe_reads_store_without_egofeat(tmp_path):
    store = FeatureStore.create(tmp_path / "STORE")
    store.add_segments(pl.DataFrame({"dataset": ["d"] * 3, "split": ["val"] * 3,
                                     "segment_id": ["a", "b", "c"], "video_id": ["v", "v", "w"]}))
    stream = store.create_stream("clip-vit-b16/full", dim=6, provenance={"encoder": "x"}, frames_per_row=2)
    rng = np.random.default_rng(0)
    expected = {s: rng.standard_normal((2, 6)).astype(np.float16) for s in "abc"}
    with stream.part_writer("part-v") as writer:
        writer.add("a", "v", expected["a"])
        writer.add_error("x", "v", "broken")
        writer.add("b", "v", expected["b"])
    with stream.part_writer("part-w") as writer:
        writer.add("c", "w", expected["c"])
    abandoned = stream.part_writer("part-z")  # never committed: must stay invisible
    abandoned.add("z", "w", expected["c"])
    abandoned._write_features()

    script = textwrap.dedent(
        f"""
        import json, pathlib, sys, numpy as np, polars as pl, zarr
        root = pathlib.Path({str(tmp_path / "STORE")!r})
        stream = root / "streams" / "clip-vit-b16" / "full"
        info = json.loads((stream / "stream.json").read_text())
        rows, feats = [], []
        for record_file in sorted((stream / "commits").glob("*.json")):
            record = json.loads(record_file.read_text())
            part = stream / "parts" / record["part_id"] / record["attempt"]
            manifest = pl.read_parquet(part / "manifest.parquet").filter(pl.col("status") == "ok")
            array = zarr.open_array(str(part / "features.zarr"), mode="r")
            rows.append(manifest)
            feats.append(array[:].reshape(manifest.height, info["frames_per_row"], info["dim"]))
        manifest = pl.concat(rows, how="diagonal_relaxed")
        features = np.concatenate(feats)
        segments = pl.concat([pl.read_parquet(p) for p in (root / "segments").glob("*.parquet")],
                             how="diagonal_relaxed")
        assert "egofeat" not in sys.modules
        print(json.dumps({{"ids": manifest["segment_id"].to_list(), "features": features.astype(float).tolist(),
                          "segments": sorted(segments["segment_id"].to_list())}}))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout)
    assert result["ids"] == ["a", "b", "c"]
    assert result["segments"] == ["a", "b", "c"]
    for sid, feats in zip(result["ids"], result["features"], strict=True):
        np.testing.assert_array_equal(np.asarray(feats, dtype=np.float16), expected[sid])
