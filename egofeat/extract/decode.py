"""Video decoding: where videos live, readers that return the frames at given times, and a
pool of killable worker processes that decode ahead of the encoder.

Times are seconds on the video's own clock: presentation time relative to the first frame's
stream start. The frame "at" time ``t`` is the one whose display interval ``[pts, next pts)``
contains ``t``; a time before the first frame gets the first frame, and a time up to one frame
past the last frame's end gets the last frame. Anything later is an error naming the video,
the time and the duration (a segment running past the end of its video).

Backends (:func:`open_video`):

- ``decord``: seeks with the frames' own timestamps (``get_frame_timestamp``), not header
  frame counts or the average rate.
- ``pyav``: decodes forward from the keyframe before each run of sorted requested times,
  picking frames by their pts. Used by ``auto`` when decord can't open a file, reports
  non-monotonic or variable-frame-rate timestamps, or fails while reading, and for MPEG-TS
  files (decord returns frames of the wrong GOP from them, with the right timestamps).
- ``frames``: EPIC-style folders of ``frame_%010d.jpg`` files numbered from 1, at 60 fps for
  ``PXX_YY`` and 50 fps for ``PXX_1YY`` (or an explicit ``fps``): the file at time ``t`` is
  ``max(1, floor(t * fps))``, clamped to the last file.

:class:`DecodePool` runs :func:`decode_job` in worker processes (``spawn`` context: torch in
the parent is never forked) with bounded prefetch and a wall-clock timeout per job: a hung or
crashed decoder becomes an error result and a fresh worker takes its place. decord can spin
forever in native code holding the GIL, so only killing the process stops it.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import pickle
import re
import signal
import time
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Literal

import av
import numpy as np
from PIL import Image

from egofeat.extract.boxes import crop
from egofeat.extract.plan import epic_frame_rate, frame_number_at

__all__ = [
    "DecodeJob",
    "DecodePool",
    "DecodeResult",
    "Frames",
    "VideoDecodeError",
    "VideoLayout",
    "VideoReader",
    "decode_job",
    "open_video",
]

Backend = Literal["auto", "decord", "pyav", "frames"]
Opener = Callable[..., "VideoReader"]

VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".MP4", ".mkv", ".webm", ".mov", ".avi")
# Frame intervals deviating more than this fraction from the median mark a file as variable
# frame rate (decord's index-based seeking assumes a constant rate).
_VFR_TOLERANCE = 0.1
# Containers decord reads wrongly without an error: auto sends them to PyAV.
_PYAV_ONLY_EXTENSIONS = (".ts", ".mts", ".m2ts")


class VideoDecodeError(RuntimeError):
    """A video could not be opened or did not yield the requested frames."""


# ---------------------------------------------------------------------------------------------
# where videos live
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoLayout:
    """Maps a video id to its file or frame folder under ``root``.

    ``template`` is a path relative to ``root`` with the fields ``{video_id}``,
    ``{participant_id}`` and optionally ``{ext}``, which is tried with each of
    ``extensions`` in turn. Presets (:meth:`preset`):

    - ``epic-mp4``: ``{participant_id}/videos/{video_id}.MP4``
    - ``epic-frames``: ``{participant_id}/rgb_frames/{video_id}`` (a folder of JPEGs)
    - ``flat``: ``{video_id}{ext}``, trying ``.mp4 .MP4 .mkv .webm .mov .avi``

    ``participant_id`` defaults to the part of the video id before its first ``_`` (EPIC).
    """

    root: Path
    template: str
    extensions: tuple[str, ...] = VIDEO_EXTENSIONS

    PRESETS = {
        "epic-mp4": "{participant_id}/videos/{video_id}.MP4",
        "epic-frames": "{participant_id}/rgb_frames/{video_id}",
        "flat": "{video_id}{ext}",
    }

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))
        unknown = set(re.findall(r"{(\w*)}", self.template)) - {"video_id", "participant_id", "ext"}
        if unknown:
            raise ValueError(
                f"video path template {self.template!r} uses unknown field(s) "
                f"{', '.join(sorted(unknown))}; use {{video_id}}, {{participant_id}}, {{ext}}"
            )

    @classmethod
    def preset(cls, name: str, root: str | Path) -> VideoLayout:
        """A named layout (``epic-mp4``, ``epic-frames``, ``flat``) under ``root``."""
        if name not in cls.PRESETS:
            raise ValueError(
                f"unknown video layout {name!r}; presets are {', '.join(cls.PRESETS)}, or give "
                "a template such as '{participant_id}/videos/{video_id}.MP4'"
            )
        return cls(Path(root), cls.PRESETS[name])

    def candidates(self, video_id: str, participant_id: str | None = None) -> list[Path]:
        """The paths tried for a video, in order."""
        fields = {"video_id": video_id, "participant_id": participant_id or video_id.split("_")[0]}
        extensions = self.extensions if "{ext}" in self.template else ("",)
        return [self.root / self.template.format(**fields, ext=ext) for ext in extensions]

    def resolve(self, video_id: str, participant_id: str | None = None) -> Path:
        """The first candidate path that exists, else the first candidate.

        A missing video is reported when it is opened, as an error naming this path.
        """
        candidates = self.candidates(video_id, participant_id)
        return next((path for path in candidates if path.exists()), candidates[0])


# ---------------------------------------------------------------------------------------------
# readers
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Frames:
    """Decoded frames: ``images`` ``(N, H, W, 3)`` uint8 RGB and their actual ``times`` (s)."""

    images: np.ndarray
    times: np.ndarray


class VideoReader(ABC):
    """Reads the frames shown at given times from one video. Use as a context manager."""

    path: Path
    backend: str
    fps: float
    duration_sec: float
    size: tuple[int, int]  # (width, height)
    #: why ``auto`` fell back from decord to PyAV, if it did
    fallback_reason: str | None = None

    @abstractmethod
    def read_at(self, times_sec: np.ndarray | Sequence[float]) -> Frames:
        """The frames shown at ``times_sec``, in the order asked (duplicates allowed)."""

    def close(self) -> None:  # noqa: B027 - readers without resources need nothing
        """Release the file."""

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _checked_times(self, times_sec: np.ndarray | Sequence[float]) -> np.ndarray:
        times = np.asarray(times_sec, dtype=np.float64).reshape(-1)
        if not np.isfinite(times).all() or (times < 0).any():
            raise VideoDecodeError(f"{self.path}: frame times must be finite and >= 0")
        return times

    def _no_frames(self) -> Frames:
        width, height = self.size
        return Frames(np.empty((0, height, width, 3), np.uint8), np.empty(0))

    def _past_end_error(self, time_sec: float, duration_sec: float) -> VideoDecodeError:
        return VideoDecodeError(
            f"{self.path}: time {time_sec:.3f} s is past the end of the video (duration "
            f"{duration_sec:.3f} s); does the segment run past the end of its video, or is the "
            "file truncated?"
        )


def open_video(
    path: str | Path, backend: Backend = "auto", *, fps: float | None = None, threads: int = 1
) -> VideoReader:
    """Open a video file or a JPEG frame folder.

    Args:
        path: a video file, or a folder of ``frame_%010d.jpg`` files.
        backend: ``auto`` (folders: ``frames``; files: decord, falling back to PyAV),
            ``decord``, ``pyav`` or ``frames``.
        fps: the frame rate of a JPEG folder; default: the EPIC rule on the folder's name.
        threads: decoder threads (0: let FFmpeg choose). Keep it small when many worker
            processes decode at once.
    """
    path = Path(path)
    if backend == "frames" or (backend == "auto" and path.is_dir()):
        return _JpegFolderReader(path, fps)
    _check_video_file(path)
    if backend == "pyav":
        return _PyAVReader(path, threads)
    if backend == "decord":
        return _DecordReader(path, threads, fallback=False)
    if backend != "auto":
        raise ValueError(f"unknown decode backend {backend!r}; use auto, decord, pyav or frames")
    if path.suffix.lower() in _PYAV_ONLY_EXTENSIONS:
        reader = _PyAVReader(path, threads)
        reader.fallback_reason = "MPEG-TS: decord returns frames of the wrong GOP"
        return reader
    try:
        return _DecordReader(path, threads, fallback=True)
    except _NeedsFallback as reason:
        reader = _PyAVReader(path, threads)
        reader.fallback_reason = str(reason)
        return reader


def _check_video_file(path: Path) -> None:
    if not path.exists():
        raise VideoDecodeError(f"video file {path} does not exist")
    if path.is_dir():
        raise VideoDecodeError(f"{path} is a folder; use backend='frames' for JPEG frame folders")
    if path.is_file() and path.stat().st_size == 0:
        raise VideoDecodeError(f"video file {path} is empty (0 bytes); re-download or re-encode it")


class _NeedsFallback(Exception):
    """decord can't read this file correctly; the message says why."""


