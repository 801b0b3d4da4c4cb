"""The encoder interface: frames in, float32 feature rows out, with full provenance.

An :class:`Encoder` owns a frozen model, its :class:`~.preprocess.ImagePreprocess`, a device
and a batch size. ``encode`` takes uint8 frames ``(N, H, W, 3)`` (image encoders) or clips
``(N, T, H, W, 3)`` (clip encoders) and returns ``(N, dim)`` float32 numpy rows.

Compute: ``torch.inference_mode``; bf16 autocast on CUDA (weights stay fp32, outputs are cast
back to fp32), plain fp32 on CPU. Set ``encoder.amp_dtype = None`` to run fp32 on CUDA.

On CUDA, :meth:`Encoder.encode` overlaps the host-to-device traffic with compute: each batch
is copied into one of two pinned host buffers and sent to the GPU with a non-blocking copy on
a side stream while the previous batch computes; features come back by non-blocking copies
into pinned memory, synchronised once per call. The model and its 4-D inputs are
channels-last there (faster convolutions: patch embeddings, CNN backbones).
:meth:`Encoder.compile` wraps the forward pass in ``torch.compile`` (every batch then has the
full batch size: the last one is padded, so shapes never change and nothing recompiles).

Batch size: given, or automatic (:func:`auto_batch_size`). On a CUDA out-of-memory error the
batch size is halved (and stays halved) and the call retried.

Encoders that also embed text (CLIP-style dual encoders) subclass :class:`TextEncoder` too.
"""

from __future__ import annotations

import contextlib
import functools
import os
import warnings
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from .preprocess import ImagePreprocess
from .weights import file_sha256, state_dict_sha256

__all__ = ["Encoder", "EncoderKind", "TextEncoder", "auto_batch_size"]

EncoderKind = Literal["image", "clip"]

_CPU_VALUES_PER_BATCH = 1 << 23  # 8.4M input values: 55 frames at 224 px, 680 at 64 px
_CUDA_MEMORY_FRACTION = 0.25
_CUDA_ACTIVATION_FACTOR = 64  # peak bytes per input value, a generous bound for ViT-B in bf16
_CUDA_MAX_BATCH = 1024
_TEXT_BATCH = {"cpu": 64, "cuda": 256}


