"""HeadData and loading it from a feature store.

``FakeStore`` implements exactly the store API that ``load_head_data`` codes against
(``segments``, ``stream_names``, ``stream`` -> ``info`` / ``manifest`` / ``load``).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest
import torch

from egofeat.heads import UNLABELLED, HeadData, load_head_data


class FakeStream:
    def __init__(self, name, rows, *, errors=(), dim=4, frames=3, provenance=None, offsets=False):
        self.name = name
        self.rows = {sid: np.full((frames, dim), value, np.float16) for sid, value in rows.items()}
        self.errors = list(errors)
        self.offsets = offsets
        self.loads = 0
        self.info = SimpleNamespace(
            name=name, dim=dim, frames_per_row=frames, provenance=provenance or {"encoder": name}
        )

    def manifest(self):
        ids = [*self.rows, *self.errors]
        status = ["ok"] * len(self.rows) + ["error"] * len(self.errors)
        return pl.LazyFrame({"segment_id": ids, "status": status, "n_frames": [3] * len(ids)})

    def load(self, segment_ids=None):
        self.loads += 1
        ids = list(self.rows) if segment_ids is None else list(segment_ids)
        missing = [sid for sid in ids if sid not in self.rows]
        if missing:
            raise KeyError(f"stream {self.name!r} has no ok features for {missing}")
        features = np.stack([self.rows[sid] for sid in ids])
        if self.offsets:
            flat = features.reshape(-1, features.shape[-1])
            return SimpleNamespace(segment_ids=np.array(ids), features=flat, offsets=np.arange(3))
        return SimpleNamespace(segment_ids=np.array(ids), features=features, offsets=None)


class FakeStore:
    def __init__(self, segments, streams):
        self._segments = segments
        self._streams = {s.name: s for s in streams}

    def segments(self):
        return self._segments.lazy()

    def stream_names(self):
        return sorted(self._streams)

    def stream(self, name):
        if name not in self._streams:
            raise KeyError(f"no stream {name!r} (streams: {', '.join(self.stream_names())})")
        return self._streams[name]


def segment_table(n_train=8):
    ids = [f"P01_{i:02d}" for i in range(n_train + 4)]
    splits = ["train"] * n_train + ["val"] * 3 + ["test"]
    verb_class = [i % 4 for i in range(n_train + 3)] + [None]
    verb_class[2] = None  # one train segment without a verb label
    noun_class = [i % 6 for i in range(n_train + 3)] + [None]
    return pl.DataFrame(
        {
            "dataset": ["epic100"] * len(ids),
            "split": splits,
            "segment_id": ids,
            "video_id": [sid[:3] + "_1" + str(i % 2) for i, sid in enumerate(ids)],
            "participant_id": ["P01"] * len(ids),
            "verb": [
                None if v is None else ["take", "put", "open", "close"][v] for v in verb_class
            ],
            "verb_class": verb_class,
            "noun": [None if n is None else f"noun{n}" for n in noun_class],
            "noun_class": noun_class,
        },
        schema_overrides={"verb_class": pl.Int64, "noun_class": pl.Int64},
    )


@pytest.fixture
def store():
    table = segment_table()
    ids = table["segment_id"].to_list()
    full = FakeStream("clip/full", {sid: i for i, sid in enumerate(ids) if sid != "P01_03"},
                      errors=["P01_03"])  # fmt: skip
    hand = FakeStream("clip/hand", {sid: -i for i, sid in enumerate(ids) if sid != "P01_05"}, dim=2)
    return FakeStore(table, [full, hand])


def test_load_aligns_streams_and_reports_what_was_dropped(store):
    data = load_head_data(
        store, ["clip/full", "clip/hand"], splits=["train", "val"], missing_labels="drop"
    )
    kept = ["P01_00", "P01_01", "P01_04", "P01_06", "P01_07", "P01_08", "P01_09", "P01_10"]
    assert data.segment_ids.tolist() == kept
    report = data.load_report
    assert (report.requested, report.kept) == (11, 8)
    assert report.dropped == {
        "error rows in stream 'clip/full'": 1,
        "not in stream 'clip/hand'": 1,
        "no verb_class in split 'train'": 1,
    }
    assert report.examples["not in stream 'clip/hand'"] == ["P01_05"]
    assert "kept 8 of 11 segments" in str(report)

    assert data.in_dims == {"clip/full": 4, "clip/hand": 2} and data.num_frames == 3
    assert data.features["clip/full"].dtype == torch.float16
    # features follow the kept ids: stream 'full' stores the row number, 'hand' its negative
    numbers = [int(sid[-2:]) for sid in kept]
    assert data.features["clip/full"][:, 0, 0].tolist() == numbers
    assert data.features["clip/hand"][:, 0, 0].tolist() == [-n for n in numbers]
    assert data.labels["verb"].tolist() == [n % 4 for n in numbers]
    assert data.num_classes == {"verb": 4, "noun": 6}  # from the whole table
    assert data.class_names["verb"] == ["take", "put", "open", "close"]
    assert data.meta.columns == ["segment_id", "dataset", "split", "video_id", "participant_id"]
    assert data.provenance == {
        "clip/full": {"encoder": "clip/full"},
        "clip/hand": {"encoder": "clip/hand"},
    }
    assert len(data.split("val")) == 3


def test_partly_missing_labels_raise_by_default(store):
    with pytest.raises(ValueError, match=r"1 of 7 segments of split 'train' have no verb_class \(e.g. \['P01_02'\]\); leave them out with --set data.missing_labels=drop"):  # fmt: skip
        load_head_data(store, ["clip/full"], splits=["train"])
    from egofeat.heads import RunConfig, create_task

    config = RunConfig.from_dict({"data": {"streams": ["clip/full"], "missing_labels": "drop"}})
    assert "P01_02" not in create_task(config, store).load("train").segment_ids.tolist()  # the flag works


def test_an_unlabelled_split_is_kept_for_prediction(store):
    data = load_head_data(store, ["clip/full"], splits=["test"])
    assert data.segment_ids.tolist() == ["P01_11"]
    assert data.labels["verb"].tolist() == [UNLABELLED] and not data.labelled("noun").any()
    assert data.load_report.unlabelled == {"verb": ["test"], "noun": ["test"]}


def test_load_errors_name_what_is_wrong(store):
    with pytest.raises(KeyError, match=r"no stream 'dino/full' \(streams: clip/full, clip/hand\)"):
        load_head_data(store, ["dino/full"])
    with pytest.raises(KeyError, match=r"split\(s\) \['validation'\] not in the segment table"):
        load_head_data(store, ["clip/full"], splits=["validation"])
    with pytest.raises(KeyError, match=r"lacks column\(s\) \['action_class'\]"):
        load_head_data(store, ["clip/full"], tasks=["action"])
    store._streams["clip/full"].offsets = True
    with pytest.raises(ValueError, match="variable number of frames"):
        load_head_data(store, ["clip/full"], splits=["val"])


def test_several_datasets_need_a_choice(store):
    ego4d = segment_table(2).with_columns(
        pl.lit("ego4d").alias("dataset"), ("E_" + pl.col("segment_id")).alias("segment_id")
    )
    store._segments = pl.concat([store._segments, ego4d])
    with pytest.raises(ValueError, match=r"several datasets \['ego4d', 'epic100'\]"):
        load_head_data(store, ["clip/full"], splits=["val"])
    data = load_head_data(store, ["clip/full"], splits=["val"], dataset="epic100")
    assert len(data) == 3


def test_cache_dir_maps_a_memmap_reused_until_the_stream_changes(store, tmp_path):
    stream = store._streams["clip/full"]
    first = load_head_data(store, ["clip/full"], splits=["val"], cache_dir=tmp_path)
    files = list(tmp_path.glob("*.npy"))
    assert len(files) == 1 and files[0].name.startswith("clip_full-")
    loads = stream.loads
    again = load_head_data(store, ["clip/full"], splits=["val"], cache_dir=tmp_path)
    assert stream.loads == loads  # served from the cache file
    torch.testing.assert_close(again.features["clip/full"], first.features["clip/full"])
    stream.info.provenance = {"encoder": "clip/full", "weights": "new"}
    load_head_data(store, ["clip/full"], splits=["val"], cache_dir=tmp_path)
    assert stream.loads == loads + 1 and len(list(tmp_path.glob("*.npy"))) == 2
    assert not list(tmp_path.glob("*partial*"))


def tensors(n=10, frames=2):
    return HeadData(
        features={"a": torch.arange(n * frames * 3, dtype=torch.float16).view(n, frames, 3)},
        labels={"verb": torch.arange(n) % 3},
        meta=pl.DataFrame(
            {
                "segment_id": [str(i) for i in range(n)],
                "split": ["train"] * (n - 3) + ["val"] * 3,
                "video_id": [f"v{i // 2}" for i in range(n)],
            }
        ),
    )


def test_head_data_defaults_and_validation():
    data = tensors()
    assert data.segment_ids.tolist() == [str(i) for i in range(10)]
    assert data.num_classes == {"verb": 3} and data.class_names == {"verb": ["0", "1", "2"]}
    with pytest.raises(ValueError, match="different row counts"):
        HeadData(
            features={"a": torch.zeros(3, 1, 2)}, labels={"verb": torch.zeros(4, dtype=torch.long)}
        )
    with pytest.raises(ValueError, match="must be a float"):
        HeadData(features={"a": torch.zeros(3, 2)}, labels={})
    with pytest.raises(ValueError, match="share their frame count"):
        HeadData(features={"a": torch.zeros(3, 2, 2), "b": torch.zeros(3, 4, 2)}, labels={})
    with pytest.raises(ValueError, match=r"does not fit 2 classes"):
        HeadData(
            features={"a": torch.zeros(3, 1, 2)},
            labels={"verb": torch.tensor([0, 1, 2])},
            num_classes={"verb": 2},
        )


def test_subset_split_and_holdout():
    data = tensors()
    picked = data.subset([4, 1])
    assert picked.segment_ids.tolist() == ["4", "1"] and picked.labels["verb"].tolist() == [1, 1]
    torch.testing.assert_close(picked.features["a"][0], data.features["a"][4])
    assert len(data.subset(data.labelled("verb"))) == 10
    assert data.subset(slice(0, 3)).segment_ids.tolist() == ["0", "1", "2"]
    assert data.split("val").segment_ids.tolist() == ["7", "8", "9"]
    with pytest.raises(KeyError, match=r"no rows in split 'test'; splits: \['train', 'val'\]"):
        data.split("test")
    train, held = data.holdout(0.4, seed=3, group_by="video_id")
    assert len(train) + len(held) == 10 and len(held) == 4
    assert not set(train.meta["video_id"]) & set(held.meta["video_id"])


def test_batches_cover_every_row_once_and_match_the_dataset():
    data = tensors(n=11)
    generator = torch.Generator().manual_seed(0)
    batches = list(data.batches(4, shuffle=True, generator=generator))
    assert [len(b["index"]) for b in batches] == [4, 4, 3]
    rows = torch.cat([b["index"] for b in batches])
    assert sorted(rows.tolist()) == list(range(11)) and rows.tolist() != list(range(11))
    first = batches[0]
    assert first["features"]["a"].dtype == torch.float32
    torch.testing.assert_close(first["features"]["a"], data.features["a"][first["index"]].float())

    loader = torch.utils.data.DataLoader(data.as_dataset(), batch_size=4)
    from_dataset = next(iter(loader))
    from_data = data.batch(torch.arange(4))
    torch.testing.assert_close(from_dataset["features"]["a"], from_data["features"]["a"])
    torch.testing.assert_close(from_dataset["labels"]["verb"], from_data["labels"]["verb"])
    torch.testing.assert_close(from_dataset["index"], from_data["index"])


def test_a_vocabulary_in_another_order_takes_the_labels_by_name(store):
    """The table's ids number the store's vocabulary; a given vocabulary in another order (X-MIC's
    sorted Ego4D classes) relabels every row by name, and a class it lacks leaves no label."""
    kept = {"verb": ["take", "put", "open", "close"], "noun": [f"noun{i}" for i in range(6)]}
    store.vocabulary = lambda dataset, task: pl.DataFrame({"class_id": range(len(kept[task])),
                                                           "name": kept[task]})
    given = {"verb": ["close", "open", "put", "take"], "noun": [f"noun{i}" for i in (5, 4, 3, 1, 0)]}
    data = load_head_data(store, ["clip/full"], tasks=["verb", "noun"], splits=["val"],
                          vocabularies=given)
    table = store.segments().collect().filter(pl.col("segment_id").is_in(data.segment_ids.tolist()))
    for task in ("verb", "noun"):
        expected = [given[task].index(n) if n in given[task] else UNLABELLED for n in table[task]]
        assert data.labels[task].tolist() == expected and data.class_names[task] == given[task]
    assert UNLABELLED in data.labels["noun"].tolist()  # noun2 is not in the given vocabulary
    same = load_head_data(store, ["clip/full"], tasks=["verb"], splits=["val"],
                          vocabularies={"verb": kept["verb"]})
    assert same.labels["verb"].tolist() == table["verb_class"].to_list()


def test_reserved_videos_are_the_same_whatever_else_a_run_loads():
    from egofeat.heads.tasks import reserved_videos

    videos = [f"P{i:02d}_{j:02d}" for i in range(40) for j in range(25)]
    reserved = reserved_videos(videos, 0.1, seed=0)
    assert 70 <= len(reserved) <= 130  # about a tenth of the 1000 videos
    assert reserved_videos(videos[::3], 0.1, seed=0) == reserved & set(videos[::3])  # a stream lacking some
    assert reserved_videos(videos, 0.1, seed=1) != reserved
    assert reserved_videos(videos, 0.2, seed=0) > reserved  # a larger share keeps the smaller one
