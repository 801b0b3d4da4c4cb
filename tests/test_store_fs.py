"""The store's filesystem layer: temporaries only dead writers' cleanup removes, listings that
never trip over a file being written."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import numpy as np

from egofeat.store import FeatureStore
from egofeat.store.fs import EMPTY_TEMP_GRACE_S, StoreFS, is_temporary
from egofeat.store.stream import remove_stale_temporaries

HEX = "0123456789abcdef" * 2


def test_temporary_names():
    assert is_temporary(f".stream.json.tmp-{HEX}") and is_temporary(f"stream.json.tmp-{HEX}")
    # finished files never look like temporaries, whatever their part id or stream name
    for name in ("x.tmp-1.json", f"x.tmp-{HEX}.json", f"x.tmp-{HEX}.lock", "manifest-ab.parquet", ".tmp-"):
        assert not is_temporary(name), name


def test_cleanup_removes_dead_writers_temporaries_only(tmp_path):
    store = FeatureStore.create(tmp_path / "s")
    stream = store.create_stream("a/b", dim=2, provenance={}, frames_per_row=1)
    with stream.part_writer(f"v.tmp-{HEX}") as writer:  # a part id that contains ".tmp-"
        writer.add("s", "v", np.ones(2, np.float16))
    root = tmp_path / "s"
    dead = [root / f".egofeat-store.json.tmp-{HEX}", root / "segments" / f".x.parquet.tmp-{HEX}",
            root / "streams" / "a" / "b" / "commits" / f".p.json.tmp-{HEX}",
            root / "streams" / "a" / "b" / f"plan.json.tmp-{HEX}",  # from an older egofeat
            root / "streams" / "c" / "d" / f".stream.json.tmp-{HEX}"]  # a stream never created
    for path in dead:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"{}")
    young_empty = root / "streams" / "a" / "b" / f".consolidated.json.tmp-{'1' * 32}"
    old_empty = root / "streams" / "a" / "b" / f".consolidated.json.tmp-{'2' * 32}"
    young_empty.touch()
    old_empty.touch()
    past = time.time() - 2 * EMPTY_TEMP_GRACE_S
    os.utime(old_empty, (past, past))

    # a live writer's temporary: locked by another process
    live = root / "streams" / "a" / "b" / f".stream.json.tmp-{'3' * 32}"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import fcntl, os, sys, time
        fd = os.open({str(live)!r}, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, b"half")
        print("locked", flush=True)
        time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert stream.cleanup() == len(dead) + 1  # the old empty one too
        assert live.exists() and young_empty.exists()
        assert not any(p.exists() for p in [*dead, old_empty])
    finally:
        holder.kill()
        holder.wait()
    assert remove_stale_temporaries(stream.fs) == 1  # the killed holder's, now unlocked
    assert not live.exists()
    assert sorted(stream.committed_parts()) == [f"v.tmp-{HEX}"]  # finished files stay
    assert len(stream.load()) == 1


def test_readers_skip_files_where_folders_are_expected(tmp_path):
    """A stream being created (only its stream.json's temporary exists) is not a stream yet."""
    store = FeatureStore.create(tmp_path / "s")
    store.create_stream("a/full", dim=2, provenance={}, frames_per_row=1)
    half = tmp_path / "s" / "streams" / "new" / "full"
    half.mkdir(parents=True)
    (half / f".stream.json.tmp-{HEX}").write_text("{")
    (half / f"stream.json.tmp-{HEX}").write_text("{")  # the name older egofeat used
    (tmp_path / "s" / "streams" / "a" / "full" / "parts").mkdir()
    (tmp_path / "s" / "streams" / "a" / "full" / "parts" / "stray-file").write_text("")
    assert store.stream_names() == ["a/full"]
    assert store.stream("a/full").uncommitted_attempts() == []
    assert [s["name"] for s in store.info()["streams"]] == ["a/full"]


def test_write_bytes_is_atomic_and_leaves_nothing_behind(tmp_path):
    fs = StoreFS(tmp_path)
    fs.write_bytes(fs.path("f.json"), b"one")
    fs.write_bytes(fs.path("f.json"), b"two")
    assert fs.read_bytes(fs.path("f.json")) == b"two"
    assert fs.create_exclusive(fs.path("g.json"), b"a") and not fs.create_exclusive(fs.path("g.json"), b"b")
    assert sorted(os.listdir(tmp_path)) == ["f.json", "g.json"]
    assert fs.listdir(fs.path("f.json")) == [] and fs.listdir(fs.path("nowhere")) == []
