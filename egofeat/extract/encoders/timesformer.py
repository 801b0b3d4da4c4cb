"""A divided space-time video transformer with LaViLa's TimeSformer parameter layout.

Written for egofeat from the architecture description of LaViLa's ``SpaceTimeTransformer``
(a Frozen-in-Time style TimeSformer initialised from CLIP). Parameter names follow that
model, so its checkpoints load strictly:

``cls_token``, ``pos_embed`` [1, 1+P, D], ``temporal_embed`` [1, F, D],
``patch_embed.proj.weight`` (no bias), ``ln_pre.*``,
``blocks.{i}.{norm1, attn.qkv, attn.proj, norm3, timeattn.qkv, timeattn.proj, norm2,
mlp.fc1, mlp.fc2}.*``, ``norm.*``.

How it differs from a plain ViT:

- tokens are ``[CLS, frame 0 patches, frame 1 patches, ...]``; every patch of frame t gets
  ``pos_embed[1 + p] + temporal_embed[t]``, the CLS token ``pos_embed[0]`` only;
- CLIP-style ``ln_pre`` before the blocks (eps 1e-5); block and final norms use eps 1e-6;
- QuickGELU MLPs;
- each block attends over time, then space: ``time = timeattn(norm3(x))``,
  ``x = x + attn(norm1(x + time))`` (the residual skips ``time``), ``x = x + mlp(norm2(x))``;
- in both attentions the CLS query attends to every token of every frame, while a patch query
  attends to CLS plus the patches of its own frame (space) or of its own location across
  frames (time).

The output is the CLS token after ``norm``.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from open_clip.transformer import QuickGELU  # the activation CLIP was trained with
from torch import nn

__all__ = ["QuickGELU", "SpaceTimeTransformer", "resize_temporal_embed"]

Axis = Literal["space", "time"]


class DividedAttention(nn.Module):
    """Multi-head attention within frames (space) or within patch locations (time).

    The CLS query is not grouped: it attends to all tokens. Each group of patch queries
    attends to the CLS key/value plus its own group.
    """

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width, bias=True)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, frames: int, axis: Axis) -> torch.Tensor:
        batch, tokens, width = x.shape
        patches = (tokens - 1) // frames
        head_dim = width // self.heads
        q, k, v = self.qkv(x).reshape(batch, tokens, 3, self.heads, head_dim).permute(2, 0, 3, 1, 4)

        cls_out = F.scaled_dot_product_attention(q[:, :, :1], k, v)

        groups = frames if axis == "space" else patches
        cls_k = _repeat_per_group(k[:, :, :1], groups)
        cls_v = _repeat_per_group(v[:, :, :1], groups)
        patch_q = _group(q, frames, patches, axis)
        patch_k = torch.cat([cls_k, _group(k, frames, patches, axis)], dim=2)
        patch_v = torch.cat([cls_v, _group(v, frames, patches, axis)], dim=2)
        patch_out = F.scaled_dot_product_attention(patch_q, patch_k, patch_v)
        patch_out = _ungroup(patch_out, batch, frames, patches, axis)

        out = torch.cat([cls_out, patch_out], dim=2)  # (B, heads, tokens, head_dim)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, width))


def _group(t: torch.Tensor, frames: int, patches: int, axis: Axis) -> torch.Tensor:
    """(B, heads, 1 + T*P, d) -> (B*G, heads, L, d), dropping CLS; G = frames for space."""
    batch, heads, _, head_dim = t.shape
    t = t[:, :, 1:].reshape(batch, heads, frames, patches, head_dim)
    if axis == "space":
        t = t.permute(0, 2, 1, 3, 4)  # (B, T, heads, P, d): one group per frame
        return t.reshape(batch * frames, heads, patches, head_dim)
    t = t.permute(0, 3, 1, 2, 4)  # (B, P, heads, T, d): one group per patch location
    return t.reshape(batch * patches, heads, frames, head_dim)


def _ungroup(t: torch.Tensor, batch: int, frames: int, patches: int, axis: Axis) -> torch.Tensor:
    """Inverse of :func:`_group`: (B*G, heads, L, d) -> (B, heads, T*P, d)."""
    heads, head_dim = t.shape[1], t.shape[3]
    if axis == "space":
        t = t.reshape(batch, frames, heads, patches, head_dim).permute(0, 2, 1, 3, 4)
    else:
        t = t.reshape(batch, patches, heads, frames, head_dim).permute(0, 2, 3, 1, 4)
    return t.reshape(batch, heads, frames * patches, head_dim)


def _repeat_per_group(t: torch.Tensor, groups: int) -> torch.Tensor:
    """(B, heads, 1, d) -> (B*G, heads, 1, d), batch-major like :func:`_group`."""
    return t.unsqueeze(1).expand(-1, groups, -1, -1, -1).reshape(-1, *t.shape[1:])


class Mlp(nn.Module):
    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.act = QuickGELU()
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SpaceTimeBlock(nn.Module):
    """Time attention feeding space attention, then the MLP (see the module docstring)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm3 = nn.LayerNorm(width, eps=1e-6)
        self.timeattn = DividedAttention(width, heads)
        self.norm1 = nn.LayerNorm(width, eps=1e-6)
        self.attn = DividedAttention(width, heads)
        self.norm2 = nn.LayerNorm(width, eps=1e-6)
        self.mlp = Mlp(width, int(width * mlp_ratio))

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        time_out = self.timeattn(self.norm3(x), frames, "time")
        x = x + self.attn(self.norm1(x + time_out), frames, "space")
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, width: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.proj(images).flatten(2).transpose(1, 2)  # (N, P, D)