def _frame_index_at(starts: np.ndarray, times: np.ndarray, slack: float = 0.0) -> np.ndarray:
    """Index of the frame whose ``[start, next start)`` contains each time (first if before).

    A time within ``slack`` before a frame's start counts as that frame's.
    """
    return np.clip(np.searchsorted(starts, times + slack, side="right") - 1, 0, len(starts) - 1)


class _DecordReader(VideoReader):
    backend = "decord"

    def __init__(self, path: Path, threads: int, *, fallback: bool) -> None:
        self.path, self._threads, self._fallback = path, threads, fallback
        self._delegate: VideoReader | None = None
        try:
            import decord
        except ImportError:  # no wheels outside x86-64 Linux/Windows
            raise self._failure("decord is not installed") from None
        try:
            self._reader = decord.VideoReader(str(path), num_threads=threads)
            stamps = np.asarray(self._reader.get_frame_timestamp(range(len(self._reader))))
        except Exception as error:  # decord raises bare DECORDError/RuntimeError
            raise self._failure(f"decord cannot open the file ({_first_line(error)})") from None
        if stamps.size == 0:
            raise self._failure("decord found no frames")
        self._starts = stamps[:, 0].astype(np.float64)
        # decord's timestamps are float32: at an hour a frame start is only known to ~0.5 ms,
        # so a time that close before a start counts as on it (2.2 s at 25 fps is frame 55).
        self._slack = 2 * float(np.spacing(np.float32(max(stamps[-1, 1], 1.0))))
        intervals = np.diff(self._starts)
        if (intervals <= 0).any():
            raise self._failure("frame timestamps are not increasing (broken index)")
        if intervals.size >= 2:
            median = float(np.median(intervals))
            if np.abs(intervals - median).max() > _VFR_TOLERANCE * median:
                raise self._failure("variable frame rate")
        self.fps = float(self._reader.get_avg_fps())
        self._frame_sec = float(np.median(intervals)) if intervals.size else 1.0 / self.fps
        self.duration_sec = float(max(stamps[-1, 1], self._starts[-1] + self._frame_sec))
        try:
            height, width = self._reader[0].shape[:2]
            self._reader.seek(0)
        except Exception as error:  # e.g. MPEG-TS files decord indexes but cannot decode
            raise self._failure(f"decord cannot decode the first frame ({_first_line(error)})") from None
        self.size = (int(width), int(height))

    def _failure(self, reason: str) -> Exception:
        if self._fallback:
            return _NeedsFallback(reason)
        return VideoDecodeError(f"{self.path}: {reason}; backend='pyav' or 'auto' can read it")

    def read_at(self, times_sec: np.ndarray | Sequence[float]) -> Frames:
        if self._delegate is not None:
            return self._delegate.read_at(times_sec)
        times = self._checked_times(times_sec)
        if times.size == 0:
            return self._no_frames()
        late = times > self.duration_sec + self._frame_sec
        if late.any():
            raise self._past_end_error(float(times[late][0]), self.duration_sec)
        indices = _frame_index_at(self._starts, times, self._slack)
        unique, inverse = np.unique(indices, return_inverse=True)
        try:
            images = self._reader.get_batch(unique.tolist()).asnumpy()
        except Exception as error:
            if not self._fallback:
                raise VideoDecodeError(
                    f"{self.path}: decord failed: {_first_line(error)}"
                ) from None
            self._delegate = _PyAVReader(self.path, self._threads)
            self.fallback_reason = f"decord failed while reading ({_first_line(error)})"
            self.backend = "pyav"
            return self._delegate.read_at(times)
        return Frames(images[inverse], self._starts[unique][inverse])

    def close(self) -> None:
        if self._delegate is not None:
            self._delegate.close()
        self._reader = None


