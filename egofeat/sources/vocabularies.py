"""Which vocabulary an annotation file's class ids refer to, and the vocabulary as a table.

A dataset's classes come from its class list, never from the labels that happen to occur:

- ``epic100``: ``EPIC_100_{verb,noun}_classes.csv`` (97 verbs, 300 nouns), found beside the
  annotation file or in ``classes`` (a folder);
- ``ego4d``: its taxonomy, ``classes`` = a taxonomy JSON (``{"verbs": [...], "nouns": [...]}``,
  as ``fho_lta_taxonomy.json``) or the folder of X-MIC's split lists;
- ``charades-ego``: ``Charades_v1_classes.txt`` (``classes``);
- ``generic``: ``classes`` = a folder of ``<task>.txt`` lists (one name per line), else the
  names in the file.

Without a class list the vocabulary is the annotation's own names (class ids that no segment
names read ``"<task> <id>"``), and :class:`Resolved` says so in ``source``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from egofeat.sources.errors import SegmentTableError
from egofeat.sources.vocab import EPIC_CLASS_FILES, Vocabulary, epic_class_files

__all__ = [
    "Resolved",
    "class_list_vocabularies",
    "table_vocabularies",
    "vocabulary_frame",
]

TASKS = ("verb", "noun")


@dataclass(frozen=True)
class Resolved:
    """A vocabulary and where it came from (a file, or the annotation's own names)."""

    vocabulary: Vocabulary
    source: str


def class_list_vocabularies(dataset: str, annotation: str | Path, classes: str | Path | None = None
                            ) -> dict[str, Resolved]:
    """The vocabularies of ``dataset``'s class lists (see the module docstring); empty when
    there are none to find (the caller then uses :func:`table_vocabularies`)."""
    annotation, classes = Path(annotation), None if classes is None else Path(classes)
    if dataset == "epic100":
        folder = classes or annotation.parent
        files = epic_class_files(folder)
        if files is None:
            if classes is not None:
                raise SegmentTableError(
                    f"lacks {' and '.join(EPIC_CLASS_FILES.values())}", file=classes,
                    fix="--classes names the folder of the EPIC class files")
            return {}
        return {task: Resolved(Vocabulary.from_epic_csv(path), str(path)) for task, path in files.items()}
    if classes is None:
        return {}
    if dataset == "ego4d":
        return _ego4d(classes)
    if dataset == "charades-ego":
        from egofeat.sources.charades import load_charades_classes

        return {"action": Resolved(load_charades_classes(classes), str(classes))}
    lists = {task: classes / f"{task}.txt" for task in TASKS if (classes / f"{task}.txt").is_file()}
    if not lists:
        raise SegmentTableError("holds no verb.txt or noun.txt", file=classes,
                                fix="one class name per line, the line number being the class id")
    return {task: Resolved(Vocabulary.from_names(_lines(path)), str(path)) for task, path in lists.items()}


def _ego4d(classes: Path) -> dict[str, Resolved]:
    if classes.is_dir():
        from egofeat.sources.xmic_splits import ego4d_vocabulary

        return {task: Resolved(ego4d_vocabulary(classes, task), f"{classes} (X-MIC split lists)")
                for task in TASKS}
    try:
        taxonomy = json.loads(classes.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise SegmentTableError(f"not a taxonomy JSON ({error})", file=classes,
                                fix='give {"verbs": [...], "nouns": [...]} or X-MIC\'s split-list folder') from None
    found = {task: taxonomy.get(f"{task}s") for task in TASKS}
    if not all(isinstance(v, list) for v in found.values()):
        raise SegmentTableError("lacks 'verbs' and 'nouns' lists", file=classes,
                                fix='give {"verbs": [...], "nouns": [...]}')
    return {task: Resolved(Vocabulary.from_names(map(str, names)), str(classes)) for task, names in found.items()}


def _lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def table_vocabularies(table: pl.DataFrame, what: str, tasks: Iterable[str] = TASKS
                       ) -> tuple[pl.DataFrame, dict[str, Resolved]]:
    """Vocabularies from a segment table's own names, for datasets without a class list.

    With ``{task}_class`` ids: each id named by its most frequent ``{task}`` name (unnamed ids:
    ``"<task> <id>"``). With names only: the sorted distinct names, and the table gets the ids.
    Returns the (possibly labelled) table and the vocabularies.
    """
    found = {}
    for task in tasks:
        if task not in table.columns:
            continue
        column = f"{task}_class"
        if column in table.columns and table[column].drop_nulls().len():
            pairs = table.select(column, task).drop_nulls().group_by(column, task).len()
            named = {int(i): str(n) for i, n, _ in pairs.sort(["len", task]).iter_rows()}
            size = int(table[column].max()) + 1
            names = [named.get(i, f"{task} {i}") for i in range(size)]
        else:
            names = sorted(table[task].drop_nulls().cast(pl.Utf8).unique().to_list())
            if not names:
                continue
            ids = {name: i for i, name in enumerate(names)}
            table = table.with_columns(pl.col(task).replace_strict(ids, default=None, return_dtype=pl.Int64)
                                       .alias(column))
        found[task] = Resolved(Vocabulary.from_names(names), f"the names in {what}")
    return table, found


def vocabulary_frame(dataset: str, task: str, resolved: Resolved) -> pl.DataFrame:
    """A vocabulary as the store keeps it (``egofeat.store.vocabularies``)."""
    vocabulary = resolved.vocabulary
    return pl.DataFrame({
        "dataset": [dataset] * len(vocabulary), "task": [task] * len(vocabulary),
        "class_id": list(range(len(vocabulary))), "name": list(vocabulary.names),
        "category": list(vocabulary.categories) if vocabulary.categories else [None] * len(vocabulary),
        "instances": [list(forms) for forms in vocabulary.instances] if vocabulary.instances
        else [None] * len(vocabulary),
        "source": [resolved.source] * len(vocabulary),
    }, schema_overrides={"category": pl.Utf8, "instances": pl.List(pl.Utf8)})

