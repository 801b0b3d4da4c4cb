"""``lavila:<tsf-b|tsf-l|tsf>:<checkpoint>``: LaViLa's video (and CLIP text) encoder.

Loads LaViLa's released ``.pth`` checkpoints without the LaViLa code: the visual tower is
egofeat's :class:`~.timesformer.SpaceTimeTransformer`, the text tower open_clip's
``TextTransformer`` (LaViLa's CLIP text keys are open_clip's).

Checkpoint layout: a dict with ``state_dict`` (plus ``args``, ``epoch``...) whose keys carry
the DDP prefix ``module.``: ``visual.*`` (TimeSformer), ``image_projection`` [D, 256],
CLIP text keys (``token_embedding.weight``, ``positional_embedding``, ``transformer.*``,
``ln_final.*``, ``text_projection``) and ``logit_scale``. Loading is strict: besides
``logit_scale`` and a DistilBERT text tower (``textual.*``, not loaded: those checkpoints get
the video side only), any key not listed here is an error.

Clip input: ``(N, T, H, W, 3)`` uint8. Preprocessing as LaViLa evaluates: resize the short side
to the model's input size (bilinear), centre crop, normalise **in the 0-255 domain** with
LaViLa's "OpenAI" statistics, whose first mean value (108.33) is a typo for CLIP's 122.77 that
the released weights were trained with, so it is kept. Checkpoints of non-OpenAI-initialised
models (``args.model`` without ``OPENAI``) use ImageNet statistics x 255.

Output: the CLS token after the final norm ``@ image_projection`` (256-d, LaViLa's default
``encode_image``), or the 768/1024-d CLS token itself with ``project=False``. Unnormalised.

Options: ``num_frames`` (default: the checkpoint's; a different count adapts
``temporal_embed`` as LaViLa does, see :func:`~.timesformer.resize_temporal_embed`),
``project``, ``normalization`` (``"openai"`` or ``"imagenet"``, default from ``args.model``),
``heads`` / ``text_heads`` (default width // 64), ``trust_pickle``.

Text tokenization: open_clip's CLIP BPE tokenizer with 77 tokens. It forces the end-of-text
token on captions longer than 75 tokens, where LaViLa's own tokenizer truncates without it.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from .base import Encoder, TextEncoder
from .preprocess import ImagePreprocess
from .timesformer import QuickGELU, SpaceTimeTransformer, resize_temporal_embed
from .weights import load_checkpoint_file, load_state_dict_strict, strip_prefixes

__all__ = [
    "LAVILA_OPENAI_MEAN",
    "LAVILA_OPENAI_STD",
    "LaViLaEncoder",
    "LaViLaModel",
    "LaViLaWeights",
    "create_lavila_encoder",
    "read_lavila_checkpoint",
]

LAVILA_OPENAI_MEAN = (108.3272985, 116.7460125, 104.09373615)
LAVILA_OPENAI_STD = (68.5005327, 66.6321579, 70.32316305)
IMAGENET_MEAN_255 = (123.675, 116.28, 103.53)
IMAGENET_STD_255 = (58.395, 57.12, 57.375)

Normalization = Literal["openai", "imagenet"]

# Expected geometry of the named architectures (the rest is read from the checkpoint).
ARCHITECTURES: dict[str, dict[str, int] | None] = {
    "tsf-b": {"width": 768, "patch_size": 16, "layers": 12},
    "tsf-l": {"width": 1024, "patch_size": 14, "layers": 24},
    "tsf": None,  # any geometry
}

_TEXT_KEYS = (
    "token_embedding.",
    "positional_embedding",
    "transformer.",
    "ln_final.",
    "text_projection",
)
_IGNORED_KEYS = ("logit_scale", "textual.")


@dataclass
class LaViLaWeights:
    """A LaViLa checkpoint's state dict split by tower, prefixes removed."""

    visual: dict[str, torch.Tensor]
    image_projection: torch.Tensor | None
    text: dict[str, torch.Tensor]
    ignored: list[str] = field(default_factory=list)
    model_name: str | None = None  # ``args.model`` when the checkpoint records it


