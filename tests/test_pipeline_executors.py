"""`egofeat extract` executors: serial, dask (LocalCluster on loopback) and torchrun (gloo),
the same features from each, resume, plans, run logs and concurrent writers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from egofeat.cli import app
from egofeat.config import ExtractConfig
from egofeat.extract import plan_videos
from egofeat.extract.synthetic import write_synthetic_dataset
from egofeat.pipelines.executors import part_cost, plan_key, shard_parts
from egofeat.pipelines.extract import (
    PartSpec,
    build_sampler,
    load_annotations,
    plan_parts,
)
from egofeat.store import FeatureStore, StreamBusyError

torch.set_num_threads(1)
#: Child processes compute with one thread too, like this one.
CHILD_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("executors") / "data", n_videos=4,
                                   segments_per_video=3)


def extract_args(dataset, store: Path, *extra: str) -> list[str]:
    annotations = dataset.annotations_dir
    return ["extract", "--annotations", str(annotations / "EPIC_100_train.csv"),
            "--annotations", str(annotations / "EPIC_100_validation.csv"),
            "--videos", str(dataset.videos_root), "--store", str(store), "--frames", "3",
            "--workers", "0", "--json", *extra]


def run_here(args: list[str], exit_code: int = 0) -> dict:
    """Run `egofeat <args>` in this process; its JSON summary."""
    result = CliRunner().invoke(app, args)
    assert result.exit_code == exit_code, result.output
    return json.loads(result.stdout[result.stdout.index("{"):]) if exit_code == 0 else {}


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory) -> Path:
    store = tmp_path_factory.mktemp("reference") / "store"
    run_here(extract_args(dataset, store))
    return store


def assert_same_as(store_path: Path, reference: Path, streams: list[str] | None = None) -> None:
    """Same streams, manifests (but attempt ids) and features bit for bit; each segment once."""
    store, ref = FeatureStore.open(store_path), FeatureStore.open(reference)
    if streams is None:
        assert store.stream_names() == ref.stream_names()
    for name in streams or ref.stream_names():
        got = store.stream(name).manifest().collect().drop("attempt").sort("segment_id")
        want = ref.stream(name).manifest().collect().drop("attempt").sort("segment_id")
        assert got["segment_id"].is_unique().all() and got.equals(want), name
        a, b = store.stream(name).load(), ref.stream(name).load()
        assert a.segment_ids.tolist() == b.segment_ids.tolist()
        assert a.features.tobytes() == b.features.tobytes(), name


def events(store: Path) -> list[dict]:
    return [json.loads(line) for log in sorted((store / "runs").glob("*.jsonl"))
            for line in log.read_text().splitlines()]


# ---- plans and shards ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def parts(dataset):
    options = ExtractConfig(annotations=[dataset.annotations_dir / "EPIC_100_train.csv",
                                          dataset.annotations_dir / "EPIC_100_validation.csv"],
                             videos=dataset.videos_root, store=Path("unused"), frames=3)
    plan = plan_videos(load_annotations(options)[0], build_sampler(options))
    return plan_parts(plan, {"s": set()}, videos_per_part=1)


@pytest.mark.parametrize("how", ["balanced", "strided"])
@pytest.mark.parametrize("world_size", [1, 2, 3, 5])
def test_shards_are_disjoint_cover_the_plan_and_keep_its_order(parts, how, world_size):
    shards = [shard_parts(parts, rank, world_size, how) for rank in range(world_size)]
    ids = [p.part_id for shard in shards for p in shard]
    assert sorted(ids) == sorted(p.part_id for p in parts) and len(set(ids)) == len(ids)
    order = [p.part_id for p in parts]
    for rank, shard in enumerate(shards):
        mine = {p.part_id for p in shard}
        assert [p.part_id for p in shard] == [i for i in order if i in mine]
        # every rank computes the same split, whatever order it listed the parts in
        assert {p.part_id for p in shard_parts(parts[::-1], rank, world_size, how)} == mine


@pytest.mark.parametrize(("world_size", "loads"), [(2, [140, 140]), (3, [100, 90, 90])])
def test_balanced_shards_even_out_frames_to_decode(world_size, loads):
    costs = {"a": 10, "b": 60, "c": 100, "d": 20, "e": 50, "f": 10, "g": 30}
    parts = [PartSpec(pid, (SimpleNamespace(n_unique_frames=cost),), {}) for pid, cost in costs.items()]
    shards = [shard_parts(parts, rank, world_size) for rank in range(world_size)]
    assert [sum(map(part_cost, shard)) for shard in shards] == loads
    strided = [sum(map(part_cost, shard_parts(parts, r, world_size, "strided"))) for r in range(world_size)]
    assert max(strided) > max(loads)
    with pytest.raises(ValueError, match=f"rank {world_size} is not in a world of {world_size}"):
        shard_parts(parts, world_size, world_size)


def test_plan_key_depends_on_part_boundaries_only(parts):
    assert plan_key(parts) == plan_key(list(reversed(parts)))
    assert plan_key(parts) != plan_key(parts[:-1])


# ---- serial, resume, refusals ---------------------------------------------------------------


def test_serial_rerun_does_nothing_and_info_shows_committed_of_planned(dataset, reference):
    summary = run_here(extract_args(dataset, reference))
    assert summary["nothing_to_do"] and summary["planned_parts"] == 0
    (full,) = [s for s in FeatureStore.open(reference).info()["streams"] if s["name"] == "tiny/full"]
    assert (full["committed_parts"], full["planned_parts"]) == (4, 4)
    first, second = (e for e in events(reference) if e["event"] == "start")
    assert (first["parts_todo"], second["parts_todo"]) == (4, 0)
    parts = [e for e in events(reference) if e["event"] == "part"]
    assert len(parts) == 4 and all(p["streams"]["tiny/full"]["ok"] == 3 for p in parts)
    assert all(p["seconds"]["encode"] >= 0 and p["frames"]["encoded"] == 9 for p in parts)
    result = CliRunner().invoke(app, ["info", str(reference)])
    assert "4/4" in result.output


def test_changed_configuration_is_refused_or_goes_to_a_new_stream(dataset, reference, tmp_path):
    store = tmp_path / "store"
    run_here(extract_args(dataset, store, "--limit", "3"))
    result = CliRunner().invoke(app, extract_args(dataset, store, "--frames", "4"))
    assert result.exit_code == 2 and "frames" in result.output and "--tag" in result.output
    run_here(extract_args(dataset, store, "--frames", "4", "--tag", "f4", "--limit", "3", "--no-text"))
    assert FeatureStore.open(store).stream_names() == [
        "tiny/full", "tiny/full-f4", "tiny/text/epic100/noun-names", "tiny/text/epic100/verb-names",
        "tiny/text/narration"]
    # the rest of the first configuration, resumed with the same command minus the limit
    summary = run_here(extract_args(dataset, store))
    assert summary["ok"] == {"tiny/full": 9}
    assert_same_as(store, reference, streams=["tiny/full"])


def test_a_live_run_of_another_plan_keeps_the_stream(dataset, tmp_path):
    store = tmp_path / "store"
    run_here(extract_args(dataset, store, "--limit", "2", "--no-text"))
    stream = FeatureStore.open(store).stream("tiny/full")
    with stream.hold_plan("another-plan"):
        result = CliRunner().invoke(app, extract_args(dataset, store, "--no-text"))
        assert result.exit_code == 2 and "another plan" in result.output
        with stream.hold_plan("another-plan"):  # runs of one plan share the stream
            pass
    run_here(extract_args(dataset, store, "--no-text"))  # released (as by a dead process)
    with pytest.raises(StreamBusyError, match="tiny/full"), stream.hold_plan("a"), stream.hold_plan("b"):
        pass


# ---- dask and torchrun ----------------------------------------------------------------------


def test_dask_local_cluster_two_workers_same_features(dataset, reference, tmp_path):
    store = tmp_path / "store"
    summary = run_here(extract_args(dataset, store, "--executor", "dask", "--dask-workers", "2"))
    assert summary["done_parts"] == 4 and summary["failed_parts"] == []
    assert_same_as(store, reference)
    start, *parts, end = events(store)
    assert start["executor"] == "dask" and start["dask_workers"] == 2
    assert start["scheduler"].startswith("tcp://127.0.0.1:")
    assert len(parts) == 4 and all(p["where"].startswith("tcp://127.0.0.1:") for p in parts)
    assert end["event"] == "end" and end["summary"]["ok"] == {"tiny/full": 12}


def test_torchrun_two_ranks_gloo_same_features(dataset, reference, tmp_path):
    store = tmp_path / "store"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "egofeat", *extract_args(dataset, store, "--executor", "torchrun")]
    result = subprocess.run(command, env=CHILD_ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout[result.stdout.index("{"):])  # rank 0 reports for all
    assert summary["done_parts"] == 4 and summary["ok"] == {"tiny/full": 12}
    assert_same_as(store, reference)
    logs = sorted(p.name for p in (store / "runs").glob("*.jsonl"))
    assert len(logs) == 2 and logs[0].endswith(".rank0.jsonl") and logs[1].endswith(".rank1.jsonl")
    wrote = {e["where"]: e["part_id"] for e in events(store) if e["event"] == "part"}
    assert set(wrote) == {"rank 0", "rank 1"}


def test_torchrun_without_torchrun_says_how_to_launch(dataset, tmp_path, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    result = CliRunner().invoke(app, extract_args(dataset, tmp_path / "s", "--executor", "torchrun"))
    assert result.exit_code == 2 and "torchrun --nproc_per_node=N -m egofeat extract" in result.output


def test_unknown_executor_is_a_usage_error(dataset, tmp_path):
    result = CliRunner().invoke(app, extract_args(dataset, tmp_path / "s", "--executor", "spark"))
    assert result.exit_code == 2 and "--executor: expected one of 'serial', 'dask' or 'torchrun'" in result.output


# ---- concurrent writers ---------------------------------------------------------------------


def test_two_concurrent_extract_processes_write_each_part_once(dataset, reference, tmp_path):
    store = tmp_path / "store"
    command = [sys.executable, "-m", "egofeat", *extract_args(dataset, store)]
    children = [subprocess.Popen(command, env=CHILD_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True) for _ in range(2)]
    outputs = [child.communicate(timeout=300) for child in children]
    assert [child.returncode for child in children] == [0, 0], [err[-2000:] for _, err in outputs]
    summaries = [json.loads(out[out.index("{"):]) for out, _ in outputs]
    assert sum(s["done_parts"] for s in summaries) == 4  # each part written by one of them
    assert_same_as(store, reference)
    commits = [json.loads(p.read_text()) for p in (store / "streams/tiny/full/commits").glob("*.json")]
    assert len(commits) == 4


def test_concurrent_consolidations_keep_each_others_files(tmp_path):
    stream = FeatureStore.create(tmp_path / "store").create_stream(
        "s/full", dim=4, provenance={"encoder": "test"}, frames_per_row=1)
    for i in range(10):
        with stream.part_writer(f"p{i}") as writer:
            writer.add(f"seg{i}", "v", np.full((1, 4), i))
    errors: list[BaseException] = []

    def consolidate_repeatedly() -> None:
        try:
            for _ in range(100):
                stream.consolidate()
                assert stream.manifest().collect().height == 10
        except BaseException as error:  # re-raised below, in the test's thread
            errors.append(error)

    threads = [threading.Thread(target=consolidate_repeatedly) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_shards_of_a_slurm_array_write_disjoint_parts_of_one_store(dataset, reference, tmp_path):
    store = tmp_path / "store"
    children = [subprocess.Popen([sys.executable, "-m", "egofeat", *extract_args(dataset, store, "--shard", f"{i}/2")],
                                 env=CHILD_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for i in range(2)]
    outputs = [child.communicate(timeout=300) for child in children]
    assert [child.returncode for child in children] == [0, 0], [err[-2000:] for _, err in outputs]
    summaries = [json.loads(out[out.index("{"):]) for out, _ in outputs]
    assert [s["done_parts"] for s in summaries] == [2, 2] and [s["planned_parts"] for s in summaries] == [2, 2]
    assert_same_as(store, reference)
    decoded = [{e["part_id"] for e in events_of(log) if e["event"] == "part"} for log in sorted((store / "runs").glob("*.jsonl"))]
    assert len(decoded) == 2 and not decoded[0] & decoded[1]  # no part decoded twice
    (info,) = [s for s in FeatureStore.open(store).info()["streams"] if s["name"] == "tiny/full"]
    assert (info["committed_parts"], info["planned_parts"]) == (4, 4)


def test_a_shard_answers_for_its_own_segments(dataset, tmp_path):
    store = tmp_path / "store"
    run_here(extract_args(dataset, store, "--shard", "0/2"))
    rest = run_here(extract_args(dataset, store, "--shard", "1/2"))
    assert rest["done_parts"] == 2 and not rest["failed"]
    for bad, message in (("2/2", "must be below the number of shards (2)"), ("1/2 --executor dask", "--executor dask shards")):
        result = CliRunner(env={"COLUMNS": "1000"}).invoke(app, extract_args(dataset, store, "--shard", *bad.split()))
        assert result.exit_code == 2 and message in result.output, result.output


def events_of(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()]
