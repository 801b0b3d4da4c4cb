"""``tiny``: a small built-in encoder with **random** weights, for demos and tests.

It is not a research model: its features carry no semantics beyond what three random conv
layers and hashed character n-grams preserve. What it guarantees is that every pipeline stage
(extraction, store, zero-shot and X-MIC heads) can run end to end on a laptop CPU, fast
(thousands of 64x64 frames per second) and reproducibly:

- weights come from a fixed seed through egofeat's own initialisation (not the global torch
  RNG), so they, and :attr:`~.base.Encoder.weights_hash`, are identical in every process;
- image side: 64x64 input -> conv 4x4/4 -> conv 3x3/2 -> conv 3x3/2 (GELU) -> 4x4 average
  pool, flattened -> linear -> 64-d (the pooling grid keeps coarse positions, so that motion,
  e.g. the demo's verbs, is visible to temporal heads);
- text side: lower-cased ``[a-z0-9]+`` words, each as ``<word>`` plus its character
  3-grams, hashed (blake2b) into 16384 buckets of an embedding bag, averaged -> 64-d.
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import Any

import torch
from torch import nn

from .base import Encoder, TextEncoder
from .preprocess import ImagePreprocess

__all__ = ["TinyEncoder", "TinyModel", "create_tiny_encoder", "hashed_ngram_ids"]

TINY_DIM = 64
TINY_INPUT_SIZE = 64
TINY_SEED = 0
GRID = 4
TEXT_BUCKETS = 1 << 14
NGRAM = 3
_WORD = re.compile(r"[a-z0-9]+")


def hashed_ngram_ids(text: str, buckets: int = TEXT_BUCKETS, n: int = NGRAM) -> list[int]:
    """Bucket ids of ``<word>`` and its character n-grams for every word of ``text``."""
    ids = []
    for word in _WORD.findall(text.lower()):
        padded = f"<{word}>"
        pieces = [padded] + [padded[i : i + n] for i in range(len(padded) - n + 1)]
        for piece in pieces:
            digest = hashlib.blake2b(piece.encode(), digest_size=8).digest()
            ids.append(int.from_bytes(digest, "little") % buckets)
    return ids


class TinyConvNet(nn.Module):
    """Three strided convolutions, a 4x4 average-pooling grid and a linear projection."""

    def __init__(self, dim: int = TINY_DIM) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, kernel_size=4, stride=4)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3, stride=2, padding=1)
        self.conv3 = nn.Conv2d(64, dim, kernel_size=3, stride=2, padding=1)
        self.proj = nn.Linear(dim * GRID * GRID, dim)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = nn.functional.gelu(self.conv1(pixels))
        x = nn.functional.gelu(self.conv2(x))
        x = nn.functional.gelu(self.conv3(x))
        return self.proj(nn.functional.adaptive_avg_pool2d(x, GRID).flatten(1))


class HashedTextEmbedding(nn.Module):
    """Mean of the embeddings of a text's hashed n-gram buckets."""

    def __init__(self, dim: int = TINY_DIM, buckets: int = TEXT_BUCKETS) -> None:
        super().__init__()
        self.bag = nn.EmbeddingBag(buckets, dim, mode="mean")

    def forward(self, ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        return self.bag(ids, offsets)


class TinyModel(nn.Module):
    """Both towers in one module, so one state dict (and one hash) covers the encoder."""

    def __init__(self, dim: int = TINY_DIM, seed: int = TINY_SEED) -> None:
        super().__init__()
        self.image = TinyConvNet(dim)
        self.text = HashedTextEmbedding(dim)
        _seeded_init(self, seed)


def _seeded_init(module: nn.Module, seed: int) -> None:
    """He-normal weights, zero biases, unit-normal embeddings, from a private generator."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in sorted(module.named_parameters()):
            if name.endswith("bias"):
                parameter.zero_()
                continue
            # Embedding rows are looked up, not summed over a fan-in: unit variance.
            std = 1.0 if "bag" in name else math.sqrt(2.0 / parameter[0].numel())
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * std)


class TinyEncoder(Encoder, TextEncoder):
    """The ``tiny`` encoder (see the module docstring): image and text, 64-d, random weights."""

    def __init__(self, *, name: str, device: torch.device, batch_size: int | None) -> None:
        preprocessing = ImagePreprocess(
            crop_size=TINY_INPUT_SIZE,
            resize_size=TINY_INPUT_SIZE,
            mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5),
            interpolation="bilinear",
        )
        super().__init__(
            name=name,
            model=TinyModel(),
            preprocessing=preprocessing,
            dim=TINY_DIM,
            output="random-init conv net: 4x4-pooled conv3 features @ linear (not for research)",
            device=device,
            batch_size=batch_size,
            details={"family": "tiny", "seed": TINY_SEED, "random_weights": True},
        )
        self.text_dim = TINY_DIM

    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.image(pixels)

    def _encode_text_batch(self, texts: list[str]) -> torch.Tensor:
        bags = [hashed_ngram_ids(text) for text in texts]
        offsets = torch.tensor([0] + [len(bag) for bag in bags[:-1]]).cumsum(0)
        ids = torch.tensor([i for bag in bags for i in bag], dtype=torch.long)
        return self.model.text(ids.to(self.device), offsets.to(self.device))

    def text_provenance(self) -> dict[str, Any]:
        return {
            "text_dim": self.text_dim,
            "tokenizer": (
                f"lower-cased [a-z0-9]+ words as '<word>' + character {NGRAM}-grams, "
                f"blake2b-64 hashed into {TEXT_BUCKETS} buckets"
            ),
            "output": "mean of bucket embeddings (random init; empty text -> zeros)",
        }


def create_tiny_encoder(
    spec: str,
    *,
    name: str,
    device: torch.device,
    batch_size: int | None,
    cache_dir: Any,
    **options: Any,
) -> TinyEncoder:
    """Factory for the ``tiny`` family (no spec, no options; ``cache_dir`` is unused)."""
    if spec or options:
        raise ValueError(
            f"{name!r}: the tiny encoder takes no arguments (use the name 'tiny'"
            f"{', without options ' + str(sorted(options)) if options else ''})"
        )
    return TinyEncoder(name=name, device=device, batch_size=batch_size)
