"""The EPIC C1 workflow, one command per step, on an EPIC-format store that uses a few class ids:
extract (train, val and an unlabelled test split, the real EPIC class files beside them) ->
train TSN / TRN / TSM-style heads on two streams -> predict val and test -> fuse -> eval with
unseen participants and tail classes -> submit -> compare the runs."""

from __future__ import annotations

import json
import shutil
import zipfile

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from egofeat.cli import app
from egofeat.eval import load_predictions
from egofeat.extract.synthetic import write_synthetic_dataset
from egofeat.store import FeatureStore

runner = CliRunner()
HEADS = {"tsn": [], "trn": ["--set", "head.bottleneck=32", "--set", "head.hidden=32"],
         "tsm": ["--set", "head.width=32", "--set", "head.depth=1"]}


def invoke(*args: str) -> dict:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def c1(tmp_path_factory, epic_dir):
    """A store of synthetic videos annotated in EPIC's vocabulary (few classes used)."""
    root = tmp_path_factory.mktemp("c1")
    dataset = write_synthetic_dataset(root / "data", n_videos=6, segments_per_video=12)
    annotations = root / "annotations"
    annotations.mkdir()
    for name in ("EPIC_100_verb_classes.csv", "EPIC_100_noun_classes.csv"):
        shutil.copy(epic_dir / name, annotations / name)
    verbs = pl.read_csv(epic_dir / "EPIC_100_verb_classes.csv")["key"].to_list()
    nouns = pl.read_csv(epic_dir / "EPIC_100_noun_classes.csv")["key"].to_list()
    for name in ("EPIC_100_train.csv", "EPIC_100_validation.csv"):
        table = pl.read_csv(dataset.annotations_dir / name)
        # the synthetic classes keep their ids; they take the names EPIC gives those ids
        table = table.with_columns(
            pl.col("verb_class").map_elements(verbs.__getitem__, return_dtype=pl.Utf8).alias("verb"),
            pl.col("noun_class").map_elements(nouns.__getitem__, return_dtype=pl.Utf8).alias("noun"))
        table.write_csv(annotations / name)
    test = pl.read_csv(annotations / "EPIC_100_validation.csv").select(
        pl.col("narration_id").map_elements(lambda i: f"{i}_test", return_dtype=pl.Utf8),
        "participant_id", "video_id", "narration_timestamp", "start_timestamp", "stop_timestamp",
        "start_frame", "stop_frame")
    test.write_csv(annotations / "EPIC_100_test_timestamps.csv")  # no labels, as the real one
    val_participants = pl.read_csv(annotations / "EPIC_100_validation.csv")["participant_id"].unique().sort()
    (annotations / "unseen.csv").write_text("participant_id\n" + f"{val_participants[0]}\n")
    store = root / "store"
    invoke("extract", "--store", str(store), "--videos", str(dataset.videos_root), "--crop", "both",
           "--boxes", str(dataset.videos_root), "--frames", "4", "--workers", "0",
           *[a for f in ("EPIC_100_train.csv", "EPIC_100_validation.csv", "EPIC_100_test_timestamps.csv")
             for a in ("--annotations", str(annotations / f))])
    return root, store, annotations


def test_the_store_keeps_epic_vocabularies(c1):
    _, store, _ = c1
    opened = FeatureStore.open(store)
    verbs, nouns = opened.vocabulary("epic100", "verb"), opened.vocabulary("epic100", "noun")
    assert (verbs.height, nouns.height) == (97, 300)
    assert verbs["name"][0] == "take" and nouns["name"][0] == "tap"
    assert verbs["source"][0].endswith("EPIC_100_verb_classes.csv") and nouns["category"][0] is not None
    # the FORMAT.md recipe: polars alone reads the vocabularies
    frame = pl.read_parquet(sorted((store / "vocabularies").glob("*.verb.parquet"))[0])
    assert frame["class_id"].to_list() == list(range(97))
    # another vocabulary for the same dataset is refused, in one line
    other = c1[0] / "other"
    other.mkdir()
    pl.read_csv(c1[2] / "EPIC_100_validation.csv").write_csv(other / "EPIC_100_validation.csv")
    verbs = (c1[2] / "EPIC_100_verb_classes.csv").read_text()
    (other / "EPIC_100_verb_classes.csv").write_text(verbs.replace("0,take,", "0,grab,", 1))
    shutil.copy(c1[2] / "EPIC_100_noun_classes.csv", other / "EPIC_100_noun_classes.csv")
    result = runner.invoke(app, ["segments", str(other / "EPIC_100_validation.csv"), "--store", str(store)])
    assert result.exit_code == 2 and "another epic100 verb vocabulary" in result.output
    assert "Traceback" not in result.output


