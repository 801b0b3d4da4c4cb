"""What a stream holds (shape, dtype, codec, provenance): the content of its ``stream.json``."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import zarr

from egofeat.store import layout
from egofeat.store.provenance import provenance_key

#: Codecs a stream may be compressed with (fp16 embeddings gain ≤ 1.2×; off by default).
CODECS = ("none", "blosc-zstd", "zstd")


@dataclass(frozen=True)
class StreamInfo:
    """What a stream holds: shape, dtype, and the provenance of its features."""

    name: str
    dim: int
    dtype: str
    frames_per_row: int | None
    kind: str
    provenance: dict[str, Any]
    codec: str = "none"
    format_version: int = layout.FORMAT_VERSION
    created_at: float = field(default_factory=time.time)

    @property
    def key(self) -> str:
        """Resume key: a hash of everything that determines the features."""
        return provenance_key({**self.provenance, "_shape": [self.dim, self.dtype, self.frames_per_row, self.kind]})

    def compressors(self) -> Any:
        """The zarr compressors of the stream's codec (None: stored raw)."""
        if self.codec == "none":
            return None
        if self.codec == "zstd":
            return zarr.codecs.ZstdCodec(level=3)
        return zarr.codecs.BloscCodec(cname="zstd", clevel=5, shuffle="shuffle")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "dim": self.dim, "dtype": self.dtype,
            "frames_per_row": self.frames_per_row, "kind": self.kind, "codec": self.codec,
            "provenance": self.provenance, "key": self.key,
            "format_version": self.format_version, "created_at": self.created_at,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StreamInfo:
        return cls(
            name=data["name"], dim=int(data["dim"]), dtype=data["dtype"],
            frames_per_row=data.get("frames_per_row"), kind=data.get("kind", "image"),
            provenance=data.get("provenance", {}), codec=data.get("codec", "none"),
            format_version=int(data.get("format_version", layout.FORMAT_VERSION)),
            created_at=float(data.get("created_at", 0.0)),
        )
