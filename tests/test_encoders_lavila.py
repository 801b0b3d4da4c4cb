"""LaViLa TimeSformer: attention semantics, checkpoint layout, loading, preprocessing."""

from __future__ import annotations

import argparse
import hashlib
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from egofeat.extract.encoders import MissingWeightsError, TextEncoder, create_encoder
from egofeat.extract.encoders.lavila import (
    LAVILA_OPENAI_MEAN,
    LAVILA_OPENAI_STD,
    LaViLaModel,
    build_text_tower,
)
from egofeat.extract.encoders.timesformer import (
    DividedAttention,
    SpaceTimeTransformer,
    resize_temporal_embed,
)

torch.set_num_threads(1)

TINY_TSF = dict(image_size=32, patch_size=8, width=64, layers=2, heads=2, num_frames=4)


def _masked_reference(attention: DividedAttention, x: torch.Tensor, frames: int, axis: str):
    """Full attention with an explicit mask: CLS sees all; a patch sees CLS + its group."""
    batch, tokens, width = x.shape
    patches = (tokens - 1) // frames
    frame_of = torch.tensor([-1] + [t for t in range(frames) for _ in range(patches)])
    place_of = torch.tensor([-1] + [p for _ in range(frames) for p in range(patches)])
    same = (
        frame_of[:, None] == frame_of[None]
        if axis == "space"
        else place_of[:, None] == place_of[None]
    )
    allowed = same.clone()
    allowed[0, :] = True  # CLS query attends to everything
    allowed[:, 0] = True  # every query attends to CLS
    heads = attention.heads
    q, k, v = (
        attention.qkv(x).reshape(batch, tokens, 3, heads, width // heads).permute(2, 0, 3, 1, 4)
    )
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
    return attention.proj(out.transpose(1, 2).reshape(batch, tokens, width))


@pytest.mark.parametrize("axis", ["space", "time"])
def test_divided_attention_matches_masked_full_attention(axis):
    torch.manual_seed(0)
    attention = DividedAttention(width=32, heads=4)
    frames, patches = 3, 5
    x = torch.randn(2, 1 + frames * patches, 32)
    expected = _masked_reference(attention, x, frames, axis)
    torch.testing.assert_close(attention(x, frames, axis), expected, atol=1e-5, rtol=1e-5)


def test_time_attention_mixes_frames_and_space_attention_does_not():
    torch.manual_seed(0)
    attention = DividedAttention(width=16, heads=2)
    frames, patches = 2, 3
    x = torch.randn(1, 1 + frames * patches, 16)
    changed = x.clone()
    changed[0, 1 + patches] += 1.0  # first patch of the second frame
    first_frame = slice(1, 1 + patches)
    space_delta = attention(changed, frames, "space") - attention(x, frames, "space")
    time_delta = attention(changed, frames, "time") - attention(x, frames, "time")
    assert space_delta[0, first_frame].abs().max() == 0  # other frame: untouched
    assert time_delta[0, 1].abs().max() > 0  # same location, other frame: touched
    assert time_delta[0, 2].abs().max() == 0  # other location: untouched
    assert space_delta[0, 0].abs().max() > 0 and time_delta[0, 0].abs().max() > 0  # CLS sees all


def test_block_residual_skips_the_time_output():
    torch.manual_seed(0)
    model = SpaceTimeTransformer(**TINY_TSF)
    block = model.blocks[0]
    x = torch.randn(2, 1 + 4 * 16, 64)
    time_out = block.timeattn(block.norm3(x), 4, "time")
    after_space = x + block.attn(block.norm1(x + time_out), 4, "space")
    expected = after_space + block.mlp(block.norm2(after_space))
    torch.testing.assert_close(block(x, 4), expected)


def test_layer_norm_eps_follow_lavila():
    model = SpaceTimeTransformer(**TINY_TSF)
    assert model.ln_pre.eps == 1e-5
    assert model.norm.eps == 1e-6
    assert {m.eps for name, m in model.blocks.named_modules() if "norm" in name} == {1e-6}
    assert model.patch_embed.proj.bias is None


def test_resize_temporal_embed_keeps_first_frames_or_interpolates():
    embed = torch.arange(4.0).reshape(1, 4, 1).expand(1, 4, 3).contiguous()
    torch.testing.assert_close(resize_temporal_embed(embed, 2), embed[:, :2])
    longer = resize_temporal_embed(embed, 8)
    assert longer.shape == (1, 8, 3)
    expected = F.interpolate(embed.unsqueeze(0), size=(8, 3), mode="bilinear").squeeze(0)
    torch.testing.assert_close(longer, expected)
    assert resize_temporal_embed(embed, 4) is embed


def _tiny_lavila(with_text: bool = True) -> LaViLaModel:
    torch.manual_seed(0)
    visual = SpaceTimeTransformer(**TINY_TSF)
    text = None
    if with_text:
        shapes = {
            "token_embedding.weight": torch.empty(49408, 64),
            "positional_embedding": torch.empty(77, 64),
            "text_projection": torch.empty(64, 32),
            "transformer.resblocks.0.ln_1.weight": torch.empty(64),
        }
        text = build_text_tower(shapes, heads=2)
    model = LaViLaModel(visual, projection_dim=32, text=text)
    torch.nn.init.normal_(model.image_projection, std=0.1)
    return model.eval()


def _save_lavila(model: LaViLaModel, path, *, extra: dict | None = None, args=True) -> None:
    state = {}
    for key, value in model.state_dict().items():
        key = key.removeprefix("text.")  # LaViLa keeps the text tower at the top level
        state[f"module.{key}"] = value
    state["module.logit_scale"] = torch.tensor(4.6)
    state.update(extra or {})
    checkpoint = {"state_dict": state, "epoch": 5, "best_acc1": 0.0}
    if args:
        checkpoint["args"] = argparse.Namespace(
            model="CLIP_OPENAI_TIMESFORMER_BASE", project_embed_dim=32
        )
    torch.save(checkpoint, path)


def _clips(n: int, frames: int = 4, size: int = 40, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, frames, size, size + 8, 3), dtype=np.uint8)


