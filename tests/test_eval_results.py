"""Predictions files (ours and the EPIC baselines' results files), safe loading, fusion and
challenge submissions."""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from egofeat.eval import (
    Predictions,
    UnsafePickleError,
    fuse_predictions,
    load_predictions,
    save_predictions,
    write_submission,
)


def Results(ids, verb, noun) -> Predictions:  # noqa: N802 - reads like the EPIC layout
    return Predictions(list(ids), logits={"verb": verb, "noun": noun})

IDS = ["P01_11_0", "P01_11_1", "P02_03_7"]


def make_results(seed: int = 0, ids: list[str] = IDS) -> Predictions:
    rng = np.random.default_rng(seed)
    return Results(
        list(ids),
        rng.standard_normal((len(ids), 97)).astype(np.float32),
        rng.standard_normal((len(ids), 300)).astype(np.float32),
    )


def assert_same(loaded: Predictions, expected: Predictions) -> None:
    assert loaded.segment_ids == expected.segment_ids
    assert all(type(i) is str for i in loaded.segment_ids)
    assert loaded.logits["verb"].dtype == np.float32
    np.testing.assert_array_equal(loaded.logits["verb"], expected.logits["verb"])
    np.testing.assert_array_equal(loaded.logits["noun"], expected.logits["noun"])


def dict_layout(results: Predictions) -> dict:
    return {
        "verb_output": results.logits["verb"],
        "noun_output": results.logits["noun"],
        "narration_id": np.array(results.segment_ids),
        "video_id": np.array([i.rsplit("_", 1)[0] for i in results.segment_ids]),
    }


def list_layout(results: Predictions) -> list[dict]:
    return [
        {"verb_output": v, "noun_output": n, "narration_id": i}
        for i, v, n in zip(
            results.segment_ids, results.logits["verb"], results.logits["noun"], strict=True
        )
    ]


@pytest.mark.parametrize("suffix", [".parquet", ".npz", ".pkl"])
def test_save_then_load_round_trips(tmp_path: Path, suffix: str):
    results = make_results()
    path = save_predictions(results, tmp_path / f"rgb{suffix}")
    assert_same(load_predictions(path), results)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no partial file left


def test_our_npz_needs_no_pickle(tmp_path: Path):
    path = save_predictions(make_results(), tmp_path / "rgb.npz")
    with np.load(path, allow_pickle=False) as data:
        assert sorted(data.files) == ["narration_id", "noun_output", "verb_output"]


@pytest.mark.parametrize("suffix", [".pkl", ".pt"])
@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_epic_dict_layout_written_with_pickle(tmp_path: Path, suffix: str, protocol: int):
    # The TSN/TRN/TSM test script pickle.dump()s the dict layout, even to ".pt" names.
    results = make_results()
    path = tmp_path / f"tsn{suffix}"
    path.write_bytes(pickle.dumps(dict_layout(results), protocol=protocol))
    assert_same(load_predictions(path), results)


@pytest.mark.parametrize("protocol", [2, 5])
def test_epic_list_layout_written_with_pickle(tmp_path: Path, protocol: int):
    results = make_results()
    entries = list_layout(results)
    entries[1]["verb_output"] = entries[1]["verb_output"].tolist()  # plain floats work too
    path = tmp_path / "fused.pkl"
    path.write_bytes(pickle.dumps(entries, protocol=protocol))
    assert_same(load_predictions(path), results)


@pytest.mark.parametrize("layout", [dict_layout, list_layout])
def test_epic_layouts_written_with_torch_save(tmp_path: Path, layout):
    results = make_results()
    path = tmp_path / "fused.pt"
    torch.save(layout(results), path)
    assert zipfile.is_zipfile(path)
    assert_same(load_predictions(path), results)


def test_torch_tensors_and_the_legacy_torch_format(tmp_path: Path):
    results = make_results()
    content = {
        "verb_output": torch.from_numpy(results.logits["verb"]),
        "noun_output": torch.from_numpy(results.logits["noun"]),
        "narration_id": results.segment_ids,
    }
    path = tmp_path / "legacy.pt"
    torch.save(content, path, _use_new_zipfile_serialization=False)
    assert not zipfile.is_zipfile(path)
    assert_same(load_predictions(path), results)


