"""Stores in object storage: a bucket on a local S3 server (moto in server mode, see conftest.py).

A writer process killed with SIGKILL in the middle of a part, then run again, leaves the bucket
equal to a clean write to a local folder; the FORMAT.md recipe reads it back with zarr + polars.
"""

from __future__ import annotations

import signal

import fsspec
import numpy as np
import pytest
import store_writer
from test_store_concurrency import assert_same_store, run_writer
from test_store_format import run_recipe

from egofeat.pipelines.inspect import store_info
from egofeat.store import FeatureStore, PartAlreadyCommittedError
from egofeat.store.fs import StoreFS

N_PARTS = 4


def test_killed_writer_then_rerun_equals_a_clean_local_write(s3_bucket, s3_env, tmp_path):
    url = f"{s3_bucket}/store"
    # part p002 of a/full (the 3rd commit): features and manifest uploaded, no commit record
    crashed = run_writer(url, N_PARTS, crash_at="before_commit:3")
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    stream = FeatureStore.open(url).stream("a/full")
    assert sorted(stream.committed_parts()) == ["p000", "p001"]
    assert [pid for pid, _ in stream.uncommitted_attempts()] == ["p002"]
    info = store_info(url)  # a reader of the bucket works after the kill
    assert [s["committed_parts"] for s in info["streams"]] == [2, 0]  # b/x was just created

    rerun = run_writer(url, N_PARTS)
    assert rerun.returncode == 0, rerun.stderr
    local = tmp_path / "local"
    assert run_writer(local, N_PARTS).returncode == 0
    assert_same_store(url, local)
    # zarr reads the bucket's arrays too (compressed streams and to_dask go that way)
    np.testing.assert_array_equal(FeatureStore.open(url).stream("b/x").to_dask().compute(),
                                  FeatureStore.open(local).stream("b/x").load().features)

    # zarr + polars alone, from the bucket, credentials and endpoint from the environment
    remote = run_recipe(url, "a/full", env=s3_env)
    assert remote == run_recipe(str(local), "a/full")
    assert len(remote["ids"]) == store_writer.ROWS * N_PARTS
    for sid, row in zip(remote["ids"], remote["features"], strict=True):
        np.testing.assert_array_equal(np.asarray(row, np.float16), store_writer.expected(sid))


def test_commits_in_a_bucket_are_exclusive(s3_bucket):
    fs = StoreFS(f"{s3_bucket}/x")
    assert fs.create_exclusive(fs.path("record.json"), b"first")
    assert not fs.create_exclusive(fs.path("record.json"), b"second")  # a conditional put
    assert fs.read_bytes(fs.path("record.json")) == b"first"
    with pytest.raises(FileExistsError):  # the server enforces it: If-None-Match, not a check first
        fs.fs.pipe_file(fs.path("record.json"), b"third", mode="create")
    stream = FeatureStore.create(f"{s3_bucket}/store").create_stream("s", dim=4, provenance={}, frames_per_row=1)
    first, second = stream.part_writer("p"), stream.part_writer("p")
    first.add("a", "v", np.ones(4, np.float16))
    second.add("a", "v", np.zeros(4, np.float16))
    second._write_features()
    first.commit()
    with pytest.raises(PartAlreadyCommittedError):
        second.commit()
    assert stream.load().features.ravel().tolist() == [1, 1, 1, 1]
    assert stream.uncommitted_attempts() == []


def test_a_store_url_through_file_and_listings_stay_fresh(s3_bucket, tmp_path):
    # file:// URLs are local stores (atomic renames, leases)
    local = FeatureStore.create(f"file://{tmp_path / 'store'}")
    assert local.fs.is_local and local.path == str(tmp_path / "store")
    # a reader that listed the bucket before a write sees the write (no stale listing cache)
    url = f"{s3_bucket}/store"
    reader = FeatureStore.create(url)
    assert reader.stream_names() == []
    stream = FeatureStore.open(url).create_stream("late", dim=2, provenance={}, frames_per_row=1)
    assert reader.stream_names() == ["late"]
    with stream.part_writer("p") as writer:
        writer.add("a", "v", np.ones(2, np.float16))
    assert sorted(reader.stream("late").committed_parts()) == ["p"]
    assert fsspec.filesystem("s3").exists(f"{url}/streams/late/commits/p.json")
