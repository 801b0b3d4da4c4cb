"""The one writer of text streams: class-name texts and narrations, from a dual encoder.

``egofeat extract``, ``egofeat run xmic`` and retrieval all write their text features here,
named by :mod:`egofeat.store.names`:

- class-name texts ``<slug>/text/<dataset>/<task>-<style>``: one row ``<task>:<class id>`` per
  class, the class name in X-MIC's form (:func:`egofeat.sources.class_texts`: EPIC
  ``board:chopping`` reads "chopping board") filled into the template(s), not normalized; the
  manifest keeps the encoded ``text`` and the ``class_name``;
- narrations ``<slug>/text/narration``: one row per segment with a narration.

A stream is written once and kept: writing it again finds it committed (also when another
process committed it first). One of other weights or another vocabulary is refused by the
store (its provenance records the encoder, its weights hash, the templates and a hash of the
texts).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import polars as pl

from egofeat._util.hashing import strings_sha
from egofeat.sources import class_texts
from egofeat.store import STATUS_OK, FeatureStore, PartWriter, Stream
from egofeat.store.names import (
    NAMES_TEMPLATE,
    class_text_stream,
    narration_stream,
    text_style,
    zero_shot_template,
)

__all__ = ["write_class_texts", "write_narrations", "write_vocabulary_texts"]


def _provenance(encoder: Any, **items: Any) -> dict[str, Any]:
    return {"encoder": encoder.name, "weights_hash": encoder.weights_hash,
            "text": encoder.text_provenance(), "normalized": False, **items}


def write_class_texts(store: FeatureStore, encoder: Any, dataset: str, task: str,
                      names: Sequence[str], *, templates: Sequence[str] = (NAMES_TEMPLATE,),
                      tag: str = "") -> str:
    """The class-name text stream of one (dataset, task) vocabulary; returns its name.

    ``encoder`` is a built dual encoder (``egofeat.extract.encoders.create_encoder``);
    ``names`` the class names by id as the vocabulary spells them.
    """
    from egofeat.extract.encoders import class_prompt_embeddings

    texts = class_texts(dataset, names)
    templates = list(templates)
    name = class_text_stream(encoder.name, dataset, task, text_style(dataset, templates), tag)
    provenance = _provenance(encoder, templates=templates, items=f"{dataset} {task} classes",
                             vocabulary_sha=strings_sha(texts))
    stream = store.create_stream(name, dim=encoder.text_dim, provenance=provenance, kind="text",
                                 dtype="float32", frames_per_row=1)
    if not stream.committed_parts():
        embeddings = class_prompt_embeddings(encoder, texts, templates)
        with _leased_part(stream, "classes") as writer:
            for i, (class_name, text, vector) in enumerate(zip(names, texts, embeddings, strict=True)):
                writer.add(f"{task}:{i}", "", vector, extra={"text": text, "class_name": class_name})
        stream.consolidate()
    return name


def write_vocabulary_texts(store: FeatureStore, encoder: Any,
                           vocabularies: Mapping[str, Mapping[str, Sequence[str]]], *,
                           styles: Sequence[str] = ("names", "prompts"), tag: str = "") -> dict[str, str]:
    """Class-name texts of every (dataset, task) vocabulary in each style: ``names`` (the bare
    name) and ``prompts`` (the dataset's zero-shot prompt). Returns ``"<dataset>/<task>-<style>"``
    -> stream name."""
    written = {}
    for dataset, tasks in vocabularies.items():
        templates = {"names": [NAMES_TEMPLATE], "prompts": [zero_shot_template(dataset)]}
        for task, names in tasks.items():
            for style in styles:
                written[f"{dataset}/{task}-{style}"] = write_class_texts(
                    store, encoder, dataset, task, names, templates=templates[style], tag=tag)
    return written


def write_narrations(store: FeatureStore, encoder: Any, segments: pl.DataFrame, *, tag: str = "") -> str:
    """Narration features of the ``segments`` (with a narration) not yet in the stream."""
    from egofeat.extract.encoders import narration_embeddings

    name = narration_stream(encoder.name, tag)
    stream = store.create_stream(name, dim=encoder.text_dim, kind="text", dtype="float32",
                                 frames_per_row=1,
                                 provenance=_provenance(encoder, items="segment narrations"))
    have = stream.manifest().filter(pl.col("status") == STATUS_OK).select("segment_id").collect()
    rows = segments.filter(pl.col("narration").is_not_null()
                           & ~pl.col("segment_id").is_in(have["segment_id"].to_list()))
    if rows.height:
        features = narration_embeddings(encoder, rows["narration"].to_list())
        part = f"narration-{strings_sha(rows['segment_id'].to_list())}"
        with _leased_part(stream, part) as writer:
            for segment, video, vector in zip(rows["segment_id"], rows["video_id"], features, strict=True):
                writer.add(segment, video, np.asarray(vector))
        stream.consolidate()
    return name


@contextmanager
def _leased_part(stream: Stream, part_id: str) -> Iterator[PartWriter]:
    """A part writer whose rows are committed under the part's lease, unless another live
    process holds it or committed the part first (concurrent runs write text streams too)."""
    writer = stream.part_writer(part_id)
    yield writer
    lease = stream.claim(part_id)
    if lease is None:
        return
    with lease:
        if not stream.is_committed(part_id):
            writer.commit()
