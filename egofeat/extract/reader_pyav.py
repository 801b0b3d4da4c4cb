"""The PyAV (FFmpeg) reader: planned decoding from the file's packet index.

On opening, the file is demuxed once without decoding (:meth:`PacketIndex.scan`), which gives
every frame's presentation time (exact for variable frame rates) and the keyframes. A
selection of frames becomes decode runs (:meth:`PacketIndex.plan`): seek to the keyframe, feed
packets up to the last wanted one, drain the decoder. Only wanted frames are converted to RGB,
by one libswscale context per reader, scaling in the same pass when a smaller size is asked.

When a seek lands after the keyframe it aimed at (a broken index; some MPEG-TS files), the
reader stops seeking and decodes the rest from the start of the file, in one pass.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import Interpolation, VideoReformatter

from egofeat.extract.gop import PacketIndex, Run
from egofeat.extract.readers import (
    DecodedFrame,
    FrameCallback,
    FrameSelection,
    VideoDecodeError,
    VideoReader,
    first_line,
)

__all__ = ["PyAVReader"]


class _SeekLandedLate(Exception):
    """The demuxer's first keyframe after a seek is later than the one asked for."""


class _Scalers:
    """Two libswscale contexts kept for all frames of a reader (PyAV's per-frame conversion
    builds a new one each time, which costs more than converting a 456x256 frame): one scales
    in the frame's own YUV format, one converts to RGB. Scaling before converting touches a
    third of the bytes that scaling RGB does (4:2:0 chroma)."""

    def __init__(self, threads: int) -> None:
        self.scale, self.convert, self.threads = VideoReformatter(), VideoReformatter(), threads

    def rgb(self, frame: av.VideoFrame, size: tuple[int, int] | None) -> np.ndarray:
        if size is not None and size != (frame.width, frame.height):
            # AREA averages when shrinking (no aliasing from 1080p to 224 px), and is cheaper
            # than swscale's BILINEAR there.
            interpolation = Interpolation.AREA if size[0] < frame.width else Interpolation.BILINEAR
            frame = self.scale.reformat(frame, width=size[0], height=size[1],
                                        interpolation=interpolation, threads=self.threads)
        return self.convert.reformat(frame, format="rgb24", threads=self.threads).to_ndarray()


class _PyAVFrame(DecodedFrame):
    def __init__(self, frame: av.VideoFrame, scalers: _Scalers) -> None:
        self._frame, self._scalers = frame, scalers

    def rgb(self, size: tuple[int, int] | None = None) -> np.ndarray:
        return self._scalers.rgb(self._frame, size)