class _PyAVReader(VideoReader):
    backend = "pyav"
    #: seek (to the keyframe before) rather than decode through gaps longer than this
    seek_gap_sec = 5.0

    def __init__(self, path: Path, threads: int) -> None:
        self.path = path
        try:
            self._container = av.open(str(path))
        except (av.FFmpegError, OSError) as error:
            raise VideoDecodeError(
                f"{path}: not a readable video ({_first_line(error)}); the file is truncated, "
                "corrupt or not a video"
            ) from None
        if not self._container.streams.video:
            self._container.close()
            raise VideoDecodeError(f"{path}: the file has no video stream")
        stream = self._stream = self._container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.thread_count = threads
        self._time_base = float(stream.time_base)
        self._start = stream.start_time if stream.start_time is not None else 0
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        self.fps = float(rate) if rate else 0.0
        self._frame_sec = 1.0 / self.fps if self.fps else 0.0
        if stream.duration is not None:
            self.duration_sec = float(stream.duration * stream.time_base)
        elif self._container.duration is not None:
            self.duration_sec = self._container.duration / av.time_base
        else:
            self.duration_sec = math.nan
        self.size = (stream.codec_context.width, stream.codec_context.height)
        self._seek_ok = True

    def read_at(self, times_sec: np.ndarray | Sequence[float]) -> Frames:
        times = self._checked_times(times_sec)
        if times.size == 0:
            return self._no_frames()
        order = np.argsort(times, kind="stable")
        images: list[np.ndarray | None] = [None] * times.size
        actual = np.empty(times.size)
        position = 0
        while position < times.size:
            position = self._read_run(times, order, position, images, actual)
        return Frames(np.stack(images), actual)

    def _decoded(self, from_sec: float) -> Iterator[tuple[float, av.VideoFrame]]:
        """Frames with their times from the keyframe at or before ``from_sec``."""
        if self._seek_ok:
            self._container.seek(self._start + int(from_sec / self._time_base), stream=self._stream)
        else:
            # The container's start: some demuxers (MPEG-TS) yield nothing after a seek to the
            # stream's first pts.
            self._container.seek(0)
        last = None
        for frame in self._container.decode(self._stream):
            if frame.pts is not None:
                last = (frame.pts - self._start) * self._time_base
            else:  # no timestamp: assume the nominal rate
                last = 0.0 if last is None else last + self._frame_sec
            yield last, frame

    def _read_run(
        self,
        times: np.ndarray,
        order: np.ndarray,
        position: int,
        images: list[np.ndarray | None],
        actual: np.ndarray,
    ) -> int:
        """Decode forward from the keyframe before ``times[order[position]]``, filling picks.

        Returns the position reached: all requested times, or the first one far enough ahead
        to be worth a seek.
        """
        first_wanted, first_position = times[order[position]], position
        previous: tuple[float, av.VideoFrame] | None = None
        picked: tuple[float, np.ndarray] | None = None
        frames = self._decoded(first_wanted)
        try:
            for pts, frame in frames:
                if previous is None and self._seek_ok and pts > first_wanted + self._frame_sec:
                    # The seek landed a frame or more after the wanted time: a broken index.
                    # Decode from the start from now on.
                    self._seek_ok = False
                    return position
                while position < times.size and times[order[position]] < pts:
                    shown = previous or (pts, frame)
                    picked = _convert(shown, picked)
                    images[order[position]], actual[order[position]] = picked[1], picked[0]
                    position += 1
                if position == times.size:
                    return position
                # Seek ahead only after progress: this run's seek already aimed at a time it
                # has not reached (e.g. one past the end, beyond the last keyframe).
                gap = times[order[position]] - pts
                if self._seek_ok and position > first_position and gap > self.seek_gap_sec:
                    return position
                previous = (pts, frame)
        except av.FFmpegError as error:
            raise VideoDecodeError(
                f"{self.path}: decoding failed after {previous[0] if previous else 0:.3f} s "
                f"({_first_line(error)}); the file is truncated or corrupt"
            ) from None
        if previous is None:
            if self._seek_ok:  # the seek found no frames (MPEG-TS does this): decode from the start
                self._seek_ok = False
                return position
            raise VideoDecodeError(f"{self.path}: no frames could be decoded")
        last_time, last_frame = previous
        frame_sec = (last_frame.duration or 0) * self._time_base or self._frame_sec
        end = last_time + frame_sec
        for index in order[position:]:
            if times[index] > end + frame_sec:
                raise self._past_end_error(float(times[index]), end)
            picked = _convert(previous, picked)
            images[index], actual[index] = picked[1], picked[0]
        return times.size

    def close(self) -> None:
        self._container.close()