def read_lavila_checkpoint(
    path: str | os.PathLike[str], *, trust_pickle: bool = False
) -> LaViLaWeights:
    """Read and split a LaViLa checkpoint; unknown keys raise ``ValueError`` naming them."""
    checkpoint = load_checkpoint_file(path, trust_pickle=trust_pickle)
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{path}: expected a dict checkpoint, got {type(checkpoint).__name__}")
    state = checkpoint.get("state_dict", checkpoint)
    args = checkpoint.get("args")
    state = strip_prefixes(state, ("module.",))
    weights = LaViLaWeights(
        visual={}, image_projection=None, text={}, model_name=getattr(args, "model", None)
    )
    unexpected = []
    for key, value in state.items():
        if key.startswith("visual."):
            weights.visual[key.removeprefix("visual.")] = value
        elif key == "image_projection":
            weights.image_projection = value
        elif key.startswith(_TEXT_KEYS):
            weights.text[key] = value
        elif key.startswith(_IGNORED_KEYS):
            weights.ignored.append(key)
        else:
            unexpected.append(key)
    if unexpected or not weights.visual:
        problem = f"unexpected keys {unexpected[:10]}" if unexpected else "no 'visual.*' keys"
        raise ValueError(
            f"{path} is not a LaViLa TimeSformer checkpoint: {problem}. Expected "
            "'state_dict' with (module.)visual.*, image_projection, CLIP text keys, logit_scale."
        )
    return weights


def tsf_geometry(visual: dict[str, torch.Tensor]) -> dict[str, Any]:
    """SpaceTimeTransformer keyword arguments read off a visual state dict (heads excluded)."""
    try:
        width = visual["cls_token"].shape[-1]
        patch_size = visual["patch_embed.proj.weight"].shape[-1]
        grid = math.isqrt(visual["pos_embed"].shape[1] - 1)
        layers = len({int(m.group(1)) for k in visual if (m := re.match(r"blocks\.(\d+)\.", k))})
        hidden = visual["blocks.0.mlp.fc1.weight"].shape[0]
        num_frames = visual["temporal_embed"].shape[1]
    except KeyError as missing:
        raise ValueError(f"TimeSformer weights lack {missing}") from None
    return {
        "image_size": grid * patch_size,
        "patch_size": patch_size,
        "width": width,
        "layers": layers,
        "mlp_ratio": hidden / width,
        "num_frames": num_frames,
    }


