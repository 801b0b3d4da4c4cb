"""Opening a video: the reader backend for a path (a file, or a JPEG frame folder).

The backends are in :mod:`.readers` (the interface and JPEG folders), :mod:`.reader_pyav`
(the default), :mod:`.reader_decord` and :mod:`.reader_torchcodec` (CPU or NVDEC).
"""

from __future__ import annotations

from pathlib import Path

from egofeat.extract.reader_decord import DecordReader
from egofeat.extract.reader_pyav import PyAVReader
from egofeat.extract.reader_torchcodec import TorchCodecReader
from egofeat.extract.readers import (
    BACKENDS,
    Backend,
    JpegFolderReader,
    VideoDecodeError,
    VideoReader,
    check_video_file,
)

__all__ = ["open_video"]


def open_video(
    path: str | Path,
    backend: Backend = "auto",
    *,
    fps: float | None = None,
    threads: int = 1,
    device: str = "cpu",
    frame_folders: bool = True,
) -> VideoReader:
    """Open a video file or a JPEG frame folder.

    Args:
        path: a video file, or a folder of ``frame_%010d.jpg`` files.
        backend: ``auto`` (folders: ``frames``; files: ``pyav``, or ``torchcodec`` when
            ``device`` is CUDA), ``pyav``, ``decord``, ``torchcodec`` or ``frames``.
        fps: the frame rate of a JPEG folder; default: the EPIC rule on the folder's name.
        threads: decoder threads (0: let FFmpeg choose). Keep it small when many worker
            processes decode at once.
        device: ``cpu``, or ``cuda[:N]`` to decode on the GPU (NVDEC, through torchcodec).
            ``auto`` falls back to ``pyav`` on the CPU for a file NVDEC cannot open, and says
            why in :attr:`VideoReader.fallback_reason`.
        frame_folders: whether ``auto`` reads a folder as JPEG frames; without, a folder is a
            VideoDecodeError saying it is not a video file.
    """
    path = Path(path)
    if backend not in BACKENDS:
        raise ValueError(f"unknown decode backend {backend!r}; use {', '.join(BACKENDS)}")
    if backend == "frames" or (backend == "auto" and frame_folders and path.is_dir()):
        return JpegFolderReader(path, fps)
    check_video_file(path)
    if backend == "decord":
        return DecordReader(path, threads)
    if backend == "torchcodec" or (backend == "auto" and device != "cpu"):
        try:
            return TorchCodecReader(path, threads, device=device)
        except VideoDecodeError as error:
            if backend == "torchcodec":
                raise
            reader = PyAVReader(path, threads)
            reader.fallback_reason = f"decoded on the CPU: {error}"
            return reader
    return PyAVReader(path, threads)
