"""Crash safety of `egofeat extract`: real processes killed with SIGKILL, then the same command.

Processes die at named points through the test hook ``EGOFEAT_TEST_CRASH_AT=<point>:<n>``
(:mod:`egofeat.store.crashpoints`), or are killed from outside once their first part is
committed. Every resumed store must hold the same features, bit for bit, as an uninterrupted
run, with every segment exactly once and nothing left of the crashed attempts.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from egofeat.cli import app
from egofeat.extract.synthetic import write_synthetic_dataset
from egofeat.store import FeatureStore
from egofeat.store.crashpoints import CRASH_AT_ENV, CRASH_FLAG_ENV

torch.set_num_threads(1)
#: Child processes compute with one thread too, like this one.
CHILD_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("crash") / "data", n_videos=4,
                                   segments_per_video=3)


def extract_args(dataset, store: Path, *extra: str) -> list[str]:
    annotations = dataset.annotations_dir
    return ["extract", "--annotations", str(annotations / "EPIC_100_train.csv"),
            "--annotations", str(annotations / "EPIC_100_validation.csv"),
            "--videos", str(dataset.videos_root), "--store", str(store), "--frames", "3",
            "--workers", "0", "--json", *extra]


def run_here(args: list[str]) -> dict:
    """Run `egofeat <args>` in this process; its JSON summary."""
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout[result.stdout.index("{"):])


def run_child(args: list[str], crash_at: str) -> subprocess.CompletedProcess:
    """Run `python -m egofeat <args>` in a new process that dies at ``crash_at``."""
    return subprocess.run([sys.executable, "-m", "egofeat", *args], env={**CHILD_ENV, CRASH_AT_ENV: crash_at},
                          capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory) -> Path:
    """An uninterrupted run."""
    store = tmp_path_factory.mktemp("reference") / "store"
    run_here(extract_args(dataset, store))
    return store


def assert_same_as(store_path: Path, reference: Path) -> None:
    """Same streams, manifests (but attempt ids) and features, bit for bit; each segment once;
    no attempt or temporary commit record left without a commit."""
    store, ref = FeatureStore.open(store_path), FeatureStore.open(reference)
    assert store.stream_names() == ref.stream_names()
    for name in ref.stream_names():
        stream, expected = store.stream(name), ref.stream(name)
        got = stream.manifest().collect().drop("attempt").sort("segment_id")
        want = expected.manifest().collect().drop("attempt").sort("segment_id")
        assert got["segment_id"].is_unique().all(), f"{name}: a segment is in the manifest twice"
        assert got.equals(want), name
        a, b = stream.load(), expected.load()
        assert a.segment_ids.tolist() == b.segment_ids.tolist()
        assert a.features.dtype == b.features.dtype and a.features.tobytes() == b.features.tobytes(), name
        assert stream.uncommitted_attempts() == [], name
        assert all(n.endswith(".json") for n in os.listdir(commits_dir(store_path, name))), name


def commits_dir(store: Path, stream: str = "tiny/full") -> Path:
    return store / "streams" / stream / "commits"


def test_one_store_through_four_driver_crashes(dataset, reference, tmp_path):
    """Each run resumes the last one's crash, makes progress, and dies at the next point."""
    store = tmp_path / "store"
    args = extract_args(dataset, store)
    stream = lambda: FeatureStore.open(store).stream("tiny/full")  # noqa: E731

    # features and manifest of part 2 written, its commit record not
    assert run_child(args, "before_commit:2").returncode == -signal.SIGKILL
    assert len(stream().committed_parts()) == 1 and len(stream().uncommitted_attempts()) == 1
    # its attempt removed and redone; dies linking part 3's record into place
    assert run_child(args, "create_exclusive:2").returncode == -signal.SIGKILL
    assert len(stream().committed_parts()) == 2
    assert any(".json.tmp-" in name for name in os.listdir(commits_dir(store)))
    # part 3 committed, the run neither logged nor consolidated it
    assert run_child(args, "after_commit:1").returncode == -signal.SIGKILL
    assert len(stream().committed_parts()) == 3
    # the last part logged, then killed before the text streams
    assert run_child(args, "after_part:1").returncode == -signal.SIGKILL
    assert len(stream().committed_parts()) == 4 and FeatureStore.open(store).stream_names() == ["tiny/full"]

    summary = run_here(args)  # no manual cleanup: the dead processes' leases went with them
    assert summary["nothing_to_do"] and summary["text_streams"]
    assert_same_as(store, reference)
    logs = sorted((store / "runs").glob("*.jsonl"))  # run ids sort by start time
    assert len(logs) == 5
    first = [json.loads(line)["event"] for line in logs[0].read_text().splitlines()]
    assert first[0] == "start" and first[-1] == "part"  # the log ends where the process died
    assert "end" in logs[-1].read_text()


def test_driver_killed_from_outside_while_decoding(dataset, reference, tmp_path):
    store = tmp_path / "store"
    args = extract_args(dataset, store, "--workers", "1")
    child = subprocess.Popen([sys.executable, "-m", "egofeat", *args], env=CHILD_ENV,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not any(commits_dir(store).glob("*.json")) and time.monotonic() < deadline:
        time.sleep(0.005)
    child.kill()  # SIGKILL, while its decode worker decodes the next videos ahead
    assert child.wait() == -signal.SIGKILL
    assert len(FeatureStore.open(store).stream("tiny/full").committed_parts()) < 4
    run_here(args)
    assert_same_as(store, reference)


# ---- dask ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster():
    """A two-worker cluster on loopback that the tests reach through --scheduler."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None,
                      silence_logs=logging.ERROR) as local, Client(local) as client:
        yield client


def test_dask_worker_killed_before_commit_is_retried(dataset, reference, tmp_path, cluster):
    store = tmp_path / "store"
    crash = {CRASH_AT_ENV: "before_commit:1", CRASH_FLAG_ENV: str(tmp_path / "crashed")}
    # (a lambda: os.environ.update itself would be pickled as a copy of this process's mapping)
    cluster.run(lambda: os.environ.update(crash))  # a nanny restarts its worker without them
    try:
        summary = run_here(extract_args(dataset, store, "--executor", "dask",
                                        "--scheduler", cluster.scheduler.address))
    finally:
        cluster.run(lambda: [os.environ.pop(key, None) for key in crash])
    assert (tmp_path / "crashed").exists(), "no worker crashed"
    assert summary["failed_parts"] == [] and summary["done_parts"] == 4
    assert_same_as(store, reference)


def test_dask_driver_killed_then_resumed(dataset, reference, tmp_path, cluster):
    store = tmp_path / "store"
    args = extract_args(dataset, store, "--executor", "dask", "--scheduler", cluster.scheduler.address)
    crashed = run_child(args, "after_part:1")
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    assert FeatureStore.open(store).stream("tiny/full").committed_parts()
    run_here(args)
    assert_same_as(store, reference)
    # the killed driver never unregistered its worker plugin (its encoders): the next driver
    # that uses the cluster does
    run_here(extract_args(dataset, tmp_path / "other", "--executor", "dask", "--limit", "3",
                          "--scheduler", cluster.scheduler.address))
    plugins = cluster.run(lambda dask_worker: [n for n in dask_worker.plugins if n.startswith("egofeat")])
    assert all(names == [] for names in plugins.values()), plugins
    (info,) = [s for s in FeatureStore.open(store).info()["streams"] if s["name"] == "tiny/full"]
    assert (info["committed_parts"], info["planned_parts"]) == (4, 4)
