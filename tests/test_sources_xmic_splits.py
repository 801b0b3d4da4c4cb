"""X-MIC shared/novel class splits between EPIC-KITCHENS-100 and Ego4D."""

from __future__ import annotations

from pathlib import Path

import pytest

from egofeat.sources import (
    SegmentTableError,
    Vocabulary,
    class_texts,
    ego4d_vocabulary,
    epic_readable_name,
    load_epic_vocabularies,
    load_xmic_split,
)


@pytest.fixture(scope="module")
def splits_dir(shared_data: Path) -> Path:
    return shared_data / "xmic_splits"


@pytest.fixture(scope="module")
def epic_vocab(epic_dir: Path) -> dict[str, Vocabulary]:
    verbs, nouns = load_epic_vocabularies(epic_dir)
    return {"verb": verbs, "noun": nouns}


@pytest.mark.parametrize(
    ("key", "readable"),
    [
        ("tap", "tap"),
        ("board:chopping", "chopping board"),
        ("machine:sous:vide", "vide sous machine"),
        ("turn-on", "turn on"),
        ("liquid:washing", "washing liquid"),
    ],
)
def test_epic_readable_name(key, readable):
    assert epic_readable_name(key) == readable


@pytest.mark.parametrize(
    ("task", "kind", "shared", "novel"),
    [
        ("noun", "exact", 163, 137),
        ("verb", "exact", 51, 46),
        ("noun", "semantic", 213, 87),
        ("verb", "semantic", 69, 28),
    ],
)
def test_epic_splits(splits_dir, epic_vocab, task, kind, shared, novel):
    split = load_xmic_split(splits_dir, "epic", task, kind, vocabulary=epic_vocab[task])
    assert (len(split.shared), len(split.novel)) == (shared, novel)
    # every EPIC class is exactly one of shared / novel
    assert split.shared | split.novel == set(range(len(epic_vocab[task])))
    assert not split.shared & split.novel
    assert all(split.is_shared(i) == (i in split.shared) for i in range(len(epic_vocab[task])))


@pytest.mark.parametrize(
    ("task", "kind", "shared", "novel"),
    [
        ("noun", "exact", 163, 358),
        ("verb", "exact", 51, 66),
        ("noun", "semantic", 274, 247),
        ("verb", "semantic", 82, 35),
    ],
)
def test_ego4d_splits(splits_dir, task, kind, shared, novel):
    split = load_xmic_split(splits_dir, "ego4d", task, kind)
    assert (len(split.shared), len(split.novel)) == (shared, novel)
    assert split.shared | split.novel == set(range(len(split.vocabulary)))


def test_semantic_is_a_superset_of_exact(splits_dir, epic_vocab):
    for task in ("verb", "noun"):
        exact = load_xmic_split(splits_dir, "epic", task, "exact", vocabulary=epic_vocab[task])
        semantic = load_xmic_split(
            splits_dir, "epic", task, "semantic", vocabulary=epic_vocab[task]
        )
        assert exact.shared < semantic.shared


def test_known_classes(splits_dir, epic_vocab):
    nouns = load_xmic_split(splits_dir, "epic", "noun", vocabulary=epic_vocab["noun"])
    assert nouns.is_shared(epic_vocab["noun"].index("plate"))
    assert "plate" in nouns.shared_names
    assert len(nouns.novel_names) == 137
    with pytest.raises(KeyError):
        nouns.is_shared(300)


def test_ego4d_vocabulary_is_sorted_and_stable(splits_dir):
    verbs = ego4d_vocabulary(splits_dir, "verb")
    nouns = ego4d_vocabulary(splits_dir, "noun")
    assert (len(verbs), len(nouns)) == (117, 521)
    assert list(nouns.names) == sorted(nouns.names)
    assert verbs.name(0) == "adjust_(regulate,_increase/reduce,_change)"
    assert ego4d_vocabulary(splits_dir, "noun") == nouns
    # the 163 exact-shared Ego4D nouns have 163 distinct base names, one per EPIC noun
    ego_shared = load_xmic_split(splits_dir, "ego4d", "noun").shared_names
    assert len({name.split("(")[0].rstrip("_") for name in ego_shared}) == 163


#: the texts X-MIC gives the 8 Ego4D nouns it renames (Annusha/xmic datasets/ego4d_helper.py,
#: _fix_classes, then split("(")[0] and underscores -> spaces in trainers/xmic.py)
XMIC_RENAMED_NOUNS = {
    "nut_(food)": "nut",
    "nut_(tool)": "nut tool",
    "chip_(food)": "chip",
    "chip_(wood'_metal),": "chip wood",
    "chip_(wood,_metal)": "chip metal",
    "bat_(tool)": "bat tool",
    "bat_(sports)": "bat sports",
    "pot_(planter)": "planter",
}


def test_ego4d_class_texts_are_xmics(splits_dir):
    for task in ("noun", "verb"):
        labels = ego4d_vocabulary(splits_dir, task).names
        texts = dict(zip(labels, class_texts("ego4d", labels), strict=True))
        renamed = {label: text for label, text in texts.items() if label in XMIC_RENAMED_NOUNS}
        assert renamed == (XMIC_RENAMED_NOUNS if task == "noun" else {})
        for label, text in texts.items():  # every other label: its bare name
            if label not in XMIC_RENAMED_NOUNS:
                assert text == label.split("(")[0].replace("_", " ").strip(), label
        assert len(set(texts.values())) == len(texts)  # no two classes read the same
    assert class_texts("ego4d", ["pot", "potato", "batter_(batter,_mixture)", "adjust_(a,_b)"]) == [
        "pot", "potato", "batter", "adjust"]


def test_epic_needs_a_vocabulary(splits_dir):
    with pytest.raises(ValueError, match="EPIC vocabulary"):
        load_xmic_split(splits_dir, "epic", "verb")


def _copy_splits(splits_dir: Path, tmp_path: Path) -> Path:
    for file in splits_dir.glob("epic_ego_*_exact_verb.txt"):
        (tmp_path / file.name).write_text(file.read_text())
    return tmp_path


def test_unknown_name_names_file_and_line(splits_dir, epic_vocab, tmp_path):
    folder = _copy_splits(splits_dir, tmp_path)
    novel = folder / "epic_ego_non_common_exact_verb.txt"
    lines = novel.read_text().splitlines()
    lines[2] = "levitate"
    novel.write_text("\n".join(lines) + "\n")
    with pytest.raises(SegmentTableError) as caught:
        load_xmic_split(folder, "epic", "verb", vocabulary=epic_vocab["verb"])
    assert (caught.value.file, caught.value.row) == (str(novel), 3)
    assert "'levitate'" in str(caught.value)


def test_overlap_and_gap_are_errors(splits_dir, epic_vocab, tmp_path):
    folder = _copy_splits(splits_dir, tmp_path)
    shared = folder / "epic_ego_common_exact_verb.txt"
    novel = folder / "epic_ego_non_common_exact_verb.txt"
    first_novel = novel.read_text().splitlines()[0]
    shared.write_text(shared.read_text() + first_novel + "\n")
    with pytest.raises(SegmentTableError, match="both shared and novel"):
        load_xmic_split(folder, "epic", "verb", vocabulary=epic_vocab["verb"])
    novel.write_text("\n".join(novel.read_text().splitlines()[1:]) + "\n")
    shared.write_text("\n".join(shared.read_text().splitlines()[:-1]) + "\n")
    with pytest.raises(SegmentTableError, match="neither shared nor novel"):
        load_xmic_split(folder, "epic", "verb", vocabulary=epic_vocab["verb"])
