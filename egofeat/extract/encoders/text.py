"""Text streams: class-prompt and narration embeddings from a dual encoder's text side."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .base import Encoder, TextEncoder

__all__ = ["class_prompt_embeddings", "narration_embeddings"]


def class_prompt_embeddings(
    encoder: Encoder | TextEncoder,
    class_names: Sequence[str],
    templates: Sequence[str] = ("{}",),
    *,
    underscores_to_spaces: bool = True,
    normalize: bool = False,
) -> np.ndarray:
    """One text embedding per class, ``(len(class_names), text_dim)`` float32.

    Each name fills every template (``"a photo of a {}"``); underscores become spaces first
    when ``underscores_to_spaces`` (Ego4D's ``"adjust_"`` -> ``"adjust"``, trailing space
    stripped).

    - ``normalize=False``: the plain mean of the raw template embeddings (with the default
      single template ``"{}"``, the raw embedding of the bare name, as X-MIC uses).
    - ``normalize=True``: CLIP's prompt ensembling: L2-normalise each template embedding,
      average, L2-normalise the average.
    """
    text_encoder = _text_side(encoder)
    templates = list(templates)
    if not templates:
        raise ValueError("templates is empty: give at least one, e.g. ('{}',)")
    for template in templates:
        if template.count("{}") != 1:
            raise ValueError(f"template {template!r} must contain exactly one '{{}}' for the name")
    names = [_clean(name, underscores_to_spaces) for name in class_names]
    prompts = [template.format(name) for name in names for template in templates]
    embeddings = text_encoder.encode_text(prompts)
    embeddings = embeddings.reshape(len(names), len(templates), -1)
    if normalize:
        embeddings = _l2_normalize(_l2_normalize(embeddings).mean(axis=1))
    else:
        embeddings = embeddings.mean(axis=1)
    return embeddings.astype(np.float32, copy=False)


def narration_embeddings(
    encoder: Encoder | TextEncoder,
    narrations: Sequence[str],
    *,
    normalize: bool = False,
    batch_size: int | None = None,
) -> np.ndarray:
    """Text embeddings of free-form narrations, ``(len(narrations), text_dim)`` float32.

    Identical strings are encoded once (EPIC narrations repeat a lot: "open tap"), rows keep
    the input order. ``normalize=True`` L2-normalises each row.
    """
    text_encoder = _text_side(encoder)
    unique, inverse = np.unique(np.asarray(list(narrations), dtype=object), return_inverse=True)
    embeddings = text_encoder.encode_text([str(text) for text in unique], batch_size=batch_size)
    embeddings = embeddings[inverse.reshape(-1)]
    if normalize:
        embeddings = _l2_normalize(embeddings)
    return embeddings.astype(np.float32, copy=False)


def _text_side(encoder: Encoder | TextEncoder) -> TextEncoder:
    if not isinstance(encoder, TextEncoder):
        raise TypeError(
            f"encoder {getattr(encoder, 'name', encoder)!r} has no text side; text streams need a "
            "dual encoder: clip:..., lavila:... with CLIP text weights, or tiny"
        )
    return encoder


def _clean(name: str, underscores_to_spaces: bool) -> str:
    return name.replace("_", " ").strip() if underscores_to_spaces else name


def _l2_normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, 1e-12)
