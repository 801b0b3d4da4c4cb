"""The GPU benchmark that ``bench/gpu.sh`` runs: decode, encode, pipeline, dask, heads.

    python bench/gpu.py                           # on a CUDA machine (what gpu.sh runs); JSON
    python bench/gpu.py --device cpu --quick      # the same code paths, small, on a CPU

Everything is synthetic and offline: EPIC-like H.264 videos
(:func:`egofeat.extract.synthetic.write_scene_video`) at 456x256 and 1920x1080, sliding-window
segments with hand boxes (a parquet of boxes), and CLIP ViT-B/16 with **random** weights
(open_clip's architecture, saved to a local file: no download). Sections, each timed and
reported on its own (a failing section records its error and the others still run):

- ``decode``: useful frames/s of the run's decode jobs through a DecodePool on the CPU
  (PyAV, one worker per core) and with NVDEC (torchcodec on CUDA), with the per-video CPU
  fallbacks counted;
- ``encode``: frames/s of CLIP ViT-B/16 at 224 px, bf16 autocast, batch size from free memory,
  on pre-decoded frames: eager, and ``torch.compile`` d when ``--compile``;
- ``pipeline``: ``egofeat extract`` (serial executor) writing full-frame and hand-crop streams,
  per video size, decoding on the CPU and with NVDEC: segments/s and unique frames/s;
- ``dask``: the same extraction through the dask executor, one worker per GPU;
- ``heads``: ``bench/xmic.py`` (one X-MIC epoch at EPIC-100-train scale, 15 implied) and
  ``bench/heads.py --heads trn`` (a TRN epoch), as subprocesses.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from extract import write_dataset  # noqa: E402 - bench/extract.py, beside this file

from egofeat.extract import DecodePool  # noqa: E402
from egofeat.extract.reader_torchcodec import torchcodec_available  # noqa: E402

SIZES = {"256p": (456, 256), "1080p": (1920, 1080)}


def clip_random_weights(scratch: Path) -> str:
    """``clip:ViT-B-16:<file>`` with random weights (open_clip's architecture, no download)."""
    import open_clip
    import torch

    path = scratch / "ViT-B-16-random.pt"
    if not path.exists():
        torch.manual_seed(0)
        torch.save(open_clip.create_model("ViT-B-16", pretrained=None).state_dict(), path)
    return f"clip:ViT-B-16:{path}"


def write_boxes(root: Path, rows: list[tuple], parquet: Path) -> Path:
    """A moving hand box every 0.1 s of each video, as a parquet of final boxes."""
    frames = []
    for video_id in sorted({row[1] for row in rows}):
        end = max(row[3] for row in rows if row[1] == video_id) + 0.5
        times = np.arange(0.0, end, 0.1)
        x = 0.3 + 0.2 * np.sin(times)
        frames.append(pl.DataFrame({
            "video_id": [video_id] * times.size, "time_sec": times,
            "left": x, "top": np.full(times.size, 0.4), "right": x + 0.25,
            "bottom": np.full(times.size, 0.8)}))
    pl.concat(frames).write_parquet(parquet)
    return parquet


class Bench:
    """Holds the settings and the data of one run; each method is one section."""

    def __init__(self, args: argparse.Namespace, scratch: Path) -> None:
        self.args, self.scratch = args, scratch
        self.device = args.device
        self.workers = args.workers or max(1, (os.cpu_count() or 2) - 2)
        self.sizes = {"256p": SIZES["256p"], "1080p": (640, 360) if args.quick else SIZES["1080p"]}
        self.data: dict[str, tuple[Path, list[tuple], Path]] = {}
        for name, size in self.sizes.items():
            root = scratch / name
            videos, segments = (2, 6) if args.quick else (args.videos, args.segments)
            rows = write_dataset(root, videos, segments, 2.0, 0.5, size)
            self.data[name] = (root, rows, write_boxes(root, rows, root / "boxes.parquet"))
        self.encoder = "tiny" if args.quick else clip_random_weights(scratch)

    def options(self, name: str, store: Path, **overrides: Any):
        from egofeat.config import ExtractConfig

        root, _, boxes = self.data[name]
        settings = {
            "annotations": [root / "EPIC_100_validation.csv"], "videos": root, "store": store,
            "encoders": [self.encoder], "crop": "both", "boxes": boxes, "frames": 8,
            "workers": self.workers, "device": self.device, "text": False, "progress": False,
        }
        return ExtractConfig(**{**settings, **overrides})

    def jobs(self, name: str, decode_device: str) -> list:
        from egofeat.pipelines.extract import prepare_extract

        prepared = prepare_extract(self.options(name, self.scratch / f"plan-{name}",
                                                decode_device=decode_device))
        runner = prepared.runner
        jobs = []
        for video in prepared.plan:
            boxes = runner.boxes_for(video)
            boxes = boxes if isinstance(boxes, np.ndarray) else None
            jobs.append(runner.job(video, runner.video_path(video), boxes))
        return jobs

    def decode(self) -> dict[str, Any]:
        out: dict[str, Any] = {"torchcodec": torchcodec_available() or "usable"}
        nvdec = self.device.startswith("cuda") or self.args.quick
        for name in self.sizes:
            for decode_device in ("cpu", "cuda") if nvdec else ("cpu",):
                jobs = self.jobs(name, decode_device)
                workers = self.workers if decode_device == "cpu" else min(4, self.workers)
                with DecodePool(workers=workers, timeout_sec=600.0) as pool:
                    list(pool.imap(jobs[:workers]))  # every worker started off the clock
                    started = time.perf_counter()
                    results = list(pool.imap(jobs))
                    seconds = time.perf_counter() - started
                failed = [r.error for r in results if not r.ok]
                frames = sum(len(r.times) for r in results if r.ok)
                out[f"{name}_{decode_device}"] = {
                    "workers": workers, "jobs": len(jobs), "useful_frames": frames,
                    "useful_fps": round(frames / seconds, 1), "errors": failed[:3],
                    "cpu_fallbacks": sum(1 for r in results if r.fallback_reason),
                    "fallback_example": next((r.fallback_reason for r in results
                                              if r.fallback_reason), None),
                    "peak_worker_rss_mb": round(max(r.peak_rss_bytes or 0 for r in results)
                                                / 2**20, 1),
                }
        return out

    def encode(self) -> dict[str, Any]:
        from egofeat.extract import decode_job
        from egofeat.extract.encoders import create_encoder

        frames = np.concatenate([decode_job(job).frames for job in self.jobs("256p", "cpu")])
        repeat = max(1, -(-self.args.encode_frames // len(frames)))
        frames = np.concatenate([frames] * repeat)[: self.args.encode_frames]
        encoder = create_encoder(self.encoder, device=self.device)
        out: dict[str, Any] = {"frames": len(frames), "batch_size": encoder.batch_size,
                               "input": list(frames.shape[1:]),
                               "dtype": str(encoder.amp_dtype or "float32")}
        variants: list[tuple[str, Callable[[], None]]] = [("eager", lambda: None)]
        if self.args.compile:
            variants.append(("compiled", encoder.compile))
        for label, prepare in variants:
            prepare()
            encoder.encode(frames[: encoder.batch_size])  # warm-up: kernels, compilation
            _sync(self.device)
            started = time.perf_counter()
            encoder.encode(frames)
            _sync(self.device)
            out[f"{label}_fps"] = round(len(frames) / (time.perf_counter() - started), 1)
        return out

    def pipeline(self) -> dict[str, Any]:
        from egofeat.pipelines.executors import execute

        out = {}
        for name in self.sizes:
            for decode_device in ("cpu", "cuda"):
                store = self.scratch / f"store-{name}-{decode_device}"
                options = self.options(name, store, decode_device=decode_device)
                started = time.perf_counter()
                summary = execute(options)
                seconds = time.perf_counter() - started
                out[f"{name}_decode_{decode_device}"] = {
                    "seconds": round(seconds, 2), "segments": summary.segments,
                    "streams": summary.streams, "failed": summary.failed,
                    "segments_per_s": round(summary.segments / seconds, 2),
                    "unique_frames_per_s": round(summary.unique_frames / seconds, 1),
                    "stage_seconds": summary.seconds,
                    "decode_fallbacks": summary.decode_fallbacks,
                }
                shutil.rmtree(store, ignore_errors=True)
        return out

    def dask(self) -> dict[str, Any]:
        from egofeat.pipelines.executors import execute

        store = self.scratch / "store-dask"
        started = time.perf_counter()
        summary = execute(self.options("256p", store, executor="dask",
                                       dask_workers=1 if self.args.quick else None))
        seconds = time.perf_counter() - started
        return {"seconds": round(seconds, 2), "segments": summary.segments,
                "failed": summary.failed, "segments_per_s": round(summary.segments / seconds, 2),
                "gpus": _gpus()}

    def heads(self) -> dict[str, Any]:
        here = Path(__file__).resolve().parent
        rows = ["--rows", str(self.args.head_rows)]
        commands = {
            "xmic": [sys.executable, str(here / "xmic.py"), *rows, "--batch-sizes", "32",
                     "--device", self.device, "--precision",
                     "bf16" if self.device != "cpu" else "fp32", "--json"],
            "trn": [sys.executable, str(here / "heads.py"), "--heads", "trn", *rows,
                    "--precision", "bf16" if self.device != "cpu" else "fp32",
                    "--repeats", "1", "--loader-epochs", "1", "--json"],
        }
        out = {}
        for name, command in commands.items():
            done = subprocess.run(command, capture_output=True, text=True, check=False,
                                  env={**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", "")})
            if done.returncode:
                out[name] = {"error": (done.stderr or done.stdout).strip().splitlines()[-3:]}
            else:
                out[name] = json.loads(done.stdout)
        return out


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _gpus() -> int:
    import torch

    return torch.cuda.device_count()


def environment(device: str) -> dict[str, Any]:
    import av
    import torch

    info = {"device": device, "cpu_count": os.cpu_count(), "torch": torch.__version__,
            "pyav": av.__version__, "cuda_available": torch.cuda.is_available(),
            "date": time.strftime("%Y-%m-%d")}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_memory_gb"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30)
    return info


SECTIONS = ("decode", "encode", "pipeline", "dask", "heads")


def run(args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    started = time.perf_counter()
    result: dict[str, Any] = {"environment": environment(args.device)}
    bench = Bench(args, scratch)
    result["data_seconds"] = round(time.perf_counter() - started, 1)
    for section in args.sections.split(","):
        began = time.perf_counter()
        try:
            result[section] = getattr(bench, section)()
        except Exception as error:  # one broken section must not lose the others' numbers
            result[section] = {"error": "".join(traceback.format_exception_only(error)).strip()}
        result[section]["section_seconds"] = round(time.perf_counter() - began, 1)
    result["total_seconds"] = round(time.perf_counter() - started, 1)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny encoder, small data (tests)")
    parser.add_argument("--sections", default=",".join(SECTIONS))
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--segments", type=int, default=40, help="segments per video")
    parser.add_argument("--workers", type=int, default=0, help="decode workers (0: cores - 2)")
    parser.add_argument("--encode-frames", type=int, default=8192)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--head-rows", type=int, default=67_217)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args(argv)
    unknown = set(args.sections.split(",")) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s) {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}")
    scratch = Path(args.dir or tempfile.mkdtemp(prefix="egofeat-bench-gpu-"))
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        result = run(args, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
