"""`egofeat train / eval / predict / fuse / submit` on a small store of separable features."""

from __future__ import annotations

import json
import pickle
import zipfile

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from egofeat.cli import app
from egofeat.store import FeatureStore

runner = CliRunner()
N_VERBS, N_NOUNS, T, D = 4, 5, 4, 16


def _write_store(path, provenance=None, seed=0):
    """Segments whose features carry their verb and noun (plus noise), train and val splits."""
    rng = np.random.default_rng(seed)
    n = 240
    verbs, nouns = rng.integers(0, N_VERBS, n), rng.integers(0, N_NOUNS, n)
    ids = [f"P01_01_{i}" for i in range(n)]
    table = pl.DataFrame({
        "dataset": ["toy"] * n, "split": ["train"] * 160 + ["val"] * 80, "segment_id": ids,
        "video_id": [f"P01_0{i % 4}" for i in range(n)], "participant_id": ["P01"] * 120 + ["P02"] * 120,
        "start_sec": np.arange(n, dtype=float), "end_sec": np.arange(n, dtype=float) + 1,
        "verb": [f"v{v}" for v in verbs], "verb_class": verbs, "noun": [f"n{x}" for x in nouns], "noun_class": nouns,
    })
    store = FeatureStore.create(path)
    store.add_segments(table)
    centres_v, centres_n = rng.normal(size=(N_VERBS, D)), rng.normal(size=(N_NOUNS, D))
    stream = store.create_stream("toy/full", dim=D, provenance=provenance or {"encoder": "toy"}, frames_per_row=T)
    with stream.part_writer("all") as writer:
        for i, sid in enumerate(ids):
            feats = centres_v[verbs[i]] + centres_n[nouns[i]] + 0.3 * rng.normal(size=(T, D))
            writer.add(sid, "v", feats)
    return table


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    table = _write_store(root / "store")
    run = root / "run"
    result = runner.invoke(app, ["train", "--store", str(root / "store"), "--stream", "toy/full", "--head", "mlp",
                                 "--task", "verb,noun", "--out", str(run), "--epochs", "15",
                                 "--set", "trainer.lr=0.01", "--set", "trainer.batch_size=32", "--json"])
    assert result.exit_code == 0, result.output
    return root, run, table, json.loads(result.output)


