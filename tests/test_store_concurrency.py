"""Readers during writes, and kills at every crash point of a write.

A real writer process (tests/store_writer.py) commits parts while readers poll the same store:
the Python API, `egofeat info` and the zarr + polars recipe of docs/FORMAT.md must never raise
and never see a part in part. Writers killed with SIGKILL at each crash point
(:mod:`egofeat.store.crashpoints`) leave a store that `egofeat info` reads, and the next run
finishes it equal to a clean run, with no temporary file left anywhere.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import store_writer
from test_store_format import recipe
from typer.testing import CliRunner

from egofeat.cli import app
from egofeat.pipelines.inspect import store_info
from egofeat.store import FeatureStore, StoreNotFoundError
from egofeat.store.crashpoints import CRASH_AT_ENV
from egofeat.store.fs import TEMP_MARK

WRITER = Path(store_writer.__file__)
TESTS = WRITER.parent


def run_writer(store: Path | str, n_parts: int, crash_at: str | None = None,
               delay: float = 0.0) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != CRASH_AT_ENV}
    if crash_at:
        env[CRASH_AT_ENV] = crash_at
    return subprocess.run([sys.executable, str(WRITER), str(store), str(n_parts), str(delay)],
                          env=env, capture_output=True, text=True, timeout=120)


def check_complete_parts(stream) -> int:
    """Every visible part of a stream is whole and right; returns how many there are.

    (Parts only ever appear, so each read sees at least the parts an earlier read saw.)
    """
    records = stream.committed_parts()
    manifest = stream.manifest().collect()
    counts = dict(manifest.group_by("part_id").len().iter_rows())
    assert set(records) <= set(counts), (sorted(records), counts)
    assert all(n == store_writer.ROWS + 1 for n in counts.values()), counts
    loaded = stream.load()
    assert len(loaded) % store_writer.ROWS == 0 and len(loaded) >= store_writer.ROWS * len(counts)
    for sid, features in zip(loaded.segment_ids, loaded.features, strict=True):
        np.testing.assert_array_equal(features, store_writer.expected(sid))
    return len(counts)


POLLER = """
import json, os, sys, time
sys.path.insert(0, {tests!r})
from store_writer import ROWS, expected
while not os.path.exists({stream_file!r}):
    time.sleep(0.005)
seen, polls = set(), 0
while not os.path.exists({stop!r}):
    scope = {{}}
    exec({recipe!r}, scope)
    manifest, features = scope["manifest"], scope["features"]
    assert features.shape[0] == manifest.height and manifest.height % ROWS == 0, manifest.height
    for sid, row in zip(manifest["segment_id"], features):
        assert (row == expected(sid)).all(), sid
    seen.add(manifest.height // ROWS)
    polls += 1
assert "egofeat" not in sys.modules
print(json.dumps({{"polls": polls, "parts_seen": sorted(seen)}}))
"""


def test_readers_poll_a_store_while_another_process_commits(tmp_path):
    root, stop, n_parts = tmp_path / "store", tmp_path / "stop", 24
    writer = subprocess.Popen([sys.executable, str(WRITER), str(root), str(n_parts), "0.03"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stream_file = root / "streams" / "a" / "full" / "stream.json"
    poller = subprocess.Popen(
        [sys.executable, "-c", POLLER.format(tests=str(TESTS), stream_file=str(stream_file), stop=str(stop),
                                             recipe=recipe(str(root), "a/full"))],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: dict[str, set[int]] = {name: set() for name in store_writer.STREAMS}
    polls = 0
    try:
        deadline = time.monotonic() + 120
        while writer.poll() is None and time.monotonic() < deadline:
            try:
                store = FeatureStore.open(root)
            except StoreNotFoundError:  # the writer has not created it yet
                continue
            for name in store.stream_names():
                seen[name].add(check_complete_parts(store.stream(name)))
            info = store_info(root)
            assert {s["name"] for s in info["streams"]} <= set(store_writer.STREAMS)
            assert all(s["errors"] == s["committed_parts"] for s in info["streams"])
            polls += 1
        out, err = writer.communicate(timeout=60)
        assert writer.returncode == 0, err
    finally:
        stop.touch()
        if writer.poll() is None:
            writer.kill()
        polled, poll_err = poller.communicate(timeout=120)
    assert poller.returncode == 0, poll_err
    report = json.loads(polled.strip().splitlines()[-1])
    # the readers did read while the writer was half-way: some polls saw some parts, not all
    assert any(0 < n < n_parts for n in seen["a/full"]), seen
    assert any(0 < n < n_parts for n in report["parts_seen"]), report
    assert polls > 3 and report["polls"] > 3
    final = FeatureStore.open(root)
    assert check_complete_parts(final.stream("a/full")) == n_parts
    assert check_complete_parts(final.stream("b/x")) == n_parts - n_parts // 2


# ---- kills ----------------------------------------------------------------------------------

N_PARTS = 4
#: (point, hit): with 4 parts, ``replace`` hits are 1 stream.json of a/full, 2 the segments of
#: part 0, 3 its consolidated manifest, 4 consolidated.json, 5 plan.json, 10 stream.json of b/x;
#: ``create_exclusive`` 1 is the store's marker, then commit records.
CRASHES = [("replace", n) for n in (1, 2, 3, 4, 5, 10)] + [
    ("create_exclusive", n) for n in (1, 2, 5)] + [
    ("before_commit", 1), ("before_commit", 6), ("after_commit", 1), ("after_commit", 6)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    store = tmp_path_factory.mktemp("reference") / "store"
    result = run_writer(store, N_PARTS)
    assert result.returncode == 0, result.stderr
    return store


def temporaries(root: Path) -> list[str]:
    return [str(p.relative_to(root)) for p in root.rglob("*") if TEMP_MARK in p.name]


def assert_same_store(root: Path | str, reference: Path) -> None:
    store, ref = FeatureStore.open(root), FeatureStore.open(reference)
    assert store.stream_names() == ref.stream_names()
    got, want = (s.segments().collect().sort("segment_id") for s in (store, ref))
    assert got.equals(want)
    for name in ref.stream_names():
        a, b = store.stream(name), ref.stream(name)
        assert a.manifest().collect().drop("attempt").sort("segment_id").equals(
            b.manifest().collect().drop("attempt").sort("segment_id")), name
        assert a.load().features.tobytes() == b.load().features.tobytes(), name
        assert a.uncommitted_attempts() == [], name


@pytest.mark.parametrize(("point", "hit"), CRASHES, ids=[f"{p}:{n}" for p, n in CRASHES])
def test_killed_writer_leaves_a_readable_store_the_next_run_finishes(tmp_path, reference, point, hit):
    root = tmp_path / "store"
    crashed = run_writer(root, N_PARTS, crash_at=f"{point}:{hit}")
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr

    result = CliRunner().invoke(app, ["info", str(root), "--json"])
    if (root / "egofeat-store.json").exists():
        assert result.exit_code == 0, result.output
        info = json.loads(result.stdout)
        for name in FeatureStore.open(root).stream_names():
            check_complete_parts(FeatureStore.open(root).stream(name))
        assert {s["name"] for s in info["streams"]} <= set(store_writer.STREAMS)
    else:  # killed creating the store: there is none yet, and info says so in one line
        assert result.exit_code == 2 and "no egofeat store" in result.output
        assert "Traceback" not in result.output

    rerun = run_writer(root, N_PARTS)
    assert rerun.returncode == 0, rerun.stderr
    assert temporaries(root) == []
    assert_same_store(root, reference)