class LaViLaModel(nn.Module):
    """LaViLa's dual encoder: ``visual`` + ``image_projection``, optional CLIP ``text`` tower."""

    def __init__(
        self,
        visual: SpaceTimeTransformer,
        projection_dim: int | None,
        text: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.visual = visual
        self.image_projection = (
            nn.Parameter(torch.empty(visual.width, projection_dim)) if projection_dim else None
        )
        self.text = text

    def encode_video(self, clips: torch.Tensor, project: bool = True) -> torch.Tensor:
        """``(B, T, 3, H, W)`` normalised clips -> CLS features (projected if ``project``)."""
        features = self.visual(clips)
        if project:
            if self.image_projection is None:
                raise ValueError("this checkpoint has no image_projection; use project=False")
            features = features @ self.image_projection
        return features


def build_text_tower(text: dict[str, torch.Tensor], heads: int | None) -> nn.Module:
    """An open_clip ``TextTransformer`` shaped like the CLIP text weights in ``text``."""
    from open_clip.transformer import TextTransformer

    required = ("token_embedding.weight", "positional_embedding", "text_projection")
    if missing := [key for key in required if key not in text]:
        raise ValueError(f"incomplete CLIP text weights: missing {missing}")
    vocab_size, width = text["token_embedding.weight"].shape
    layers = len(
        {int(m.group(1)) for k in text if (m := re.match(r"transformer\.resblocks\.(\d+)\.", k))}
    )
    return TextTransformer(
        context_length=text["positional_embedding"].shape[0],
        vocab_size=vocab_size,
        width=width,
        heads=heads or max(1, width // 64),
        layers=layers,
        output_dim=text["text_projection"].shape[1],
        act_layer=QuickGELU,
        proj_type="linear",
        proj_bias=False,
    )


class LaViLaEncoder(Encoder):
    """LaViLa's TimeSformer as a clip encoder (video side only)."""

    def __init__(self, *, model: LaViLaModel, project: bool, **kwargs: Any) -> None:
        super().__init__(model=model, **kwargs)
        self.project = project

    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_video(pixels, project=self.project)


class LaViLaDualEncoder(LaViLaEncoder, TextEncoder):
    """LaViLa's TimeSformer plus its CLIP text tower (text features share the 256-d space)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        from open_clip.tokenizer import SimpleTokenizer

        self.context_length = self.model.text.context_length
        self.tokenizer = SimpleTokenizer(context_length=self.context_length)
        self.text_dim = self.model.text.output_dim

    def _encode_text_batch(self, texts: list[str]) -> torch.Tensor:
        return self.model.text(self.tokenizer(texts).to(self.device))

    def text_provenance(self) -> dict[str, Any]:
        return {
            "text_dim": self.text_dim,
            "tokenizer": f"CLIP BPE (open_clip SimpleTokenizer), {self.context_length} tokens",
            "output": "EOT token after ln_final @ text_projection (unnormalised)",
        }


def create_lavila_encoder(
    spec: str,
    *,
    name: str,
    device: torch.device,
    batch_size: int | None,
    cache_dir: Any = None,
    num_frames: int | None = None,
    project: bool = True,
    normalization: Normalization | None = None,
    heads: int | None = None,
    text_heads: int | None = None,
    trust_pickle: bool = False,
) -> LaViLaEncoder:
    """Factory for ``lavila:<tsf-b|tsf-l|tsf>:<checkpoint>`` (see the module docstring)."""
    arch, _, checkpoint = spec.partition(":")
    if arch not in ARCHITECTURES or not checkpoint:
        raise ValueError(
            f"{name!r}: expected 'lavila:<{'|'.join(ARCHITECTURES)}>:<checkpoint .pth>', e.g. "
            "'lavila:tsf-b:/weights/lavila_tsf_b.pth'"
        )
    if num_frames is not None and num_frames < 1:
        raise ValueError(f"{name!r}: num_frames must be >= 1, not {num_frames}")
    path = Path(checkpoint).expanduser()
    weights = read_lavila_checkpoint(path, trust_pickle=trust_pickle)
    geometry = tsf_geometry(weights.visual)
    _check_architecture(arch, geometry, path)

    loaded_frames = geometry["num_frames"]
    geometry["num_frames"] = num_frames or loaded_frames
    weights.visual["temporal_embed"] = resize_temporal_embed(
        weights.visual["temporal_embed"], geometry["num_frames"]
    )
    visual = SpaceTimeTransformer(**geometry, heads=heads or max(1, geometry["width"] // 64))
    projection_dim = None if weights.image_projection is None else weights.image_projection.shape[1]
    if project and projection_dim is None:
        raise ValueError(f"{path} has no image_projection: its CLS features need project=False (create_encoder option)")
    text = build_text_tower(weights.text, text_heads) if weights.text else None
    model = LaViLaModel(visual, projection_dim, text)
    state = {f"visual.{k}": v for k, v in weights.visual.items()}
    state.update({f"text.{k}": v for k, v in weights.text.items()})
    if weights.image_projection is not None:
        state["image_projection"] = weights.image_projection
    load_state_dict_strict(model, state, f"{path} does not fit the TimeSformer it describes")

    normalization, normalization_source = _normalization(normalization, weights.model_name)
    mean, std = (
        (LAVILA_OPENAI_MEAN, LAVILA_OPENAI_STD)
        if normalization == "openai"
        else (IMAGENET_MEAN_255, IMAGENET_STD_255)
    )
    size = geometry["image_size"]
    preprocessing = ImagePreprocess(
        crop_size=size,
        resize_size=size,
        mean=mean,
        std=std,
        interpolation="bilinear",
        value_range=255.0,
    )
    output = (
        "CLS token after norm @ image_projection (LaViLa encode_image), unnormalised"
        if project
        else "CLS token after norm (before image_projection), unnormalised"
    )
    encoder_class = LaViLaDualEncoder if text is not None else LaViLaEncoder
    return encoder_class(
        name=name,
        model=model,
        project=project,
        preprocessing=preprocessing,
        dim=projection_dim if project else geometry["width"],
        output=output,
        kind="clip",
        frames_per_clip=geometry["num_frames"],
        device=device,
        batch_size=batch_size,
        weights_file=path,
        details={
            "family": "lavila",
            "architecture": arch,
            "geometry": {**geometry, "heads": visual.blocks[0].attn.heads},
            "checkpoint_frames": loaded_frames,
            "checkpoint_model": weights.model_name,
            "normalization": normalization,
            "normalization_source": normalization_source,
            "ignored_keys": sorted(weights.ignored),
        },
    )


def _check_architecture(arch: str, geometry: dict[str, Any], path: Path) -> None:
    expected = ARCHITECTURES[arch]
    if expected is None:
        return
    found = {key: geometry[key] for key in expected}
    if found != expected:
        raise ValueError(
            f"{path} is not a LaViLa {arch.upper()} checkpoint: it has {found}, {arch} has "
            f"{expected}. Name the right architecture, or 'lavila:tsf:<file>' for any geometry."
        )


def _normalization(
    choice: Normalization | None, model_name: str | None
) -> tuple[Normalization, str]:
    if choice is not None:
        if choice not in ("openai", "imagenet"):
            raise ValueError(f"normalization must be 'openai' or 'imagenet', not {choice!r}")
        return choice, "option"
    if model_name is None:
        return "openai", "default (checkpoint records no args.model)"
    inferred: Normalization = "openai" if "OPENAI" in model_name.upper() else "imagenet"
    return inferred, f"args.model={model_name}"
