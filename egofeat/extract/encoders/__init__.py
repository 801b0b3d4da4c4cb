"""Frozen image, video and text encoders, by name.

Like ``timm.create_model`` / ``open_clip.create_model``: a registry of named families and one
factory. Each encoder owns its preprocessing and reports its provenance::

    from egofeat.extract.encoders import create_encoder

    encoder = create_encoder("clip:ViT-B-16:openai", device="cuda")
    features = encoder.encode(frames)          # uint8 (N, H, W, 3) -> float32 (N, 512)
    texts = encoder.encode_text(["open tap"])  # float32 (1, 512), unnormalised
    encoder.provenance()                       # name, weights sha256, preprocessing, dtype...

Families: ``clip:<arch>:<tag | file>`` (open_clip), ``dino:<variant>[:<file>]`` (timm),
``lavila:<tsf-b|tsf-l|tsf>:<checkpoint>`` (egofeat's TimeSformer, clips), ``timm:<model>[:<file>]``
and ``tiny`` (built-in random weights, for demos and tests). Weights are read from the local
Hugging Face cache or a file, never downloaded.
"""

from .base import Encoder, EncoderKind, TextEncoder, auto_batch_size
from .preprocess import ImagePreprocess
from .registry import (
    UnknownEncoderError,
    create_encoder,
    describe_encoders,
    list_encoders,
    register_encoder,
)
from .text import class_prompt_embeddings, narration_embeddings
from .weights import MissingWeightsError

__all__ = [
    "Encoder",
    "EncoderKind",
    "ImagePreprocess",
    "MissingWeightsError",
    "TextEncoder",
    "UnknownEncoderError",
    "auto_batch_size",
    "class_prompt_embeddings",
    "create_encoder",
    "describe_encoders",
    "list_encoders",
    "narration_embeddings",
    "register_encoder",
]
