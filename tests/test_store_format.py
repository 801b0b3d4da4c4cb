"""docs/FORMAT.md is true: its recipe, as written there, reads a store with zarr + polars alone."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl

from egofeat.store import FeatureStore

FORMAT_DOC = Path(__file__).resolve().parents[1] / "docs" / "FORMAT.md"

#: Appended to the recipe: what it read, as JSON, and proof that egofeat was never imported.
REPORT = """
import sys as _sys
assert "egofeat" not in _sys.modules
print(json.dumps({"ids": manifest["segment_id"].to_list(), "features": features.astype(float).tolist(),
                  "segments": sorted(segments["segment_id"].to_list())}))
"""


def recipe(store: str, name: str) -> str:
    """The reading recipe of docs/FORMAT.md, for ``store`` and stream ``name``."""
    text = FORMAT_DOC.read_text()
    block = text.split("<!-- recipe:read -->", 1)[1].split("<!-- /recipe:read -->", 1)[0]
    code = block.strip().removeprefix("```python").removesuffix("```")
    code, n_store = re.subn(r"^STORE = .*$", f"STORE = {store!r}", code, count=1, flags=re.M)
    code, n_name = re.subn(r"^NAME = .*$", f"NAME = {name!r}", code, count=1, flags=re.M)
    assert n_store == n_name == 1, "the recipe must set STORE and NAME on lines of their own"
    return code


def run_recipe(store: str, name: str, env: dict[str, str] | None = None) -> dict:
    """Run the recipe in a fresh interpreter; what it read."""
    out = subprocess.run([sys.executable, "-c", recipe(store, name) + REPORT], capture_output=True,
                         text=True, env={**os.environ, **(env or {})}, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def write_example(root: str) -> dict[str, np.ndarray]:
    """A store with two committed parts (one with an error row) and an abandoned attempt."""
    store = FeatureStore.create(root)
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
    return expected


def check_example(result: dict, expected: dict[str, np.ndarray]) -> None:
    assert result["ids"] == ["a", "b", "c"]
    assert result["segments"] == ["a", "b", "c"]
    for sid, feats in zip(result["ids"], result["features"], strict=True):
        np.testing.assert_array_equal(np.asarray(feats, dtype=np.float16), expected[sid])


def test_format_doc_recipe_reads_store_without_egofeat(tmp_path):
    expected = write_example(str(tmp_path / "STORE"))
    check_example(run_recipe(str(tmp_path / "STORE"), "clip-vit-b16/full"), expected)
    # the same through a file:// URL
    check_example(run_recipe(f"file://{tmp_path / 'STORE'}", "clip-vit-b16/full"), expected)


def test_format_doc_recipe_reads_an_empty_stream(tmp_path):
    store = FeatureStore.create(tmp_path / "STORE")
    store.create_stream("s", dim=3, provenance={}, frames_per_row=2)
    result = run_recipe(str(tmp_path / "STORE"), "s")
    assert result == {"ids": [], "features": [], "segments": []}


def test_recipe_ignores_temporaries_of_killed_writers(tmp_path):
    expected = write_example(str(tmp_path / "STORE"))
    stream = tmp_path / "STORE" / "streams" / "clip-vit-b16" / "full"
    hexes = "0" * 32
    for folder, name in [(stream / "commits", f".part-q.json.tmp-{hexes}"),  # a commit being linked
                         (stream / "commits", f"part-q.json.tmp-{hexes}"),  # the same, older egofeat
                         (tmp_path / "STORE" / "segments", f".x.parquet.tmp-{hexes}")]:
        (folder / name).write_text('{"part_id": "part-q", "attempt": "none"}')
    check_example(run_recipe(str(tmp_path / "STORE"), "clip-vit-b16/full"), expected)
