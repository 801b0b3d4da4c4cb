"""Benchmark: `egofeat extract` against a naive per-segment loop, and against its own stages.

Run on demand (not part of the tests):

    python bench/extract.py                           # 4 videos x 40 overlapping segments, tiny
    python bench/extract.py --videos 8 --segments 60 --json
    python bench/extract.py --encoder timm:resnet18   # random weights, written to a temp file
    python bench/extract.py --encoder clip:ViT-B-16 --device cuda

Data: EPIC-like synthetic videos (456x256 or ``--size 1920x1080``, 30 fps, H.264 with a
keyframe every second; a textured scene panning under the camera with a moving object,
:func:`egofeat.extract.synthetic.write_scene_video`) and sliding-window segments
(``--window`` s every ``--stride`` s) that overlap, sampled with ``--frames`` uniform frames.
With the defaults (2 s every 0.5 s, 8 frames: bins of 0.25 s) neighbouring windows share
sample times, which the plan decodes and encodes once (dedup ~3.7); ``--stride 0.4`` makes
windows that overlap in time but share no sample time (dedup 1.0).

(a) The pipeline (`prepare_extract` + `execute`: one decode per video in worker
processes, deduplicated frames, resize in the workers, batches of many frames, store parts)
beside a naive loop in the style of per-segment extraction scripts: open the video for each
segment, seek, decode every frame of the segment with PyAV, keep the ``T`` sampled ones and
encode them as one fp32 batch. Segments/s of both and their ratio; target >= 5x.

(b) The pipeline's throughput (unique frames/s) divided by that of its slowest stage run
alone: decode-only (the same jobs through the same DecodePool) and encode-only (the same
encoder on the frames decode-only returned). Target >= 0.9.

All measurements run side by side in one process, in one run. ``--repeats`` takes the median.
torch is imported lazily here: spawned decode workers re-import this module.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np

from egofeat.config import ExtractConfig
from egofeat.extract import DecodePool, FrameSampler
from egofeat.extract.synthetic import write_scene_video
from egofeat.pipelines.executors import execute
from egofeat.pipelines.extract import prepare_extract

SIZE = (456, 256)  # EPIC-KITCHENS' downscaled resolution (width, height)
FPS = 30.0
GOP = 30  # frames between keyframes: 1 s


# ---- data --------------------------------------------------------------------------------------


def write_dataset(root: Path, videos: int, segments: int, window: float, stride: float,
                  size: tuple[int, int] = SIZE) -> list[tuple]:
    """Videos under ``root`` (EPIC layout) and an EPIC CSV of sliding windows; returns the rows."""
    seconds = stride * (segments - 1) + window + 0.5
    rows = []
    for v in range(videos):
        video_id = f"P{v // 2 + 1:02d}_{v % 2 + 1:02d}"
        path = root / video_id.split("_")[0] / "videos" / f"{video_id}.MP4"
        write_scene_video(path, seconds, FPS, size, gop_sec=GOP / FPS, seed=v)
        rows += [(f"{video_id}_{k}", video_id, 0.25 + stride * k, 0.25 + stride * k + window)
                 for k in range(segments)]
    write_epic_csv(root / "EPIC_100_validation.csv", rows)
    return rows


def write_epic_csv(path: Path, rows: list[tuple]) -> None:
    def stamp(seconds: float) -> str:
        return f"00:{int(seconds // 60):02d}:{seconds % 60:05.2f}"

    header = ("narration_id,participant_id,video_id,narration_timestamp,start_timestamp,"
              "stop_timestamp,start_frame,stop_frame,narration,verb,verb_class,noun,noun_class,"
              "all_nouns,all_noun_classes")
    lines = [header]
    for segment_id, video_id, start, end in rows:
        lines.append(
            f"{segment_id},{video_id.split('_')[0]},{video_id},{stamp(start)},{stamp(start)},"
            f"{stamp(end)},{max(1, int(start * 60))},{int(end * 60)},take cup,take,0,cup,1,"
            "\"['cup']\",[1]"
        )
    path.write_text("\n".join(lines) + "\n")


def encoder_name(spec: str, scratch: Path) -> str:
    """``spec`` as a usable encoder name: timm/clip specs without weights get random ones."""
    family, _, rest = spec.partition(":")
    if family == "timm" and rest and ":" not in rest:
        import timm
        import torch

        path = scratch / f"{rest}-random.pth"
        torch.save(timm.create_model(rest, pretrained=False, num_classes=0).state_dict(), path)
        return f"timm:{rest}:{path}"
    if family == "clip" and rest and ":" not in rest:
        import open_clip
        import torch

        path = scratch / f"{rest}-random.pt"
        torch.save(open_clip.create_model(rest, pretrained=None).state_dict(), path)
        return f"clip:{rest}:{path}"
    return spec


# ---- the measurements --------------------------------------------------------------------------


@dataclass
class Setup:
    root: Path
    rows: list[tuple]
    encoder: str
    frames: int
    workers: int
    device: str
    batch_size: int | None

    def options(self, store: Path) -> ExtractConfig:
        return ExtractConfig(
            annotations=[self.root / "EPIC_100_validation.csv"], videos=self.root, store=store,
            encoders=[self.encoder], frames=self.frames, workers=self.workers,
            device=self.device, batch_size=self.batch_size, text=False, progress=False,
        )


def bench_pipeline(setup: Setup, store: Path) -> dict[str, Any]:
    started = time.perf_counter()
    prepared = prepare_extract(setup.options(store))
    planned = time.perf_counter()
    summary = execute(prepared.options, prepared=prepared)
    finished = time.perf_counter()
    assert not summary.failed, summary.errors
    return {
        "seconds": finished - started, "run_seconds": finished - planned,
        "segments": summary.segments, "unique_frames": summary.unique_frames,
        "requested_frames": summary.requested_frames, "dedup_ratio": summary.dedup_ratio,
        "stage_seconds": summary.seconds,
    }


def bench_stages(setup: Setup, store: Path) -> dict[str, Any]:
    """Decode-only through the pipeline's DecodePool, then encode-only on what it returned."""
    options = setup.options(store)
    prepared = prepare_extract(options)
    runner = prepared.runner
    jobs = [runner.job(video, runner.video_path(video), None) for video in prepared.plan.videos]
    started = time.perf_counter()
    with DecodePool(options.workers, options.prefetch, options.decode_timeout) as pool:
        results = list(pool.imap(jobs))
    decode_seconds = time.perf_counter() - started
    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    encoder = runner.encoders[0]
    encoder.encode(results[0].frames[:2])  # warm-up (lazy init, first-call allocations)
    started = time.perf_counter()
    for result in results:
        encoder.encode(result.frames)
    encode_seconds = time.perf_counter() - started
    frames = sum(len(r.frames) for r in results)
    return {"frames": frames, "decode_seconds": decode_seconds, "encode_seconds": encode_seconds}


