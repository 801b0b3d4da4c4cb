"""Video readers: the frames shown at given times, from a video file or a JPEG frame folder.

Times are seconds on the video's own clock: presentation time relative to the stream start.
The frame "at" time ``t`` is the one whose display interval ``[pts, next pts)`` contains
``t``; a time before the first frame gets the first frame, and a time up to one frame past the
last frame's end gets the last frame. Anything later is an error naming the video, the time
and the duration (a segment running past the end of its video).

A reader works in two steps: :meth:`VideoReader.select` maps times to distinct frames
(a :class:`FrameSelection`), :meth:`VideoReader.decode` decodes each selected frame once, in
presentation order, and hands it to a callback as a :class:`DecodedFrame`, which converts to
RGB at the size asked for (resizing inside the decoder's scaler where the backend has one).
:meth:`VideoReader.read_at` does both and returns full-size frames in request order.

Backends (:func:`egofeat.extract.video.open_video`; ``auto`` is the fastest correct one by measurement, see
``docs/PERFORMANCE.md``):

- ``pyav`` (default for files): plans decoding from the file's packet index
  (:mod:`egofeat.extract.gop`): each GOP decoded once, nothing past the last wanted packet;
  exact for variable frame rates; decodes from the start when seeks land wrong (broken
  indexes, some MPEG-TS files).
- ``decord`` (optional): refuses variable-frame-rate files and non-increasing timestamps.
- ``torchcodec`` (optional), on the CPU or on a CUDA device (NVDEC).
- ``frames``: EPIC-style folders of ``frame_%010d.jpg`` files numbered from 1, at 60 fps for
  ``PXX_YY`` and 50 fps for ``PXX_1YY`` (or an explicit ``fps``): the file at time ``t`` is
  ``max(1, floor(t * fps))``, clamped to the last file.
"""

from __future__ import annotations

import errno
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from egofeat.sources.epic_frames import epic_jpeg_fps, jpeg_frame_number

__all__ = [
    "Backend",
    "DecodeStats",
    "DecodedFrame",
    "FrameSelection",
    "Frames",
    "VideoDecodeError",
    "VideoReader",
    "resized_size",
]

Backend = Literal["auto", "pyav", "decord", "torchcodec", "frames"]
BACKENDS: tuple[str, ...] = ("auto", "pyav", "decord", "torchcodec", "frames")
#: a time this close before a frame's start counts as on it (float rounding of pts * time base)
TIME_SLACK_SEC = 1e-6


class VideoDecodeError(RuntimeError):
    """A video could not be opened or did not yield the requested frames.

    ``reason`` says why in one word, as the store's manifest records it (``missing-video``,
    ``unreadable-video``, ``past-end``; see ``egofeat.store.manifest.ERROR_REASONS``).
    """

    def __init__(self, message: str, reason: str = "unreadable-video") -> None:
        super().__init__(message)
        self.reason = reason

    def __reduce__(self) -> tuple[object, ...]:
        return type(self), (str(self), self.reason)


@dataclass(frozen=True)
class Frames:
    """Decoded frames: ``images`` ``(N, H, W, 3)`` uint8 RGB and their actual ``times`` (s)."""

    images: np.ndarray
    times: np.ndarray


@dataclass(frozen=True)
class FrameSelection:
    """The distinct frames shown at some requested times.

    ``frames`` are backend frame numbers (display order, sorted), ``times`` their start times,
    and request ``i`` shows ``frames[inverse[i]]``.
    """

    frames: np.ndarray
    times: np.ndarray
    inverse: np.ndarray

    def __len__(self) -> int:
        return int(self.frames.size)


@dataclass
class DecodeStats:
    """What a reader did: packets decoded (None when the backend does not say), disposable
    packets it did not need to decode, seeks, the GOP-minimum of what it was asked (None when
    the backend has no packet index)."""

    frames_decoded: int | None = 0
    frames_skipped: int = 0
    seeks: int = 0
    gop_minimum: int | None = None
    notes: list[str] = field(default_factory=list)


