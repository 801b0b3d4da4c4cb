"""The decord reader (optional: ``backend="decord"``).

decord seeks by frame index, so the reader maps times to indices with the frames' own
timestamps (``get_frame_timestamp``), not header frame counts or the average rate, and refuses
files its index-based seeking reads wrongly: variable frame rates and non-increasing
timestamps (a broken index). It returns MPEG-TS frames of the wrong GOP with the right
timestamps, which is why ``auto`` never picks it; see ``docs/PERFORMANCE.md`` for how it
compares with the default.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from egofeat.extract.readers import (
    ArrayFrame,
    FrameCallback,
    FrameSelection,
    VideoDecodeError,
    VideoReader,
    first_line,
)

__all__ = ["DecordReader"]

# Frame intervals deviating more than this fraction from the median mark a file as variable
# frame rate (decord's index-based seeking assumes a constant rate).
_VFR_TOLERANCE = 0.1
# Frames per get_batch call: full-size frames of one call are held at once (6 MB each at 1080p).
_BATCH = 16


class DecordReader(VideoReader):
    """Reads a constant-frame-rate video file with decord."""

    backend = "decord"

    def __init__(self, path: Path, threads: int = 1) -> None:
        super().__init__()
        self.path = path
        self.stats.frames_decoded = None  # decord does not say what it decodes
        try:
            import decord
        except ImportError:  # no wheels outside x86-64 Linux/Windows
            raise self._failure("decord is not installed") from None
        try:
            self._reader = decord.VideoReader(str(path), num_threads=threads)
            stamps = np.asarray(self._reader.get_frame_timestamp(range(len(self._reader))))
        except Exception as error:  # decord raises bare DECORDError/RuntimeError
            raise self._failure(f"decord cannot open the file ({first_line(error)})") from None
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
            raise self._failure(f"decord cannot decode the first frame ({first_line(error)})") from None
        self.size = (int(width), int(height))

    def _failure(self, reason: str) -> VideoDecodeError:
        return VideoDecodeError(f"{self.path}: {reason}; backend='pyav' or 'auto' can read it")

    def select(self, times_sec: np.ndarray | Sequence[float]) -> FrameSelection:
        # decord's float32 stamps: shift the times by the slack rather than the starts
        times = self._checked_times(times_sec) + self._slack
        return self._select_by_starts(times, self._starts, self.duration_sec,
                                      self._frame_sec + self._slack)

    def decode(self, selection: FrameSelection, on_frame: FrameCallback) -> None:
        frames = selection.frames.tolist()
        for start in range(0, len(frames), _BATCH):
            try:
                images = self._reader.get_batch(frames[start : start + _BATCH]).asnumpy()
            except Exception as error:
                raise VideoDecodeError(f"{self.path}: decord failed: {first_line(error)}") from None
            for offset, image in enumerate(images):
                on_frame(start + offset, ArrayFrame(image))

    def close(self) -> None:
        self._reader = None
