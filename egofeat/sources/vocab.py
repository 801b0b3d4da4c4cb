"""Class vocabularies: ordered class names where the class id is the position."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from egofeat.sources.errors import SegmentTableError
from egofeat.sources.parsing import cast_column, parse_str_lists, read_table, require_columns

EPIC_CLASS_COLUMNS = ("id", "key", "instances", "category")


@dataclass(frozen=True)
class Vocabulary:
    """Ordered, unique class names; class id ``i`` is ``names[i]``.

    ``instances`` (the surface forms grouped into each class) and ``categories`` (a coarser
    group per class) are optional and, when given, aligned with ``names``.
    """

    names: tuple[str, ...]
    instances: tuple[tuple[str, ...], ...] | None = None
    categories: tuple[str, ...] | None = None
    _ids: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = tuple(self.names)
        object.__setattr__(self, "names", names)
        ids: dict[str, int] = {}
        for i, name in enumerate(names):
            if name in ids:
                raise ValueError(f"class name {name!r} appears twice (ids {ids[name]} and {i})")
            ids[name] = i
        object.__setattr__(self, "_ids", ids)
        for attribute in ("instances", "categories"):
            values = getattr(self, attribute)
            if values is not None and len(values) != len(names):
                raise ValueError(
                    f"{attribute} has {len(values)} entries for {len(names)} class names"
                )

    @classmethod
    def from_names(cls, names: Iterable[str]) -> Vocabulary:
        """A vocabulary with ``names`` in the given order."""
        return cls(tuple(names))

    @classmethod
    def from_epic_csv(cls, path: str | Path) -> Vocabulary:
        """Read ``EPIC_100_{verb,noun}_classes.csv`` (``id,key,instances,category``).

        Ids must run 0, 1, 2, ... in file order; names are the ``key`` column.
        """
        table = read_table(path)
        require_columns(table, EPIC_CLASS_COLUMNS, file=path, what="an EPIC class file")
        ids = cast_column(table["id"], pl.Int64(), file=path, column="id")
        for row, class_id in enumerate(ids.to_list(), start=1):
            if class_id != row - 1:
                raise SegmentTableError(
                    f"class id {class_id} where {row - 1} was expected",
                    file=path,
                    row=row,
                    column="id",
                    fix="class ids must be 0, 1, 2, ... in file order",
                )
        instances = parse_str_lists(table["instances"], file=path, column="instances")
        return cls(
            names=tuple(table["key"].to_list()),
            instances=tuple(tuple(forms or ()) for forms in instances.to_list()),
            categories=tuple(table["category"].to_list()),
        )

    @classmethod
    def from_table(cls, table: pl.DataFrame, task: str, *, what: str = "the segments") -> Vocabulary:
        """The names a segment table gives its classes: ``{task}`` beside ``{task}_class``, the
        most frequent name of each id; every id from 0 to the largest must be named."""
        column = f"{task}_class"
        if column not in table.columns or task not in table.columns:
            raise ValueError(f"{what} have no {task!r} and {column!r} columns to name the classes by")
        pairs = table.select(column, task).drop_nulls().group_by(column, task).len()
        named = {int(i): str(name) for i, name, _ in pairs.sort(["len", task]).iter_rows()}
        missing = [i for i in range(max(named, default=-1) + 1) if i not in named]
        if not named or missing:
            raise ValueError(f"{what} name no {task} class for ids {missing[:5] or 'any'}: without a "
                             f"class file, class names come from the {task!r} column")
        return cls(tuple(named[i] for i in range(len(named))))

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __contains__(self, name: object) -> bool:
        return name in self._ids

    def name(self, class_id: int) -> str:
        """Name of class ``class_id``."""
        if not 0 <= class_id < len(self.names):
            raise IndexError(f"class id {class_id} outside 0..{len(self.names) - 1}")
        return self.names[class_id]

    def index(self, name: str) -> int:
        """Id of the class called ``name``; ``KeyError`` if there is none."""
        try:
            return self._ids[name]
        except KeyError:
            raise KeyError(
                f"{name!r} is not one of the {len(self.names)} classes of this vocabulary"
            ) from None

    def get(self, name: str | None) -> int | None:
        """Id of the class called ``name``, or None when there is no such class."""
        return self._ids.get(name) if name is not None else None


EPIC_CLASS_FILES = {"verb": "EPIC_100_verb_classes.csv", "noun": "EPIC_100_noun_classes.csv"}


def epic_class_files(folder: str | Path) -> dict[str, Path] | None:
    """``{"verb": .../EPIC_100_verb_classes.csv, "noun": ...}`` when both are in ``folder``
    (e.g. beside an annotation file), else None. The one place that looks for them."""
    folder = Path(folder)
    files = {task: folder / name for task, name in EPIC_CLASS_FILES.items()}
    return files if all(path.is_file() for path in files.values()) else None


def load_epic_vocabularies(annotations_dir: str | Path) -> tuple[Vocabulary, Vocabulary]:
    """(verbs, nouns) from ``EPIC_100_verb_classes.csv`` and ``EPIC_100_noun_classes.csv``."""
    files = epic_class_files(annotations_dir)
    if files is None:
        raise FileNotFoundError(
            f"{annotations_dir} lacks {' or '.join(EPIC_CLASS_FILES.values())}: the EPIC class files "
            "(epic-kitchens-100-annotations) must sit there"
        )
    return Vocabulary.from_epic_csv(files["verb"]), Vocabulary.from_epic_csv(files["noun"])
