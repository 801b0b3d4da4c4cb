"""Benchmark: store I/O against plain .npy and HDF5, and manifest queries against pandas+CSV.

Run on demand (not part of the tests):

    python bench/store_io.py                    # EPIC-100-train scale: 67,217 x 16 x 512 fp16 (1.1 GB)
    python bench/store_io.py --rows 8000 --json # quicker, machine-readable

(1) Whole-stream load into RAM: egofeat `Stream.load()` vs `np.load` of the same array from
.npy vs h5py reading the same array from an HDF5 file, measured side by side in one run with a
warm page cache (each repeated, median reported). Targets: >= 0.8x the .npy throughput, >= 1x HDF5.
(2) Manifest query at EgoClip scale (3.8M rows): a filter + group-by with polars over parquet,
beside pandas reading the same data from CSV. Target: polars < 1 s.
(3) Size on disk: one part of 10, 1,000 and 100,000 segments (--size-segments) of the same
frames x dim; a stream's feature arrays (its parts' features.zarr folders, files and folders
counted as `du` does: allocated blocks) on disk ÷ their feature bytes (frames x dim x itemsize
of the ok rows), and the same for the files' apparent sizes. Target: on disk ÷ feature bytes
<= 1.1 at every part size.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from egofeat.store import FeatureStore


def _median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_load(root: Path, rows: int, frames: int, dim: int, rows_per_part: int, repeats: int) -> dict:
    rng = np.random.default_rng(0)
    data = rng.standard_normal((rows, frames, dim), dtype=np.float32).astype(np.float16)
    ids = np.array([f"seg{i:07d}" for i in range(rows)])

    store = FeatureStore.create(root / "store")
    stream = store.create_stream("bench/full", dim=dim, provenance={"encoder": "bench"}, frames_per_row=frames)
    start = time.perf_counter()
    for p, lo in enumerate(range(0, rows, rows_per_part)):
        with stream.part_writer(f"part{p:05d}") as writer:
            for i in range(lo, min(rows, lo + rows_per_part)):
                writer.add(ids[i], f"video{i // 136}", data[i])
    write_store = time.perf_counter() - start
    stream.consolidate()

    np.save(root / "features.npy", data)
    import h5py

    with h5py.File(root / "features.h5", "w") as f:
        f.create_dataset("features", data=data, chunks=(max(1, (4 << 20) // (frames * dim * 2)), frames, dim))

    def load_store():
        loaded = stream.load()
        assert loaded.features.shape == data.shape

    def load_npy():
        np.load(root / "features.npy")

    def load_h5():
        with h5py.File(root / "features.h5", "r") as f:
            f["features"][...]

    for fn in (load_store, load_npy, load_h5):  # warm the page cache for all three
        fn()
    assert np.array_equal(stream.load().features, data)
    results = {}
    for name, fn in (("egofeat", load_store), ("npy", load_npy), ("hdf5", load_h5)):
        results[name] = _median_seconds(fn, repeats)
    gb = data.nbytes / 1e9
    return {
        "rows": rows, "frames": frames, "dim": dim, "gigabytes": round(gb, 3),
        "parts": stream.summary()["committed_parts"], "write_store_s": round(write_store, 2),
        "seconds": {k: round(v, 3) for k, v in results.items()},
        "gb_per_s": {k: round(gb / v, 2) for k, v in results.items()},
        "ratio_vs_npy": round(results["npy"] / results["egofeat"], 2),
        "ratio_vs_hdf5": round(results["hdf5"] / results["egofeat"], 2),
    }


def feature_array_bytes(root: Path) -> tuple[int, int]:
    """(allocated, apparent) bytes of every features.zarr folder under ``root``, folders included."""
    allocated = apparent = 0
    for folder in root.rglob("features.zarr"):
        for path in [folder, *folder.rglob("*")]:
            info = os.lstat(path)
            allocated += info.st_blocks * 512
            apparent += info.st_size if path.is_file() else 0
    return allocated, apparent


def bench_size(root: Path, segments: list[int], frames: int, dim: int) -> dict:
    rng = np.random.default_rng(2)
    results = []
    for n in segments:
        data = rng.standard_normal((n, frames, dim), dtype=np.float32).astype(np.float16)
        folder = root / f"size-{n}"
        stream = FeatureStore.create(folder).create_stream("bench/size", dim=dim, provenance={"n": n},
                                                           frames_per_row=frames)
        with stream.part_writer("part") as writer:
            for i in range(n):
                writer.add(f"seg{i:07d}", "video", data[i])
        allocated, apparent = feature_array_bytes(folder)
        results.append({
            "segments": n, "feature_bytes": data.nbytes, "on_disk_bytes": allocated,
            "apparent_bytes": apparent, "on_disk_ratio": round(allocated / data.nbytes, 4),
            "apparent_ratio": round(apparent / data.nbytes, 4),
        })
        del data, stream
        shutil.rmtree(folder)
    return {"frames": frames, "dim": dim, "dtype": "float16", "parts": results,
            "max_on_disk_ratio": max(r["on_disk_ratio"] for r in results)}


def bench_query(root: Path, rows: int, repeats: int) -> dict:
    rng = np.random.default_rng(1)
    n_videos = max(1, rows // 1000)
    frame = pl.DataFrame(
        {
            "segment_id": [f"clip{i}" for i in range(rows)],
            "video_id": rng.integers(0, n_videos, rows).astype(str),
            "participant_id": [f"P{v:02d}" for v in rng.integers(0, 40, rows)],
            "stream": rng.choice(["clip/full", "clip/hand"], rows),
            "status": rng.choice(["ok", "error"], rows, p=[0.99, 0.01]),
            "n_frames": rng.integers(1, 32, rows).astype(np.int32),
            "box_score": rng.random(rows).astype(np.float32),
            "verb_class": rng.integers(0, 118, rows),
        }
    )
    frame.write_parquet(root / "manifest.parquet", row_group_size=256_000)
    frame.write_csv(root / "manifest.csv")

    def polars_query():
        return (
            pl.scan_parquet(root / "manifest.parquet")
            .filter((pl.col("status") == "ok") & (pl.col("box_score") < 0.2) & (pl.col("stream") == "clip/hand"))
            .group_by("participant_id")
            .agg(pl.len().alias("segments"), pl.col("n_frames").sum())
            .collect()
        )

    def pandas_query():
        import pandas as pd

        df = pd.read_csv(root / "manifest.csv")
        sel = df[(df.status == "ok") & (df.box_score < 0.2) & (df.stream == "clip/hand")]
        return sel.groupby("participant_id").agg(segments=("segment_id", "size"), n_frames=("n_frames", "sum"))

    polars_s = _median_seconds(polars_query, repeats)
    pandas_s = _median_seconds(pandas_query, max(1, repeats // 2))
    return {"rows": rows, "polars_parquet_s": round(polars_s, 3), "pandas_csv_s": round(pandas_s, 3),
            "speedup": round(pandas_s / polars_s, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=67_217)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--rows-per-part", type=int, default=1024)
    parser.add_argument("--query-rows", type=int, default=3_847_723)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--size-segments", default="10,1000,100000",
                        help="segments per part for the size measurement (comma-separated)")
    parser.add_argument("--dir", type=Path, default=None, help="scratch folder (default: a temp dir)")
    parser.add_argument("--only", choices=("load", "query", "size"), action="append",
                        help="run only this measurement (repeatable; default: all three)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    only = set(args.only or ("load", "query", "size"))

    root = Path(args.dir or tempfile.mkdtemp(prefix="egofeat-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    result = {}
    try:
        if "load" in only:
            result["load"] = bench_load(root, args.rows, args.frames, args.dim, args.rows_per_part, args.repeats)
        if "query" in only:
            result["query"] = bench_query(root, args.query_rows, args.repeats)
        if "size" in only:
            result["size"] = bench_size(root, [int(n) for n in args.size_segments.split(",")], args.frames, args.dim)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if args.json:
        print(json.dumps(result, indent=1))
        return
    from rich.console import Console

    console = Console()
    if "load" in result:
        _print_load(console, result["load"])
    if "query" in result:
        query = result["query"]
        console.print(f"manifest query over {query['rows']:,} rows: polars+parquet {query['polars_parquet_s']} s "
                      f"(target < 1 s), pandas+CSV {query['pandas_csv_s']} s ({query['speedup']}x)")
    if "size" in result:
        _print_size(console, result["size"])


def _print_load(console, load: dict) -> None:
    from rich.table import Table

    table = Table(title=f"whole-stream load: {load['rows']} x {load['frames']} x {load['dim']} fp16 ({load['gigabytes']} GB, {load['parts']} parts)")
    for col in ("reader", "seconds", "GB/s"):
        table.add_column(col)
    for name in ("egofeat", "npy", "hdf5"):
        table.add_row(name, f"{load['seconds'][name]:.3f}", f"{load['gb_per_s'][name]:.2f}")
    console.print(table)
    console.print(f"egofeat / npy throughput: {load['ratio_vs_npy']}x (target >= 0.8); "
                  f"egofeat / hdf5: {load['ratio_vs_hdf5']}x (target >= 1)")


def _print_size(console, size: dict) -> None:
    from rich.table import Table

    sizes = Table(title=f"feature arrays on disk ÷ feature bytes, one part of {size['frames']} x {size['dim']} fp16 rows")
    for col in ("segments", "feature bytes", "on disk (du)", "ratio", "apparent ratio"):
        sizes.add_column(col)
    for r in size["parts"]:
        sizes.add_row(f"{r['segments']:,}", f"{r['feature_bytes']:,}", f"{r['on_disk_bytes']:,}",
                      f"{r['on_disk_ratio']:.3f}", f"{r['apparent_ratio']:.3f}")
    console.print(sizes)
    console.print(f"largest on-disk ratio: {size['max_on_disk_ratio']} (target <= 1.1)")


if __name__ == "__main__":
    main()
