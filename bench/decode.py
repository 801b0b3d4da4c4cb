"""Benchmark: egofeat's decoding against the physical limit, and the decode backends side by side.

Run on demand (not part of the tests):

    python bench/decode.py                 # tables
    python bench/decode.py --json          # machine-readable; keys below
    python bench/decode.py --seconds 10 --hd-seconds 3 --plans sliding-window,tsn-16

Data (written to a temp dir): synthetic EPIC-like H.264 videos (a textured worktop panning
under a moving camera, :func:`egofeat.extract.synthetic.write_scene_video`) at 456x256 and
1920x1080, 50 and 60 fps, a keyframe every 0.5 s and 1 s, plus one variable-frame-rate file;
and, over each video, the sampling plans of the recipes, on EPIC-like segments (1-5 s, gaps of
0.3-1.5 s), deduplicated per video exactly as ``egofeat extract`` plans them:

    sliding-window    2 s windows every 0.5 s, 8 uniform frames (bench/extract.py's default)
    tsn-8, tsn-16     TSN uniform sampling
    xmic-oversampled  16 bins x 3 frames (X-MIC's temporal jitter)
    dense-1fps        one frame per second on the video-wide grid
    lavila-clips      one 16-frame clip spanning each segment

Measured per (video, plan), in this process, one decoder thread (all side by side, one run):

- ``ratio_to_gop_minimum``: packets egofeat decoded / the GOP-minimum (every packet from the
  keyframe before each needed frame up to it, shared ranges counted once: what any decoder
  entering the stream at keyframes must decode). Target <= 1.15.
- ``ratio_to_raw_decode``: (GOP-minimum / the raw sequential decode rate of the same file) /
  egofeat's wall time for the job, i.e. egofeat's rate over the frames it must decode,
  relative to decoding the file start to end with PyAV on the same core (no conversion).
  Everything egofeat adds (the index scan, seeks, RGB conversion and scaling of the needed
  frames) lowers it. Target >= 0.8. ``useful_fps`` is the plan's distinct frames per second.
- ``backends``: per backend (PyAV 1 thread, PyAV 2 threads, decord, torchcodec on the CPU when
  they are installed): sequential decode rate with RGB output, and useful frames/s on the
  sliding-window and TSN-16 plans.
- ``worker_memory``: peak resident memory of a decode worker process on a 1080p plan (frames
  scaled in the decoder to a 224 short side), beside the bytes the same frames take unscaled.
- ``pool``: the 456x256 sliding-window jobs through a 2-worker DecodePool, against the same
  jobs in this process: what the process hand-off costs.

Summary ratios per (resolution, plan) pool all videos of that resolution (frames summed).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import polars as pl

from egofeat.extract import DecodeJob, DecodePool, FrameSampler, decode_job, plan_videos
from egofeat.extract.reader_pyav import PyAVReader
from egofeat.extract.reader_torchcodec import torchcodec_available
from egofeat.extract.synthetic import write_scene_video

SMALL, HD = (456, 256), (1920, 1080)
SHORT_SIDE = 224  # CLIP ViT-B/16's resize size: what the pipeline asks the decoder for
PLANS: dict[str, FrameSampler | str] = {
    "sliding-window": "sliding-window",
    "tsn-8": FrameSampler.uniform(8),
    "tsn-16": FrameSampler.uniform(16),
    "xmic-oversampled": FrameSampler.oversampled(16, per_bin=3),
    "dense-1fps": FrameSampler.dense(1.0),
    "lavila-clips": FrameSampler.clip(1, 16),
}
BACKEND_PLANS = ("sliding-window", "tsn-16")
TARGETS = {"ratio_to_gop_minimum": 1.15, "ratio_to_raw_decode": 0.8}


@dataclass(frozen=True)
class Video:
    path: Path
    size: tuple[int, int]
    fps: float
    gop_sec: float
    vfr: bool = False

    @property
    def group(self) -> str:
        return f"{self.size[0]}x{self.size[1]}" + ("-vfr" if self.vfr else "")

    @property
    def name(self) -> str:
        return self.path.stem


# ---- data --------------------------------------------------------------------------------------


def write_videos(root: Path, seconds: float, hd_seconds: float) -> list[Video]:
    videos = []
    for size, length in ((SMALL, seconds), (HD, hd_seconds)):
        for fps in (50.0, 60.0):
            for gop in (0.5, 1.0):
                name = f"{size[1]}p-{fps:g}fps-gop{gop:g}s"
                path = write_scene_video(root / f"{name}.mp4", length, fps, size, gop_sec=gop)
                videos.append(Video(path, size, fps, gop))
    path = write_scene_video(root / "256p-vfr.mp4", seconds, 60.0, SMALL, gop_sec=1.0, vfr=True)
    videos.append(Video(path, SMALL, 60.0, 1.0, vfr=True))
    return videos


def segments(seconds: float, plan: str, seed: int = 0) -> pl.DataFrame:
    """EPIC-like segments over a video of ``seconds`` (sliding windows for that plan)."""
    if plan == "sliding-window":
        starts = np.arange(0.25, seconds - 2.0, 0.5)
        ends = starts + 2.0
    else:
        rng = np.random.default_rng(seed)
        starts, ends, t = [], [], 0.2
        while True:
            length = float(rng.uniform(1.0, 5.0))
            if t + length > seconds - 0.1:
                break
            starts.append(t)
            ends.append(t + length)
            t += length + float(rng.uniform(0.3, 1.5))
    n = len(starts)
    return pl.DataFrame({"segment_id": [f"s{i}" for i in range(n)], "video_id": ["v"] * n,
                         "start_sec": np.round(starts, 2), "end_sec": np.round(ends, 2)})


def plan_times(video: Video, plan: str) -> np.ndarray:
    with av.open(str(video.path)) as container:
        stream = container.streams.video[0]
        seconds = float(stream.duration * stream.time_base)
    sampler = PLANS[plan]
    sampler = FrameSampler.uniform(8) if isinstance(sampler, str) else sampler
    (video_plan,) = plan_videos(segments(seconds, plan), sampler).videos
    return video_plan.times


# ---- measurements ------------------------------------------------------------------------------


def raw_decode_fps(path: Path, threads: int = 1) -> float:
    """Frames/s decoding the whole file start to end with PyAV, no conversion."""
    started = time.perf_counter()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type, stream.thread_count = "AUTO", threads
        n = sum(1 for _ in container.decode(stream))
    return n / (time.perf_counter() - started)


def sequential_rgb_fps(path: Path, backend: str) -> float:
    """Frames/s of a backend decoding the whole file to full-size RGB arrays."""
    started = time.perf_counter()
    if backend in ("pyav", "pyav-2threads"):
        from av.video.reformatter import VideoReformatter

        reformatter = VideoReformatter()
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type, stream.thread_count = "AUTO", 2 if backend.endswith("threads") else 1
            n = sum(1 for frame in container.decode(stream)
                    if reformatter.reformat(frame, format="rgb24", threads=1).to_ndarray().size)
    elif backend == "decord":
        import decord

        reader = decord.VideoReader(str(path), num_threads=1)
        n = len(reader)
        for _ in range(n):
            reader.next().asnumpy()
    else:
        from torchcodec.decoders import VideoDecoder

        n = sum(1 for _ in VideoDecoder(str(path), num_ffmpeg_threads=1, seek_mode="approximate"))
    return n / (time.perf_counter() - started)


def gop_minimum(path: Path, times: np.ndarray) -> int:
    with PyAVReader(path) as reader:
        return reader.index.gop_minimum(reader.select(times).frames)


def egofeat_decode(path: Path, times: np.ndarray, backend: str = "auto", threads: int = 1,
                   repeats: int = 1) -> tuple[float, Any]:
    """Median wall seconds of the decode job egofeat's pipeline runs, and its last result."""
    seconds, result = [], None
    for _ in range(repeats):
        job = DecodeJob("bench", path, times, backend=backend, short_side=SHORT_SIDE)
        started = time.perf_counter()
        result = decode_job(job, threads=threads)
        seconds.append(time.perf_counter() - started)
        assert result.ok, result.error
    return statistics.median(seconds), result