def test_train_writes_a_complete_run_folder(trained):
    _, run, _, summary = trained
    assert summary["metrics"]["all_verb_accuracy_at_1"] > 90
    assert summary["metrics"]["all_noun_accuracy_at_1"] > 90
    for name in ("run.json", "metrics.json", "metrics.jsonl", "best.pt", "last.pt", "predictions-val.parquet",
                 "plots/training_curves.png", "plots/per_class_val.png"):
        assert (run / name).exists(), name
    assert (run / "plots" / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    predictions = pl.read_parquet(run / "predictions-val.parquet")
    assert predictions.height == 80 and predictions["verb_logits"].dtype == pl.Array(pl.Float32, N_VERBS)


def test_eval_run_matches_training_report(trained):
    _, run, _, summary = trained
    result = runner.invoke(app, ["eval", str(run), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["metrics"] == pytest.approx(summary["metrics"])


def test_eval_refuses_streams_with_other_provenance(trained, tmp_path):
    _write_store(tmp_path / "other", provenance={"encoder": "something-else"})
    _, run, _, _ = trained
    result = runner.invoke(app, ["eval", str(run), "--store", str(tmp_path / "other")])
    assert result.exit_code == 2
    assert "encoder" in result.output and "something-else" in result.output


def test_predict_fuse_submit_and_score_results(trained, tmp_path):
    _, run, table, _ = trained
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    assert runner.invoke(app, ["predict", str(run), "--out", str(a)]).exit_code == 0
    assert runner.invoke(app, ["predict", str(run), "--out", str(b)]).exit_code == 0
    fused = tmp_path / "fused.npz"
    result = runner.invoke(app, ["fuse", str(a), str(b), "--out", str(fused), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["rows"] == 80
    result = runner.invoke(app, ["submit", str(fused), "--out", str(tmp_path / "sub.zip")])
    assert result.exit_code == 2 and "97 verb" in result.output  # the toy task is not EPIC-shaped


def test_eval_scores_an_epic_baseline_results_file(epic_dir, tmp_path):
    """An EPIC baselines' dict-layout pickle with perfect logits scores 100 on the real val CSV."""
    val = pl.read_csv(epic_dir / "EPIC_100_validation.csv")
    n = val.height
    verb_output = np.zeros((n, 97), np.float32)
    noun_output = np.zeros((n, 300), np.float32)
    verb_output[np.arange(n), val["verb_class"].to_numpy()] = 5
    noun_output[np.arange(n), val["noun_class"].to_numpy()] = 5
    path = tmp_path / "tsn_val.pkl"
    with open(path, "wb") as f:
        pickle.dump({"verb_output": verb_output, "noun_output": noun_output,
                     "narration_id": val["narration_id"].to_numpy()}, f)
    result = runner.invoke(app, [
        "eval", "--results", str(path), "--annotations", str(epic_dir / "EPIC_100_validation.csv"),
        "--unseen", str(epic_dir / "EPIC_100_unseen_participant_ids_validation.csv"),
        "--tail-verbs", str(epic_dir / "EPIC_100_tail_verbs.csv"),
        "--tail-nouns", str(epic_dir / "EPIC_100_tail_nouns.csv"), "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output)["metrics"]
    for key in ("all_action_accuracy_at_1", "unseen_action_accuracy_at_1", "tail_action_accuracy_at_1"):
        assert metrics[key] == 100.0
    sub = tmp_path / "test.zip"
    assert runner.invoke(app, ["submit", str(path), "--out", str(sub)]).exit_code == 0
    with zipfile.ZipFile(sub) as z:
        body = json.loads(z.read("test.json"))
    assert body["challenge"] == "action_recognition" and len(body["results"]) == n


def test_train_errors_are_clear(tmp_path):
    _write_store(tmp_path / "store")
    result = runner.invoke(app, ["train", "--store", str(tmp_path / "store"), "--stream", "nope",
                                 "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "toy/full" in result.output
    result = runner.invoke(app, ["train", "--store", str(tmp_path / "store"), "--stream", "toy/full",
                                 "--head", "nope", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "linear" in result.output


def test_logreg_reference_folds_into_a_linear_checkpoint(tmp_path):
    """`--head logreg` fits scikit-learn; its run evaluates like any other (same predictions)."""
    from egofeat.heads import LogisticRegressionBaseline, load_head_data
    from egofeat.pipelines.evaluate import run_predictions

    _write_store(tmp_path / "store")
    run = tmp_path / "logreg"
    result = runner.invoke(app, ["train", "--store", str(tmp_path / "store"), "--stream", "toy/full",
                                 "--head", "logreg", "--out", str(run), "--json"])
    assert result.exit_code == 0, result.output
    store = FeatureStore.open(tmp_path / "store")
    train = load_head_data(store, ["toy/full"], splits=["train"])
    val = load_head_data(store, ["toy/full"], splits=["val"])
    expected = LogisticRegressionBaseline().fit(train).predict(val)
    predictions, _, _ = run_predictions(run, "val")
    for task in ("verb", "noun"):
        np.testing.assert_allclose(predictions.logits[task], expected[task], rtol=1e-4, atol=1e-3)


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory):
    """The demo's synthetic EPIC-format dataset, extracted (full frame and hand crop)."""
    from egofeat.config import ExtractConfig
    from egofeat.extract.synthetic import write_synthetic_dataset
    from egofeat.pipelines.executors import execute

    root = tmp_path_factory.mktemp("demo")
    dataset = write_synthetic_dataset(root / "dataset", n_videos=4, segments_per_video=10)
    annotations = dataset.annotations_dir
    summary = execute(ExtractConfig(
        annotations=[annotations / "EPIC_100_train.csv", annotations / "EPIC_100_validation.csv"],
        videos=dataset.videos_root, store=root / "store", crop="both", boxes=dataset.videos_root,
        frames=4, workers=0, progress=False))
    return root, summary.store, annotations / "EPIC_100_validation.csv"


def test_two_runs_predictions_go_unchanged_into_fuse_and_eval(demo_store):
    """The one prediction format: the files `train` writes are what fuse and eval --results read."""
    root, store, validation = demo_store
    runs = []
    for head, streams in (("mlp", "tiny/full,tiny/hand"), ("tsn", "tiny/full")):
        run = root / head
        result = runner.invoke(app, ["train", "--store", store, "--stream", streams, "--head", head,
                                     "--out", str(run), "--epochs", "3", "--json"])
        assert result.exit_code == 0, result.output
        runs.append(run / "predictions-val.parquet")
    fused = root / "fused.parquet"
    result = runner.invoke(app, ["fuse", *map(str, runs), "--out", str(fused), "--json"])
    assert result.exit_code == 0, result.output
    from egofeat.eval import load_predictions

    parts = [load_predictions(path) for path in runs]
    both = load_predictions(fused)
    np.testing.assert_allclose(both.logits["verb"],
                               (parts[0].logits["verb"] + parts[1].select(parts[0].segment_ids).logits["verb"]) / 2,
                               rtol=1e-6)
    assert both.class_names["verb"] == parts[0].class_names["verb"]  # names travel with the file
    for path in (*runs, fused):
        result = runner.invoke(app, ["eval", "--results", str(path), "--annotations", str(validation), "--json"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)["scored"] == len(both)