class PyAVReader(VideoReader):
    """Reads a video file with PyAV; see the module docstring."""

    backend = "pyav"

    def __init__(self, path: Path, threads: int = 1) -> None:
        super().__init__()
        self.path, self._threads = path, threads
        try:
            self._container = av.open(str(path))
        except (av.FFmpegError, OSError) as error:
            raise VideoDecodeError(
                f"{path}: not a readable video ({first_line(error)}); the file is truncated, "
                "corrupt or not a video"
            ) from None
        try:
            self._open_stream()
        except BaseException:
            self._container.close()
            raise
        #: False once a seek landed wrong: the reader then decodes from the start
        self.seek_ok = True
        #: unwanted packets between two GOP ranges below which decoding through beats a seek
        #: (a seek restarts a frame-threaded decoder, which costs about a frame per thread)
        self.seek_cost = max(1, threads)
        self._scalers = _Scalers(threads)

    def _open_stream(self) -> None:
        container, path = self._container, self.path
        if not container.streams.video:
            raise VideoDecodeError(f"{path}: the file has no video stream")
        stream = self._stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.thread_count = self._threads
        time_base = float(stream.time_base)
        try:
            index = self._index = PacketIndex.scan(container, stream)
        except ValueError as error:
            raise VideoDecodeError(
                f"{path}: decoding failed: {error} (a raw elementary stream?); remux it into "
                "MP4 or MKV, e.g. ffmpeg -i IN -c copy OUT.mp4"
            ) from None
        if not len(index):
            raise VideoDecodeError(f"{path}: no frames could be decoded (the stream is empty)")
        display = index.display_pts
        self._start = stream.start_time if stream.start_time is not None else int(display[0])
        #: the stream time (s) that is time 0 on the video's clock
        self.start_sec = float(self._start * stream.time_base)
        self.stream_index = stream.index
        self._starts = (display - self._start) * time_base
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        intervals = np.diff(self._starts)
        median = float(np.median(intervals)) if intervals.size else 0.0
        self.fps = float(rate) if rate else (1.0 / median if median > 0 else 0.0)
        self._frame_sec = median if median > 0 else (1.0 / self.fps if self.fps else 0.0)
        last_duration = index.duration[index.decode_position(np.array([len(index) - 1]))[0]]
        self._end = float(self._starts[-1] + (last_duration * time_base or self._frame_sec))
        header = math.nan
        if stream.duration is not None:
            header = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            header = container.duration / av.time_base
        self.duration_sec = max(header, self._end) if math.isfinite(header) else self._end
        # The header promises more than the file holds: a cut download.
        self._truncated = not index.complete or (
            math.isfinite(header) and header > self._end + 2 * self._frame_sec
            and (stream.frames or 0) > len(index)
        )
        self._header_sec = header
        self.size = (stream.codec_context.width, stream.codec_context.height)
        self._display_of_pts = dict(zip(display.tolist(), range(len(index)), strict=True))
        # decode-order position by pts; with repeated pts (a broken file) the first one wins
        self._position_of_pts = {
            stamp: position for position, stamp in reversed(list(enumerate(index.pts.tolist())))
        }

    @property
    def index(self) -> PacketIndex:
        """The file's packet index."""
        return self._index

    def select(self, times_sec: np.ndarray | Sequence[float]) -> FrameSelection:
        times = self._checked_times(times_sec)
        if self._truncated and (times > self._end + self._frame_sec).any():
            raise VideoDecodeError(
                f"{self.path}: decoding failed after {self._end:.3f} s: the file ends there "
                f"although its header says {self._header_sec:.3f} s; the file is truncated or "
                "corrupt"
            )
        return self._select_by_starts(times, self._starts, self._end, self._frame_sec)

    def decode(self, selection: FrameSelection, on_frame: FrameCallback) -> None:
        wanted = selection.frames
        if not wanted.size:
            return
        slot_of = dict(zip(wanted.tolist(), range(wanted.size), strict=True))
        filled = np.zeros(wanted.size, bool)
        self.stats.gop_minimum = (self.stats.gop_minimum or 0) + self._index.gop_minimum(wanted)
        # disposable pictures nobody asked for are never fed to the decoder
        skippable = set(np.flatnonzero(self._index.disposable).tolist())
        skippable -= set(self._index.decode_position(wanted).tolist())
        for run in self._runs(wanted):
            try:
                self._decode_run(run, slot_of, filled, on_frame, skippable)
            except _SeekLandedLate:
                self.seek_ok = False
                self.stats.notes.append("a seek landed after its keyframe: decoded from the start")
                break
        if not self.seek_ok and not filled.all():
            self._decode_run(self._from_start(wanted[~filled]), slot_of, filled, on_frame,
                             skippable)
        if not filled.all():
            missing = float(selection.times[np.flatnonzero(~filled)[0]])
            raise VideoDecodeError(
                f"{self.path}: the frame at {missing:.3f} s could not be decoded; the file is "
                "truncated or corrupt"
            )

    def _runs(self, wanted: np.ndarray) -> list[Run]:
        if self.seek_ok:
            return self._index.plan(wanted, self.seek_cost)
        return [self._from_start(wanted)]

    def _from_start(self, wanted: np.ndarray) -> Run:
        return Run(0, int(self._index.decode_position(wanted).max()))

    def _seek(self, run: Run) -> None:
        if run.first == 0:
            # The container's start: some demuxers (MPEG-TS) yield nothing after a seek to the
            # stream's first pts.
            self._container.seek(0)
        else:
            self._container.seek(int(self._index.pts[run.first]), stream=self._stream)
        self.stats.seeks += 1

    def _decode_run(self, run: Run, slot_of: dict[int, int], filled: np.ndarray,
                    on_frame: FrameCallback, skippable: set[int]) -> None:
        codec = self._stream.codec_context
        self._seek(run)
        started = run.first == 0
        decoded_until = 0.0
        position_of_pts, stats = self._position_of_pts, self.stats
        try:
            for packet in self._container.demux(self._stream):
                if packet.size == 0:  # end of stream
                    break
                stamp = packet.pts
                position = position_of_pts.get(stamp if stamp is not None else packet.dts)
                if not started:
                    if not packet.is_keyframe:
                        continue  # before the first keyframe: skipped without decoding
                    if position is None or position > run.first:
                        raise _SeekLandedLate
                    started = True
                if position in skippable:
                    stats.frames_skipped += 1
                else:
                    frames = codec.decode(packet)
                    stats.frames_decoded += 1
                    if frames:
                        decoded_until = self._emit(frames, slot_of, filled, on_frame,
                                                   decoded_until)
                if position is not None and position >= run.last:
                    break
            self._emit(self._drain(codec), slot_of, filled, on_frame, decoded_until)
        except av.FFmpegError as error:
            raise VideoDecodeError(
                f"{self.path}: decoding failed after {decoded_until:.3f} s "
                f"({first_line(error)}); the file is truncated or corrupt"
            ) from None

    @staticmethod
    def _drain(codec: av.codec.context.CodecContext) -> list[av.VideoFrame]:
        try:
            return codec.decode(None)
        except av.EOFError:  # already drained
            return []

    def _emit(self, frames: Iterable[av.VideoFrame], slot_of: dict[int, int], filled: np.ndarray,
              on_frame: FrameCallback, decoded_until: float) -> float:
        for frame in frames:
            if frame.pts is None:
                continue
            display = self._display_of_pts.get(frame.pts)
            if display is None:
                continue
            decoded_until = max(decoded_until, float(self._starts[display]))
            slot = slot_of.get(display)
            if slot is not None and not filled[slot]:
                filled[slot] = True
                on_frame(slot, _PyAVFrame(frame, self._scalers))
        return decoded_until

    def close(self) -> None:
        self._container.close()
