"""Benchmark: `egofeat extract` on 1 vs 2 dask workers (and the serial executor), same plan.

Run on demand (not part of the tests):

    python bench/scaleout.py                          # 8 videos x 16 segments at 456x256, tiny
    python bench/scaleout.py --videos 8 --segments 20 --json
    python bench/scaleout.py --workers 1 2 4 --size 456x256

Data: the synthetic EPIC-shaped dataset (`egofeat.extract.synthetic`), ``--videos`` videos of
``--segments`` back-to-back actions, one video per part. For each worker count a LocalCluster
is started on loopback and warmed up (torch and egofeat imported in every worker) before the
clock starts, so the time measured is what a run on a running cluster costs: registering the
worker plugin (encoders load once per worker), the part tasks, and the driver's finalization.
Every run writes a fresh store; ``--repeats`` takes the median. The serial executor on the same
plan is the baseline.

Reported: wall seconds, segments/s, unique frames/s, the summed per-stage seconds (decode is
worker time), and the speed-up of N workers over 1. Extraction parallelizes over parts with
no shared state but the filesystem, so the ideal is N x; on a machine with fewer free cores
than workers (a 2-core laptop runs one worker per core, plus the driver) expect less.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any


def _options(dataset: Any, store: Path, args: argparse.Namespace, **executor: Any) -> Any:
    from egofeat.config import ExtractConfig

    annotations = dataset.annotations_dir
    return ExtractConfig(
        annotations=[annotations / "EPIC_100_train.csv", annotations / "EPIC_100_validation.csv"],
        videos=dataset.videos_root, store=store, encoders=[args.encoder], frames=args.frames,
        workers=0, text=False, progress=False, **executor,
    )


def _warm(client: Any) -> None:
    """Import what the part tasks need in every worker, outside the timed region."""
    def imports() -> None:
        import torch  # noqa: F401

        import egofeat.pipelines.executors  # noqa: F401

    client.run(imports)


def _time_run(run: Any, repeats: int, scratch: Path) -> dict[str, Any]:
    """Median wall time of ``repeats`` runs into fresh stores, after one untimed warm-up run."""
    walls, summaries = [], []
    for i in range(-1, repeats):
        store = scratch / f"store-{time.monotonic_ns()}-{i}"
        start = time.perf_counter()
        summary = run(store)
        seconds = time.perf_counter() - start
        shutil.rmtree(store, ignore_errors=True)
        if summary.failed or summary.done_parts != summary.planned_parts:
            raise RuntimeError(f"benchmark run failed: {summary.to_dict()}")
        if i >= 0:  # the warm-up run pays lazy imports and first-use costs
            walls.append(seconds)
            summaries.append(summary)
    wall = statistics.median(walls)
    last = summaries[-1]
    return {
        "wall_s": round(wall, 3), "segments": last.segments, "parts": last.planned_parts,
        "segments_per_s": round(last.segments / wall, 1),
        "frames_per_s": round(last.unique_frames / wall, 1),
        "stage_s": {k: v for k, v in last.seconds.items() if k != "wall"},
        "all_walls_s": [round(w, 3) for w in walls],
    }


def run_benchmark(args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    from distributed import Client, LocalCluster

    from egofeat.extract.synthetic import write_synthetic_dataset
    from egofeat.pipelines.executors import execute

    width, height = (int(v) for v in args.size.split("x"))
    dataset = write_synthetic_dataset(scratch / "data", n_videos=args.videos,
                                      segments_per_video=args.segments, size=(width, height))
    results: dict[str, Any] = {"serial": _time_run(
        lambda store: execute(_options(dataset, store, args)), args.repeats, scratch)}
    for n in args.workers:
        with LocalCluster(n_workers=n, threads_per_worker=1, host="127.0.0.1",
                          silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
            _warm(client)
            results[f"dask-{n}"] = _time_run(
                lambda store, address=cluster.scheduler_address: execute(
                    _options(dataset, store, args, executor="dask", scheduler=address)),
                args.repeats, scratch)
    base = results.get("dask-1", results["serial"])["wall_s"]
    for row in results.values():
        row["speedup_vs_1_worker"] = round(base / row["wall_s"], 2)
    first, *rest = args.workers
    return {
        "config": {"videos": args.videos, "segments_per_video": args.segments, "size": args.size,
                   "frames": args.frames, "encoder": args.encoder, "repeats": args.repeats,
                   "cpu_count": os.cpu_count()},
        "results": results,
        "ratio": {f"dask-{n}/dask-{first}": round(results[f"dask-{first}"]["wall_s"]
                                                   / results[f"dask-{n}"]["wall_s"], 2) for n in rest},
    }


def print_table(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    config = report["config"]
    table = Table(title=f"egofeat extract scale-out: {config['videos']} videos x {config['segments_per_video']} "
                        f"segments, {config['encoder']}, {config['cpu_count']} CPUs")
    for column in ("executor", "wall s", "segments/s", "frames/s", "decode s", "encode s", "write s", "vs 1 worker"):
        table.add_column(column, justify="right")
    for name, row in report["results"].items():
        stage = row["stage_s"]
        table.add_row(name, f"{row['wall_s']:.2f}", f"{row['segments_per_s']:.1f}", f"{row['frames_per_s']:.0f}",
                      f"{stage['decode_worker']:.2f}", f"{stage['encode']:.2f}", f"{stage['write']:.2f}",
                      f"{row['speedup_vs_1_worker']:.2f}x")
    Console().print(table)
    for name, ratio in report["ratio"].items():
        Console().print(f"speed-up {name}: {ratio:.2f}x")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--segments", type=int, default=16, help="segments per video")
    parser.add_argument("--size", default="456x256", help="video frame size WxH (EPIC's 256p)")
    parser.add_argument("--frames", type=int, default=8, help="frames per segment")
    parser.add_argument("--encoder", default="tiny")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="dask worker counts")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="egofeat-scaleout-") as scratch:
        report = run_benchmark(args, Path(scratch))
    print(json.dumps(report, indent=1)) if args.json else print_table(report)


if __name__ == "__main__":
    main()
