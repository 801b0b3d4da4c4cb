"""Text streams: class-prompt and narration embeddings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from egofeat.extract.encoders import class_prompt_embeddings, create_encoder, narration_embeddings

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def encoder():
    return create_encoder("tiny")


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_single_template_is_the_raw_embedding_of_the_cleaned_name(encoder):
    names = ["adjust_", "washing_liquid", "tap"]
    embeddings = class_prompt_embeddings(encoder, names)
    expected = encoder.encode_text(["adjust", "washing liquid", "tap"])
    np.testing.assert_array_equal(embeddings, expected)
    raw = class_prompt_embeddings(encoder, ["washing_liquid"], underscores_to_spaces=False)
    np.testing.assert_array_equal(raw, encoder.encode_text(["washing_liquid"]))


def test_template_averaging_with_and_without_normalisation(encoder):
    templates = ["a photo of a {}", "{}", "a video of someone using a {}"]
    names = ["knife", "pan"]
    per_prompt = encoder.encode_text([t.format(n) for n in names for t in templates]).reshape(
        2, 3, -1
    )

    plain = class_prompt_embeddings(encoder, names, templates)
    np.testing.assert_allclose(plain, per_prompt.mean(axis=1), rtol=1e-6)

    ensembled = class_prompt_embeddings(encoder, names, templates, normalize=True)
    np.testing.assert_allclose(ensembled, _unit(_unit(per_prompt).mean(axis=1)), rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(ensembled, axis=1), 1.0, rtol=1e-5)


def test_bad_templates(encoder):
    with pytest.raises(ValueError, match="exactly one"):
        class_prompt_embeddings(encoder, ["tap"], ["a photo"])
    with pytest.raises(ValueError, match="templates is empty"):
        class_prompt_embeddings(encoder, ["tap"], [])


def test_narrations_are_encoded_once_each_and_keep_their_order(encoder, monkeypatch):
    narrations = ["open tap", "close fridge", "open tap", "open tap", "take knife"]
    encoded = []
    original = encoder.encode_text

    def spy(texts, **kwargs):
        encoded.extend(texts)
        return original(texts, **kwargs)

    monkeypatch.setattr(encoder, "encode_text", spy)
    embeddings = narration_embeddings(encoder, narrations)
    assert sorted(encoded) == ["close fridge", "open tap", "take knife"]
    np.testing.assert_array_equal(embeddings, original(narrations))

    normalized = narration_embeddings(encoder, narrations, normalize=True)
    np.testing.assert_allclose(normalized, _unit(original(narrations)), rtol=1e-5)
    assert narration_embeddings(encoder, []).shape == (0, 64)