def available_backends() -> list[str]:
    backends = ["pyav", "pyav-2threads"]
    try:
        import decord  # noqa: F401

        backends.append("decord")
    except ImportError:
        pass
    if torchcodec_available() is None:
        backends.append("torchcodec")
    return backends


def bench_plans(videos: list[Video], plans: list[str], repeats: int) -> list[dict[str, Any]]:
    rows = []
    for video in videos:
        raw = statistics.median(raw_decode_fps(video.path) for _ in range(repeats))
        for plan in plans:
            times = plan_times(video, plan)
            minimum = gop_minimum(video.path, times)
            seconds, result = egofeat_decode(video.path, times, repeats=repeats)
            unique = len(result.frames)
            rows.append({
                "video": video.name, "group": video.group, "plan": plan, "fps": video.fps,
                "gop_sec": video.gop_sec, "vfr": video.vfr, "unique_frames": unique,
                "gop_minimum": minimum, "frames_decoded": result.frames_decoded,
                "seeks": result.seeks, "egofeat_sec": round(seconds, 4),
                "raw_decode_fps": round(raw, 1), "useful_fps": round(unique / seconds, 1),
                "ratio_to_gop_minimum": round(result.frames_decoded / minimum, 3),
                "ratio_to_raw_decode": round(minimum / raw / seconds, 3),
            })
    return rows