def test_c1_workflow_train_predict_fuse_eval_submit_compare(c1, epic_dir):
    root, store, annotations = c1
    subsets = ["--unseen", str(annotations / "unseen.csv"), "--tail-verbs", str(epic_dir / "EPIC_100_tail_verbs.csv"),
               "--tail-nouns", str(epic_dir / "EPIC_100_tail_nouns.csv")]
    val_files, test_files = [], []
    for head, options in HEADS.items():
        run = root / "runs" / head
        summary = invoke("train", "--store", str(store), "--stream", "tiny/full,tiny/hand", "--head", head,
                         "--out", str(run), "--epochs", "3", "--device", "cpu", *options, *subsets)
        assert "unseen_action_accuracy_at_1" in summary["metrics"]
        val_files.append(run / "predictions-val.parquet")
        test_file = root / f"{head}-test.parquet"
        predicted = invoke("predict", str(run), "--split", "test", "--out", str(test_file))
        assert predicted["classes"] == {"verb": 97, "noun": 300}
        test_files.append(test_file)
    # the predictions are sized by the vocabulary and carry its names
    npz = root / "tsn-val.npz"
    invoke("predict", str(root / "runs" / "tsn"), "--split", "val", "--out", str(npz))
    with np.load(npz) as arrays:
        assert arrays["verb_output"].shape[1] == 97 and arrays["noun_output"].shape[1] == 300
    val = load_predictions(val_files[0])
    assert val.class_names["verb"][:2] == ["take", "put"] and len(val.class_names["noun"]) == 300
    assert (root / "runs" / "tsn" / "plots" / "per_class_val.png").exists()

    fused_val, fused_test = root / "fused-val.parquet", root / "fused-test.parquet"
    invoke("fuse", *map(str, val_files), "--out", str(fused_val))
    invoke("fuse", *map(str, test_files), "--out", str(fused_test))
    scored = invoke("eval", "--results", str(fused_val), "--annotations", str(annotations / "EPIC_100_validation.csv"),
                    *subsets)
    for key in ("all_action_accuracy_at_1", "unseen_action_accuracy_at_1", "tail_action_accuracy_at_1"):
        assert key in scored["metrics"]
    submission = root / "submission.zip"
    invoke("submit", str(fused_test), "--out", str(submission))
    with zipfile.ZipFile(submission) as archive:
        payload = json.loads(archive.read("test.json"))
    first = next(iter(payload["results"].values()))
    assert len(payload["results"]) == load_predictions(fused_test).segment_ids.__len__()
    assert len(first["verb"]) == 97 and len(first["noun"]) == 300  # though train uses few classes

    comparison = invoke("runs", str(root / "runs"), "--sort", "action_accuracy_at_1")
    assert [r["head"] for r in comparison["runs"]] and len(comparison["runs"]) == 3
    values = [r["metrics"]["all_action_accuracy_at_1"] for r in comparison["runs"]]
    assert values == sorted(values, reverse=True) and "head.name" in comparison["differences"]
    assert all(r["trainable_parameters"] and r["seconds"] is not None for r in comparison["runs"])
    chart = root / "runs.png"
    invoke("runs", str(root / "runs"), "--plot", "all_verb_accuracy_at_1", "--out", str(chart))
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_bad_tail_file_fails_before_training_and_writes_nothing(c1, epic_dir):
    root, store, annotations = c1
    bad = root / "tail_verbs_of_another_vocabulary.csv"
    bad.write_text("verb\n3\n120\n131\n")
    run = root / "runs-bad" / "trn"
    result = runner.invoke(app, ["train", "--store", str(store), "--stream", "tiny/full,tiny/hand", "--head",
                                 "trn", "--out", str(run), "--epochs", "30", "--tail-verbs", str(bad)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert str(bad) in result.output and "[120, 131]" in result.output and "97 verb classes" in result.output
    assert not run.exists()  # refused before any epoch: no run folder, no metrics
