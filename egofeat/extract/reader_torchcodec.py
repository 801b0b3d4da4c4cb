"""The torchcodec reader (optional): FFmpeg on the CPU, or NVDEC on a CUDA device.

Frame times and the selection come from the same packet index as the PyAV reader (a CPU
demux of the file, about 1 % of decoding it), so both backends pick the same frame for a time;
torchcodec then decodes the selected frames by index (``seek_mode="exact"``: its frame ``i`` is
the ``i``-th frame in presentation order, as ours), and every frame it returns is checked
against the index's timestamp. On CUDA, frames stay on the GPU until they are scaled there
(bilinear, antialiased), and only the scaled frame crosses to host memory.

NVDEC cannot decode every stream (codec, profile, bit depth): torchcodec then decodes on the
CPU itself, and this reader reports that in :attr:`fallback_reason`, never silently.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from egofeat.extract.readers import (
    DecodedFrame,
    FrameCallback,
    FrameSelection,
    VideoDecodeError,
    VideoReader,
    first_line,
)

__all__ = ["TorchCodecReader", "torchcodec_available"]

# Frames per get_frames_at call: full-size frames of one call are held at once.
_BATCH = 16
# A returned frame whose pts is further than this from the index's is the wrong frame.
_PTS_TOLERANCE_SEC = 1e-3


def torchcodec_available() -> str | None:
    """None when torchcodec can decode here, else why not (one line)."""
    try:
        import torchcodec.decoders  # noqa: F401 - loads FFmpeg's libraries
    except Exception as error:  # ImportError, or OSError/RuntimeError loading FFmpeg
        return f"torchcodec is not usable ({first_line(error)})"
    return None


class _TensorFrame(DecodedFrame):
    """A ``(3, H, W)`` uint8 frame tensor on the CPU or a CUDA device."""

    def __init__(self, data: Any) -> None:
        self._data = data

    def rgb(self, size: tuple[int, int] | None = None) -> np.ndarray:
        import torch

        data = self._data
        if size is not None and size != (data.shape[2], data.shape[1]):
            scaled = torch.nn.functional.interpolate(
                data[None].float(), size=(size[1], size[0]), mode="bilinear",
                antialias=True, align_corners=False,
            )
            data = scaled[0].round_().clamp_(0, 255).to(torch.uint8)
        return data.permute(1, 2, 0).contiguous().cpu().numpy()


class TorchCodecReader(VideoReader):
    """Reads a video file with torchcodec on ``device`` (``cpu`` or ``cuda[:N]``)."""

    backend = "torchcodec"

    def __init__(self, path: Path, threads: int = 1, *, device: str = "cpu") -> None:
        from egofeat.extract.reader_pyav import PyAVReader

        super().__init__()
        self.path, self.device = path, device
        problem = torchcodec_available()
        if problem is not None:
            raise VideoDecodeError(f"{path}: {problem}")
        from torchcodec.decoders import VideoDecoder

        self._index = PyAVReader(path, threads)
        self.fps, self.duration_sec, self.size = (
            self._index.fps, self._index.duration_sec, self._index.size)
        self._start_sec = self._index.start_sec
        try:
            self._decoder = VideoDecoder(
                str(path), num_ffmpeg_threads=threads, device=device, seek_mode="exact",
                stream_index=self._index.stream_index,
            )
        except Exception as error:  # RuntimeError/ValueError from the C++ core
            self._index.close()
            raise VideoDecodeError(
                f"{path}: torchcodec cannot open it on {device} ({first_line(error)})"
            ) from None
        self.stats.frames_decoded = None  # torchcodec does not say what it decodes

    def select(self, times_sec: np.ndarray | Sequence[float]) -> FrameSelection:
        return self._index.select(times_sec)

    def decode(self, selection: FrameSelection, on_frame: FrameCallback) -> None:
        frames = selection.frames.tolist()
        self.stats.gop_minimum = (self.stats.gop_minimum or 0) + self._index.index.gop_minimum(
            selection.frames)
        for start in range(0, len(frames), _BATCH):
            chunk = frames[start : start + _BATCH]
            try:
                batch = self._decoder.get_frames_at(chunk)
            except Exception as error:
                raise VideoDecodeError(
                    f"{self.path}: torchcodec failed on {self.device}: {first_line(error)}"
                ) from None
            returned = batch.pts_seconds.cpu().numpy() - self._start_sec
            expected = selection.times[start : start + len(chunk)]
            wrong = np.flatnonzero(np.abs(returned - expected) > _PTS_TOLERANCE_SEC)
            if wrong.size:
                raise VideoDecodeError(
                    f"{self.path}: torchcodec returned the frame at {returned[wrong[0]]:.3f} s "
                    f"for the one at {expected[wrong[0]]:.3f} s; use backend='pyav'"
                )
            for offset in range(len(chunk)):
                on_frame(start + offset, _TensorFrame(batch.data[offset]))
        self._note_cpu_fallback()

    def _note_cpu_fallback(self) -> None:
        status = getattr(self._decoder, "cpu_fallback", None)
        if self.device != "cpu" and status:
            self.fallback_reason = f"torchcodec decoded on the CPU instead of {self.device}: {status}"

    def close(self) -> None:
        self._decoder = None
        self._index.close()
