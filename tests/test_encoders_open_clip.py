"""clip: family through open_clip, on a tiny registered architecture."""

from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from egofeat.extract.encoders import MissingWeightsError, create_encoder
from egofeat.extract.encoders.open_clip_encoder import resolve_quick_gelu

torch.set_num_threads(1)

ARCH = "egofeat-test-tiny-clip"
TINY_CONFIG = {
    "embed_dim": 32,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """(in-memory reference model, path of its saved state dict)."""
    folder = tmp_path_factory.mktemp("open_clip")
    (folder / f"{ARCH}.json").write_text(json.dumps(TINY_CONFIG))
    open_clip.add_model_config(folder / f"{ARCH}.json")
    torch.manual_seed(0)
    model = open_clip.create_model(ARCH).eval()
    path = folder / "tiny_clip.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    return model, path


def _frames(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 48, 64, 3), dtype=np.uint8)


def test_local_file_matches_the_in_memory_model(tiny_clip):
    model, path = tiny_clip
    encoder = create_encoder(f"clip:{ARCH}:{path}", batch_size=2)
    frames = _frames(5)
    with torch.inference_mode():
        expected = model.encode_image(encoder.preprocess(frames))
    features = encoder.encode(frames)
    assert features.shape == (5, 32) and features.dtype == np.float32
    np.testing.assert_allclose(features, expected.numpy(), rtol=1e-5, atol=1e-5)

    texts = ["a photo of a kettle", "cut onion"]
    with torch.inference_mode():
        expected_text = model.encode_text(open_clip.get_tokenizer(ARCH)(texts))
    np.testing.assert_allclose(
        encoder.encode_text(texts), expected_text.numpy(), rtol=1e-5, atol=1e-5
    )


def test_quick_gelu_of_the_architecture_is_preserved_and_overridable(tiny_clip):
    model, path = tiny_clip
    encoder = create_encoder(f"clip:{ARCH}:{path}")
    activation = encoder.model.visual.transformer.resblocks[0].mlp.gelu
    assert isinstance(activation, open_clip.transformer.QuickGELU)
    record = encoder.provenance()
    assert (record["quick_gelu"], record["quick_gelu_source"]) == (True, "architecture config")

    plain = create_encoder(f"clip:{ARCH}:{path}", quick_gelu=False)
    assert not isinstance(
        plain.model.visual.transformer.resblocks[0].mlp.gelu, open_clip.transformer.QuickGELU
    )
    frames = _frames(2)
    assert not np.allclose(plain.encode(frames), encoder.encode(frames), atol=1e-4)
    assert plain.provenance()["quick_gelu_source"] == "option quick_gelu"


def test_openai_tag_builds_quick_gelu_even_for_the_plain_architecture():
    arch_config = open_clip.get_model_config("ViT-B-16")
    assert not arch_config.get("quick_gelu", False)
    tag_config = open_clip.get_pretrained_cfg("ViT-B-16", "openai")
    assert resolve_quick_gelu(arch_config, tag_config, None) == (True, "pretrained tag")
    laion = open_clip.get_pretrained_cfg("ViT-B-16", "laion2b_s34b_b88k")
    assert resolve_quick_gelu(arch_config, laion, None) == (False, "pretrained tag")
    assert resolve_quick_gelu(arch_config, None, None) == (False, "architecture config")
    assert resolve_quick_gelu(arch_config, tag_config, False) == (False, "option quick_gelu")


def test_openai_preprocessing_values(tiny_clip):
    _, path = tiny_clip
    prep = create_encoder(f"clip:{ARCH}:{path}").preprocessing
    assert prep.mean == (0.48145466, 0.4578275, 0.40821073)
    assert prep.std == (0.26862954, 0.26130258, 0.27577711)
    assert (prep.interpolation, prep.resize_mode, prep.crop_size, prep.value_range) == (
        "bicubic",
        "shortest",
        32,
        1.0,
    )


def test_batched_preprocessing_matches_open_clips_pil_transform(tiny_clip):
    _, path = tiny_clip
    encoder = create_encoder(f"clip:{ARCH}:{path}")
    frame = np.random.default_rng(1).integers(0, 256, size=(75, 120, 3), dtype=np.uint8)
    _, _, transform = open_clip.create_model_and_transforms(ARCH, pretrained=str(path))
    expected = transform(Image.fromarray(frame))
    ours = encoder.preprocess(frame[None])[0]
    assert ours.shape == expected.shape == (3, 32, 32)
    # At most one uint8 rounding step apart (1 / 255 / std), almost everywhere identical.
    one_step = 1.0 / 255 / min(encoder.preprocessing.std)
    assert (ours - expected).abs().max() <= one_step * 1.01
    assert (ours - expected).abs().mean() < one_step / 10


def test_missing_cached_tag_names_the_file_and_the_local_route(tmp_path):
    with pytest.raises(MissingWeightsError) as error:
        create_encoder("clip:ViT-B-16:openai", cache_dir=tmp_path)
    message = str(error.value)
    assert "timm/vit_base_patch16_clip_224.openai/open_clip_model.safetensors" in message
    assert "open_clip_pytorch_model.bin" in message and str(tmp_path) in message
    assert "clip:ViT-B-16-quickgelu:/path/to/open_clip_pytorch_model.bin" in message


def test_bad_clip_names(tmp_path):
    with pytest.raises(MissingWeightsError, match="neither a pretrained tag of ViT-B-16"):
        create_encoder(f"clip:ViT-B-16:{tmp_path / 'missing.safetensors'}")
    with pytest.raises(ValueError, match="no architecture 'ViT-B-61'"):
        create_encoder("clip:ViT-B-61:openai")
    with pytest.raises(ValueError, match="expected 'clip:<arch>:<pretrained tag | local file>'"):
        create_encoder("clip:ViT-B-16")