def auto_batch_size(device: torch.device, values_per_sample: int) -> int:
    """Samples per forward pass, from the input size and the device.

    - CPU: as many samples as fit 2**23 input values (about 55 frames at 224x224, 680 at
      64x64): large enough to amortise per-call overhead, small enough for cache and RAM.
    - CUDA: a quarter of the currently free device memory divided by an activation estimate of
      ``values_per_sample * 4 bytes * 64``, clamped to [1, 1024]. For ViT-B/16 at 224 px on an
      empty 80 GB card that is 557 frames (about 1,000 on a 141 GB H200); for a 16-frame
      TimeSformer clip 32 clips.
    """
    if device.type == "cuda":
        free_bytes, _ = torch.cuda.mem_get_info(device)
        per_sample = values_per_sample * 4 * _CUDA_ACTIVATION_FACTOR
        return int(min(_CUDA_MAX_BATCH, max(1, free_bytes * _CUDA_MEMORY_FRACTION // per_sample)))
    return max(1, _CPU_VALUES_PER_BATCH // values_per_sample)


class Encoder(ABC):
    """A frozen image or clip encoder with its own preprocessing.

    Attributes:
        name: the registry name it was created from, e.g. ``"clip:ViT-B-16:openai"``.
        dim: length of one output feature row.
        kind: ``"image"`` (one frame per row) or ``"clip"`` (``frames_per_clip`` frames per row).
        frames_per_clip: 1 for image encoders.
        model: the underlying ``torch.nn.Module`` (eval mode, no gradients).
        preprocessing: the :class:`ImagePreprocess` applied by :meth:`preprocess`.
        output: what one feature row is, e.g. ``"CLS token after norm @ image_projection"``.
        weights_file: the file the weights came from (None for built-in weights).
        details: family-specific provenance entries (architecture, options, ...).
        device, batch_size, amp_dtype: where and how :meth:`encode` runs.
    """

    def __init__(
        self,
        *,
        name: str,
        model: nn.Module,
        preprocessing: ImagePreprocess,
        dim: int,
        output: str,
        kind: EncoderKind = "image",
        frames_per_clip: int = 1,
        device: str | torch.device = "cpu",
        batch_size: int | None = None,
        weights_file: str | os.PathLike[str] | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        if kind == "image" and frames_per_clip != 1:
            raise ValueError(
                f"{name}: an image encoder has frames_per_clip=1, not {frames_per_clip}"
            )
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"{name}: batch_size must be >= 1, not {batch_size}")
        self.name = name
        self.device = torch.device(device)
        self.model = model.to(self.device).eval().requires_grad_(False)
        self.preprocessing = preprocessing
        self.dim = int(dim)
        self.kind: EncoderKind = kind
        self.frames_per_clip = int(frames_per_clip)
        self.output = output
        self.weights_file = Path(weights_file) if weights_file is not None else None
        self.details = dict(details or {})
        self.amp_dtype: torch.dtype | None = torch.bfloat16 if self.device.type == "cuda" else None
        values_per_sample = self.frames_per_clip * 3 * preprocessing.crop_size**2
        self.batch_size = batch_size or auto_batch_size(self.device, values_per_sample)
        self._forward = self.encode_pixels
        self._compiled = False
        self._staging: dict[tuple[int, ...], list[torch.Tensor]] = {}
        if self.device.type == "cuda":
            # 2-D convolutions only: Module.to(memory_format=...) refuses 5-D (3-D conv) weights
            for module in self.model.modules():
                if isinstance(module, nn.Conv2d):
                    module.to(memory_format=torch.channels_last)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, dim={self.dim}, kind={self.kind!r}, "
            f"frames_per_clip={self.frames_per_clip}, input_size={self.input_size}, "
            f"device={str(self.device)!r}, batch_size={self.batch_size})"
        )

    @property
    def input_size(self) -> int:
        """Side of the square network input, in pixels."""
        return self.preprocessing.crop_size

    @functools.cached_property
    def weights_hash(self) -> str:
        """sha256 of the weights file, or of the state dict bytes for built-in weights."""
        if self.weights_file is not None:
            return file_sha256(self.weights_file)
        return state_dict_sha256(self.model)

    def provenance(self) -> dict[str, Any]:
        """Everything needed to tell whether two feature sets are comparable (plain JSON)."""
        record: dict[str, Any] = {
            "encoder": self.name,
            "kind": self.kind,
            "dim": self.dim,
            "frames_per_clip": self.frames_per_clip,
            "input_size": self.input_size,
            "weights_file": str(self.weights_file) if self.weights_file else None,
            "weights_hash": self.weights_hash,
            "preprocessing": self.preprocessing.to_dict(),
            "compute": {
                "device_type": self.device.type,
                "dtype": f"{_dtype_name(self.amp_dtype)} autocast" if self.amp_dtype else "float32",
            },
            "output": self.output,
            "libraries": {"torch": torch.__version__},
            **self.details,
        }
        if isinstance(self, TextEncoder):
            record["text"] = self.text_provenance()
        return record

    def preprocess(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 frames ``(N, H, W, 3)`` / clips ``(N, T, H, W, 3)`` -> normalised float32
        ``(N, 3, S, S)`` / ``(N, T, 3, S, S)`` on the encoder's device."""
        batch = self._as_frames(frames)
        with torch.inference_mode():
            return self.preprocessing(batch.to(self.device, non_blocking=True))

    def compile(self, **options: Any) -> None:
        """Run the forward pass through ``torch.compile(**options)`` from now on."""
        self._forward = torch.compile(self.encode_pixels, **options)
        self._compiled = True

    def encode(self, frames: np.ndarray | torch.Tensor) -> np.ndarray:
        """Features of uint8 frames ``(N, H, W, 3)`` or clips ``(N, T, H, W, 3)``: ``(N, dim)``."""
        batch = self._as_frames(frames)
        features = np.empty((batch.shape[0], self.dim), dtype=np.float32)
        start = 0
        while start < batch.shape[0]:
            stop = min(batch.shape[0], start + self.batch_size)
            try:
                if self.device.type == "cuda":
                    features[start:] = self._encode_overlapped(batch[start:])
                    break
                features[start:stop] = self._encode_batch(batch[start:stop])
            except torch.cuda.OutOfMemoryError:
                if self.batch_size == 1:
                    raise
                torch.cuda.empty_cache()
                self._staging.clear()
                self.batch_size = max(1, self.batch_size // 2)
                warnings.warn(
                    f"{self.name}: CUDA out of memory, batch size lowered to {self.batch_size}",
                    RuntimeWarning,
                    stacklevel=2,
                )
                continue
            start = stop
        return features

    @abstractmethod
    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """Features of preprocessed pixels (the output of :meth:`preprocess`), on the device."""

    def _encode_batch(self, frames: torch.Tensor) -> np.ndarray:
        with torch.inference_mode(), _autocast(self.device, self.amp_dtype):
            features = self._features(frames.to(self.device, non_blocking=True))
        return features.float().cpu().numpy()

    def _features(self, frames: torch.Tensor) -> torch.Tensor:
        """Preprocess and encode one batch already on the device (padded when compiled)."""
        count = frames.shape[0]
        if self._compiled and count < self.batch_size:
            padding = frames[-1:].expand(self.batch_size - count, *frames.shape[1:])
            frames = torch.cat([frames, padding])
        pixels = self.preprocessing(frames)
        if pixels.ndim == 4 and self.device.type == "cuda":
            pixels = pixels.contiguous(memory_format=torch.channels_last)
        features = self._forward(pixels)[:count]
        if features.shape != (count, self.dim):
            raise RuntimeError(
                f"{self.name}: model returned {tuple(features.shape)}, expected "
                f"({count}, {self.dim})"
            )
        return features

    def _encode_overlapped(self, batch: torch.Tensor) -> np.ndarray:
        """All of ``batch`` on CUDA, host copies overlapped with compute (module docstring)."""
        n, size = batch.shape[0], self.batch_size
        starts = list(range(0, n, size))
        staging = self._pinned((size, *batch.shape[1:]))
        out = torch.empty((n, self.dim), dtype=torch.float32).pin_memory()
        copy_stream = torch.cuda.Stream(self.device)
        compute = torch.cuda.current_stream(self.device)
        copied = [torch.cuda.Event(), torch.cuda.Event()]
        consumed = [torch.cuda.Event(), torch.cuda.Event()]
        on_device: list[torch.Tensor | None] = [None, None]

        def stage(k: int) -> None:  # host -> pinned buffer -> device, on the side stream
            slot, start = k % 2, starts[k]
            stop = min(n, start + size)
            copied[slot].synchronize()  # this pinned buffer's previous copy has left the host
            staging[slot][: stop - start].copy_(batch[start:stop])
            with torch.cuda.stream(copy_stream):
                copy_stream.wait_event(consumed[slot])  # its previous batch was computed
                on_device[slot] = staging[slot][: stop - start].to(self.device, non_blocking=True)
                copied[slot].record(copy_stream)

        if starts:
            stage(0)
        with torch.inference_mode(), _autocast(self.device, self.amp_dtype):
            for k, start in enumerate(starts):
                slot = k % 2
                compute.wait_event(copied[slot])
                frames = on_device[slot]
                frames.record_stream(compute)  # allocated on the side stream, used here
                features = self._features(frames)
                out[start : start + frames.shape[0]].copy_(features.float(), non_blocking=True)
                consumed[slot].record(compute)
                if k + 1 < len(starts):  # the next batch travels while this one computes
                    stage(k + 1)
        compute.synchronize()
        return out.numpy()

    def _pinned(self, shape: tuple[int, ...]) -> list[torch.Tensor]:
        """Two pinned uint8 host buffers of ``shape``, kept across calls (pinning is slow)."""
        if shape not in self._staging:
            self._staging.clear()
            self._staging[shape] = [torch.empty(shape, dtype=torch.uint8).pin_memory()
                                    for _ in range(2)]
        return self._staging[shape]

    def _as_frames(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        expected = (
            "(N, H, W, 3)" if self.kind == "image" else f"(N, {self.frames_per_clip}, H, W, 3)"
        )
        ndim = 4 if self.kind == "image" else 5
        shape, dtype = tuple(frames.shape), frames.dtype
        is_uint8 = dtype == torch.uint8 if isinstance(frames, torch.Tensor) else dtype == np.uint8
        if (
            len(shape) != ndim
            or shape[-1] != 3
            or not is_uint8
            or (self.kind == "clip" and shape[1] != self.frames_per_clip)
        ):
            raise ValueError(
                f"{self.name} is a{'n image' if self.kind == 'image' else ' clip'} encoder: expected "
                f"uint8 RGB frames {expected}, got {dtype} array of shape {shape}"
            )
        if isinstance(frames, torch.Tensor):
            return frames
        with warnings.catch_warnings():
            # Decoders hand out read-only arrays; they are only read here.
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            return torch.from_numpy(np.ascontiguousarray(frames))


class TextEncoder(ABC):
    """The text side of a dual encoder: ``encode_text(texts) -> (N, text_dim)`` float32.

    Outputs are not normalised; L2-normalising is the caller's choice. Mixed into an
    :class:`Encoder` subclass, whose device and autocast it shares.
    """

    text_dim: int
    name: str
    device: torch.device
    amp_dtype: torch.dtype | None

    @abstractmethod
    def text_provenance(self) -> dict[str, Any]:
        """Tokenizer, text dim and output definition of the text side (plain JSON)."""

    @abstractmethod
    def _encode_text_batch(self, texts: list[str]) -> torch.Tensor:
        """Features ``(len(texts), text_dim)`` on the device; called under inference mode."""

    def encode_text(self, texts: Sequence[str], *, batch_size: int | None = None) -> np.ndarray:
        """Unnormalised text features ``(len(texts), text_dim)``, float32."""
        if isinstance(texts, str):
            raise TypeError(f"{self.name}: encode_text takes a list of strings, not one string")
        texts = list(texts)
        batch_size = batch_size or _TEXT_BATCH.get(self.device.type, _TEXT_BATCH["cpu"])
        features = np.empty((len(texts), self.text_dim), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            chunk = texts[start : start + batch_size]
            with torch.inference_mode(), _autocast(self.device, self.amp_dtype):
                features[start : start + len(chunk)] = (
                    self._encode_text_batch(chunk).float().cpu().numpy()
                )
        return features


def _autocast(
    device: torch.device, dtype: torch.dtype | None
) -> contextlib.AbstractContextManager[Any]:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