def summarize(rows: list[dict[str, Any]]) -> tuple[dict, dict]:
    """Per resolution group and plan: frames pooled over that group's videos."""
    gop, raw = {}, {}
    for row in rows:
        key = (row["group"], row["plan"])
        gop.setdefault(key, [0, 0])
        gop[key][0] += row["frames_decoded"]
        gop[key][1] += row["gop_minimum"]
        raw.setdefault(key, [0.0, 0.0])
        raw[key][0] += row["gop_minimum"] / row["raw_decode_fps"]
        raw[key][1] += row["egofeat_sec"]
    out_gop: dict[str, dict[str, float]] = {}
    out_raw: dict[str, dict[str, float]] = {}
    for (group, plan), (decoded, minimum) in gop.items():
        out_gop.setdefault(group, {})[plan] = round(decoded / minimum, 3)
        ideal, actual = raw[(group, plan)]
        out_raw.setdefault(group, {})[plan] = round(ideal / actual, 3)
    return out_gop, out_raw


def bench_backends(videos: list[Video], repeats: int) -> dict[str, Any]:
    chosen = [v for v in videos if not v.vfr and v.fps == 60.0 and v.gop_sec == 1.0]
    out: dict[str, Any] = {}
    for video in chosen:
        entry: dict[str, Any] = {}
        plans = {plan: plan_times(video, plan) for plan in BACKEND_PLANS}
        for backend in available_backends():
            rates = {"sequential_rgb_fps": round(statistics.median(
                sequential_rgb_fps(video.path, backend) for _ in range(repeats)), 1)}
            name, threads = ("pyav", 2) if backend == "pyav-2threads" else (backend, 1)
            for plan, times in plans.items():
                seconds, result = egofeat_decode(video.path, times, name, threads, repeats)
                rates[f"{plan}_useful_fps"] = round(len(result.frames) / seconds, 1)
            entry[backend] = rates
        out[video.group] = entry
    return out


def bench_worker_memory(videos: list[Video]) -> dict[str, Any]:
    video = next(v for v in videos if v.size == HD and v.fps == 60.0 and v.gop_sec == 1.0)
    times = plan_times(video, "dense-1fps")
    times = np.concatenate([times, plan_times(video, "sliding-window")])
    job = DecodeJob("memory", video.path, np.unique(times), short_side=SHORT_SIDE)
    with DecodePool(workers=1, prefetch=0, timeout_sec=600.0) as pool:
        (result,) = pool.imap([job])
    assert result.ok, result.error
    width, height = video.size
    return {
        "video": video.name, "frames": len(result.frames),
        "peak_rss_mb": round(result.peak_rss_bytes / 2**20, 1),
        "frames_out_mb": round(result.frames.nbytes / 2**20, 1),
        "same_frames_unscaled_mb": round(len(result.frames) * width * height * 3 / 2**20, 1),
    }


