"""Class vocabularies kept with the segment table: class id -> name, per dataset and task.

One parquet file per (dataset, task) under ``vocabularies/`` (docs/FORMAT.md), columns::

    dataset    str      e.g. "epic100"
    task       str      "verb", "noun", ...
    class_id   int64    0 .. C-1, every id once
    name       str      the class as the vocabulary names it (EPIC: its key, "board:chopping")
    category   str      EPIC's category, where the vocabulary has one (else null)
    instances  list[str] the surface forms grouped into the class (EPIC), else null
    source     str      where the vocabulary came from (a file)

Heads are sized by these vocabularies, never by the labels that happen to occur. A store
holds one vocabulary per dataset and task: writing another is refused.
"""

from __future__ import annotations

import io

import polars as pl

from egofeat.store import layout
from egofeat.store.errors import StoreError
from egofeat.store.fs import StoreFS, is_temporary

__all__ = ["VOCABULARY_SCHEMA", "VocabularyConflictError", "add_vocabulary", "read_vocabularies"]

VOCABULARY_SCHEMA = {
    "dataset": pl.Utf8, "task": pl.Utf8, "class_id": pl.Int64, "name": pl.Utf8,
    "category": pl.Utf8, "instances": pl.List(pl.Utf8), "source": pl.Utf8,
}


class VocabularyConflictError(StoreError):
    """A vocabulary other than the one the store holds for that dataset and task."""


def _file(fs: StoreFS, dataset: str, task: str) -> str:
    return fs.path(layout.VOCABULARIES_DIR, f"{layout.safe_part_id(dataset)}.{task}.parquet")


def read_vocabularies(fs: StoreFS) -> pl.DataFrame:
    """Every vocabulary of the store (an empty frame when there is none)."""
    folder = fs.path(layout.VOCABULARIES_DIR)
    if not fs.exists(folder):
        return pl.DataFrame(schema=VOCABULARY_SCHEMA)
    names = sorted(n for n in fs.listdir(folder) if n.endswith(".parquet") and not is_temporary(n))
    frames = [pl.read_parquet(io.BytesIO(fs.read_bytes(f"{folder}/{name}"))) for name in names]
    return pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame(schema=VOCABULARY_SCHEMA)


def add_vocabulary(fs: StoreFS, vocabulary: pl.DataFrame) -> bool:
    """Keep ``vocabulary`` (one dataset and task, :data:`VOCABULARY_SCHEMA` columns) in the
    store; False when it holds the same already.

    Raises:
        VocabularyConflictError: the store holds another vocabulary for that dataset and task.
    """
    table = vocabulary.select([pl.col(c).cast(t) if c in vocabulary.columns else pl.lit(None, t).alias(c)
                               for c, t in VOCABULARY_SCHEMA.items()]).sort("class_id")
    keys = table.select("dataset", "task").unique()
    if keys.height != 1:
        raise ValueError(f"a vocabulary holds one dataset and task, got {keys.to_dicts()}")
    dataset, task = keys.row(0)
    if table["class_id"].to_list() != list(range(table.height)):
        raise ValueError(f"the {dataset} {task} vocabulary must number its classes 0..{table.height - 1}")
    path = _file(fs, dataset, task)
    if fs.exists(path):
        held = pl.read_parquet(io.BytesIO(fs.read_bytes(path)))
        if held.select("class_id", "name").equals(table.select("class_id", "name")):
            return False
        differing = held.join(table, on="class_id", how="full", suffix="_new").filter(
            pl.col("name").ne_missing(pl.col("name_new")))
        example = differing.row(0, named=True)
        raise VocabularyConflictError(
            f"the store {fs.url} holds another {dataset} {task} vocabulary ({held.height} classes, "
            f"from {held['source'][0]}) than this one ({table.height} classes, from {table['source'][0]}): "
            f"class {example['class_id'] if example['class_id'] is not None else example['class_id_new']} is "
            f"{example['name']!r} there and {example['name_new']!r} here; use the same class files "
            "(--classes) or another store"
        )
    buffer = io.BytesIO()
    table.write_parquet(buffer)
    fs.write_bytes(path, buffer.getvalue())
    return True
