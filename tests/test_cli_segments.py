"""`egofeat segments` on the real EPIC-100 files and on broken input."""

from __future__ import annotations

import json

import polars as pl
from typer.testing import CliRunner

from egofeat.cli import app
from egofeat.store import FeatureStore

runner = CliRunner()


def test_segments_summary_of_real_validation_file(epic_dir, tmp_path):
    out = tmp_path / "val.parquet"
    result = runner.invoke(app, ["segments", str(epic_dir / "EPIC_100_validation.csv"), "--json",
                                 "--out", str(out), "--store", str(tmp_path / "store")])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert (summary["rows"], summary["videos"], summary["participants"]) == (9668, 138, 32)
    assert (summary["verb_classes_present"], summary["noun_classes_present"]) == (78, 211)
    assert pl.read_parquet(out).height == 9668
    assert summary["added_to_store"] == 9668
    assert FeatureStore.open(tmp_path / "store").segments().collect().height == 9668


def test_segments_test_file_has_no_labels(epic_dir):
    result = runner.invoke(app, ["segments", str(epic_dir / "EPIC_100_test_timestamps.csv"), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["rows"] == 13092 and summary["labelled_rows"] == 0


def test_pickle_refused_without_flag(epic_dir):
    result = runner.invoke(app, ["segments", str(epic_dir / "EPIC_100_validation.pkl")])
    assert result.exit_code == 2 and "pickle" in result.output


def test_broken_file_names_row_and_column(tmp_path, epic_dir):
    lines = (epic_dir / "EPIC_100_validation.csv").read_text().splitlines()[:4]
    header, row = lines[0], lines[2].split(",")
    row[4] = "00:00:99.xx"  # start_timestamp
    bad = tmp_path / "EPIC_100_validation.csv"
    bad.write_text("\n".join([header, lines[1], ",".join(row), lines[3]]) + "\n")
    result = runner.invoke(app, ["segments", str(bad)])
    assert result.exit_code == 2
    assert "row 2" in result.output and "start_timestamp" in result.output


def test_ego4d_lta_file_with_xmic_classes_and_window(shared_data, tmp_path):
    """An LTA file labelled in X-MIC's Ego4D vocabulary (its split lists), X-MIC's window."""
    clip = {"clip_uid": "c1", "video_uid": "v1", "action_idx": 0, "clip_parent_start_sec": 0.0,
            "clip_parent_end_sec": 300.0, "action_clip_start_sec": 10.0, "action_clip_end_sec": 18.0,
            "verb": "cut_(trim,_slice,_chop)", "noun": "nut_(food)", "verb_label": 0,
            "noun_label": 0}
    path = tmp_path / "fho_lta_train.json"
    path.write_text(json.dumps({"clips": [clip]}))
    result = runner.invoke(app, ["segments", str(path), "--dataset", "ego4d", "--window",
                                 "xmic-original", "--classes", str(shared_data / "xmic_splits"),
                                 "--json", "--out", str(tmp_path / "t.parquet")])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["splits"] == {"train": 1} and summary["vocabularies"]["noun"]["classes"] == 521
    row = pl.read_parquet(tmp_path / "t.parquet").row(0, named=True)
    assert (row["start_sec"] * 30, row["end_sec"] * 30) == (367, 499)
    assert row["noun_class"] is not None and row["verb_class"] is not None
    bad = runner.invoke(app, ["segments", str(path), "--dataset", "ego4d", "--window", "middle"])
    assert bad.exit_code == 2 and "--window" in bad.output
