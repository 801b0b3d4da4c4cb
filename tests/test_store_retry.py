"""A committed part replaced by a retry: new rows in, the other rows kept byte for byte, readers safe."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import numpy as np
import polars as pl
import pytest

from egofeat.store import FeatureStore, PartAlreadyCommittedError, is_retryable
from egofeat.store import stream as stream_module
from egofeat.store.crashpoints import CRASH_AT_ENV

DIM = 4


@pytest.fixture
def stream(tmp_path):
    store = FeatureStore.create(tmp_path / "store")
    stream = store.create_stream("s/full", dim=DIM, provenance={}, frames_per_row=2)
    with stream.part_writer("p") as writer:
        writer.add("a", "v", np.full((2, DIM), 1.5))
        writer.add_error("b", "w", "video file w.mp4 does not exist", reason="missing-video")
        writer.add("c", "v", np.arange(2 * DIM).reshape(2, DIM) / 7, frame_times=[0.5, 1.5], boxes=[[0, 0, 1, 1]] * 2)
        writer.add_error("d", "v", "segment d needs a frame past the end", reason="past-end")
    return stream


def rows(stream) -> pl.DataFrame:
    return stream.manifest().collect().sort("row")


def test_error_rows_record_their_reason_and_whether_a_retry_can_help(stream):
    errors = rows(stream).filter(pl.col("status") == "error")
    assert errors.select("segment_id", "error_reason", "retryable").rows() == [
        ("b", "missing-video", True), ("d", "past-end", False)]
    assert rows(stream).filter(pl.col("status") == "ok")["retryable"].is_null().all()
    assert is_retryable("unreadable-video") and is_retryable(None) and not is_retryable("non-finite-features")
    assert stream.summary()["error_reasons"] == {"missing-video": {"rows": 1, "retryable": 1},
                                                 "past-end": {"rows": 1, "retryable": 0}}


def test_a_retry_replaces_the_rows_it_redoes_and_keeps_the_others_byte_for_byte(stream):
    before, loaded = rows(stream), stream.load()
    old = stream.commit_record("p")
    stream.consolidate()  # a consolidated manifest of the old attempt must not be read afterwards
    with stream.part_writer("p", replacing=old["attempt"]) as writer:
        writer.add("b", "w", np.full((2, DIM), -2.0), frame_times=[3.0, 4.0])
    after = rows(stream)
    record = stream.commit_record("p")
    assert record["attempt"] != old["attempt"] and record["replaced"] == [old["attempt"]]
    assert (record["rows"], record["ok"], record["errors"]) == (4, 3, 1)
    # the same rows in the same order, one per segment; b is ok now
    assert after["segment_id"].to_list() == ["a", "b", "c", "d"]
    assert after.filter(pl.col("segment_id") == "b")["status"].item() == "ok"
    kept = ["segment_id", "video_id", "n_frames", "frame_times", "boxes", "status", "error", "error_reason", "retryable"]
    for sid in ("a", "c", "d"):
        assert after.filter(pl.col("segment_id") == sid).select(kept).equals(
            before.filter(pl.col("segment_id") == sid).select(kept)), sid
    reloaded = stream.load()
    for sid in ("a", "c"):
        old_row = loaded.features[list(loaded.segment_ids).index(sid)]
        new_row = reloaded.features[list(reloaded.segment_ids).index(sid)]
        assert old_row.tobytes() == new_row.tobytes()
    assert reloaded.segment_ids.tolist() == ["a", "b", "c"]
    np.testing.assert_array_equal(reloaded.features[1], np.full((2, DIM), -2.0, np.float16))


def test_a_retry_of_an_attempt_already_replaced_is_refused(stream):
    old = stream.commit_record("p")["attempt"]
    first, second = stream.part_writer("p", replacing=old), stream.part_writer("p", replacing=old)
    first.add("b", "w", np.ones((2, DIM)))
    first.commit()
    second.add("b", "w", np.zeros((2, DIM)))
    with pytest.raises(PartAlreadyCommittedError):
        second.commit()
    with pytest.raises(PartAlreadyCommittedError):
        stream.part_writer("p", replacing=old)
    assert stream.load(["b"]).features.ravel().tolist() == [1.0] * 2 * DIM
    assert stream.uncommitted_attempts() == []  # the loser's attempt was discarded


def test_readers_of_the_old_record_still_read_it_until_the_grace_ends(stream, monkeypatch):
    snapshot = stream.committed_parts()  # a reader listed the records, then a retry commits
    old = snapshot["p"]["attempt"]
    with stream.part_writer("p", replacing=old) as writer:
        writer.add("b", "w", np.ones((2, DIM)))
    assert stream._manifest_of(snapshot).collect()["attempt"].unique().to_list() == [old]
    assert stream.cleanup() == 0 and stream.replaced_attempts() == [("p", old)]
    assert stream.uncommitted_attempts() == []
    monkeypatch.setattr(stream_module, "REPLACED_GRACE_S", 0.0)
    assert stream.cleanup() == 1 and stream.replaced_attempts() == []
    assert rows(stream)["status"].to_list() == ["ok", "ok", "ok", "error"]


RETRY = """
import sys
import numpy as np
from egofeat.store import FeatureStore
stream = FeatureStore.open(sys.argv[1]).stream("s/full")
with stream.part_writer("p", replacing=sys.argv[2]) as writer:
    writer.add("b", "w", np.ones((2, 4)))
"""


@pytest.mark.parametrize("point", ["before_commit:1", "replace:1", "after_commit:1"])
def test_a_retry_killed_anywhere_leaves_the_part_whole_and_the_next_cleanup_tidy(stream, point):
    root, old = stream.fs.root, stream.commit_record("p")["attempt"]
    before = rows(stream)
    killed = subprocess.run([sys.executable, "-c", RETRY, root, old], env={**os.environ, CRASH_AT_ENV: point},
                            capture_output=True, text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    fresh = FeatureStore.open(root).stream("s/full")
    after = rows(fresh)
    if point == "after_commit:1":  # the record was replaced: the retry happened
        assert after.filter(pl.col("segment_id") == "b")["status"].item() == "ok"
        assert fresh.replaced_attempts() == [("p", old)]
    else:  # the old record stands, whole
        assert after.equals(before) and fresh.commit_record("p")["attempt"] == old
        assert len(fresh.uncommitted_attempts()) == 1
        fresh.cleanup()
        assert fresh.uncommitted_attempts() == []
        assert not [n for n in os.listdir(fresh.paths.commits) if ".tmp-" in n]
