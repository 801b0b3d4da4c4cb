"""Fatal store conditions: a full disk, a read-only or permission-denied store, a newer format.

Each is one StoreError line naming the store and what to do, raised before anything is
committed half-way: parts committed before stay intact, the failed attempt is removed or
invisible, and once the condition is gone a rerun completes the store.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

import egofeat.store.fs as store_fs
from egofeat.cli import app
from egofeat.store import (
    FeatureStore,
    StoreAccessError,
    StoreFullError,
    StorePermissionError,
    StoreReadOnlyError,
    StoreVersionError,
)
from egofeat.store.fs import TEMP_MARK

PROV = {"encoder": "tiny"}


def feats(seed: int, n: int = 64) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((4, n)).astype(np.float16)


def write_part(stream, part_id: str, seed: int) -> None:
    with stream.part_writer(part_id) as writer:
        writer.add(f"{part_id}-ok", "v", feats(seed))
        writer.add_error(f"{part_id}-bad", "v", "decode failed")


@pytest.fixture
def store(tmp_path):
    store = FeatureStore.create(tmp_path / "store")
    store.add_segments(pl.DataFrame({"dataset": ["d"], "split": ["s"], "segment_id": ["x"], "video_id": ["v"]}))
    write_part(store.create_stream("a", dim=64, provenance=PROV, frames_per_row=4), "p0", 0)
    return store


class Disk:
    """Makes store writes fail with ``code`` (at the fs layer): every write after the first
    ``allowed`` ones, or every write once ``full()`` says so."""

    def __init__(self, monkeypatch, code: int, allowed: int = 0, full=None) -> None:
        self.calls, self.code, self.allowed = 0, code, allowed
        real = store_fs._write_all

        def write_all(fd, data):
            self.calls += 1
            if (self.calls > self.allowed) if full is None else full():
                raise OSError(self.code, os.strerror(self.code))
            real(fd, data)

        monkeypatch.setattr(store_fs, "_write_all", write_all)


def store_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def assert_one_line_naming(exc: BaseException, store, *words: str) -> None:
    message = str(exc)
    assert "\n" not in message and str(store.path) in message, message
    for word in words:
        assert word in message, message


def count_commit_writes(tmp_path) -> int:
    stream = FeatureStore.create(tmp_path / "count").create_stream("a", dim=64, provenance=PROV, frames_per_row=4)
    before = {"n": 0}
    real = store_fs._write_all

    def counting(fd, data):
        before["n"] += 1
        real(fd, data)

    store_fs._write_all = counting
    try:
        write_part(stream, "p1", 1)
    finally:
        store_fs._write_all = real
    return before["n"]


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_disk_full_at_every_write_of_a_commit(store, tmp_path, monkeypatch, code):
    stream = store.stream("a")
    n_writes = count_commit_writes(tmp_path)  # feature chunk, zarr.json, manifest, commit record
    assert n_writes >= 4
    for allowed in range(n_writes):
        with monkeypatch.context() as patch:
            Disk(patch, code, allowed)
            with pytest.raises(StoreFullError) as caught:
                write_part(stream, "p1", 1)
        assert_one_line_naming(caught.value, store, "no space left", "free space", "intact")
        assert sorted(stream.committed_parts()) == ["p0"]  # nothing committed half-way
        assert stream.uncommitted_attempts() == []  # the attempt was removed
        assert not [f for f in store_files(Path(store.path)) if TEMP_MARK in f]
        np.testing.assert_array_equal(stream.load().features[0], feats(0))
    write_part(stream, "p1", 1)  # space again: the write goes through
    assert sorted(stream.committed_parts()) == ["p0", "p1"]


def test_disk_full_for_every_kind_of_store_file(store, monkeypatch):
    stream = store.stream("a")
    before = store_files(Path(store.path))
    Disk(monkeypatch, errno.ENOSPC)
    writes = [
        lambda: store.add_segments(pl.DataFrame({"dataset": ["d"], "split": ["s"], "segment_id": ["y"],
                                                 "video_id": ["v"]})),
        lambda: store.create_stream("b", dim=8, provenance=PROV),
        stream.consolidate,
        lambda: stream.record_plan(["p0"], plan_key="k", run_id="r"),
        lambda: FeatureStore.create(Path(store.path).parent / "other"),
    ]
    for write in writes:
        with pytest.raises(StoreFullError, match="no space left for store"):
            write()
    assert store_files(Path(store.path)) == before


def test_read_only_filesystem(store, monkeypatch):
    Disk(monkeypatch, errno.EROFS)
    with pytest.raises(StoreReadOnlyError) as caught:
        write_part(store.stream("a"), "p1", 1)
    assert_one_line_naming(caught.value, store, "read-only filesystem", "remount")
    assert isinstance(caught.value, StoreAccessError)
    assert sorted(store.stream("a").committed_parts()) == ["p0"]


def test_extract_stops_on_a_full_disk_in_one_line_and_a_rerun_completes(tmp_path, monkeypatch):
    from egofeat.extract.synthetic import write_synthetic_dataset

    data = write_synthetic_dataset(tmp_path / "data", n_videos=3, segments_per_video=2)
    root = tmp_path / "store"
    args = ["extract", "--annotations", str(data.annotations_dir / "EPIC_100_train.csv"),
            "--videos", str(data.videos_root), "--store", str(root), "--frames", "2", "--workers", "0",
            "--no-text", "--json"]
    commits = root / "streams" / "tiny" / "full" / "commits"
    with monkeypatch.context() as patch:
        Disk(patch, errno.ENOSPC, full=lambda: any(commits.glob("*.json")))  # full after one part
        result = CliRunner(env={"COLUMNS": "1000"}).invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and result.stdout == ""  # stderr: JSON progress lines, the error
    lines = [line for line in result.output.strip().splitlines() if not line.startswith('{"what": ')]
    assert len(lines) == 1 and "no space left for store" in lines[0] and str(root) in lines[0], lines
    stream = FeatureStore.open(root).stream("tiny/full")
    assert len(stream.committed_parts()) == 1 and len(stream.load()) == 2
    result = CliRunner().invoke(app, args)  # space again
    assert result.exit_code == 0, result.output
    assert len(FeatureStore.open(root).stream("tiny/full").committed_parts()) == 2
    assert not [f for f in store_files(root) if TEMP_MARK in f]


# ---- real permissions ---------------------------------------------------------------------------

PROBE = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from egofeat.store import FeatureStore, StoreError
    import polars as pl
    root = sys.argv[1]
    out = {}
    store = FeatureStore.open(root)
    stream = store.stream("a")
    out["read"] = [len(stream.load()), store.info()["streams"][0]["committed_parts"]]
    def attempt(name, fn):
        try:
            fn()
            out[name] = None
        except StoreError as exc:
            out[name] = [type(exc).__name__, str(exc)]
    def write():
        with stream.part_writer("p1") as writer:
            writer.add("s", "v", np.zeros((4, 64), np.float16))
    attempt("cleanup", stream.cleanup)
    attempt("claim", lambda: stream.claim("p1"))
    attempt("commit", write)
    attempt("stream", lambda: store.create_stream("b", dim=8, provenance={}))
    attempt("segments", lambda: store.add_segments(pl.DataFrame(
        {"dataset": ["d"], "split": ["s"], "segment_id": ["z"], "video_id": ["v"]})))
    attempt("consolidate", stream.consolidate)
    print(json.dumps(out))
    """
)


