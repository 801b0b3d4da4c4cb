"""``clip:<arch>:<pretrained tag | local file>``: open_clip image and text towers.

Weights:

- a pretrained tag (``clip:ViT-B-16:openai``, ``clip:ViT-B-16:laion2b_s34b_b88k``) is looked
  up in the local Hugging Face cache (``cache_dir`` or the default ``HF_HUB_CACHE``); the tag's
  settings apply: its QuickGELU flag and its preprocessing (mean, std, interpolation, resize
  mode). Missing from the cache is an error naming the repo and files, never a download.
- a local file (``clip:ViT-B-16-quickgelu:/w/open_clip_model.safetensors``) is a plain
  open_clip state dict (``.safetensors``/``.bin``/``.pt``; a ``state_dict`` entry and a
  ``module.`` prefix are unwrapped by open_clip). **No tag applies to a file**: activation and
  preprocessing come from the architecture config alone.

QuickGELU: OpenAI's CLIP weights were trained with QuickGELU, which open_clip's plain
``ViT-B-16`` config does not enable (open_clip only warns). Here a tag's flag wins, so
``clip:ViT-B-16:openai`` builds the QuickGELU model. For OpenAI weights from a file, use the
``-quickgelu`` architecture (``clip:ViT-B-16-quickgelu:/path``) or pass ``quick_gelu=True``;
the choice and where it came from are recorded in the provenance.

Output: ``encode_image`` (pooled token after ``ln_post`` @ ``visual.proj``) and
``encode_text`` (EOT token after ``ln_final`` @ ``text_projection``), both unnormalised.
Preprocessing runs as batched torch ops configured from open_clip's ``PreprocessCfg``
(what ``create_model_and_transforms`` would build its PIL transform from).
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any

import torch

from .base import Encoder, TextEncoder
from .preprocess import ImagePreprocess
from .weights import MissingWeightsError, cached_hub_file, hub_cache_location

__all__ = ["ClipEncoder", "create_clip_encoder", "resolve_quick_gelu"]

_OPEN_CLIP_BIN = "open_clip_pytorch_model.bin"
_OPEN_CLIP_SAFETENSORS = "open_clip_model.safetensors"


class ClipEncoder(Encoder, TextEncoder):
    """An open_clip model: image tower for :meth:`encode`, text tower for :meth:`encode_text`."""

    def __init__(self, *, arch: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.arch = arch
        self.text_dim = self.dim
        self._tokenizer: Any = None

    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixels)

    @property
    def tokenizer(self) -> Any:
        """open_clip's tokenizer for the architecture (created on first use)."""
        if self._tokenizer is None:
            import open_clip

            try:
                self._tokenizer = open_clip.get_tokenizer(self.arch)
            except Exception as error:  # HF tokenizers need their files in the local cache
                raise MissingWeightsError(
                    f"{self.name}: could not build the tokenizer of {self.arch} offline: {error}"
                ) from error
        return self._tokenizer

    def _encode_text_batch(self, texts: list[str]) -> torch.Tensor:
        return self.model.encode_text(self.tokenizer(texts).to(self.device))

    def text_provenance(self) -> dict[str, Any]:
        return {
            "text_dim": self.text_dim,
            "tokenizer": f"open_clip.get_tokenizer({self.arch!r})",
            "output": "open_clip encode_text: EOT/pooled token after ln_final @ text_projection",
        }


def resolve_quick_gelu(
    arch_config: dict[str, Any], tag_config: dict[str, Any] | None, requested: bool | None
) -> tuple[bool, str]:
    """Whether to build with QuickGELU, and why: the option, else the tag, else the arch."""
    if requested is not None:
        return bool(requested), "option quick_gelu"
    if tag_config:
        return bool(tag_config.get("quick_gelu", False)), "pretrained tag"
    return bool(arch_config.get("quick_gelu", False)), "architecture config"


