"""Benchmark: what X-MIC's native-frame jitter costs in store size, against the 16 x 3 stream.

Run on demand (not part of the tests):

    python bench/xmic_store.py                      # EPIC val + the UDA train stand-in, 400 segments written
    python bench/xmic_store.py --sample 100 --json  # quicker, JSON

X-MIC's temporal jitter reads any native frame of each of 16 bins, so a store must hold every
frame of a segment (``egofeat extract --sampling native``); egofeat's default holds 3 frames per
bin (``--sampling oversampled --frames 16 --per-bin 3``, 48 frames). For one stream (one
encoder and crop: X-MIC reads two, hand crops and full frames) this reports:

* **frames per segment**: native frames of every segment of the EPIC-100 annotation files in
  ``--epic`` (``EPIC_100_validation.csv``, and ``UDA_annotations/EPIC_100_uda_source_train.csv``
  standing in for the train file, which is not shipped), at the EPIC JPEG rates (60 fps EPIC-55,
  50 fps extension) as the native sampler counts them; and for Ego4D, X-MIC's window of the
  usual 8 s LTA action (the central ``4 * (n // 8)`` of the ~267 frames of its 8.9 s decode);
* **bytes per segment on disk**: both streams written through the store writer (fp16, 512-d,
  the default uncompressed codec) for ``--sample`` EPIC segments drawn at random, everything
  under the stream's folder counted (zarr chunks, parquet manifests, commit records);
* the ratio, and the size of both streams for all of EPIC-100 train (67,217 segments), scaled
  from the measured bytes per frame (and for ``--ego4d-segments`` Ego4D actions, when given).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import polars as pl
from rich.console import Console
from rich.table import Table

from egofeat.extract.plan import FrameSampler
from egofeat.sources import XMIC_ORIGINAL_WINDOW, epic_jpeg_fps, load_epic100
from egofeat.store import FeatureStore

EPIC_TRAIN_ROWS = 67_217
BINS, PER_BIN = 16, 3
EPIC_FILES = ("EPIC_100_validation.csv", "UDA_annotations/EPIC_100_uda_source_train.csv")


def epic_native_frames(table: pl.DataFrame) -> np.ndarray:
    """Native frames per segment, as ``--sampling native`` reads them (the JPEG rates)."""
    sampler = FrameSampler.native()
    return np.array([sampler.times(s, e, rate=epic_jpeg_fps(v)).size
                     for v, s, e in table.select("video_id", "start_sec", "end_sec").iter_rows()])


def stream_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def written_bytes(frames: np.ndarray, dim: int, seed: int) -> dict[str, float]:
    """Bytes per segment of a native and a 16 x 3 stream holding ``frames`` segments."""
    rng = np.random.default_rng(seed)
    root = Path(tempfile.mkdtemp(prefix="xmic-store-"))
    try:
        store = FeatureStore.open(root / "store", create=True)
        sizes = {}
        for name, counts in (("native", frames), ("oversampled", np.full(len(frames), BINS * PER_BIN))):
            stream = store.create_stream(f"bench/{name}", dim=dim, provenance={"sampling": name},
                                         frames_per_row=None if name == "native" else BINS * PER_BIN)
            with stream.part_writer("p") as writer:
                for i, count in enumerate(counts):
                    writer.add(f"s{i}", f"v{i // 20}", rng.standard_normal((int(count), dim), np.float32))
            sizes[name] = stream_bytes(root / "store" / "streams" / "bench" / name) / len(frames)
        return sizes
    finally:
        shutil.rmtree(root, ignore_errors=True)


def summary(frames: np.ndarray) -> dict[str, float]:
    return {"mean": round(float(frames.mean()), 1), "median": float(np.median(frames)),
            "p90": float(np.percentile(frames, 90)), "max": int(frames.max()), "segments": len(frames)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epic", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/epic100")
    parser.add_argument("--sample", type=int, default=400, help="EPIC segments written to measure bytes")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--ego4d-segments", type=int, default=None,
                        help="Ego4D LTA actions in your store, to project its size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    table = pl.concat([load_epic100(args.epic / name).select("video_id", "start_sec", "end_sec")
                       for name in EPIC_FILES])
    frames = epic_native_frames(table)
    sample = np.random.default_rng(args.seed).choice(frames, size=min(args.sample, len(frames)), replace=False)
    measured = written_bytes(sample, args.dim, args.seed)
    per_frame = measured["native"] / sample.mean()
    ego_window = np.subtract(*XMIC_ORIGINAL_WINDOW.frames(0.0, 8.0, None)[::-1])
    epic_native = per_frame * frames.mean()
    report = {
        "dim": args.dim, "dtype": "float16",
        "epic": {"native_frames": summary(frames), "oversampled_frames": BINS * PER_BIN,
                 "sample_written": len(sample),
                 "bytes_per_segment": {"native": round(epic_native),
                                       "oversampled_16x3": round(measured["oversampled"])},
                 "ratio": round(epic_native / measured["oversampled"], 2),
                 "train_gib_one_stream": {
                     "native": round(epic_native * EPIC_TRAIN_ROWS / 2**30, 2),
                     "oversampled_16x3": round(measured["oversampled"] * EPIC_TRAIN_ROWS / 2**30, 2)}},
        "ego4d": {"native_frames_per_action": int(ego_window), "oversampled_frames": BINS * PER_BIN,
                  "bytes_per_segment": {"native": round(per_frame * ego_window),
                                        "oversampled_16x3": round(measured["oversampled"])},
                  "ratio": round(per_frame * ego_window / measured["oversampled"], 2)},
        "bytes_per_native_frame": round(per_frame, 1),
    }
    if args.ego4d_segments:
        report["ego4d"]["gib_one_stream"] = {
            "segments": args.ego4d_segments,
            "native": round(per_frame * ego_window * args.ego4d_segments / 2**30, 2),
            "oversampled_16x3": round(measured["oversampled"] * args.ego4d_segments / 2**30, 2)}
    if args.json:
        print(json.dumps(report, indent=1))
        return
    out = Table(title=f"store size per stream ({args.dim}-d fp16): native frames vs 16 x 3")
    for column in ("dataset", "frames / segment", "native B / segment", "16x3 B / segment", "ratio", "all (GiB): native / 16x3"):
        out.add_column(column, justify="left" if column == "dataset" else "right")
    epic, ego = report["epic"], report["ego4d"]
    out.add_row("EPIC-100", f"{epic['native_frames']['mean']} (median {epic['native_frames']['median']:.0f})",
                f"{epic['bytes_per_segment']['native']:,}", f"{epic['bytes_per_segment']['oversampled_16x3']:,}",
                f"{epic['ratio']}x", f"{epic['train_gib_one_stream']['native']} / {epic['train_gib_one_stream']['oversampled_16x3']} (train)")
    total = ego.get("gib_one_stream")
    out.add_row("Ego4D (X-MIC window)", str(ego["native_frames_per_action"]),
                f"{ego['bytes_per_segment']['native']:,}", f"{ego['bytes_per_segment']['oversampled_16x3']:,}",
                f"{ego['ratio']}x", f"{total['native']} / {total['oversampled_16x3']}" if total else "")
    Console().print(out)


if __name__ == "__main__":
    main()