def unprivileged(command: list[str]) -> list[str]:
    """``command`` run so that file permissions apply to it (root ignores them)."""
    if os.geteuid() != 0:
        return command
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: cannot drop the capability to ignore permissions")
    drop = "-dac_override,-dac_read_search,-fowner"
    return [setpriv, f"--bounding-set={drop}", f"--inh-caps={drop}", *command]


def chmod_tree(root: Path, writable: bool) -> None:
    for path in [root, *root.rglob("*")]:
        mode = path.stat().st_mode
        bits = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH
        path.chmod(mode | stat.S_IWUSR if writable else mode & ~bits)


def test_permission_denied_store_reads_but_refuses_writes_in_one_line(store):
    root = Path(store.path)
    abandoned = store.stream("a").part_writer("p9")  # a killed writer's attempt, for cleanup to remove
    abandoned.add("s9", "v", feats(9))
    abandoned._write_features()
    before = store_files(root)
    chmod_tree(root, writable=False)
    try:
        result = subprocess.run(unprivileged([sys.executable, "-c", PROBE, str(root)]),
                                capture_output=True, text=True, timeout=120)
    finally:
        chmod_tree(root, writable=True)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out.pop("read") == [1, 1]  # reading a read-only store works
    for name, error in out.items():
        assert error is not None, f"{name} wrote to a read-only store"
        kind, message = error
        assert kind == StorePermissionError.__name__, (name, error)
        assert "\n" not in message and str(root) in message and "permission denied" in message
        assert "make the store writable" in message, message
    assert store_files(root) == before
    # writable again: the same store takes the part
    write_part(FeatureStore.open(root).stream("a"), "p1", 1)


# ---- format versions -----------------------------------------------------------------------------


def test_a_newer_store_format_is_refused_before_anything_is_written(store):
    root = Path(store.path)
    marker = root / "egofeat-store.json"
    meta = json.loads(marker.read_text())
    marker.write_text(json.dumps({**meta, "format_version": meta["format_version"] + 1}))
    before = store_files(root)
    for action in (lambda: FeatureStore.open(root), lambda: FeatureStore.create(root),
                   lambda: FeatureStore.open(root, create=True)):
        with pytest.raises(StoreVersionError) as caught:
            action()
        assert_one_line_naming(caught.value, store, "format version 2", "upgrade egofeat")
    result = CliRunner(env={"COLUMNS": "1000"}).invoke(app, ["info", str(root)])
    assert result.exit_code == 2 and "upgrade egofeat" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert store_files(root) == before


def test_a_newer_stream_format_is_refused(store):
    path = Path(store.path) / "streams" / "a" / "stream.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "format_version": 99}))
    with pytest.raises(StoreVersionError, match="stream 'a' .* format version 99"):
        store.stream("a")
    with pytest.raises(StoreVersionError):
        store.create_stream("a", dim=64, provenance=PROV, frames_per_row=4)
