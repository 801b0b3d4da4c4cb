"""Feature arrays sized to the data: a part's bytes stay close to its feature bytes at any size,
and stores written with the earlier layout (one 4 MiB chunk per part) still read."""

from __future__ import annotations

import glob
import math
import shutil

import numpy as np
import pytest
import zarr

from egofeat.store import FeatureStore
from egofeat.store.layout import CHUNK_BYTES
from egofeat.store.writer import chunk_rows


@pytest.mark.parametrize("frames", [None, 1, 3, 16, 32])
@pytest.mark.parametrize("dim", [8, 64, 512, 1024])
def test_chunks_split_a_part_evenly_within_the_chunk_size(frames, dim):
    per_frame, unit = dim * 2, frames or 1
    rows_per_chunk = max(1, CHUNK_BYTES // (per_frame * unit))  # rows of `unit` frames
    for segments in [1, 2, 9, 10, 255, 256, 257, 999, 1000, 4097, 100_000, 1_000_003]:
        n = segments * (frames or 5)  # frames in the part
        rows = chunk_rows(n, per_frame, frames)
        n_chunks = math.ceil(n / rows)
        assert rows % unit == 0
        assert rows * per_frame <= max(CHUNK_BYTES, per_frame * unit)
        assert n_chunks == math.ceil(math.ceil(n / unit) / rows_per_chunk)  # the fewest chunks
        # stored bytes (every chunk at full size) over feature bytes: under one row per chunk
        assert n_chunks * rows - n < n_chunks * unit, (segments, rows, n_chunks)


def features_bytes(root) -> int:
    return sum(p.stat().st_size for folder in root.rglob("features.zarr") for p in folder.rglob("*") if p.is_file())


@pytest.mark.parametrize("segments", [1, 10, 257, 1000])
def test_a_part_on_disk_is_about_its_feature_bytes(tmp_path, segments):
    stream = FeatureStore.create(tmp_path / "s").create_stream("a", dim=512, provenance={}, frames_per_row=16)
    data = np.random.default_rng(0).standard_normal((segments, 16, 512)).astype(np.float16)
    with stream.part_writer("p") as writer:
        for i, row in enumerate(data):
            writer.add(f"s{i}", "v", row)
    assert features_bytes(tmp_path / "s") <= 1.1 * data.nbytes
    np.testing.assert_array_equal(stream.load().features, data)


def test_compressed_parts_are_chunked_the_same_way(tmp_path):
    stream = FeatureStore.create(tmp_path / "s").create_stream("z", dim=512, provenance={}, frames_per_row=16,
                                                               codec="zstd")
    data = np.zeros((600, 16, 512), np.float16)  # 9.8 MB: three chunks, compressed to almost nothing
    data[::7] = 1
    with stream.part_writer("p") as writer:
        for i, row in enumerate(data):
            writer.add(f"s{i}", "v", row)
    (folder,) = (tmp_path / "s").rglob("features.zarr")
    assert sorted(p.name for p in folder.iterdir()) == ["c.0.0", "c.1.0", "c.2.0", "zarr.json"]
    assert features_bytes(tmp_path / "s") < data.nbytes / 20
    np.testing.assert_array_equal(stream.load().features, data)


@pytest.mark.parametrize("frames_per_row", [4, None])
def test_stores_with_the_earlier_layout_still_read(tmp_path, frames_per_row):
    """Parts written before chunks were sized to the data: one 4 MiB chunk under c/0/0."""
    stream = FeatureStore.create(tmp_path / "s").create_stream("a", dim=8, provenance={},
                                                               frames_per_row=frames_per_row)
    rng = np.random.default_rng(1)
    rows = [rng.standard_normal((4, 8)).astype(np.float16) for _ in range(5)]
    with stream.part_writer("p") as writer:
        for i, row in enumerate(rows):
            writer.add(f"s{i}", "v", row)
    (folder,) = glob.glob(str(tmp_path / "s" / "streams" / "a" / "parts" / "p" / "*" / "features.zarr"))
    shutil.rmtree(folder)
    old = zarr.create_array(store=folder, shape=(20, 8), chunks=(262144, 8), dtype="float16",
                            compressors=None, filters=None, fill_value=0, zarr_format=3)
    old[...] = np.concatenate(rows)
    assert (tmp_path / "s").joinpath(folder, "c", "0", "0").is_file()
    loaded = stream.load()
    np.testing.assert_array_equal(loaded.features.reshape(20, 8), np.concatenate(rows))
    np.testing.assert_array_equal(stream.load(["s3"]).features.reshape(-1, 8), rows[3])