class DecodedFrame(ABC):
    """One decoded frame; :meth:`rgb` converts it (valid only inside the decode callback)."""

    @abstractmethod
    def rgb(self, size: tuple[int, int] | None = None) -> np.ndarray:
        """``(H, W, 3)`` uint8 RGB, scaled to ``size`` = ``(width, height)`` when given."""


class ArrayFrame(DecodedFrame):
    """A frame a backend already returns as an RGB array; scaled with Pillow."""

    def __init__(self, image: np.ndarray) -> None:
        self._image = image

    def rgb(self, size: tuple[int, int] | None = None) -> np.ndarray:
        return resize_rgb(self._image, size)


def resize_rgb(image: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """``image`` scaled to ``size`` (``(width, height)``), bilinear (antialiased when shrinking)."""
    height, width = image.shape[:2]
    if size is None or size == (width, height):
        return image
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))


def resized_size(size: tuple[int, int], short_side: int | None) -> tuple[int, int]:
    """``(width, height)`` with the short side scaled to ``short_side`` (never upscaled)."""
    width, height = size
    if short_side is None or min(width, height) <= short_side:
        return width, height
    scale = short_side / min(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


FrameCallback = Callable[[int, DecodedFrame], None]


class VideoReader(ABC):
    """Reads the frames shown at given times from one video. Use as a context manager."""

    path: Path
    backend: str
    fps: float
    duration_sec: float
    size: tuple[int, int]  # (width, height)
    #: why ``auto`` (or a CUDA decode) fell back to another backend, if it did
    fallback_reason: str | None = None

    def __init__(self) -> None:
        self.stats = DecodeStats()

    @abstractmethod
    def select(self, times_sec: np.ndarray | Sequence[float]) -> FrameSelection:
        """The distinct frames shown at ``times_sec``; raises for a time past the end."""

    @abstractmethod
    def decode(self, selection: FrameSelection, on_frame: FrameCallback) -> None:
        """Decode each frame of ``selection`` once, calling ``on_frame(slot, frame)`` in
        presentation order, ``slot`` indexing ``selection.frames``."""

    def read_at(self, times_sec: np.ndarray | Sequence[float]) -> Frames:
        """The full-size frames shown at ``times_sec``, in the order asked (duplicates allowed)."""
        selection = self.select(times_sec)
        width, height = self.size
        if not len(selection):
            return Frames(np.empty((0, height, width, 3), np.uint8), np.empty(0))
        images: list[np.ndarray | None] = [None] * len(selection)

        def keep(slot: int, frame: DecodedFrame) -> None:
            images[slot] = np.array(frame.rgb(), copy=True)

        self.decode(selection, keep)
        stacked = np.stack(images)
        return Frames(stacked[selection.inverse], selection.times[selection.inverse])

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

    def _select_by_starts(self, times_sec: np.ndarray | Sequence[float], starts: np.ndarray,
                          end_sec: float, frame_sec: float) -> FrameSelection:
        """Selection over frames starting at ``starts`` (sorted), the last one ending at
        ``end_sec``; times up to ``frame_sec`` past it show the last frame."""
        times = self._checked_times(times_sec)
        late = times > end_sec + frame_sec
        if late.any():
            raise self._past_end_error(float(times[late][0]), end_sec)
        index = np.searchsorted(starts, times + TIME_SLACK_SEC, side="right") - 1
        index = np.clip(index, 0, len(starts) - 1)
        frames, inverse = np.unique(index, return_inverse=True)
        return FrameSelection(frames, starts[frames], inverse.reshape(-1))

    def _past_end_error(self, time_sec: float, duration_sec: float) -> VideoDecodeError:
        return VideoDecodeError(
            f"{self.path}: time {time_sec:.3f} s is past the end of the video (duration "
            f"{duration_sec:.3f} s); does the segment run past the end of its video, or is the "
            "file truncated?", reason="past-end",
        )


def missing_path_error(path: Path, what: str) -> VideoDecodeError:
    """Why ``path`` (a ``what``: "video file", "frame folder") cannot be found: a symbolic link
    loop or a link to nothing say so; otherwise it does not exist."""
    if os.path.islink(path):
        try:
            os.stat(path)
        except OSError as error:
            if error.errno == errno.ELOOP:
                return VideoDecodeError(
                    f"{what} {path} is a symbolic link loop (a link that leads back to itself): "
                    "point it at the real file", reason="unreadable-video")
        return VideoDecodeError(f"{what} {path} is a symbolic link to {os.readlink(path)}, which "
                                "does not exist", reason="missing-video")
    for parent in path.parents:  # a loop further up the path hides everything below it
        if os.path.islink(parent):
            try:
                os.stat(parent)
            except OSError as error:
                if error.errno == errno.ELOOP:
                    return VideoDecodeError(f"{what} {path}: {parent} is a symbolic link loop (a "
                                            "link that leads back to itself)", reason="unreadable-video")
    return VideoDecodeError(f"{what} {path} does not exist", reason="missing-video")


def check_video_file(path: Path) -> None:
    """Raise a :class:`VideoDecodeError` naming ``path`` if it is missing, a folder or empty."""
    if not path.exists():
        raise missing_path_error(path, "video file")
    if path.is_dir():
        raise VideoDecodeError(
            f"{path} is a folder, not a video file (folders of JPEG frames are read only with "
            "--layout epic-frames)")
    if path.is_file() and path.stat().st_size == 0:
        raise VideoDecodeError(f"video file {path} is empty (0 bytes); re-download or re-encode it")


def first_line(error: BaseException) -> str:
    """The message of a decoder error without the C++ stack trace some decoders append."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0][:300] if lines else type(error).__name__


# ---------------------------------------------------------------------------------------------
# JPEG frame folders
# ---------------------------------------------------------------------------------------------


class _JpegFrame(DecodedFrame):
    def __init__(self, path: Path) -> None:
        self.path = path
        self._full: np.ndarray | None = None

    def rgb(self, size: tuple[int, int] | None = None) -> np.ndarray:
        try:
            if self._full is None and size is not None:
                with Image.open(self.path) as image:
                    # JPEG can decode at 1/2, 1/4, 1/8 scale (never below ``size``): cheaper
                    # than decoding the full frame and shrinking it.
                    image.draft("RGB", size)
                    return resize_rgb(np.asarray(image.convert("RGB")), size)
            if self._full is None:
                with Image.open(self.path) as image:
                    self._full = np.asarray(image.convert("RGB"))
            return resize_rgb(self._full, size)
        except (OSError, ValueError) as error:
            raise VideoDecodeError(f"cannot read frame {self.path}: {first_line(error)}") from None


class JpegFolderReader(VideoReader):
    """EPIC-style ``frame_%010d.jpg`` folders (see the module docstring)."""

    backend = "frames"

    def __init__(self, folder: Path, fps: float | None) -> None:
        super().__init__()
        self.path = folder
        self.stats.frames_decoded = 0
        if not folder.exists():
            raise missing_path_error(folder, "frame folder")
        if not folder.is_dir():
            raise VideoDecodeError(f"{folder} is a file, not a folder of frame_%010d.jpg files "
                                   "(--layout epic-frames reads frame folders; use epic-mp4, flat "
                                   "or a template for video files)")
        try:
            self.fps = float(fps) if fps else epic_jpeg_fps(folder.name)
        except ValueError as error:  # not an EPIC id: its frame rate must be given
            raise VideoDecodeError(f"{folder}: {error}; frame folders are read at the EPIC-KITCHENS frame "
                                   "rates, so they must be named by EPIC video ids") from None
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

    def select(self, times_sec: np.ndarray | Sequence[float]) -> FrameSelection:
        times = self._checked_times(times_sec)
        numbers = np.atleast_1d(jpeg_frame_number(times, self.fps)).astype(np.int64)
        late = numbers > self._last + 1
        if late.any():
            raise self._past_end_error(float(times[late][0]), self.duration_sec)
        frames, inverse = np.unique(np.minimum(numbers, self._last), return_inverse=True)
        return FrameSelection(frames, frames / self.fps, inverse.reshape(-1))

    def decode(self, selection: FrameSelection, on_frame: FrameCallback) -> None:
        for slot, number in enumerate(selection.frames.tolist()):
            on_frame(slot, _JpegFrame(self._file(number)))
            self.stats.frames_decoded += 1
