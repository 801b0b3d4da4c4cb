"""ImagePreprocess: resize modes, centre crop, normalisation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from egofeat.extract.encoders import ImagePreprocess
from egofeat.extract.encoders.preprocess import timm_resize_size

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def _identity(mode: str = "shortest", **kwargs) -> ImagePreprocess:
    """Maps pixel p to p / 255 so the tests read colours back directly."""
    return ImagePreprocess(
        crop_size=32, resize_size=32, mean=(0, 0, 0), std=(1, 1, 1), resize_mode=mode, **kwargs
    )


def _three_panels(height: int = 32) -> torch.Tensor:
    """A wide frame: red left third, green centre third, blue right third."""
    frame = np.zeros((height, 3 * height, 3), dtype=np.uint8)
    frame[:, :height], frame[:, height : 2 * height], frame[:, 2 * height :] = RED, GREEN, BLUE
    return torch.from_numpy(frame)[None]


def test_shortest_side_resize_then_centre_crop_keeps_the_centre():
    pixels = _identity("shortest")(_three_panels())
    assert pixels.shape == (1, 3, 32, 32)
    torch.testing.assert_close(pixels[0, :, 16, 16], torch.tensor([0.0, 1.0, 0.0]))
    assert torch.all(pixels[0, 1] == 1.0) and torch.all(pixels[0, 0] == 0.0)  # only green survives


def test_shortest_side_resize_of_a_larger_frame():
    pixels = _identity("shortest")(_three_panels(height=64))  # 64x192 -> 32x96 -> crop
    assert pixels.shape == (1, 3, 32, 32)
    torch.testing.assert_close(pixels[0, :, 16, 16], torch.tensor([0.0, 1.0, 0.0]))


def test_squash_keeps_the_whole_width():
    pixels = _identity("squash")(_three_panels())
    torch.testing.assert_close(pixels[0, :, 16, 1], torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(pixels[0, :, 16, 30], torch.tensor([0.0, 0.0, 1.0]))


def test_longest_side_letterboxes_with_black():
    pixels = _identity("longest")(_three_panels())  # 32x96 -> 11x32, padded to 32x32
    assert torch.all(pixels[0, :, 0] == 0.0) and torch.all(pixels[0, :, 31] == 0.0)
    torch.testing.assert_close(pixels[0, :, 16, 16], torch.tensor([0.0, 1.0, 0.0]))


def test_normalisation_in_both_value_ranges():
    frame = torch.full((1, 8, 8, 3), 51, dtype=torch.uint8)
    unit = ImagePreprocess(crop_size=8, resize_size=8, mean=(0.1, 0.2, 0.3), std=(0.5, 0.25, 0.2))
    expected = torch.tensor([(0.2 - 0.1) / 0.5, (0.2 - 0.2) / 0.25, (0.2 - 0.3) / 0.2])
    torch.testing.assert_close(unit(frame)[0, :, 3, 3], expected)
    byte = ImagePreprocess(
        crop_size=8, resize_size=8, mean=(50, 51, 52), std=(2, 4, 8), value_range=255.0
    )
    torch.testing.assert_close(byte(frame)[0, :, 3, 3], torch.tensor([0.5, 0.0, -0.125]))


def test_leading_dimensions_are_kept_for_clips():
    clips = torch.zeros((2, 5, 40, 60, 3), dtype=torch.uint8)
    assert _identity()(clips).shape == (2, 5, 3, 32, 32)


def test_invalid_configuration_and_input():
    with pytest.raises(ValueError, match="resize_mode"):
        _identity("fill")
    with pytest.raises(ValueError, match="interpolation"):
        _identity(interpolation="lanczos")
    with pytest.raises(ValueError, match="std > 0"):
        ImagePreprocess(crop_size=8, resize_size=8, mean=(0, 0, 0), std=(1, 0, 1))
    with pytest.raises(ValueError, match="expected uint8 RGB frames"):
        _identity()(torch.zeros((1, 8, 8, 3)))


def test_description_is_plain_json():
    description = _identity(interpolation="bilinear").to_dict()
    assert json.loads(json.dumps(description)) == description
    assert description["mean"] == [0.0, 0.0, 0.0] and description["interpolation"] == "bilinear"


def test_timm_resize_rule():
    assert timm_resize_size(224, 0.9) == 248
    assert timm_resize_size(224, 0.875) == 256
    assert timm_resize_size(224, 1.0) == 224
