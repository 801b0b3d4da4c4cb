"""``timm:<model>[:<file>]`` and ``dino:<variant>[:<file>]``: timm image models.

Both build the timm model with ``num_classes=0``, so the output is timm's pooled feature
(``forward_head(pre_logits=True)``: the CLS token after the final norm for a ViT with token
pooling, global average pooling for a convnet). Preprocessing follows timm's data config for
the model (input size, interpolation, mean, std, ``crop_pct``: resize the short side to
``floor(size / crop_pct)``, centre crop); ``crop_pct=...`` overrides it.

Weights without a file come from the local Hugging Face cache (the pretrained tag's
``hf_hub_id``: ``model.safetensors`` or ``pytorch_model.bin``); a missing file is an error,
never a download. Weights are timm-format state dicts (a ``state_dict``/``model`` entry and
``module.`` prefixes are unwrapped; EMA weights are preferred when present, as timm does),
loaded strictly after dropping the classifier. Any other keyword option is passed to
``timm.create_model`` and recorded in the provenance; ``img_size=...`` also sets the
preprocessing input size.

DINO (``dino:vit_s16`` -> ``vit_small_patch16_224.dino``, ``vit_b16``, ``vit_s8``,
``vit_b8``): a local file may be the backbone-only release (``dino_deitsmall16_pretrain.pth``,
timm key names) or a full training checkpoint (``*_full_checkpoint.pth`` with ``teacher`` and
``student``): the ``checkpoint_key`` entry (default ``teacher``, as DINO's own evaluation) is
taken, ``module.``/``backbone.`` prefixes stripped and the projection ``head.*`` dropped, then
loaded strictly. timm's DINO config crops with ``crop_pct=0.9`` (248 -> 224); DINO's own
linear/k-NN evaluation used 0.875 (256 -> 224): pass ``crop_pct=0.875`` to match that.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any

import torch

from .base import Encoder
from .preprocess import ImagePreprocess, timm_resize_size
from .weights import (
    MissingWeightsError,
    cached_hub_file,
    cached_url_file,
    hub_cache_location,
    load_checkpoint_file,
    load_state_dict_strict,
    strip_prefixes,
)

__all__ = [
    "DINO_MODELS",
    "TimmEncoder",
    "create_dino_encoder",
    "create_timm_encoder",
    "read_dino_checkpoint",
]

DINO_MODELS = {
    "vit_s16": "vit_small_patch16_224.dino",
    "vit_b16": "vit_base_patch16_224.dino",
    "vit_s8": "vit_small_patch8_224.dino",
    "vit_b8": "vit_base_patch8_224.dino",
}
_TIMM_HUB_FILES = ("model.safetensors", "pytorch_model.bin")


class TimmEncoder(Encoder):
    """A timm model built with ``num_classes=0``: its forward pass is the pooled feature."""

    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model(pixels)


def create_timm_encoder(
    spec: str,
    *,
    name: str,
    device: torch.device,
    batch_size: int | None,
    cache_dir: str | os.PathLike[str] | None,
    crop_pct: float | None = None,
    **model_kwargs: Any,
) -> TimmEncoder:
    """Factory for ``timm:<model name>[:<local file>]`` (see the module docstring)."""
    import timm

    model_name, _, file = spec.partition(":")
    _check_timm_name(model_name, name)
    weights = _local_file(file, name) if file else _cached_timm_weights(model_name, name, cache_dir)
    model = timm.create_model(model_name, pretrained=False, num_classes=0, **model_kwargs)
    state = timm.models.load_state_dict(str(weights))
    for classifier in _classifier_names(model):
        state.pop(f"{classifier}.weight", None)
        state.pop(f"{classifier}.bias", None)
    _load_strict(model, state, weights, f"timm {model_name}")
    pool = getattr(model, "global_pool", None)
    return _timm_encoder(
        model,
        name=name,
        model_name=model_name,
        weights=weights,
        crop_pct=crop_pct,
        device=device,
        batch_size=batch_size,
        family="timm",
        model_kwargs=model_kwargs,
        output=f"timm {model_name} pooled features (num_classes=0, global_pool={pool!s})",
    )


def create_dino_encoder(
    spec: str,
    *,
    name: str,
    device: torch.device,
    batch_size: int | None,
    cache_dir: str | os.PathLike[str] | None,
    crop_pct: float | None = None,
    checkpoint_key: str = "teacher",
    trust_pickle: bool = False,
    **model_kwargs: Any,
) -> TimmEncoder:
    """Factory for ``dino:<vit_s16|vit_b16|vit_s8|vit_b8>[:<local file>]``."""
    import timm

    variant, _, file = spec.partition(":")
    if variant not in DINO_MODELS:
        raise ValueError(
            f"{name!r}: unknown DINO variant {variant!r}; known: {sorted(DINO_MODELS)} "
            "(name them as 'dino:vit_b16' or 'dino:vit_b16:/path/dino_vitbase16_pretrain.pth')"
        )
    timm_name = DINO_MODELS[variant]
    details: dict[str, Any] = {"timm_model": timm_name}
    if file:
        weights = _local_file(file, name)
        state, dropped = read_dino_checkpoint(weights, checkpoint_key, trust_pickle=trust_pickle)
        details["dropped_keys"] = dropped
    else:
        weights = _cached_timm_weights(timm_name, name, cache_dir)
        state = timm.models.load_state_dict(str(weights))
    model = timm.create_model(timm_name, pretrained=False, num_classes=0, **model_kwargs)
    _load_strict(model, state, weights, f"DINO {variant} backbone")
    return _timm_encoder(
        model,
        name=name,
        model_name=timm_name,
        weights=weights,
        crop_pct=crop_pct,
        device=device,
        batch_size=batch_size,
        family="dino",
        model_kwargs=model_kwargs,
        output="CLS token after the final norm (timm VisionTransformer, num_classes=0)",
        extra=details,
    )


def read_dino_checkpoint(
    path: str | os.PathLike[str], checkpoint_key: str = "teacher", *, trust_pickle: bool = False
) -> tuple[dict[str, torch.Tensor], int]:
    """Backbone state dict of a DINO file, and how many projection-head keys were dropped."""
    checkpoint = load_checkpoint_file(path, trust_pickle=trust_pickle)
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{path}: expected a state dict, got {type(checkpoint).__name__}")
    if "teacher" in checkpoint or "student" in checkpoint:
        if checkpoint_key not in checkpoint:
            raise ValueError(f"{path} has no {checkpoint_key!r} entry; it has {sorted(checkpoint)}")
        checkpoint = checkpoint[checkpoint_key]
    state = strip_prefixes(checkpoint, ("module.", "backbone."))
    backbone = {key: value for key, value in state.items() if not key.startswith("head.")}
    return backbone, len(state) - len(backbone)


def _timm_encoder(
    model: torch.nn.Module,
    *,
    name: str,
    model_name: str,
    weights: Path,
    crop_pct: float | None,
    device: torch.device,
    batch_size: int | None,
    family: str,
    model_kwargs: dict[str, Any],
    output: str,
    extra: dict[str, Any] | None = None,
) -> TimmEncoder:
    import timm
    from timm.data import resolve_data_config

    overrides: dict[str, Any] = {"crop_pct": crop_pct} if crop_pct else {}
    if "img_size" in model_kwargs:
        # timm's data config keeps the pretrained input size; the built model's size wins.
        size = model_kwargs["img_size"]
        height, width = (size, size) if isinstance(size, int) else size
        overrides["input_size"] = (3, height, width)
    data_config = resolve_data_config(overrides, model=model)
    return TimmEncoder(
        name=name,
        model=model,
        preprocessing=_preprocess_from_timm(data_config, name),
        dim=getattr(model, "head_hidden_size", None) or model.num_features,
        output=output,
        device=device,
        batch_size=batch_size,
        weights_file=weights,
        details={
            "family": family,
            "model_kwargs": {key: _jsonable(value) for key, value in model_kwargs.items()},
            "libraries": {"torch": torch.__version__, "timm": timm.__version__},
            **(extra or {}),
        },
    )


def _classifier_names(model: torch.nn.Module) -> list[str]:
    classifier = model.pretrained_cfg.get("classifier") or []
    return [classifier] if isinstance(classifier, str) else list(classifier)


def _load_strict(
    model: torch.nn.Module, state: dict[str, torch.Tensor], weights: Path, what: str
) -> None:
    load_state_dict_strict(
        model,
        state,
        f"{weights} does not fit {what}",
        hint="A timm-format state dict is expected (as published under 'timm/...' on the Hugging "
        "Face hub); convert other layouts with timm.create_model(name, pretrained=True, "
        "pretrained_cfg_overlay=dict(file=...)) and save its state_dict().",
    )


def _preprocess_from_timm(config: dict[str, Any], name: str) -> ImagePreprocess:
    _, height, width = config["input_size"]
    if height != width:
        raise ValueError(f"{name!r}: non-square input {height}x{width} is not supported")
    modes = {"center": "shortest", "squash": "squash"}
    crop_mode = config.get("crop_mode", "center")
    if crop_mode not in modes:
        raise ValueError(
            f"{name!r}: timm crop_mode {crop_mode!r} is not supported ({sorted(modes)})"
        )
    return ImagePreprocess(
        crop_size=height,
        resize_size=timm_resize_size(height, config["crop_pct"]),
        mean=tuple(config["mean"]),
        std=tuple(config["std"]),
        resize_mode=modes[crop_mode],
        interpolation=config["interpolation"],
    )


def _check_timm_name(model_name: str, name: str) -> None:
    import timm

    if not model_name or not timm.is_model(model_name):
        architecture = model_name.split(".")[0]
        close = difflib.get_close_matches(architecture, timm.list_models(), n=5)
        raise ValueError(f"{name!r}: timm has no model {model_name!r}; close names: {close}")


def _local_file(file: str, name: str) -> Path:
    path = Path(file).expanduser()
    if not path.is_file():
        raise MissingWeightsError(f"{name!r}: weights file {path} does not exist")
    return path


def _cached_timm_weights(
    model_name: str, name: str, cache_dir: str | os.PathLike[str] | None
) -> Path:
    """A timm model's pretrained weights from the local caches, or a MissingWeightsError."""
    from timm.models import get_pretrained_cfg

    config = get_pretrained_cfg(model_name)
    if config is None or not (config.hf_hub_id or config.url):
        raise MissingWeightsError(
            f"{name!r}: timm lists no pretrained weights for {model_name!r}; give a local file: "
            f"'timm:{model_name}:/path/to/weights.safetensors'"
        )
    if config.hf_hub_id:
        files = (config.hf_hub_filename,) if config.hf_hub_filename else _TIMM_HUB_FILES
        found = cached_hub_file(config.hf_hub_id, files, cache_dir)
        looked = [f"{config.hf_hub_id}/{file}" for file in files]
        where = f"the Hugging Face cache ({hub_cache_location(cache_dir)})"
        fetch = f"huggingface-cli download {config.hf_hub_id} {files[0]}"
    else:  # published only as a URL: torch.hub's download folder
        url_cache = Path(cache_dir) if cache_dir else Path(torch.hub.get_dir()) / "checkpoints"
        found = cached_url_file(config.url, url_cache)
        looked, where, fetch = [os.path.basename(config.url)], str(url_cache), config.url
    if found is not None:
        return found
    family, spec = name.split(":", 1)
    raise MissingWeightsError(
        f"weights for {name!r} are not cached: looked for {' or '.join(looked)} in {where}. "
        f"egofeat never downloads weights. Fetch them on a machine with internet ({fetch}) and "
        f"copy the cache here or give its folder with --cache-dir, or add the file to the name: "
        f"'{family}:{spec}:/path/to/weights'."
    )


def _jsonable(value: Any) -> Any:
    return (
        value if isinstance(value, (str, int, float, bool, type(None), list, dict)) else repr(value)
    )
