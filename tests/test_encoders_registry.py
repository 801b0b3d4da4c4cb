"""Registry, the Encoder contract (batching, validation, provenance) and the tiny encoder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch

from egofeat.extract.encoders import (
    TextEncoder,
    UnknownEncoderError,
    auto_batch_size,
    create_encoder,
    describe_encoders,
    list_encoders,
    register_encoder,
)
from egofeat.extract.encoders import registry as registry_module

torch.set_num_threads(1)


def _frames(n: int, height: int = 48, width: int = 80, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, height, width, 3), dtype=np.uint8)


def test_builtin_families_are_listed():
    assert list_encoders() == ["clip", "dino", "lavila", "timm", "tiny"]
    assert describe_encoders()["clip"] == "clip:<arch>:<pretrained tag | local file>"


def test_unknown_name_lists_the_known_families():
    with pytest.raises(UnknownEncoderError) as error:
        create_encoder("siglip:ViT-B-16")
    message = str(error.value)
    assert "family 'siglip' is not registered" in message
    for family, usage in describe_encoders().items():
        assert f"{family} ({usage})" in message


def test_register_encoder_routes_spec_and_options(monkeypatch):
    monkeypatch.setattr(registry_module, "_FAMILIES", dict(registry_module._FAMILIES))
    calls = []

    def factory(spec, **kwargs):
        calls.append((spec, kwargs))
        return create_encoder("tiny", device=kwargs["device"], batch_size=kwargs["batch_size"])

    register_encoder("mine", factory, usage="mine:<size>")
    encoder = create_encoder(" mine:small ", batch_size=7, cache_dir="/cache", flavour="x")
    assert encoder.batch_size == 7
    spec, kwargs = calls[0]
    assert spec == "small"
    assert kwargs == {
        "name": "mine:small",
        "device": torch.device("cpu"),
        "batch_size": 7,
        "cache_dir": "/cache",
        "flavour": "x",
    }
    assert "mine" in list_encoders() and describe_encoders()["mine"] == "mine:<size>"
    with pytest.raises(ValueError, match="without ':'"):
        register_encoder("a:b", factory)


def test_tiny_is_deterministic_within_and_across_processes():
    torch.manual_seed(123)
    before = torch.rand(1)
    first, second = create_encoder("tiny"), create_encoder("tiny")
    torch.manual_seed(123)
    assert torch.equal(before, torch.rand(1))  # its initialisation leaves the global RNG alone
    frames = _frames(6)
    np.testing.assert_array_equal(first.encode(frames), second.encode(frames))
    assert first.weights_hash == second.weights_hash

    code = "from egofeat.extract.encoders import create_encoder; print(create_encoder('tiny').weights_hash)"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert other.stdout.strip() == first.weights_hash


def test_tiny_image_and_text_sides():
    encoder = create_encoder("tiny")
    assert (encoder.dim, encoder.kind, encoder.frames_per_clip, encoder.input_size) == (
        64,
        "image",
        1,
        64,
    )
    assert isinstance(encoder, TextEncoder) and encoder.text_dim == 64
    texts = ["open tap", "open the tap", "cut onion", "", "open tap"]
    embeddings = encoder.encode_text(texts)
    assert embeddings.shape == (5, 64) and embeddings.dtype == np.float32
    np.testing.assert_array_equal(embeddings[0], embeddings[4])
    assert not embeddings[3].any()  # no words, no n-grams: zeros

    def cosine(a, b):
        return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))

    # Shared n-grams make related texts closer, so zero-shot demos behave plausibly.
    assert cosine(embeddings[0], embeddings[1]) > cosine(embeddings[0], embeddings[2])
    record = encoder.provenance()
    assert record["random_weights"] is True and "not for research" in record["output"]
    assert record["text"]["text_dim"] == 64
    with pytest.raises(ValueError, match="takes no arguments"):
        create_encoder("tiny:large")
    with pytest.raises(ValueError, match="without options"):
        create_encoder("tiny", dim=128)


def test_batching_does_not_change_results():
    frames = _frames(11)
    whole = create_encoder("tiny", batch_size=64).encode(frames)
    pieces = create_encoder("tiny", batch_size=3).encode(frames)
    np.testing.assert_allclose(pieces, whole, rtol=1e-5, atol=1e-6)


def test_inputs_are_validated_and_accepted_in_several_forms():
    encoder = create_encoder("tiny")
    frames = _frames(4)
    expected = encoder.encode(frames)
    np.testing.assert_array_equal(encoder.encode(torch.from_numpy(frames)), expected)
    read_only = frames.copy()
    read_only.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(encoder.encode(read_only), expected)
    assert encoder.encode(frames[:0]).shape == (0, 64)

    with pytest.raises(
        ValueError, match=r"image encoder: expected uint8 RGB frames \(N, H, W, 3\), got float32"
    ):
        encoder.encode(frames.astype(np.float32))
    with pytest.raises(ValueError, match=r"got uint8 array of shape \(2, 4, 48, 80, 3\)"):
        encoder.encode(np.zeros((2, 4, 48, 80, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="shape"):
        encoder.encode(frames[..., :1])
    with pytest.raises(TypeError, match="list of strings"):
        encoder.encode_text("open tap")
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        create_encoder("tiny", batch_size=0)


def test_preprocess_returns_normalised_pixels_on_the_device():
    encoder = create_encoder("tiny")
    pixels = encoder.preprocess(_frames(3))
    assert pixels.shape == (3, 3, 64, 64) and pixels.dtype == torch.float32
    assert pixels.device == encoder.device
    assert pixels.min() >= -1.0 and pixels.max() <= 1.0  # mean 0.5, std 0.5


def test_bf16_autocast_path_stays_close_to_fp32():
    encoder = create_encoder("tiny")
    frames = _frames(4)
    reference = encoder.encode(frames)
    encoder.amp_dtype = torch.bfloat16  # the CUDA default, exercised here on the CPU
    low = encoder.encode(frames)
    assert low.dtype == np.float32
    np.testing.assert_allclose(low, reference, rtol=0.05, atol=0.05)
    assert encoder.provenance()["compute"]["dtype"] == "bfloat16 autocast"


def test_provenance_is_plain_json():
    record = create_encoder("tiny").provenance()
    assert json.loads(json.dumps(record)) == record
    assert record["compute"] == {"device_type": "cpu", "dtype": "float32"}
    assert record["preprocessing"]["crop_size"] == 64
    assert record["weights_file"] is None and len(record["weights_hash"]) == 64


def test_auto_batch_size_on_cpu():
    cpu = torch.device("cpu")
    assert auto_batch_size(cpu, 3 * 224 * 224) == 55
    assert auto_batch_size(cpu, 3 * 64 * 64) == 682
    assert auto_batch_size(cpu, 10**9) == 1
    assert create_encoder("tiny").batch_size == 682