def _convert(
    shown: tuple[float, av.VideoFrame], cached: tuple[float, np.ndarray] | None
) -> tuple[float, np.ndarray]:
    """``shown`` as ``(time, rgb array)``, reusing ``cached`` when it is the same frame."""
    if cached is not None and cached[0] == shown[0]:
        return cached
    return shown[0], shown[1].to_ndarray(format="rgb24")


class _JpegFolderReader(VideoReader):
    backend = "frames"

    def __init__(self, folder: Path, fps: float | None) -> None:
        self.path = folder
        if not folder.is_dir():
            raise VideoDecodeError(f"frame folder {folder} does not exist")
        try:
            self.fps = float(fps) if fps else epic_frame_rate(folder.name)
        except ValueError as error:
            raise VideoDecodeError(f"{folder}: {error}") from None
        numbers = [
            int(match.group(1))
            for entry in os.scandir(folder)
            if (match := re.fullmatch(r"frame_(\d{10})\.jpg", entry.name))
        ]
        if not numbers:
            raise VideoDecodeError(f"frame folder {folder} holds no frame_%010d.jpg files")
        self._last = max(numbers)
        self.duration_sec = self._last / self.fps
        with Image.open(self._file(min(numbers))) as first:
            self.size = first.size

    def _file(self, number: int) -> Path:
        return self.path / f"frame_{number:010d}.jpg"

    def read_at(self, times_sec: np.ndarray | Sequence[float]) -> Frames:
        times = self._checked_times(times_sec)
        if times.size == 0:
            return self._no_frames()
        numbers = np.atleast_1d(frame_number_at(times, self.fps))
        late = numbers > self._last + 1
        if late.any():
            raise self._past_end_error(float(times[late][0]), self.duration_sec)
        numbers = np.minimum(numbers, self._last)
        unique, inverse = np.unique(numbers, return_inverse=True)
        images = np.stack([self._load(int(number)) for number in unique])
        return Frames(images[inverse], unique[inverse] / self.fps)

    def _load(self, number: int) -> np.ndarray:
        path = self._file(number)
        try:
            with Image.open(path) as image:
                return np.asarray(image.convert("RGB"))
        except (OSError, ValueError) as error:
            raise VideoDecodeError(f"cannot read frame {path}: {_first_line(error)}") from None


