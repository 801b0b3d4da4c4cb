"""Finding, reading and fingerprinting encoder weights, offline.

egofeat never downloads weights. A named pretrained tag is looked up in the local Hugging Face
hub cache (or the URL cache its library uses); anything else must be a local file. Every
failure names the file that is missing and how to provide it.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import pickle
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import nn

from egofeat._util.hashing import file_sha256

__all__ = [
    "MissingWeightsError",
    "cached_hub_file",
    "cached_url_file",
    "file_sha256",
    "hub_cache_location",
    "load_checkpoint_file",
    "load_state_dict_strict",
    "state_dict_sha256",
    "strip_prefixes",
]


class MissingWeightsError(FileNotFoundError):
    """Weights an encoder needs are neither in the local cache nor at the given path."""


def state_dict_sha256(module_or_state: nn.Module | Mapping[str, torch.Tensor]) -> str:
    """sha256 (hex) of a state dict: names, dtypes, shapes and raw bytes, in sorted name order.

    Used for built-in weights that have no file. It is stable across processes and machines
    as long as the tensors are bitwise equal.
    """
    state = (
        module_or_state.state_dict() if isinstance(module_or_state, nn.Module) else module_or_state
    )
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def cached_hub_file(
    repo_id: str, filenames: Iterable[str], cache_dir: str | os.PathLike[str] | None = None
) -> Path | None:
    """Path of the first of ``filenames`` present in the local Hugging Face cache, else None.

    Only the cache is read (``huggingface_hub.try_to_load_from_cache``); nothing is fetched.
    """
    from huggingface_hub import try_to_load_from_cache

    for filename in filenames:
        found = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir)
        # The cache can also answer with a "known not to exist" marker object: only a str is a hit.
        if isinstance(found, str) and os.path.isfile(found):
            return Path(found)
    return None


def cached_url_file(url: str, cache_dir: str | os.PathLike[str]) -> Path | None:
    """Path of a URL's download in ``cache_dir`` (named by the URL's last component), else None."""
    candidate = Path(cache_dir).expanduser() / os.path.basename(url)
    return candidate if candidate.is_file() else None


def hub_cache_location(cache_dir: str | os.PathLike[str] | None) -> str:
    """The Hugging Face cache folder that :func:`cached_hub_file` reads, for error messages."""
    if cache_dir is not None:
        return str(cache_dir)
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def load_checkpoint_file(path: str | os.PathLike[str], *, trust_pickle: bool = False) -> object:
    """Read a ``.pth``/``.pt``/``.bin``/``.safetensors`` file onto the CPU.

    Pickled files are read with ``weights_only=True`` (tensors, containers and the
    ``argparse.Namespace`` that LaViLa and DINO store their arguments in). A file that needs
    more than that is refused unless ``trust_pickle=True``: full unpickling runs code from the
    file, so only do it for files from a source you trust.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingWeightsError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    if trust_pickle:
        return torch.load(path, map_location="cpu", weights_only=False)
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # weights_only refuses classes with "... not an allowed global" / "Unsupported global";
        # anything else means the bytes are not a readable checkpoint at all.
        if "global" not in str(error).lower():
            raise ValueError(f"{path} is not a readable PyTorch checkpoint: {error}") from error
        raise ValueError(
            f"{path} holds pickled objects other than tensors ({error}), which egofeat does not "
            "unpickle: if you trust the file's source, re-save just its state dict with "
            "torch.save(checkpoint['state_dict'], 'weights.pth') and use that file."
        ) from error


def strip_prefixes(
    state: Mapping[str, torch.Tensor], prefixes: Iterable[str]
) -> dict[str, torch.Tensor]:
    """Remove any of ``prefixes`` from the start of every key, repeatedly, in the order given.

    ``strip_prefixes(sd, ("module.", "backbone."))`` maps ``module.backbone.blocks.0...`` to
    ``blocks.0...``.
    """
    prefixes = tuple(prefixes)
    stripped: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        changed = True
        while changed:
            changed = False
            for prefix in prefixes:
                if key.startswith(prefix):
                    key = key[len(prefix) :]
                    changed = True
        stripped[key] = value
    return stripped


def load_state_dict_strict(
    module: nn.Module, state: Mapping[str, torch.Tensor], source: str, hint: str = ""
) -> None:
    """``module.load_state_dict(state, strict=True)`` with a short, readable error.

    On a mismatch the ``ValueError`` names ``source`` and lists (the first few) missing keys,
    unexpected keys and shape mismatches, then ``hint``.
    """
    expected = module.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    mismatched = [
        f"{key} {tuple(state[key].shape)} vs {tuple(expected[key].shape)}"
        for key in expected
        if key in state and state[key].shape != expected[key].shape
    ]
    problems = [
        f"{len(keys)} {what} ({', '.join(keys[:4])}{', ...' if len(keys) > 4 else ''})"
        for what, keys in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches (file vs model)", mismatched),
        )
        if keys
    ]
    if problems:
        raise ValueError(f"{source}: {'; '.join(problems)}.{' ' + hint if hint else ''}")
    module.load_state_dict(state, strict=True)
