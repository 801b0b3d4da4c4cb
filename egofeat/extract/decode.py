"""Decode jobs: one video's frame times in, the frames and crops the encoders need out.

:func:`decode_job` opens the video, selects the distinct frames shown at the job's times,
decodes each once (planned by the packet index, see :mod:`egofeat.extract.gop`) and, per
frame:

- cuts hand crops from the **full-resolution** frame (one per requested time and box);
- scales the full frame in the decoder's own scaler (libswscale for PyAV) to the short side
  the encoders need, so 1080p frames never cross a process boundary at full size, and a
  worker holds one full-size frame at a time, not a video's worth.

Never raises for a bad video: errors become :class:`DecodeResult` s. Whatever the native
decoder libraries print on stderr while a job runs (``[mov,mp4,...] moov atom not found``)
is captured into :attr:`DecodeResult.diagnostics` (and the error message, and the debug log)
instead of reaching the terminal. :class:`~egofeat.extract.pool.DecodePool` runs jobs in
worker processes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from egofeat.extract.boxes import crop
from egofeat.extract.readers import (
    Backend,
    DecodedFrame,
    FrameSelection,
    VideoDecodeError,
    VideoReader,
    resized_size,
)
from egofeat.extract.video import open_video

__all__ = ["DecodeJob", "DecodeResult", "Opener", "captured_stderr", "decode_job", "peak_rss_bytes"]

Opener = Callable[..., VideoReader]
log = logging.getLogger(__name__)
#: most characters of captured decoder output kept per job
_DIAGNOSTICS_LIMIT = 4000


@dataclass
class DecodeJob:
    """One batch of frame times of one video, and what to return for them.

    ``boxes`` (``(N, 4)`` normalized ``left, top, right, bottom``, one per time) ask for crops
    cut from the full-resolution frames with :func:`egofeat.extract.boxes.crop`. Full frames
    come back scaled so their short side is ``short_side`` (never upscaled; ``None``: native),
    or not at all with ``full_frames=False``. ``device`` ``cuda[:N]`` decodes on the GPU
    (NVDEC), falling back to the CPU for a video it cannot decode (the result says so).
    """

    key: str
    path: str | Path
    times: np.ndarray
    backend: Backend = "auto"
    fps: float | None = None
    boxes: np.ndarray | None = None
    crop_size: int = 224
    crop_margin: float = 0.0
    crop_square: bool = True
    short_side: int | None = 256
    full_frames: bool = True
    device: str = "cpu"
    #: whether a folder at ``path`` is read as JPEG frames (``auto``); else it is an error
    frame_folders: bool = True


@dataclass
class DecodeResult:
    """What a :class:`DecodeJob` produced; ``error`` is set (and arrays are None) on failure."""

    key: str
    path: str
    frames: np.ndarray | None = None
    crops: np.ndarray | None = None
    times: np.ndarray | None = None
    decode_sec: float = 0.0
    backend: str | None = None
    #: why the video was read by another backend or device than asked, if it was
    fallback_reason: str | None = None
    error: str | None = None
    #: why, in one word (``missing-video``, ``unreadable-video``, ``past-end``,
    #: ``decode-timeout``, ``decoder-crashed``): what the store's manifest records
    error_reason: str | None = None
    #: the video's duration when it could be opened (also on errors: lets a caller tell which
    #: segments run past the end and decode the others)
    duration_sec: float | None = None
    #: packets decoded, and the GOP-minimum for the same frames (None: the backend can't tell)
    frames_decoded: int | None = None
    gop_minimum: int | None = None
    #: disposable packets (no picture refers to them) left undecoded because nothing needed them
    frames_skipped: int = 0
    seeks: int = 0
    #: what the native decoder libraries printed on stderr during the job
    diagnostics: str | None = None
    #: the decoding process's peak resident memory so far (bytes)
    peak_rss_bytes: int | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class _Captured:
    text = ""


@contextlib.contextmanager
def captured_stderr() -> Iterator[_Captured]:
    """Send file descriptor 2 (native libraries' stderr) to a temporary file for the block;
    its text is in the yielded object's ``text`` afterwards."""
    captured = _Captured()
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.text = sink.read(_DIAGNOSTICS_LIMIT).decode(errors="replace")


def decode_job(job: DecodeJob, *, opener: Opener = open_video, threads: int = 1) -> DecodeResult:
    """Run one job in this process. Never raises for a bad video: errors become results."""
    started = time.perf_counter()
    result = DecodeResult(key=job.key, path=str(job.path))
    with captured_stderr() as native:
        try:
            _run(job, opener, threads, result)
        except VideoDecodeError as error:
            result.error, result.error_reason = str(error), error.reason
        except Exception as error:  # a decoder bug must not take the run down
            detail = "".join(traceback.format_exception_only(type(error), error)).strip()
            result.error = f"{job.path}: unexpected decode failure: {detail}"
            result.error_reason = "unreadable-video"
    text = native.text.strip()
    if text:
        result.diagnostics = text
        log.debug("%s: decoder output:\n%s", job.path, text)
        if result.error is not None:
            lines = list(dict.fromkeys(line.strip() for line in text.splitlines() if line.strip()))
            result.error += f" [decoder output: {' | '.join(lines)[:500]}]"
    result.decode_sec = time.perf_counter() - started
    result.peak_rss_bytes = peak_rss_bytes()
    if result.error is not None:
        result.frames = result.crops = result.times = None
    return result


def peak_rss_bytes() -> int:
    """This process's peak resident memory: ``VmHWM`` where Linux has it (``ru_maxrss`` of a
    spawned worker also counts the parent it was forked from before its exec)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _run(job: DecodeJob, opener: Opener, threads: int, result: DecodeResult) -> None:
    with opener(job.path, job.backend, fps=job.fps, threads=threads, device=job.device,
                frame_folders=job.frame_folders) as reader:
        result.duration_sec = float(reader.duration_sec)
        selection = reader.select(job.times)
        outputs = _Outputs(job, reader.size, selection)
        try:
            reader.decode(selection, outputs.add)
            _record(reader, result)
            result.fallback_reason = reader.fallback_reason
        except VideoDecodeError as error:
            if job.device == "cpu" or job.backend != "auto" or reader.backend == "pyav":
                raise
            # NVDEC failed mid-file: this video is decoded again on the CPU.
            with opener(job.path, "pyav", fps=job.fps, threads=threads) as cpu:
                outputs = _Outputs(job, cpu.size, cpu.select(job.times))
                cpu.decode(outputs.selection, outputs.add)
                _record(cpu, result)
            result.fallback_reason = f"decoded on the CPU: {error}"
    result.times = outputs.selection.times[outputs.selection.inverse]
    result.frames, result.crops = outputs.frames_in_request_order(), outputs.crops


def _record(reader: VideoReader, result: DecodeResult) -> None:
    result.backend = reader.backend
    result.frames_decoded = reader.stats.frames_decoded
    result.gop_minimum = reader.stats.gop_minimum
    result.frames_skipped = reader.stats.frames_skipped
    result.seeks = reader.stats.seeks


class _Outputs:
    """Preallocated outputs of a job, filled one decoded frame at a time."""

    def __init__(self, job: DecodeJob, size: tuple[int, int], selection: FrameSelection) -> None:
        self.selection = selection
        n_requests = selection.inverse.size
        self.boxes = None
        if job.boxes is not None:
            self.boxes = np.asarray(job.boxes, dtype=np.float64)
            if self.boxes.shape != (n_requests, 4):
                raise VideoDecodeError(
                    f"{job.path}: job {job.key!r} has {n_requests} times but boxes of shape "
                    f"{self.boxes.shape}; give one (left, top, right, bottom) box per time"
                )
        self.job = job
        self.size = resized_size(size, job.short_side)
        width, height = self.size
        self.frames = (
            np.empty((len(selection), height, width, 3), np.uint8) if job.full_frames else None
        )
        self.crops = None
        if self.boxes is not None:
            self.crops = np.empty((n_requests, job.crop_size, job.crop_size, 3), np.uint8)
            order = np.argsort(selection.inverse, kind="stable")
            bounds = np.searchsorted(selection.inverse[order], np.arange(len(selection) + 1))
            self.requests = [order[bounds[s] : bounds[s + 1]] for s in range(len(selection))]

    def add(self, slot: int, frame: DecodedFrame) -> None:
        full = None
        if self.crops is not None:
            full = frame.rgb()  # crops come from the full-resolution frame
            job = self.job
            for request in self.requests[slot]:
                self.crops[request] = crop(full, self.boxes[request], margin=job.crop_margin,
                                           square=job.crop_square, size=job.crop_size)
        if self.frames is not None:
            if full is not None and full.shape[1::-1] == self.size:
                self.frames[slot] = full
            else:  # scaled from the decoder's own pixels, in its scaler where it has one
                self.frames[slot] = frame.rgb(self.size)

    def frames_in_request_order(self) -> np.ndarray | None:
        inverse = self.selection.inverse
        if self.frames is None or np.array_equal(inverse, np.arange(len(self.selection))):
            return self.frames
        return self.frames[inverse]
