"""Stable short hashes of strings and files."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable

__all__ = ["file_sha256", "stable_fraction", "strings_sha"]

_BLOCK = 1 << 20


def strings_sha(items: Iterable[str], length: int = 12) -> str:
    """The first ``length`` hex digits of the sha256 of ``items`` joined by NUL bytes."""
    return hashlib.sha256("\0".join(items).encode()).hexdigest()[:length]


def stable_fraction(text: str) -> float:
    """A number in [0, 1) fixed by ``text`` (the first 8 bytes of its sha256): a draw that is
    the same on every machine and in every run."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2**64


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 (hex) of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()
