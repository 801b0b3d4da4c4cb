"""timm: and dino: families: local files, DINO checkpoint layouts, the hub cache."""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file

from egofeat.extract.encoders import MissingWeightsError, TextEncoder, create_encoder
from egofeat.extract.encoders.text import class_prompt_embeddings

torch.set_num_threads(1)

# A one-block ViT-S/16 at 32 px keeps the DINO layout (384 wide, 6 heads) and runs in ms.
TINY_DINO = {"depth": 1, "img_size": 32}


def _frames(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 40, 56, 3), dtype=np.uint8)


def _tiny_vit_s16(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return timm.create_model("vit_small_patch16_224", num_classes=0, **TINY_DINO).eval()


def test_timm_local_file_matches_the_in_memory_model(tmp_path):
    torch.manual_seed(0)
    model = timm.create_model("test_vit", num_classes=0).eval()
    path = tmp_path / "test_vit.pth"
    torch.save(model.state_dict(), path)
    encoder = create_encoder(f"timm:test_vit:{path}")
    assert encoder.dim == model.num_features == 64
    frames = _frames(3)
    with torch.inference_mode():
        expected = model(encoder.preprocess(frames))
    np.testing.assert_allclose(encoder.encode(frames), expected.numpy(), rtol=1e-5, atol=1e-5)
    # timm's data config for test_vit: 160 px, crop_pct 0.95 -> short side 168, bicubic, mean 0.5.
    prep = encoder.preprocessing
    assert (prep.crop_size, prep.resize_size, prep.interpolation) == (160, 168, "bicubic")
    assert prep.mean == (0.5, 0.5, 0.5)
    assert not isinstance(encoder, TextEncoder)
    with pytest.raises(TypeError, match="has no text side"):
        class_prompt_embeddings(encoder, ["tap"])


def test_timm_file_with_a_classifier_and_wrapped_state_dict(tmp_path):
    torch.manual_seed(0)
    full = timm.create_model("test_vit").eval()  # with its 1000-way head
    path = tmp_path / "checkpoint.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in full.state_dict().items()}}, path)
    encoder = create_encoder(f"timm:test_vit:{path}", crop_pct=1.0)
    assert encoder.preprocessing.resize_size == 160
    frames = _frames(2)
    with torch.inference_mode():
        expected = full.forward_head(
            full.forward_features(encoder.preprocess(frames)), pre_logits=True
        )
    np.testing.assert_allclose(encoder.encode(frames), expected.numpy(), rtol=1e-5, atol=1e-5)


def test_timm_file_of_another_model_is_a_clear_error(tmp_path):
    path = tmp_path / "wrong.pth"
    torch.save(_tiny_vit_s16(0).state_dict(), path)
    with pytest.raises(ValueError, match="does not fit timm test_vit.*timm-format state dict"):
        create_encoder(f"timm:test_vit:{path}")
    with pytest.raises(ValueError, match="timm has no model 'vit_smol_patch16'"):
        create_encoder("timm:vit_smol_patch16")
    with pytest.raises(MissingWeightsError, match="does not exist"):
        create_encoder(f"timm:test_vit:{tmp_path / 'absent.pth'}")


def test_dino_full_checkpoint_takes_the_teacher_and_strips_prefixes(tmp_path):
    teacher, student = _tiny_vit_s16(0), _tiny_vit_s16(1)
    head = {"head.mlp.0.weight": torch.zeros(8, 384), "head.last_layer.weight_g": torch.ones(8, 1)}
    checkpoint = {
        "teacher": {f"backbone.{k}": v for k, v in teacher.state_dict().items()} | head,
        "student": {f"module.backbone.{k}": v for k, v in student.state_dict().items()}
        | {f"module.{k}": v for k, v in head.items()},
        "optimizer": {"state": {}, "param_groups": []},
        "epoch": 100,
        "args": argparse.Namespace(arch="vit_small", patch_size=16),
    }
    path = tmp_path / "dino_full_checkpoint.pth"
    torch.save(checkpoint, path)
    frames = _frames(3)

    encoder = create_encoder(f"dino:vit_s16:{path}", **TINY_DINO)
    with torch.inference_mode():
        expected = teacher(encoder.preprocess(frames))
    np.testing.assert_allclose(encoder.encode(frames), expected.numpy(), rtol=1e-5, atol=1e-5)
    record = encoder.provenance()
    assert record["dropped_keys"] == 2 and record["timm_model"] == "vit_small_patch16_224.dino"
    assert record["model_kwargs"] == TINY_DINO
    # timm's DINO config: ImageNet statistics, bicubic, crop_pct 0.9 (36 -> 32 here).
    prep = encoder.preprocessing
    assert prep.mean == (0.485, 0.456, 0.406) and prep.std == (0.229, 0.224, 0.225)
    assert (prep.crop_size, prep.resize_size, prep.interpolation) == (32, 35, "bicubic")

    from_student = create_encoder(f"dino:vit_s16:{path}", checkpoint_key="student", **TINY_DINO)
    with torch.inference_mode():
        expected_student = student(from_student.preprocess(frames))
    np.testing.assert_allclose(
        from_student.encode(frames), expected_student.numpy(), rtol=1e-5, atol=1e-5
    )


def test_dino_backbone_only_file_and_dino_eval_crop(tmp_path):
    model = _tiny_vit_s16(0)
    path = tmp_path / "dino_deitsmall16_pretrain.pth"
    torch.save(model.state_dict(), path)
    encoder = create_encoder(f"dino:vit_s16:{path}", crop_pct=0.875, **TINY_DINO)
    assert encoder.preprocessing.resize_size == 36  # floor(32 / 0.875)
    frames = _frames(2)
    with torch.inference_mode():
        expected = model(encoder.preprocess(frames))
    np.testing.assert_allclose(encoder.encode(frames), expected.numpy(), rtol=1e-5, atol=1e-5)


def _fake_hub_cache(root, repo_id: str, filename: str, state: dict) -> None:
    repo = root / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    save_file({k: v.contiguous() for k, v in state.items()}, str(snapshot / filename))


def test_dino_from_the_hub_cache_and_a_clear_error_when_absent(tmp_path):
    model = _tiny_vit_s16(0)
    _fake_hub_cache(
        tmp_path, "timm/vit_small_patch16_224.dino", "model.safetensors", model.state_dict()
    )
    encoder = create_encoder("dino:vit_s16", cache_dir=tmp_path, **TINY_DINO)
    assert encoder.weights_file.name == "model.safetensors"
    frames = _frames(2)
    with torch.inference_mode():
        expected = model(encoder.preprocess(frames))
    np.testing.assert_allclose(encoder.encode(frames), expected.numpy(), rtol=1e-5, atol=1e-5)

    with pytest.raises(MissingWeightsError) as error:
        create_encoder("dino:vit_b16", cache_dir=tmp_path)
    message = str(error.value)
    assert "timm/vit_base_patch16_224.dino/model.safetensors" in message
    assert str(tmp_path) in message and "'dino:vit_b16:/path/to/weights'" in message
    with pytest.raises(ValueError, match=r"unknown DINO variant 'vit_l16'.*vit_b16"):
        create_encoder("dino:vit_l16")
