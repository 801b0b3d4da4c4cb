"""The feature store: round trips, atomic parts, provenance, segments, readers."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from egofeat.store import (
    FeatureStore,
    IncompatibleStreamError,
    PartAlreadyCommittedError,
    SegmentConflictError,
    StoreNotFoundError,
    StreamNotFoundError,
)

PROV = {"encoder": "tiny", "weights_sha256": "abc", "sampling": {"kind": "uniform", "frames": 4}}


def _segments(ids: list[str], video: str = "v1", split: str = "train") -> pl.DataFrame:
    return pl.DataFrame(
        {
            "dataset": ["toy"] * len(ids), "split": [split] * len(ids), "segment_id": ids,
            "video_id": [video] * len(ids), "verb_class": list(range(len(ids))),
        }
    )


@pytest.fixture
def store(tmp_path):
    return FeatureStore.create(tmp_path / "store")


def _feats(seed: int, n: int = 4, dim: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float16)


def test_round_trip_in_store_order_and_requested_order(store):
    stream = store.create_stream("tiny/full", dim=8, provenance=PROV, frames_per_row=4)
    expected = {f"s{i}": _feats(i) for i in range(6)}
    for part, ids in (("p0", ["s0", "s1", "s2"]), ("p1", ["s3", "s4", "s5"])):
        with stream.part_writer(part) as writer:
            for sid in ids:
                writer.add(sid, "v1", expected[sid], frame_times=[0.0, 0.5, 1.0, 1.5])
    loaded = stream.load()
    assert loaded.features.shape == (6, 4, 8)
    assert loaded.features.dtype == np.float16
    for sid, feats in zip(loaded.segment_ids, loaded.features, strict=True):
        np.testing.assert_array_equal(feats, expected[sid])
    subset = stream.load(["s4", "s0"])  # small subset: read row by row
    np.testing.assert_array_equal(subset.features[0], expected["s4"])
    everything = stream.read(["s5", "s4", "s3", "s2", "s1", "s0"])  # large: full load + reorder
    np.testing.assert_array_equal(everything[0], expected["s5"])
    assert stream.to_torch().shape == (6, 4, 8)
    np.testing.assert_array_equal(stream.to_dask().compute(), loaded.features)


def test_missing_ids_raise_naming_them(store):
    stream = store.create_stream("a", dim=8, provenance=PROV, frames_per_row=4)
    with stream.part_writer("p") as writer:
        writer.add("s0", "v", _feats(0))
        writer.add_error("s1", "v", "decode failed")
    with pytest.raises(KeyError, match="s1"):
        stream.load(["s0", "s1"])


def test_error_rows_are_manifest_rows_without_features(store):
    stream = store.create_stream("a", dim=8, provenance=PROV, frames_per_row=4)
    with stream.part_writer("p") as writer:
        writer.add("ok1", "v", _feats(0))
        writer.add_error("bad", "v", "zero-byte file v.mp4")
        writer.add("nan", "v", np.full((4, 8), np.nan, dtype=np.float32))
        writer.add("ok2", "v", _feats(1))
    manifest = stream.manifest().collect()
    assert manifest["status"].to_list() == ["ok", "error", "error", "ok"]
    assert manifest.filter(pl.col("segment_id") == "bad")["error"].item() == "zero-byte file v.mp4"
    assert "non-finite" in manifest.filter(pl.col("segment_id") == "nan")["error"].item()
    np.testing.assert_array_equal(stream.load().features[1], _feats(1))


def test_uncommitted_part_is_invisible_and_cleaned_up(store):
    stream = store.create_stream("a", dim=8, provenance=PROV, frames_per_row=4)
    with stream.part_writer("done") as writer:
        writer.add("s0", "v", _feats(0))
    abandoned = stream.part_writer("crashed")
    abandoned.add("s1", "v", _feats(1))
    # Simulate a crash between writing the data and committing it: files exist, no commit record.
    abandoned._write_features()
    assert stream.load().segment_ids.tolist() == ["s0"]
    assert stream.manifest().collect()["segment_id"].to_list() == ["s0"]
    assert [p for p, _ in stream.uncommitted_attempts()] == ["crashed"]
    assert stream.cleanup() == 1
    assert stream.uncommitted_attempts() == []
    # The crashed part is redone later.
    with stream.part_writer("crashed") as writer:
        writer.add("s1", "v", _feats(1))
    assert sorted(stream.load().segment_ids.tolist()) == ["s0", "s1"]


def test_failed_block_aborts_the_part(store):
    stream = store.create_stream("a", dim=8, provenance=PROV, frames_per_row=4)
    with pytest.raises(RuntimeError), stream.part_writer("p") as writer:
        writer.add("s0", "v", _feats(0))
        raise RuntimeError("encoder crashed")
    assert not stream.is_committed("p")
    assert stream.uncommitted_attempts() == []


def test_second_commit_of_a_part_loses(store):
    stream = store.create_stream("a", dim=8, provenance=PROV, frames_per_row=4)
    first, second = stream.part_writer("p"), stream.part_writer("p")
    first.add("s0", "v", _feats(0))
    second.add("s0", "v", _feats(1))
    second._write_features()  # the loser had already written its data
    first.commit()
    with pytest.raises(PartAlreadyCommittedError):
        second.commit()
    np.testing.assert_array_equal(stream.load().features[0], _feats(0))
    assert stream.uncommitted_attempts() == []


def test_incompatible_provenance_and_shape_are_refused(store):
    store.create_stream("a", dim=8, provenance=PROV, frames_per_row=4)
    assert store.create_stream("a", dim=8, provenance=dict(PROV), frames_per_row=4).info.dim == 8
    changed = {**PROV, "sampling": {"kind": "uniform", "frames": 8}}
    with pytest.raises(IncompatibleStreamError, match=r"provenance\.sampling\.frames: 4 .* 8"):
        store.create_stream("a", dim=8, provenance=changed, frames_per_row=4)
    with pytest.raises(IncompatibleStreamError, match="dim"):
        store.create_stream("a", dim=16, provenance=PROV, frames_per_row=4)
    stream = store.stream("a")
    with pytest.raises(IncompatibleStreamError, match="frames per row"):
        stream.part_writer("p").add("s", "v", _feats(0, n=3))


def test_variable_frames_per_row(store):
    stream = store.create_stream("dense", dim=8, provenance=PROV, frames_per_row=None)
    with stream.part_writer("p") as writer:
        writer.add("s0", "v", _feats(0, n=3))
        writer.add("s1", "v", _feats(1, n=5))
    loaded = stream.load()
    assert loaded.features.shape == (8, 8)
    np.testing.assert_array_equal(loaded.row(1), _feats(1, n=5))
    np.testing.assert_array_equal(stream.load(["s1", "s0"]).row(0), _feats(1, n=5))


def test_compressed_stream_reads_through_zarr(store):
    stream = store.create_stream("z", dim=8, provenance=PROV, frames_per_row=4, codec="blosc-zstd")
    with stream.part_writer("p") as writer:
        writer.add("s0", "v", _feats(0))
    np.testing.assert_array_equal(stream.load().features[0], _feats(0))


def test_segments_append_and_conflicts(store):
    assert store.add_segments(_segments(["a", "b"])) == 2
    assert store.add_segments(_segments(["a", "b"])) == 0  # idempotent
    assert store.add_segments(_segments(["c"], split="val")) == 1  # a new split appends
    table = store.segments().collect()
    assert sorted(table["segment_id"].to_list()) == ["a", "b", "c"]
    conflicting = _segments(["a"]).with_columns(pl.lit(7).alias("verb_class"))
    with pytest.raises(SegmentConflictError, match="verb_class"):
        store.add_segments(conflicting)
    with pytest.raises(ValueError, match="required columns"):
        store.add_segments(pl.DataFrame({"segment_id": ["x"]}))


def test_append_new_part_keeps_existing_files(store, tmp_path):
    stream = store.create_stream("a", dim=8, provenance=PROV, frames_per_row=4)
    with stream.part_writer("p0") as writer:
        writer.add("s0", "v", _feats(0))
    before = {p: r["attempt"] for p, r in stream.committed_parts().items()}
    with stream.part_writer("p1") as writer:
        writer.add("s1", "w", _feats(1))
    after = {p: r["attempt"] for p, r in stream.committed_parts().items()}
    assert after["p0"] == before["p0"]


def test_consolidated_manifest_is_used_only_while_current(store):
    stream = store.create_stream("a", dim=8, provenance=PROV, frames_per_row=4)
    with stream.part_writer("p0") as writer:
        writer.add("s0", "v", _feats(0))
    assert stream.consolidate() == 1
    with stream.part_writer("p1") as writer:
        writer.add("s1", "v", _feats(1))
    assert stream.manifest().collect().height == 2  # stale consolidation ignored
    stream.consolidate()
    assert stream.manifest().collect()["segment_id"].to_list() == ["s0", "s1"]


def test_open_errors_and_stream_lookup(tmp_path, store):
    with pytest.raises(StoreNotFoundError, match="no egofeat store"):
        FeatureStore.open(tmp_path / "nowhere")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "file.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not an egofeat store"):
        FeatureStore.create(tmp_path / "junk")
    store.create_stream("clip/full", dim=8, provenance=PROV, frames_per_row=4)
    with pytest.raises(StreamNotFoundError, match="clip/full"):
        store.stream("clip/hand")
    with pytest.raises(ValueError, match="invalid stream name"):
        store.create_stream("../evil", dim=8, provenance=PROV)
    assert FeatureStore.open(store.path).stream_names() == ["clip/full"]


def test_sql_over_segments_and_manifest(store):
    store.add_segments(_segments(["s0", "s1"]))
    stream = store.create_stream("a", dim=8, provenance=PROV, frames_per_row=4)
    with stream.part_writer("p") as writer:
        writer.add("s0", "v1", _feats(0))
        writer.add_error("s1", "v1", "broken")
    result = store.sql(
        "SELECT s.split, m.status, COUNT(*) AS n FROM segments s JOIN manifest m "
        "ON s.segment_id = m.segment_id GROUP BY s.split, m.status ORDER BY m.status"
    )
    assert result.to_dicts() == [
        {"split": "train", "status": "error", "n": 1},
        {"split": "train", "status": "ok", "n": 1},
    ]
    info = store.info()
    assert info["streams"][0]["ok"] == 1 and info["streams"][0]["errors"] == 1


def test_leases_protect_in_flight_parts_and_die_with_their_holder(store):
    import subprocess
    import sys
    import textwrap

    stream = store.create_stream("a", dim=8, provenance=PROV, frames_per_row=4)
    in_flight = stream.part_writer("busy")
    in_flight.add("s0", "v", _feats(0))
    in_flight._write_features()
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from egofeat.store import FeatureStore
            lease = FeatureStore.open({str(store.path)!r}).stream("a").claim("busy")
            print("held" if lease else "busy", flush=True)
            time.sleep(60)
        """)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        assert stream.claim("busy") is None  # another live process holds it
        assert stream.cleanup() == 0  # its attempt is kept
    finally:
        holder.kill()  # like kill -9: no chance to release anything
        holder.wait()
    lease = stream.claim("busy")
    assert lease is not None  # recovered without manual cleanup
    lease.release()
    assert stream.cleanup() == 1