def _first_line(error: BaseException) -> str:
    """The message of a decoder error without the C++ stack trace decord appends."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0][:300] if lines else type(error).__name__


# ---------------------------------------------------------------------------------------------
# decode jobs
# ---------------------------------------------------------------------------------------------


@dataclass
class DecodeJob:
    """One batch of frame times of one video, and what to return for them.

    ``boxes`` (``(N, 4)`` normalized ``left, top, right, bottom``, one per time) ask for crops
    cut from the full-resolution frames with :func:`egofeat.extract.boxes.crop`. Full frames
    come back resized so their short side is ``short_side`` (never upscaled; ``None``: native)
    to keep inter-process traffic small, or not at all with ``full_frames=False``.
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
    fallback_reason: str | None = None
    error: str | None = None
    #: the video's duration when it could be opened (also on errors: lets a caller tell which
    #: segments run past the end and decode the others)
    duration_sec: float | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def decode_job(job: DecodeJob, *, opener: Opener = open_video, threads: int = 1) -> DecodeResult:
    """Run one job in this process. Never raises for a bad video: errors become results."""
    started = time.perf_counter()
    result = DecodeResult(key=job.key, path=str(job.path))
    try:
        with opener(job.path, job.backend, fps=job.fps, threads=threads) as reader:
            result.duration_sec = float(reader.duration_sec)
            decoded = reader.read_at(job.times)
            result.backend, result.fallback_reason = reader.backend, reader.fallback_reason
        result.times = decoded.times
        if job.boxes is not None:
            result.crops = _crops(job, decoded.images)
        if job.full_frames:
            result.frames = _resized(decoded.images, job.short_side)
    except VideoDecodeError as error:
        result.error = str(error)
    except Exception as error:  # a decoder bug must not take the run down
        detail = "".join(traceback.format_exception_only(type(error), error)).strip()
        result.error = f"{job.path}: unexpected decode failure: {detail}"
    result.decode_sec = time.perf_counter() - started
    if result.error is not None:
        result.frames = result.crops = result.times = None
    return result


