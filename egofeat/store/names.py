"""Stream names: the one naming scheme of every stream egofeat writes.

A stream name is ``/``-separated parts, the first naming the encoder (its *slug*)::

    <slug>/<crop>                         image features: clip-vit-b-16-openai/full, .../hand
    <slug>/text/<dataset>/<task>-<style>  class-name texts: clip-vit-b-16-openai/text/epic100/noun-names
    <slug>/text/narration                 one text feature per segment (its narration)
    teachers/<runs>-<hash>                cached teacher logits (distillation)

``--tag T`` (a new configuration beside an existing one) suffixes the last part: ``.../full-T``,
``.../noun-names-T``. Class-text styles: ``names`` — the bare class names (template ``"{}"``, as
X-MIC encodes them); ``prompts`` — the dataset's zero-shot prompt (:data:`ZERO_SHOT_TEMPLATES`);
``prompts-<hash>`` — other templates (a hash of them).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "NAMES_TEMPLATE",
    "ZERO_SHOT_TEMPLATES",
    "class_text_stream",
    "encoder_slug",
    "image_stream",
    "narration_stream",
    "safe_name",
    "stream_prefix",
    "teacher_stream",
    "text_style",
    "zero_shot_template",
]

NAMES_TEMPLATE = "{}"
"""The bare class name, as X-MIC encodes it."""
ZERO_SHOT_TEMPLATES = {"epic100": "a photo of a {}", "ego4d": "a photo of a {} action"}
"""X-MIC's zero-shot CLIP prompts; other datasets use the EPIC one."""
_WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")


def encoder_slug(encoder: str) -> str:
    """A stream-name-safe short name of an encoder: ``clip:ViT-B-16:openai`` ->
    ``clip-vit-b-16-openai``; a weights file as the last part counts by its stem."""
    parts = encoder.split(":")
    if len(parts) > 2 and ("/" in parts[-1] or parts[-1].endswith(_WEIGHT_SUFFIXES)):
        parts[-1] = Path(parts[-1]).stem
    text = "-".join(p for p in parts if p).lower()
    return "".join(c if c.isalnum() or c in "._-" else "-" for c in text).strip("-")


def _tagged(name: str, tag: str) -> str:
    return f"{name}-{tag}" if tag else name


def image_stream(encoder: str, crop: str, tag: str = "") -> str:
    """``<slug>/<crop>[-tag]``, e.g. ``clip-vit-b-16-openai/hand``."""
    return _tagged(f"{encoder_slug(encoder)}/{crop}", tag)


def zero_shot_template(dataset: str) -> str:
    """The zero-shot prompt of ``dataset`` (:data:`ZERO_SHOT_TEMPLATES`, else the EPIC one)."""
    return ZERO_SHOT_TEMPLATES.get(dataset, ZERO_SHOT_TEMPLATES["epic100"])


def text_style(dataset: str, templates: Sequence[str]) -> str:
    """``names`` for the bare name, ``prompts`` for the dataset's zero-shot prompt, else
    ``prompts-<hash of the templates>``."""
    templates = list(templates)
    if templates == [NAMES_TEMPLATE]:
        return "names"
    if templates == [zero_shot_template(dataset)]:
        return "prompts"
    digest = hashlib.sha256("\0".join(templates).encode()).hexdigest()[:8]
    return f"prompts-{digest}"


def class_text_stream(encoder_or_slug: str, dataset: str, task: str, style: str = "names",
                      tag: str = "") -> str:
    """``<slug>/text/<dataset>/<task>-<style>[-tag]``; ``encoder_or_slug`` is an encoder name or
    the slug an image stream starts with (:func:`stream_prefix`; slugging a slug keeps it)."""
    return _tagged(f"{encoder_slug(encoder_or_slug)}/text/{dataset}/{task}-{style}", tag)


def narration_stream(encoder: str, tag: str = "") -> str:
    """``<slug>/text/narration[-tag]``: one text feature per segment."""
    return _tagged(f"{encoder_slug(encoder)}/text/narration", tag)


def stream_prefix(stream: str) -> str:
    """The encoder slug a stream name starts with."""
    return stream.split("/", 1)[0]


def teacher_stream(runs: Sequence[str], key: str) -> str:
    """``teachers/<run folder names>-<key[:8]>``: cached logits of these teacher runs, whose
    provenance hashes to ``key`` (so the same teachers always map to one name)."""
    names = "+".join(safe_name(Path(run).name) for run in runs)
    if len(names) > 80:
        names = f"{len(runs)}-runs"
    return f"teachers/{names}-{key[:8]}"


def safe_name(text: str) -> str:
    """``text`` with characters other than ``A-Za-z0-9._+=@-`` as ``_`` (a path part)."""
    cleaned = re.sub(r"[^A-Za-z0-9._+=@-]", "_", text).lstrip("._+=@-")
    return cleaned or "run"