def bench_pool(videos: list[Video], workers: int) -> dict[str, Any]:
    small = [v for v in videos if v.size == SMALL and not v.vfr]
    jobs = [DecodeJob(v.name, v.path, plan_times(v, "sliding-window"), short_side=SHORT_SIDE)
            for v in small]
    started = time.perf_counter()
    for job in jobs:
        decode_job(job)
    in_process = time.perf_counter() - started
    with DecodePool(workers=workers, timeout_sec=600.0) as pool:
        list(pool.imap(jobs[:workers]))  # start every worker outside the timing
        started = time.perf_counter()
        results = list(pool.imap(jobs))
        pooled = time.perf_counter() - started
    assert all(r.ok for r in results)
    return {"jobs": len(jobs), "workers": workers, "in_process_sec": round(in_process, 3),
            "pool_sec": round(pooled, 3),
            "speedup": round(in_process / pooled, 2),
            "efficiency_per_worker": round(in_process / pooled / workers, 3)}


def run_benchmark(args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    started = time.perf_counter()
    videos = write_videos(scratch, args.seconds, args.hd_seconds)
    written = time.perf_counter() - started
    plans = args.plans.split(",")
    rows = bench_plans(videos, plans, args.repeats)
    gop, raw = summarize(rows)
    result = {
        "setup": {"seconds": args.seconds, "hd_seconds": args.hd_seconds, "plans": plans,
                  "short_side": SHORT_SIDE, "decoder_threads": 1, "repeats": args.repeats,
                  "cpu_count": os.cpu_count(), "pyav": av.__version__,
                  "dataset_write_sec": round(written, 1)},
        "ratio_to_gop_minimum": gop,
        "ratio_to_raw_decode": raw,
        "targets": TARGETS,
        "results": rows,
    }
    if not args.no_backends:
        result["backends"] = bench_backends(videos, args.repeats)
    if not args.no_memory:
        result["worker_memory"] = bench_worker_memory(videos)
    if args.pool_workers:
        result["pool"] = bench_pool(videos, args.pool_workers)
    return result


def print_tables(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title="decoded / GOP-minimum (target <= 1.15) | rate / raw decode (target >= 0.8)")
    plans = result["setup"]["plans"]
    table.add_column("videos")
    for plan in plans:
        table.add_column(plan)
    for group in result["ratio_to_gop_minimum"]:
        table.add_row(group, *(
            f"{result['ratio_to_gop_minimum'][group].get(p, float('nan')):.3f} | "
            f"{result['ratio_to_raw_decode'][group].get(p, float('nan')):.3f}" for p in plans))
    console.print(table)
    for group, backends in result.get("backends", {}).items():
        table = Table(title=f"backends on {group} (60 fps, 1 s GOP), frames/s")
        columns = list(next(iter(backends.values())))
        table.add_column("backend")
        for column in columns:
            table.add_column(column)
        for backend, rates in backends.items():
            table.add_row(backend, *(f"{rates[c]:.0f}" for c in columns))
        console.print(table)
    for key in ("worker_memory", "pool"):
        if key in result:
            console.print(f"{key}: {result[key]}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0, help="length of 456x256 videos")
    parser.add_argument("--hd-seconds", type=float, default=6.0, help="length of 1080p videos")
    parser.add_argument("--plans", default=",".join(PLANS))
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--pool-workers", type=int, default=2, help="0: skip the pool check")
    parser.add_argument("--no-backends", action="store_true")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--dir", type=Path, default=None, help="scratch folder (default: temp)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if min(args.seconds, args.hd_seconds) < 4:
        parser.error("--seconds and --hd-seconds must be >= 4 (a 2 s sliding window and a few segments)")
    unknown = set(args.plans.split(",")) - set(PLANS)
    if unknown:
        parser.error(f"unknown plan(s) {', '.join(sorted(unknown))}; choose from {', '.join(PLANS)}")
    scratch = Path(args.dir or tempfile.mkdtemp(prefix="egofeat-bench-decode-"))
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        result = run_benchmark(args, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps(result, indent=1)) if args.json else print_tables(result)


if __name__ == "__main__":
    main()