class RunsAShellCommand:
    """What a malicious results file contains: unpickling it calls os.system."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("suffix", [".pkl", ".pt"])
def test_a_malicious_pickle_is_refused_without_running(tmp_path: Path, suffix: str):
    marker = tmp_path / "pwned"
    content = dict_layout(make_results())
    content["narration_id"] = RunsAShellCommand(marker)
    path = tmp_path / f"evil{suffix}"
    path.write_bytes(pickle.dumps(content))
    with pytest.raises(UnsafePickleError, match=r"calls posix\.system"):
        load_predictions(path)
    assert not marker.exists()


def test_a_malicious_torch_zip_is_refused_without_running(tmp_path: Path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"narration_id": RunsAShellCommand(marker)}, path)
    with pytest.raises(UnsafePickleError, match="weights_only"):
        load_predictions(path)
    assert not marker.exists()


def test_a_pickled_non_numpy_object_is_refused(tmp_path: Path):
    path = tmp_path / "frame.pkl"
    path.write_bytes(pickle.dumps({"verb_output": Path("x")}))
    with pytest.raises(UnsafePickleError, match=r"pathlib.*not a numpy array"):
        load_predictions(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"verb_output": np.zeros((1, 97))}, r"dict layout lacks keys \['narration_id'"),
        ([{"verb_output": [0.0]}], "list layout entry #0 must be a dict"),
        ("not results", "expected the EPIC dict or list results layout"),
    ],
)
def test_unexpected_layouts_are_named(tmp_path: Path, content, message):
    path = tmp_path / "odd.pkl"
    path.write_bytes(pickle.dumps(content))
    with pytest.raises(ValueError, match=message):
        load_predictions(path)


def test_results_refuse_repeated_ids_and_mismatched_rows():
    with pytest.raises(ValueError, match=r"repeated: \['a'\]"):
        Results(["a", "a"], np.zeros((2, 97)), np.zeros((2, 300)))
    with pytest.raises(ValueError, match=r"noun logits must have shape \(2, width\)"):
        Results(["a", "b"], np.zeros((2, 97)), np.zeros((3, 300)))


def test_fuse_averages_logits_aligned_by_segment_id():
    rgb, flow = make_results(0), make_results(1)
    flow_shuffled = flow.select([IDS[2], IDS[0], IDS[1]])
    fused = fuse_predictions([rgb, flow_shuffled])
    assert fused.segment_ids == IDS
    for task in ("verb", "noun"):
        np.testing.assert_allclose(fused.logits[task], (rgb.logits[task] + flow.logits[task]) / 2)


def test_fuse_lists_the_ids_each_file_lacks():
    a = make_results(0, ["x", "y", "z"])
    b = make_results(1, ["x", "y", "w"])
    with pytest.raises(
        ValueError,
        match=r"1 only in predictions\[0\] \['z'\], 1 only in predictions\[1\] \['w'\]",
    ):
        fuse_predictions([a, b])


def test_submission_zip_has_the_official_schema(tmp_path: Path):
    results = make_results()
    path = write_submission(results, tmp_path / "submission.zip", sls_pt=1, sls_tl=2, sls_td=3)
    with zipfile.ZipFile(path) as archive:
        assert archive.namelist() == ["test.json"]
        assert archive.getinfo("test.json").compress_type == zipfile.ZIP_DEFLATED
        payload = json.loads(archive.read("test.json"))
    assert {k: v for k, v in payload.items() if k != "results"} == {
        "version": "0.2",
        "challenge": "action_recognition",
        "sls_pt": 1,
        "sls_tl": 2,
        "sls_td": 3,
    }
    assert list(payload["results"]) == IDS
    segment = payload["results"]["P01_11_1"]
    assert list(segment["verb"]) == [str(c) for c in range(97)]
    assert list(segment["noun"]) == [str(c) for c in range(300)]
    assert segment["noun"]["299"] == float(results.logits["noun"][1, 299])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"sls_pt": 6}, "sls_pt must be an integer from 0 to 5"), ({"sls_td": True}, "sls_td")],
)
def test_submission_refuses_bad_sls_levels(tmp_path: Path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        write_submission(make_results(), tmp_path / "s.zip", **kwargs)


def test_submission_refuses_a_wrong_class_count(tmp_path: Path):
    results = Results(["a"], np.zeros((1, 125)), np.zeros((1, 352)))  # EPIC-55 sizes
    with pytest.raises(ValueError, match="needs 97 verb and 300 noun scores"):
        write_submission(results, tmp_path / "s.zip")
    assert not list(tmp_path.iterdir())


def test_pickles_written_by_numpy_1_load(tmp_path: Path):
    # numpy 1 pickles name numpy.core.multiarray; protocol 2 spells globals as plain text.
    results = make_results()
    data = pickle.dumps(dict_layout(results), protocol=2)
    assert b"numpy._core.multiarray" in data
    path = tmp_path / "old.pkl"
    path.write_bytes(data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    assert_same(load_predictions(path), results)


def test_list_layout_entries_must_agree_in_size(tmp_path: Path):
    entries = list_layout(make_results())
    entries[2]["noun_output"] = entries[2]["noun_output"][:299]
    path = tmp_path / "ragged.pkl"
    path.write_bytes(pickle.dumps(entries))
    with pytest.raises(ValueError, match="entry #2 has 97 verb / 299 noun scores, entry #0"):
        load_predictions(path)


def test_parquet_predictions_carry_labels_class_names_and_rows(tmp_path: Path):
    """The one format: polars reads it, labels null where unknown, class names in metadata."""
    import polars as pl

    predictions = Predictions(
        ["a", "b"], logits={"verb": np.eye(2, 3, dtype=np.float32)},
        labels={"verb": np.array([1, -1])}, class_names={"verb": ["take", "put", "open"]},
        rows=pl.DataFrame({"split": ["val", "test"], "participant_id": ["P01", "P02"]}),
        info={"run": "runs/x", "split": "val"},
    )
    path = save_predictions(predictions, tmp_path / "predictions-val.parquet")
    frame = pl.read_parquet(path)
    assert frame.columns == ["segment_id", "split", "participant_id", "verb_logits", "verb_label"]
    assert frame["verb_label"].to_list() == [1, None]
    loaded = load_predictions(path)
    assert loaded.class_names == {"verb": ["take", "put", "open"]}
    assert loaded.labels["verb"].tolist() == [1, -1] and loaded.info["run"] == "runs/x"
    assert loaded.column("participant_id").tolist() == ["P01", "P02"]
    with pytest.raises(ValueError, match="3 verb class names for 2"):
        Predictions(["a"], logits={"verb": np.zeros((1, 2))}, class_names={"verb": ["x", "y", "z"]})


def test_fusion_refuses_predictions_whose_classes_differ():
    a = Predictions(["a"], logits={"verb": np.zeros((1, 2))}, class_names={"verb": ["x", "y"]})
    b = Predictions(["a"], logits={"verb": np.zeros((1, 2))}, class_names={"verb": ["y", "x"]})
    with pytest.raises(ValueError, match="name their verb classes differently"):
        fuse_predictions([a, b])
