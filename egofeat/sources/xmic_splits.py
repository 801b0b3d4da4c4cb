"""X-MIC's shared/novel class splits between EPIC-KITCHENS-100 and Ego4D.

The split files (X-MIC ``anno/``) list class names, one per line:
``epic_ego_{common,non_common}_{exact,semantic}_{verb,noun}.txt`` hold EPIC classes in a
readable form (``a:b`` -> ``b a``, hyphens -> spaces) split by whether Ego4D has them;
``ego_epic_...`` hold raw Ego4D FHO taxonomy labels split by whether EPIC has them.
"shared" (X-MIC's *common*) and "novel" (*non_common*) partition each vocabulary; ``exact``
means the same class, ``semantic`` a looser match (more shared classes).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from egofeat.sources.errors import SegmentTableError
from egofeat.sources.vocab import Vocabulary

Dataset = Literal["epic", "ego4d"]
Task = Literal["verb", "noun"]
SplitKind = Literal["exact", "semantic"]
_FILE_PREFIX = {"epic": "epic_ego", "ego4d": "ego_epic"}


@dataclass(frozen=True)
class ClassSplit:
    """The shared/novel partition of one dataset's classes for one task.

    ``shared`` and ``novel`` are class ids of ``vocabulary``; together they cover it, and
    they are disjoint.
    """

    dataset: str
    task: str
    kind: str
    vocabulary: Vocabulary
    shared: frozenset[int]
    novel: frozenset[int]

    def is_shared(self, class_id: int) -> bool:
        """Whether class ``class_id`` also exists in the other dataset."""
        if class_id in self.shared:
            return True
        if class_id in self.novel:
            return False
        raise KeyError(f"class id {class_id} is not in the {self.dataset} {self.task} vocabulary")

    @property
    def shared_names(self) -> tuple[str, ...]:
        """Names of the shared classes, in id order."""
        return tuple(self.vocabulary.name(i) for i in sorted(self.shared))

    @property
    def novel_names(self) -> tuple[str, ...]:
        """Names of the novel classes, in id order."""
        return tuple(self.vocabulary.name(i) for i in sorted(self.novel))


def epic_readable_name(key: str) -> str:
    """EPIC class key in X-MIC's readable form: ``"board:chopping"`` -> ``"chopping board"``.

    The ``:``-separated parts are reversed (``machine:sous:vide`` -> ``vide sous machine``)
    and hyphens become spaces (``turn-on`` -> ``turn on``).
    """
    return " ".join(reversed(key.split(":"))).replace("-", " ")


def xmic_ego4d_text(label: str) -> str:
    """An Ego4D taxonomy label as X-MIC's text encoder reads it.

    X-MIC (``datasets/ego4d_helper.py``, ``_fix_classes``) first renames the labels of four
    families whose bare names would collide (nut, chip, bat, pot), then keeps the part before
    ``(`` and turns underscores into spaces: ``"adjust_(regulate,_increase/reduce,_change)"`` -> ``"adjust"``,
    ``"nut_(tool)"`` -> ``"nut tool"``, ``"pot_(planter)"`` -> ``"planter"``.
    """
    if label.startswith("nut_"):
        label = "nut" if "food" in label else "nut_tool" if "tool" in label else label
    elif label.startswith("chip_") and "food" not in label:
        label = "chip_wood" if "wood'" in label else "chip_metal"
    elif label.startswith("bat_"):
        label = "bat_tool" if "tool" in label else "bat_sports" if "sports" in label else label
    elif label.startswith("pot") and "planter" in label:
        label = "planter"
    return label.split("(")[0].replace("_", " ").strip()


def class_texts(dataset: str, names: Sequence[str]) -> list[str]:
    """Class names as a text encoder reads them, in X-MIC's forms (every text stream uses these).

    ``epic100``: the readable form (``"board:chopping"`` -> ``"chopping board"``). ``ego4d``:
    :func:`xmic_ego4d_text`, the taxonomy label before its parenthesised synonyms with X-MIC's
    renamings of the labels that would otherwise read the same (``"nut_(food)"`` -> ``"nut"``,
    ``"nut_(tool)"`` -> ``"nut tool"``). Everywhere underscores become spaces.
    """
    names = list(names)
    if dataset == "epic100":
        names = [epic_readable_name(name) for name in names]
    elif dataset == "ego4d":
        return [xmic_ego4d_text(name) for name in names]
    return [name.replace("_", " ").strip() for name in names]


def split_file(
    splits_dir: str | Path, dataset: Dataset, task: Task, kind: SplitKind, shared: bool
) -> Path:
    """Path of one X-MIC split list, e.g. ``epic_ego_common_exact_noun.txt``."""
    _check_choice("dataset", dataset, ("epic", "ego4d"))
    _check_choice("task", task, ("verb", "noun"))
    _check_choice("kind", kind, ("exact", "semantic"))
    side = "common" if shared else "non_common"
    return Path(splits_dir) / f"{_FILE_PREFIX[dataset]}_{side}_{kind}_{task}.txt"


def read_class_list(path: str | Path) -> list[str]:
    """Class names of a split list, one per line (blank lines are an error)."""
    path = Path(path)
    names = path.read_text().splitlines()
    for row, name in enumerate(names, start=1):
        if not name.strip():
            raise SegmentTableError(
                "empty class name", file=path, row=row, fix="remove the blank line"
            )
    return names


def ego4d_vocabulary(splits_dir: str | Path, task: Task) -> Vocabulary:
    """The Ego4D FHO vocabulary of X-MIC: shared + novel names, **sorted** (code-point order).

    X-MIC numbers Ego4D classes by enumerating a Python set, which is not reproducible; the
    sorted order is. The exact and the semantic lists give the same set (checked), so ids do
    not depend on the split kind. 117 verbs and 521 nouns.
    """
    unions = {}
    for kind in ("exact", "semantic"):
        unions[kind] = set()
        for shared in (True, False):
            unions[kind].update(
                read_class_list(split_file(splits_dir, "ego4d", task, kind, shared))
            )
    if unions["exact"] != unions["semantic"]:
        odd = sorted(unions["exact"] ^ unions["semantic"])
        raise SegmentTableError(
            f"the exact and semantic Ego4D {task} lists cover different classes, e.g. {odd[:3]}",
            file=splits_dir,
            fix="use the X-MIC anno/ split files unmodified",
        )
    return Vocabulary.from_names(sorted(unions["exact"]))


def load_xmic_split(
    splits_dir: str | Path,
    dataset: Dataset,
    task: Task,
    kind: SplitKind = "exact",
    *,
    vocabulary: Vocabulary | None = None,
) -> ClassSplit:
    """Load X-MIC's shared/novel split of ``dataset``'s ``task`` classes.

    Args:
        splits_dir: the folder of X-MIC split lists.
        dataset: ``"epic"`` or ``"ego4d"``: whose classes are partitioned.
        task: ``"verb"`` or ``"noun"``.
        kind: ``"exact"`` or ``"semantic"``.
        vocabulary: the class vocabulary that ids refer to. Required for EPIC (the
            ``EPIC_100_{verb,noun}_classes.csv`` vocabulary; names are matched through
            :func:`epic_readable_name`); for Ego4D it defaults to :func:`ego4d_vocabulary`.

    Raises:
        SegmentTableError: a listed name is not a class of the vocabulary (naming the file
            and line), a class is listed as both shared and novel, or as neither.
    """
    if vocabulary is None:
        if dataset == "epic":
            raise ValueError(
                "EPIC splits need the EPIC vocabulary: the folder of EPIC_100_{verb,noun}_classes.csv "
                "(--epic-classes; in Python, vocabulary=Vocabulary.from_epic_csv(...))"
            )
        vocabulary = ego4d_vocabulary(splits_dir, task)
    ids = _name_to_id(vocabulary, dataset)
    sides = {}
    for shared in (True, False):
        path = split_file(splits_dir, dataset, task, kind, shared)
        sides[shared] = _ids_of(read_class_list(path), ids, path, vocabulary)
    _check_partition(sides[True], sides[False], vocabulary, splits_dir, f"{dataset} {task} {kind}")
    return ClassSplit(dataset, task, kind, vocabulary, sides[True], sides[False])


def _name_to_id(vocabulary: Vocabulary, dataset: Dataset) -> dict[str, int]:
    if dataset == "ego4d":
        return {name: i for i, name in enumerate(vocabulary)}
    ids: dict[str, int] = {}
    for i, key in enumerate(vocabulary):
        readable = epic_readable_name(key)
        if readable in ids:
            raise ValueError(
                f"EPIC classes {vocabulary.name(ids[readable])!r} and {key!r} have the same "
                f"readable name {readable!r}"
            )
        ids[readable] = i
    return ids


def _ids_of(
    names: list[str], ids: dict[str, int], path: Path, vocabulary: Vocabulary
) -> frozenset[int]:
    found = set()
    for row, name in enumerate(names, start=1):
        if name not in ids:
            raise SegmentTableError(
                f"{name!r} is not a class of the given {len(vocabulary)}-class vocabulary",
                file=path,
                row=row,
                fix="check that the split files and the vocabulary belong to the same dataset "
                "and task",
            )
        found.add(ids[name])
    return frozenset(found)


def _check_partition(
    shared: frozenset[int],
    novel: frozenset[int],
    vocabulary: Vocabulary,
    splits_dir: str | Path,
    what: str,
) -> None:
    both = shared & novel
    neither = set(range(len(vocabulary))) - shared - novel
    for ids, problem in ((both, "both shared and novel"), (neither, "neither shared nor novel")):
        if ids:
            names = [vocabulary.name(i) for i in sorted(ids)][:5]
            raise SegmentTableError(
                f"the {what} split lists {len(ids)} class(es) as {problem}, e.g. {names}",
                file=splits_dir,
                fix="use the X-MIC anno/ split files unmodified, with the matching vocabulary",
            )


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, not {value!r}")


#: egofeat dataset name -> X-MIC split-file name
XMIC_DATASETS = {"epic100": "epic", "ego4d": "ego4d"}


def match_classes(
    source_texts: Sequence[str],
    target_texts: Sequence[str],
    target_ids: Sequence[int] | None = None,
) -> dict[int, int]:
    """Target class id -> source class id of the same class: equal names before any
    parenthesised synonyms (``"nut (food)"`` matches ``"nut"``), unique on both sides.
    ``target_ids`` limits the target classes considered (e.g. the exact-shared ones)."""

    def key(text: str) -> str:
        return text.split("(")[0].strip().lower()

    candidates = range(len(target_texts)) if target_ids is None else sorted(target_ids)
    source = Counter(key(t) for t in source_texts)
    target = Counter(key(target_texts[i]) for i in candidates)
    by_key = {key(t): i for i, t in enumerate(source_texts) if source[key(t)] == 1}
    return {
        i: by_key[key(target_texts[i])]
        for i in candidates
        if target[key(target_texts[i])] == 1 and key(target_texts[i]) in by_key
    }


def class_splits(
    source: str,
    target: str,
    task: str,
    source_names: Sequence[str],
    target_names: Sequence[str],
    splits_dir: Path | None,
) -> dict[str, tuple[list[int], list[int]]]:
    """Split kind -> (shared, novel) target class ids.

    EPIC <-> Ego4D with ``splits_dir``: X-MIC's exact and semantic lists. Otherwise one
    ``exact`` split: a target class is shared when the source has a class of the same name.
    """
    if splits_dir is not None and {source, target} == set(XMIC_DATASETS):
        vocabulary = Vocabulary.from_names(target_names)
        result = {}
        for kind in ("exact", "semantic"):
            split = load_xmic_split(
                splits_dir,
                XMIC_DATASETS[target],
                task,
                kind,  # type: ignore[arg-type]
                vocabulary=vocabulary,
            )
            result[kind] = (sorted(split.shared), sorted(split.novel))
        return result
    shared = sorted(
        match_classes(class_texts(source, source_names), class_texts(target, target_names))
    )
    return {"exact": (shared, sorted(set(range(len(target_names))) - set(shared)))}