def _crops(job: DecodeJob, images: np.ndarray) -> np.ndarray:
    boxes = np.asarray(job.boxes, dtype=np.float64)
    if boxes.shape != (len(images), 4):
        raise VideoDecodeError(
            f"{job.path}: job {job.key!r} has {len(images)} times but boxes of shape "
            f"{boxes.shape}; give one (left, top, right, bottom) box per time"
        )
    return np.stack(
        [
            crop(image, box, margin=job.crop_margin, square=job.crop_square, size=job.crop_size)
            for image, box in zip(images, boxes, strict=True)
        ]
    )


def _resized(images: np.ndarray, short_side: int | None) -> np.ndarray:
    height, width = images.shape[1:3]
    if short_side is None or min(height, width) <= short_side:
        return images
    scale = short_side / min(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.stack(
        [
            np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
            for image in images
        ]
    )


# ---------------------------------------------------------------------------------------------
# the worker pool
# ---------------------------------------------------------------------------------------------


def _worker_main(conn: Connection, opener: Opener, threads: int) -> None:
    try:
        while (job := conn.recv()) is not None:
            conn.send(decode_job(job, opener=opener, threads=threads))
    except (EOFError, KeyboardInterrupt):  # the parent went away or the run was interrupted
        return


class _Worker:
    """One decode process, the parent's end of its pipe, and the job it is working on."""

    def __init__(self, process: multiprocessing.process.BaseProcess, conn: Connection) -> None:
        self.process, self.conn = process, conn
        self.job: tuple[int, DecodeJob] | None = None
        self.started = 0.0

    @classmethod
    def start(
        cls, context: multiprocessing.context.BaseContext, opener: Opener, threads: int
    ) -> _Worker:
        parent, child = context.Pipe()
        process = context.Process(
            target=_worker_main, args=(child, opener, threads), name="egofeat-decode", daemon=True
        )
        process.start()
        child.close()
        return cls(process, parent)

    def assign(self, sequence: int, job: DecodeJob) -> None:
        self.job, self.started = (sequence, job), time.monotonic()
        self.conn.send(job)

    def stop(self, *, graceful: bool = False) -> None:
        if graceful:
            try:
                self.conn.send(None)
                self.process.join(timeout=5)
            except OSError:  # the worker is already gone
                pass
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=5)
        self.conn.close()

    def exit_description(self) -> str:
        self.process.join(timeout=5)
        code = self.process.exitcode
        if code is None or code >= 0:
            return f"exit code {code}"
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"