def create_clip_encoder(
    spec: str,
    *,
    name: str,
    device: torch.device,
    batch_size: int | None,
    cache_dir: str | os.PathLike[str] | None,
    quick_gelu: bool | None = None,
    trust_pickle: bool = False,
) -> ClipEncoder:
    """Factory for ``clip:<arch>:<pretrained tag | local file>`` (see the module docstring)."""
    import open_clip

    arch, _, pretrained = spec.partition(":")
    if not arch or not pretrained:
        raise ValueError(
            f"{name!r}: expected 'clip:<arch>:<pretrained tag | local file>', e.g. "
            "'clip:ViT-B-16:openai' or 'clip:ViT-B-16-quickgelu:/weights/open_clip_model.safetensors'"
        )
    arch_config = open_clip.get_model_config(arch)
    if arch_config is None:
        close = difflib.get_close_matches(arch, open_clip.list_models(), n=5)
        raise ValueError(f"{name!r}: open_clip has no architecture {arch!r}; close names: {close}")

    tags = open_clip.list_pretrained_tags_by_model(arch)
    tag_config = open_clip.get_pretrained_cfg(arch, pretrained) if pretrained in tags else None
    use_quick_gelu, quick_gelu_source = resolve_quick_gelu(arch_config, tag_config, quick_gelu)
    if tag_config:
        weights = _cached_tag_weights(name, arch, pretrained, tag_config, cache_dir, use_quick_gelu)
        preprocess_overrides = {
            key: tag_config[key]
            for key in ("mean", "std", "interpolation", "resize_mode")
            if key in tag_config
        }
    else:
        weights = Path(pretrained).expanduser()
        if not weights.is_file():
            raise MissingWeightsError(
                f"{name!r}: {pretrained!r} is neither a pretrained tag of {arch} {tags} nor an "
                "existing file. Give a known tag (from the local Hugging Face cache) or the path "
                "of an open_clip state-dict file."
            )
        preprocess_overrides = {}

    model = open_clip.create_model(
        arch,
        pretrained=str(weights),
        force_preprocess_cfg=preprocess_overrides,
        weights_only=not trust_pickle,
        quick_gelu=use_quick_gelu,
    )
    preprocessing = _preprocess_from_open_clip(open_clip.get_model_preprocess_cfg(model), name)
    return ClipEncoder(
        arch=arch,
        name=name,
        model=model,
        preprocessing=preprocessing,
        dim=arch_config["embed_dim"],
        output="open_clip encode_image: pooled token after ln_post @ visual.proj (unnormalised)",
        device=device,
        batch_size=batch_size,
        weights_file=weights,
        details={
            "family": "clip",
            "architecture": arch,
            "pretrained": pretrained if tag_config else None,
            "quick_gelu": use_quick_gelu,
            "quick_gelu_source": quick_gelu_source,
            "libraries": {"torch": torch.__version__, "open_clip": open_clip.__version__},
        },
    )


def _cached_tag_weights(
    name: str,
    arch: str,
    tag: str,
    tag_config: dict[str, Any],
    cache_dir: str | os.PathLike[str] | None,
    quick_gelu: bool,
) -> Path:
    """The tag's weights file in the local Hugging Face cache, or a MissingWeightsError."""
    if tag_config.get("file"):
        return Path(tag_config["file"])
    hub = tag_config.get("hf_hub", "")
    if not hub:
        raise MissingWeightsError(
            f"{name!r}: tag {tag!r} is only published as a URL ({tag_config.get('url')}); "
            f"download it yourself and pass the file: 'clip:{arch}:/path/to/file'"
        )
    # open_clip writes 'org/repo/' (default file name) or 'org/repo/filename'.
    repo, filename = os.path.split(hub)
    filename = filename or _OPEN_CLIP_BIN
    candidates = [_safetensors_name(filename), filename]
    found = cached_hub_file(repo, candidates, cache_dir)
    if found is not None:
        return found
    file_arch = arch if not quick_gelu or arch.endswith("quickgelu") else f"{arch}-quickgelu"
    raise MissingWeightsError(
        f"weights for {name!r} are not in the local Hugging Face cache "
        f"({hub_cache_location(cache_dir)}): looked for {repo}/{candidates[0]} and "
        f"{repo}/{candidates[1]}. egofeat never downloads weights. Fill the cache on a machine "
        f"with internet (huggingface-cli download {repo} {filename}) and copy it here or pass "
        f"cache_dir=..., or name the file directly: 'clip:{file_arch}:/path/to/{filename}'."
    )


def _safetensors_name(filename: str) -> str:
    if filename == _OPEN_CLIP_BIN:
        return _OPEN_CLIP_SAFETENSORS
    return str(Path(filename).with_suffix(".safetensors"))


def _preprocess_from_open_clip(config: dict[str, Any], name: str) -> ImagePreprocess:
    size = config["size"]
    if isinstance(size, (tuple, list)):
        if size[0] != size[1]:
            raise ValueError(f"{name!r}: non-square input {tuple(size)} is not supported")
        size = size[0]
    if config.get("mode", "RGB") != "RGB":
        raise ValueError(f"{name!r}: image mode {config['mode']!r} is not supported (RGB only)")
    return ImagePreprocess(
        crop_size=int(size),
        resize_size=int(size),
        mean=tuple(config["mean"]),
        std=tuple(config["std"]),
        resize_mode=config.get("resize_mode", "shortest"),
        interpolation=config.get("interpolation", "bicubic"),
    )