def naive_loop(setup: Setup) -> dict[str, Any]:
    """Per segment: open, seek, decode every frame of the segment, keep T, encode T in fp32."""
    from egofeat.extract.encoders import create_encoder

    encoder = create_encoder(setup.encoder, device=setup.device)
    encoder.amp_dtype = None  # fp32, as such scripts run
    sampler = FrameSampler.uniform(setup.frames)
    started = time.perf_counter()
    decoded = 0
    features = []
    for _, video_id, start, end in setup.rows:
        path = setup.root / video_id.split("_")[0] / "videos" / f"{video_id}.MP4"
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            container.seek(int(start / stream.time_base), stream=stream)
            times, images = [], []
            for frame in container.decode(stream):
                decoded += 1
                if frame.time < start - 1 / FPS:
                    continue
                if frame.time > end:
                    break
                times.append(frame.time)
                images.append(frame.to_ndarray(format="rgb24"))
        wanted = sampler.times(start, end)
        picks = np.searchsorted(np.asarray(times), wanted, side="right") - 1
        features.append(encoder.encode(np.stack([images[i] for i in np.clip(picks, 0, None)])))
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "segments": len(features), "frames_decoded": decoded}


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(run[key] for run in runs)


def run_benchmark(args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    data = scratch / "data"
    started = time.perf_counter()
    rows = write_dataset(data, args.videos, args.segments, args.window, args.stride, args.size)
    write_seconds = time.perf_counter() - started
    setup = Setup(data, rows, encoder_name(args.encoder, scratch), args.frames, args.workers,
                  args.device, args.batch_size)
    pipelines, stages, naives = [], [], []
    for repeat in range(args.repeats):
        stages.append(bench_stages(setup, scratch / f"stages-{repeat}"))
        pipelines.append(bench_pipeline(setup, scratch / f"store-{repeat}"))
        naives.append(naive_loop(setup))
        for folder in (scratch / f"stages-{repeat}", scratch / f"store-{repeat}"):
            shutil.rmtree(folder, ignore_errors=True)
    pipeline, stage = pipelines[-1], stages[-1]
    segments, unique = pipeline["segments"], pipeline["unique_frames"]
    pipe_s, run_s = _median(pipelines, "seconds"), _median(pipelines, "run_seconds")
    naive_s = _median(naives, "seconds")
    decode_fps = stage["frames"] / _median(stages, "decode_seconds")
    encode_fps = stage["frames"] / _median(stages, "encode_seconds")
    pipeline_fps = unique / run_s
    slowest = min(decode_fps, encode_fps)
    return {
        "setup": {
            "videos": args.videos, "segments": segments, "window_sec": args.window,
            "stride_sec": args.stride, "frames_per_segment": args.frames, "size": list(args.size),
            "fps": FPS, "gop": GOP, "encoder": args.encoder, "device": args.device,
            "workers": args.workers, "repeats": args.repeats,
            "dataset_write_sec": round(write_seconds, 1),
        },
        "plan": {"requested_frames": pipeline["requested_frames"], "unique_frames": unique,
                 "dedup_ratio": pipeline["dedup_ratio"]},
        "a_pipeline_vs_naive": {
            "pipeline_segments_per_s": round(segments / pipe_s, 2),
            "naive_segments_per_s": round(segments / naive_s, 2),
            "ratio": round(naive_s / pipe_s, 2),
            "pipeline_seconds": round(pipe_s, 2), "naive_seconds": round(naive_s, 2),
            "naive_frames_decoded": naives[-1]["frames_decoded"],
            "target": 5.0,
        },
        "b_pipeline_vs_slowest_stage": {
            "decode_only_frames_per_s": round(decode_fps, 1),
            "encode_only_frames_per_s": round(encode_fps, 1),
            "pipeline_frames_per_s": round(pipeline_fps, 1),
            "slowest_stage": "decode" if decode_fps <= encode_fps else "encode",
            "ratio": round(pipeline_fps / slowest, 3),
            "pipeline_stage_seconds": pipeline["stage_seconds"],
            "target": 0.9,
        },
    }


def print_table(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    setup, plan = result["setup"], result["plan"]
    a, b = result["a_pipeline_vs_naive"], result["b_pipeline_vs_slowest_stage"]
    console = Console()
    console.print(
        f"{setup['videos']} videos {setup['size'][0]}x{setup['size'][1]} @ {setup['fps']:g} fps "
        f"(GOP {setup['gop']}), {setup['segments']} segments of {setup['window_sec']:g} s every "
        f"{setup['stride_sec']:g} s, {setup['frames_per_segment']} frames each; encoder "
        f"{setup['encoder']} on {setup['device']}, {setup['workers']} decode workers; "
        f"{plan['requested_frames']} frames asked, {plan['unique_frames']} unique "
        f"(dedup {plan['dedup_ratio']})"
    )
    table = Table(title="(a) segments/s")
    for column in ("extractor", "seconds", "segments/s"):
        table.add_column(column)
    table.add_row("egofeat extract", f"{a['pipeline_seconds']:.2f}", f"{a['pipeline_segments_per_s']:.2f}")
    table.add_row(f"naive per-segment loop ({a['naive_frames_decoded']} frames decoded)",
                  f"{a['naive_seconds']:.2f}", f"{a['naive_segments_per_s']:.2f}")
    console.print(table)
    console.print(f"(a) pipeline / naive: {a['ratio']}x (target >= {a['target']:g}x)")
    table = Table(title="(b) unique frames/s")
    for column in ("stage", "frames/s"):
        table.add_column(column)
    table.add_row("decode only (DecodePool)", f"{b['decode_only_frames_per_s']:.1f}")
    table.add_row("encode only (pre-decoded)", f"{b['encode_only_frames_per_s']:.1f}")
    table.add_row("pipeline", f"{b['pipeline_frames_per_s']:.1f}")
    console.print(table)
    console.print(f"(b) pipeline / slowest stage ({b['slowest_stage']}): {b['ratio']} "
                  f"(target >= {b['target']:g}); pipeline stage seconds {b['pipeline_stage_seconds']}")


def _size(text: str) -> tuple[int, int]:
    width, _, height = text.partition("x")
    return int(width), int(height)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--segments", type=int, default=40, help="segments per video")
    parser.add_argument("--window", type=float, default=2.0, help="segment length (s)")
    parser.add_argument("--stride", type=float, default=0.5, help="segment start spacing (s)")
    parser.add_argument("--frames", type=int, default=8, help="uniform frames per segment")
    parser.add_argument("--size", type=_size, default=SIZE, help="video size, e.g. 1920x1080")
    parser.add_argument("--encoder", default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--workers", type=int, default=2, help="pipeline decode workers")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--dir", type=Path, default=None, help="scratch folder (default: a temp dir)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    scratch = Path(args.dir or tempfile.mkdtemp(prefix="egofeat-bench-extract-"))
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        result = run_benchmark(args, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps(result, indent=1)) if args.json else print_table(result)


if __name__ == "__main__":
    main()