def test_checkpoint_loads_and_matches_the_in_memory_model(tmp_path):
    model = _tiny_lavila()
    path = tmp_path / "lavila_tiny.pth"
    _save_lavila(model, path)
    encoder = create_encoder(f"lavila:tsf:{path}", heads=2, text_heads=2)

    assert (encoder.kind, encoder.frames_per_clip, encoder.dim, encoder.input_size) == (
        "clip",
        4,
        32,
        32,
    )
    clips = _clips(3)
    features = encoder.encode(clips)
    with torch.inference_mode():
        expected = model.encode_video(encoder.preprocess(clips))
    assert features.dtype == np.float32 and features.shape == (3, 32)
    np.testing.assert_allclose(features, expected.numpy(), rtol=1e-5, atol=1e-5)

    assert isinstance(encoder, TextEncoder) and encoder.text_dim == 32
    texts = ["open the tap", "cut onion"]
    import open_clip

    with torch.inference_mode():
        expected_text = model.text(open_clip.SimpleTokenizer()(texts))
    np.testing.assert_allclose(
        encoder.encode_text(texts), expected_text.numpy(), rtol=1e-5, atol=1e-5
    )

    record = encoder.provenance()
    assert record["ignored_keys"] == ["logit_scale"]
    assert record["normalization"] == "openai"
    assert record["normalization_source"] == "args.model=CLIP_OPENAI_TIMESFORMER_BASE"
    assert record["output"].startswith("CLS token after norm @ image_projection")
    assert record["weights_hash"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert record["geometry"] == {**TINY_TSF, "mlp_ratio": 4.0}


def test_unprojected_output_and_video_only_checkpoint(tmp_path):
    model = _tiny_lavila(with_text=False)
    path = tmp_path / "video_only.pth"
    _save_lavila(
        model, path, extra={"module.textual.embeddings.word_embeddings.weight": torch.zeros(2, 2)}
    )
    encoder = create_encoder(f"lavila:tsf:{path}", heads=2, project=False)
    assert not isinstance(encoder, TextEncoder)
    assert encoder.dim == 64
    clips = _clips(2)
    with torch.inference_mode():
        expected = model.visual(encoder.preprocess(clips))
    np.testing.assert_allclose(encoder.encode(clips), expected.numpy(), rtol=1e-5, atol=1e-5)


def test_num_frames_option_adapts_temporal_embed(tmp_path):
    model = _tiny_lavila(with_text=False)
    path = tmp_path / "ckpt.pth"
    _save_lavila(model, path)
    encoder = create_encoder(f"lavila:tsf:{path}", heads=2, num_frames=8)
    assert encoder.frames_per_clip == 8
    expected = resize_temporal_embed(model.visual.temporal_embed.detach(), 8)
    torch.testing.assert_close(encoder.model.visual.temporal_embed.detach(), expected)
    assert encoder.encode(_clips(2, frames=8)).shape == (2, 32)
    with pytest.raises(
        ValueError, match=r"clip encoder: expected uint8 RGB frames \(N, 8, H, W, 3\)"
    ):
        encoder.encode(_clips(2, frames=4))


def test_lavila_preprocessing_uses_the_typo_mean_in_the_0_255_domain(tmp_path):
    assert LAVILA_OPENAI_MEAN == (108.3272985, 116.7460125, 104.09373615)
    assert LAVILA_OPENAI_STD == (68.5005327, 66.6321579, 70.32316305)
    path = tmp_path / "ckpt.pth"
    _save_lavila(_tiny_lavila(with_text=False), path)
    encoder = create_encoder(f"lavila:tsf:{path}", heads=2)
    prep = encoder.preprocessing.to_dict()
    assert prep["mean"] == list(LAVILA_OPENAI_MEAN) and prep["value_range"] == 255.0
    assert prep["interpolation"] == "bilinear" and prep["resize_size"] == prep["crop_size"] == 32
    flat = np.full((1, 4, 32, 32, 3), 200, dtype=np.uint8)
    pixels = encoder.preprocess(flat)
    expected = [(200 - m) / s for m, s in zip(LAVILA_OPENAI_MEAN, LAVILA_OPENAI_STD, strict=True)]
    torch.testing.assert_close(pixels[0, 0, :, 5, 5], torch.tensor(expected))


def test_normalization_follows_args_model_or_option(tmp_path):
    model = _tiny_lavila(with_text=False)
    no_args = tmp_path / "no_args.pth"
    _save_lavila(model, no_args, args=False)
    assert (
        create_encoder(f"lavila:tsf:{no_args}", heads=2).provenance()["normalization"] == "openai"
    )
    chosen = create_encoder(f"lavila:tsf:{no_args}", heads=2, normalization="imagenet")
    assert chosen.preprocessing.mean == pytest.approx((123.675, 116.28, 103.53))


def test_unexpected_keys_and_wrong_architecture_are_clear_errors(tmp_path):
    model = _tiny_lavila(with_text=False)
    extra = tmp_path / "extra.pth"
    _save_lavila(model, extra, extra={"module.some_adapter.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"unexpected keys \['some_adapter.weight'\]"):
        create_encoder(f"lavila:tsf:{extra}", heads=2)
    good = tmp_path / "good.pth"
    _save_lavila(model, good)
    with pytest.raises(ValueError, match="not a LaViLa TSF-B checkpoint.*'width': 64"):
        create_encoder(f"lavila:tsf-b:{good}")
    with pytest.raises(ValueError, match="lavila:<tsf-b|tsf-l|tsf>:<checkpoint .pth>"):
        create_encoder("lavila:tsf-b")
    no_projection = tmp_path / "no_projection.pth"
    checkpoint = torch.load(good, weights_only=False)
    del checkpoint["state_dict"]["module.image_projection"]
    torch.save(checkpoint, no_projection)
    with pytest.raises(ValueError, match="has no image_projection: its CLS features need project=False"):
        create_encoder(f"lavila:tsf:{no_projection}", heads=2)
    assert create_encoder(f"lavila:tsf:{no_projection}", heads=2, project=False).dim == 64
    with pytest.raises(MissingWeightsError, match="weights file not found"):
        create_encoder(f"lavila:tsf-b:{tmp_path / 'absent.pth'}")


def test_checkpoint_with_arbitrary_pickles_needs_trust(tmp_path):
    model = _tiny_lavila(with_text=False)
    path = tmp_path / "pickled.pth"
    _save_lavila(model, path)
    checkpoint = torch.load(path, weights_only=False)
    checkpoint["scheduler"] = _Opaque()
    torch.save(checkpoint, path)
    with pytest.raises(ValueError, match="does not unpickle.*re-save just its state dict"):
        create_encoder(f"lavila:tsf:{path}", heads=2)
    assert create_encoder(f"lavila:tsf:{path}", heads=2, trust_pickle=True).dim == 32
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint" * 4)
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        create_encoder(f"lavila:tsf:{garbage}")


class _Opaque:
    """A pickled object that weights_only loading refuses."""
