"""Encoder names, families and the factory.

A name is ``family`` or ``family:spec``. The family picks a factory; the factory parses the
rest. Built-in families (the heavy libraries are imported only when a family is used):

==========  ====================================================  ===========================
family      name                                                  through
==========  ====================================================  ===========================
``clip``    ``clip:<arch>:<pretrained tag | local file>``         open_clip, image + text
``dino``    ``dino:<vit_s16|vit_b16|vit_s8|vit_b8>[:<file>]``     timm (``*.dino`` weights)
``lavila``  ``lavila:<tsf-b|tsf-l|tsf>:<checkpoint .pth>``        egofeat's TimeSformer
``timm``    ``timm:<model name>[:<local file>]``                  timm, pooled features
``tiny``    ``tiny``                                              built-in random weights
==========  ====================================================  ===========================
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .base import Encoder

__all__ = [
    "EncoderFactory",
    "UnknownEncoderError",
    "create_encoder",
    "describe_encoders",
    "list_encoders",
    "register_encoder",
]


EncoderFactory = Callable[..., Encoder]
"""``factory(spec, *, name, device, batch_size, cache_dir, **options) -> Encoder``.

``spec`` is the part of the name after ``family:`` ("" for a bare family name), ``name`` the
whole name, ``device`` a ``torch.device``; ``options`` are the family-specific keywords given
to :func:`create_encoder`.
"""


class UnknownEncoderError(ValueError):
    """An encoder name whose family is not registered."""


@dataclass(frozen=True)
class _Family:
    factory: EncoderFactory
    usage: str


_FAMILIES: dict[str, _Family] = {}


def register_encoder(family: str, factory: EncoderFactory, *, usage: str | None = None) -> None:
    """Register ``factory`` (see :data:`EncoderFactory`) for names ``family`` / ``family:<spec>``.

    ``usage`` is the name pattern shown in error messages (default ``"<family>:<spec>"``).
    Registering an existing family replaces it.
    """
    if not family or ":" in family:
        raise ValueError(f"a family name is a non-empty string without ':', not {family!r}")
    _FAMILIES[family] = _Family(factory, usage or f"{family}:<spec>")


def list_encoders() -> list[str]:
    """Registered encoder families, sorted (see :func:`describe_encoders` for name patterns)."""
    return sorted(_FAMILIES)


def describe_encoders() -> dict[str, str]:
    """``{family: name pattern}`` for every registered family."""
    return {family: _FAMILIES[family].usage for family in sorted(_FAMILIES)}


def create_encoder(
    name: str,
    *,
    device: str | torch.device = "cpu",
    batch_size: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    **options: Any,
) -> Encoder:
    """Build the encoder called ``name`` on ``device``.

    Args:
        name: ``family`` or ``family:spec``, e.g. ``"clip:ViT-B-16:openai"``,
            ``"dino:vit_b16"``, ``"lavila:tsf-b:/ckpt/clip_openai_timesformer_base.pth"``,
            ``"timm:convnext_tiny.fb_in22k"``, ``"tiny"``.
        device: where the model runs (``"cpu"``, ``"cuda"``, ``"cuda:1"``...).
        batch_size: samples per forward pass; automatic when None
            (see :func:`egofeat.extract.encoders.base.auto_batch_size`).
        cache_dir: the Hugging Face hub cache to read pretrained tags from (default: the
            usual ``HF_HUB_CACHE``). Nothing is ever downloaded.
        **options: family-specific options, e.g. ``quick_gelu=True`` (clip),
            ``num_frames=16`` (lavila), ``crop_pct=0.875`` (dino/timm).

    Raises:
        UnknownEncoderError: the family is not registered (the message lists those that are).
        MissingWeightsError: the weights are neither cached nor at the given path.
    """
    family, _, spec = name.strip().partition(":")
    if family not in _FAMILIES:
        known = "; ".join(f"{fam} ({usage})" for fam, usage in describe_encoders().items())
        raise UnknownEncoderError(
            f"unknown encoder {name!r}: family {family!r} is not registered. Known: {known}"
        )
    return _FAMILIES[family].factory(
        spec,
        name=name.strip(),
        device=torch.device(device),
        batch_size=batch_size,
        cache_dir=cache_dir,
        **options,
    )


def _lazy(module: str, function: str) -> EncoderFactory:
    """A factory that imports ``module`` on first use, so unused libraries are never loaded."""

    def factory(spec: str, **kwargs: Any) -> Encoder:
        from importlib import import_module

        build: Callable[..., Encoder] = getattr(import_module(module, __package__), function)
        return build(spec, **kwargs)

    return factory


register_encoder(
    "clip",
    _lazy(".open_clip_encoder", "create_clip_encoder"),
    usage="clip:<arch>:<pretrained tag | local file>",
)
register_encoder(
    "dino",
    _lazy(".timm_encoder", "create_dino_encoder"),
    usage="dino:<vit_s16|vit_b16|vit_s8|vit_b8>[:<local file>]",
)
register_encoder(
    "lavila",
    _lazy(".lavila", "create_lavila_encoder"),
    usage="lavila:<tsf-b|tsf-l|tsf>:<checkpoint .pth>",
)
register_encoder(
    "timm", _lazy(".timm_encoder", "create_timm_encoder"), usage="timm:<model name>[:<local file>]"
)
register_encoder("tiny", _lazy(".tiny", "create_tiny_encoder"), usage="tiny")