class SpaceTimeTransformer(nn.Module):
    """Clips ``(B, T, 3, H, W)`` -> CLS features ``(B, width)`` (after the final norm).

    Defaults are LaViLa's TSF-B (CLIP ViT-B/16 geometry, 4 frames). TSF-L is
    ``patch_size=14, width=1024, layers=24, heads=16``.
    """

    def __init__(
        self,
        *,
        image_size: int = 224,
        patch_size: int = 16,
        width: int = 768,
        layers: int = 12,
        heads: int = 12,
        mlp_ratio: float = 4.0,
        num_frames: int = 4,
    ) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(
                f"image_size {image_size} is not a multiple of patch_size {patch_size}"
            )
        grid = image_size // patch_size
        self.image_size, self.patch_size, self.width = image_size, patch_size, width
        self.patch_embed = PatchEmbed(patch_size, width)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + 1, width))
        self.temporal_embed = nn.Parameter(torch.zeros(1, num_frames, width))
        self.ln_pre = nn.LayerNorm(width)
        self.blocks = nn.ModuleList(SpaceTimeBlock(width, heads, mlp_ratio) for _ in range(layers))
        self.norm = nn.LayerNorm(width, eps=1e-6)
        for embedding in (self.cls_token, self.pos_embed, self.temporal_embed):
            nn.init.trunc_normal_(embedding, std=0.02)

    @property
    def num_frames(self) -> int:
        return self.temporal_embed.shape[1]

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        batch, frames = clips.shape[:2]
        if frames != self.num_frames:
            raise ValueError(f"expected clips of {self.num_frames} frames, got {frames}")
        patches = self.patch_embed(clips.flatten(0, 1))  # (B*T, P, D)
        num_patches = patches.shape[1]
        x = patches.reshape(batch, frames * num_patches, self.width)
        x = x + self.pos_embed[:, 1:].repeat(1, frames, 1)
        x = x + self.temporal_embed.repeat_interleave(num_patches, dim=1)
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(batch, -1, -1)
        x = self.ln_pre(torch.cat([cls, x], dim=1))
        for block in self.blocks:
            x = block(x, frames)
        return self.norm(x)[:, 0]


def resize_temporal_embed(embed: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Adapt a ``[1, F, D]`` temporal embedding to ``num_frames``, the way LaViLa does.

    More frames in the checkpoint than wanted: keep the first ``num_frames`` rows. Fewer:
    bilinear interpolation along the frame axis (``align_corners=False``).
    """
    loaded = embed.shape[1]
    if loaded == num_frames:
        return embed
    if loaded > num_frames:
        return embed[:, :num_frames].clone()
    resized = F.interpolate(
        embed.unsqueeze(0).float(), size=(num_frames, embed.shape[2]), mode="bilinear"
    )
    return resized.squeeze(0).to(embed.dtype)
