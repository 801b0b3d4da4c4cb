"""Object storage from the command line: ``--store s3://…`` on a local S3 server (moto, see
conftest.py), with credentials only from the environment.

`egofeat extract` into a bucket is killed with SIGKILL after its first part, run again, and
equals a clean local run; zarr + polars alone read the bucket back (FORMAT.md's recipe); info,
query, export, train and segments take the URL too; the credentials appear in no output or
run log.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import fsspec
import numpy as np
import pytest
import torch
from test_store_concurrency import assert_same_store
from test_store_format import run_recipe
from typer.testing import CliRunner

from egofeat.cli import app
from egofeat.extract.synthetic import write_synthetic_dataset
from egofeat.store import FeatureStore
from egofeat.store.crashpoints import CRASH_AT_ENV

torch.set_num_threads(1)
runner = CliRunner(env={"COLUMNS": "1000"})


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("s3cli") / "data", n_videos=4, segments_per_video=3)


def extract_args(dataset, store: str) -> list[str]:
    annotations = dataset.annotations_dir
    return ["extract", "--annotations", str(annotations / "EPIC_100_train.csv"),
            "--annotations", str(annotations / "EPIC_100_validation.csv"), "--videos", str(dataset.videos_root),
            "--store", store, "--frames", "3", "--workers", "0", "--json"]


def test_extract_into_a_bucket_killed_and_resumed_equals_a_local_run(dataset, s3_bucket, s3_env, tmp_path):
    url = f"{s3_bucket}/features.egofeat"
    env = {**os.environ, "OMP_NUM_THREADS": "1", CRASH_AT_ENV: "after_part:1"}
    killed = subprocess.run([sys.executable, "-m", "egofeat", *extract_args(dataset, url)], env=env,
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert len(FeatureStore.open(url).stream("tiny/full").committed_parts()) == 1
    resumed = runner.invoke(app, extract_args(dataset, url))
    assert resumed.exit_code == 0, resumed.output
    summary = json.loads(resumed.stdout)
    assert summary["store"] == url and summary["done_parts"] == 3 and not summary["failed"]

    local = tmp_path / "local"
    assert runner.invoke(app, extract_args(dataset, str(local))).exit_code == 0
    assert_same_store(url, local)
    # zarr + polars alone, from the bucket, with the endpoint and credentials of the environment
    remote = run_recipe(url, "tiny/full", env=s3_env)
    assert remote == run_recipe(str(local), "tiny/full") and len(remote["ids"]) == 12

    # the store commands take the URL too
    info = json.loads(runner.invoke(app, ["info", url, "--json"]).stdout)
    assert {s["name"]: s["ok"] for s in info["streams"]}["tiny/full"] == 12
    rows = json.loads(runner.invoke(app, ["query", url, "SELECT COUNT(*) AS n FROM manifest WHERE stream = 'tiny/full'",
                                          "--json"]).stdout)
    assert rows == [{"n": 12}]
    out = tmp_path / "full.npy"
    assert runner.invoke(app, ["export", url, "--stream", "tiny/full", "--out", str(out)]).exit_code == 0
    np.testing.assert_array_equal(np.load(out), np.load(_export(local, tmp_path / "local.npy")))
    assert json.loads(runner.invoke(app, ["info", f"file://{local}", "--json"]).stdout)["path"] == str(local)
    result = runner.invoke(app, ["train", "--store", url, "--stream", "tiny/full", "--out", str(tmp_path / "run"),
                                 "--epochs", "1", "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "run" / "run.json").read_text())["store"] == url
    segments = runner.invoke(app, ["segments", str(dataset.annotations_dir / "EPIC_100_train.csv"),
                                   "--store", f"{s3_bucket}/other", "--json"])
    assert segments.exit_code == 0 and json.loads(segments.stdout)["added_to_store"] == 9

    # independent jobs cannot share a bucket's stream: no locks there
    result = runner.invoke(app, [*extract_args(dataset, url), "--shard", "0/2"])
    assert result.exit_code == 2 and "--shard needs a store on a filesystem with locks" in result.output

    # credentials come from the environment and go nowhere else
    fs = fsspec.filesystem("s3")
    logs = "".join(fs.cat_file(path).decode() for path in fs.glob(f"{url}/runs/*.jsonl"))
    secret = s3_env["AWS_SECRET_ACCESS_KEY"]
    for text in (killed.stdout, killed.stderr, resumed.output, logs):
        assert secret not in text


def _export(store, out):
    assert runner.invoke(app, ["export", str(store), "--stream", "tiny/full", "--out", str(out)]).exit_code == 0
    return out