class DecodePool:
    """Decode jobs ahead of the consumer in worker processes.

    Args:
        workers: worker processes; ``0`` decodes in the calling process, lazily, one job per
            ``next()`` (no timeout protection: for tests and debugging).
        prefetch: decoded results allowed to wait for the consumer beyond one per worker; at
            most ``workers + prefetch`` jobs are in flight or waiting at any time.
        timeout_sec: wall-clock limit for one job. A worker still busy after it (a hang) is
            killed, the job becomes an error result naming the file, and a fresh worker
            starts. A worker that dies (e.g. a decoder segfault) is handled the same way.
        threads: decoder threads per worker.
        opener: the function opening a video (:func:`open_video`); workers import it, so it
            must be a module-level function.
        context: the multiprocessing start method, ``spawn`` or ``forkserver``.

    Results come back **in job order**, so a writer can consume them as it submitted them.
    Workers start on first use and are reused across :meth:`imap` calls; :meth:`close` (or
    leaving the ``with`` block) stops them.
    """

    def __init__(
        self,
        workers: int = 2,
        prefetch: int = 2,
        timeout_sec: float = 300.0,
        *,
        threads: int = 1,
        opener: Opener = open_video,
        context: Literal["spawn", "forkserver"] = "spawn",
    ) -> None:
        if workers < 0 or prefetch < 0 or not timeout_sec > 0:
            raise ValueError(
                f"need workers >= 0, prefetch >= 0 and timeout_sec > 0, got {workers}, "
                f"{prefetch} and {timeout_sec}"
            )
        if workers:
            try:
                pickle.dumps(opener)
            except (pickle.PicklingError, AttributeError, TypeError):
                raise ValueError(
                    f"opener {opener!r} cannot be sent to worker processes; pass a "
                    "module-level function"
                ) from None
        self.workers, self.prefetch, self.timeout_sec = workers, prefetch, timeout_sec
        self.threads, self.opener = threads, opener
        self._context = multiprocessing.get_context(context)
        self._slots: list[_Worker | None] = [None] * workers

    def imap(self, jobs: Iterable[DecodeJob]) -> Iterator[DecodeResult]:
        """Decode ``jobs`` (consumed lazily) and yield one result per job, in job order."""
        if self.workers == 0:
            for job in jobs:
                yield decode_job(job, opener=self.opener, threads=self.threads)
            return
        pending = iter(jobs)
        done: dict[int, DecodeResult] = {}
        submitted = yielded = 0
        exhausted = False
        try:
            while True:
                while not exhausted and submitted - yielded < self.workers + self.prefetch:
                    worker = self._idle_worker()
                    if worker is None:
                        break
                    job = next(pending, None)
                    if job is None:
                        exhausted = True
                        break
                    worker.assign(submitted, job)
                    submitted += 1
                if yielded in done:
                    yield done.pop(yielded)
                    yielded += 1
                elif exhausted and yielded == submitted:
                    return
                else:
                    done.update(self._collect())
        finally:
            self._abandon_busy()

    def close(self) -> None:
        """Stop all workers."""
        for worker in self._slots:
            if worker is not None:
                worker.stop(graceful=True)
        self._slots = [None] * self.workers

    def __enter__(self) -> DecodePool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _idle_worker(self) -> _Worker | None:
        for slot, worker in enumerate(self._slots):
            if worker is not None and worker.job is None and not worker.process.is_alive():
                worker.stop()  # died while idle (e.g. killed from outside): replace it
                worker = None
            if worker is None:
                worker = self._slots[slot] = _Worker.start(self._context, self.opener, self.threads)
            if worker.job is None:
                return worker
        return None

    def _collect(self) -> dict[int, DecodeResult]:
        """Wait until at least one busy worker finishes, dies or times out; their results."""
        busy = [worker for worker in self._slots if worker is not None and worker.job is not None]
        deadline = min(worker.started for worker in busy) + self.timeout_sec
        wait([worker.conn for worker in busy], timeout=max(deadline - time.monotonic(), 0.0))
        results = {}
        for worker in busy:
            sequence, job = worker.job
            # Readiness first, then the clock: a result that sat in the pipe while the consumer
            # was busy finished in time.
            if worker.conn.poll():
                try:
                    results[sequence] = worker.conn.recv()
                    worker.job = None
                    continue
                except (EOFError, OSError):
                    problem = f"the decode worker died ({worker.exit_description()})"
            elif time.monotonic() - worker.started > self.timeout_sec:
                problem = f"decoding timed out after {self.timeout_sec:g} s; the worker was killed"
            else:
                continue
            results[sequence] = DecodeResult(
                key=job.key,
                path=str(job.path),
                decode_sec=time.monotonic() - worker.started,
                error=f"{job.path}: {problem}",
            )
            self._discard(worker)
        return results

    def _discard(self, worker: _Worker) -> None:
        worker.stop()
        self._slots[self._slots.index(worker)] = None  # a fresh one starts when needed

    def _abandon_busy(self) -> None:
        # The consumer stopped early (or failed): results still being decoded are unwanted.
        for worker in self._slots:
            if worker is not None and worker.job is not None:
                self._discard(worker)
