"""Batched image preprocessing as torch ops: resize, centre crop, normalise.

Each encoder owns one :class:`ImagePreprocess`. It runs on the encoder's device on uint8
frames (so a GPU does the resizing and only uint8 bytes cross the bus), and it is recorded
verbatim in the stream provenance.

Resizing works on uint8 (torchvision rounds back to uint8 after interpolating), which is what
the PIL pipelines of open_clip and timm do, so features match theirs closely.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import InterpolationMode

__all__ = ["ImagePreprocess"]

ResizeMode = Literal["shortest", "squash", "longest"]
Interpolation = Literal["bicubic", "bilinear", "nearest"]

_INTERPOLATIONS = {
    "bicubic": InterpolationMode.BICUBIC,
    "bilinear": InterpolationMode.BILINEAR,
    "nearest": InterpolationMode.NEAREST,
}


@dataclass(frozen=True)
class ImagePreprocess:
    """Turns uint8 RGB frames ``(..., H, W, 3)`` into normalised float32 ``(..., 3, S, S)``.

    Steps, in order:

    1. resize: ``"shortest"`` scales the short side to ``resize_size`` (aspect kept);
       ``"squash"`` scales both sides to ``resize_size``; ``"longest"`` scales the long side to
       ``crop_size`` and pads the short side with black (letterbox);
    2. centre crop to ``crop_size`` x ``crop_size`` (``torchvision`` rounding of the offset);
    3. ``(pixel / 255 * value_range - mean) / std`` per channel. ``value_range`` is 1 for the
       usual [0, 1] convention and 255 for encoders normalised in the 0-255 domain (LaViLa).
    """

    crop_size: int
    resize_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize_mode: ResizeMode = "shortest"
    interpolation: Interpolation = "bicubic"
    value_range: float = 1.0
    antialias: bool = True

    def __post_init__(self) -> None:
        if self.resize_mode not in ("shortest", "squash", "longest"):
            raise ValueError(
                f"resize_mode must be 'shortest', 'squash' or 'longest', not {self.resize_mode!r}"
            )
        if self.interpolation not in _INTERPOLATIONS:
            raise ValueError(
                f"interpolation must be one of {sorted(_INTERPOLATIONS)}, not {self.interpolation!r}"
            )
        if self.crop_size <= 0 or self.resize_size <= 0:
            raise ValueError(f"crop_size and resize_size must be positive, got {self}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(
                f"mean and std need 3 values each, std > 0; got {self.mean}, {self.std}"
            )
        # Normalise tuples given as lists so the dataclass stays hashable and comparable.
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON description, for provenance."""
        description = asdict(self)
        description["mean"] = list(self.mean)
        description["std"] = list(self.std)
        return description

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        """Preprocess uint8 frames ``(..., H, W, 3)`` on their own device."""
        if frames.dtype != torch.uint8 or frames.ndim < 3 or frames.shape[-1] != 3:
            raise ValueError(
                f"expected uint8 RGB frames (..., H, W, 3), got {frames.dtype} {tuple(frames.shape)}"
            )
        leading = frames.shape[:-3]
        images = frames.reshape(-1, *frames.shape[-3:]).permute(0, 3, 1, 2)
        images = self._resize_and_crop(images)
        # One fused multiply-add: x * (range / 255 / std) - mean / std.
        mean = torch.tensor(self.mean, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=images.device).view(1, 3, 1, 1)
        scale = self.value_range / 255.0 / std
        pixels = torch.addcmul(-mean / std, images.float(), scale)
        return pixels.reshape(*leading, 3, self.crop_size, self.crop_size)

    def _resize_and_crop(self, images: torch.Tensor) -> torch.Tensor:
        interpolation = _INTERPOLATIONS[self.interpolation]
        height, width = images.shape[-2:]
        if self.resize_mode == "longest":
            scale = self.crop_size / max(height, width)
            size = [max(1, round(height * scale)), max(1, round(width * scale))]
            images = self._resize(images, size, interpolation)
            return _pad_to_square(images, self.crop_size)
        if self.resize_mode == "squash":
            images = self._resize(images, [self.resize_size, self.resize_size], interpolation)
        elif min(height, width) != self.resize_size:
            images = self._resize(images, [self.resize_size], interpolation)
        return TF.center_crop(images, [self.crop_size, self.crop_size])

    def _resize(
        self, images: torch.Tensor, size: list[int], interpolation: InterpolationMode
    ) -> torch.Tensor:
        if list(images.shape[-2:]) == size:
            return images
        return TF.resize(images, size, interpolation=interpolation, antialias=self.antialias)


def _pad_to_square(images: torch.Tensor, size: int) -> torch.Tensor:
    height, width = images.shape[-2:]
    top, left = (size - height) // 2, (size - width) // 2
    padding = [left, top, size - width - left, size - height - top]
    return TF.pad(images, padding, fill=0)


def timm_resize_size(crop_size: int, crop_pct: float) -> int:
    """The short-side resize timm's eval transform uses before a centre crop."""
    return math.floor(crop_size / crop_pct)
