"""Fatal errors through the command line: one line, exit status 2, no traceback, nothing
written half-way (``--debug`` shows the traceback); messages name CLI flags, never Python
arguments. Also `egofeat --version` and the machine-readable catalogs."""

from __future__ import annotations

import errno
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_store_errors import Disk, chmod_tree, store_files, unprivileged
from typer.testing import CliRunner

import egofeat
from egofeat.cli import app
from egofeat.config import ExtractConfig
from egofeat.extract.synthetic import write_synthetic_dataset
from egofeat.pipelines.executors import execute

torch.set_num_threads(1)
runner = CliRunner(env={"COLUMNS": "1000"})
PACKAGE = Path(egofeat.__file__).parent


def one_line(argv: list[str]) -> str:
    """The single line of a command that failed with exit status 2 (and no traceback)."""
    result = runner.invoke(app, argv)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("clierr") / "data", n_videos=3, segments_per_video=4)


@pytest.fixture(scope="module")
def store(dataset, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("store") / "store"
    annotations = dataset.annotations_dir
    execute(ExtractConfig(annotations=[annotations / "EPIC_100_train.csv", annotations / "EPIC_100_validation.csv"],
                          videos=dataset.videos_root, store=path, frames=2, workers=0, progress=False))
    return path


@pytest.fixture(scope="module")
def trained(store, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "run"
    result = runner.invoke(app, ["train", "--store", str(store), "--stream", "tiny/full", "--out", str(run),
                                 "--epochs", "1", "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    return run


def extract_args(dataset, store: Path, *extra: str) -> list[str]:
    return ["extract", "--annotations", str(dataset.annotations_dir / "EPIC_100_train.csv"),
            "--videos", str(dataset.videos_root), "--store", str(store), "--frames", "2", "--workers", "0",
            "--no-text", *extra]


def test_device_cuda_without_cuda_on_every_command_that_takes_a_device(dataset, store, trained, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    new = tmp_path / "new"
    commands = {
        "extract": extract_args(dataset, new / "store"),
        "train": ["train", "--store", str(store), "--stream", "tiny/full", "--out", str(new / "run")],
        "predict": ["predict", str(trained), "--out", str(new / "predictions.parquet")],
        "eval": ["eval", str(trained)],
        "distill": ["distill", "--teachers", str(trained), "--stream", "tiny/full", "--out", str(new / "student")],
        "run xmic": ["run", "xmic", "--store", str(store), "--out", str(new / "xmic"), "--encoder", "tiny",
                     "--source", "epic100", "--target", "ego4d"],
    }
    streams = sorted(p.relative_to(store) for p in (store / "streams").rglob("stream.json"))
    for name, argv in commands.items():
        line = one_line([*argv, "--device", "cuda"])
        assert "'cuda'" in line and "no CUDA GPU" in line and "--device cpu" in line, (name, line)
    assert not new.exists(), "a command wrote before refusing the device"
    assert sorted(p.relative_to(store) for p in (store / "streams").rglob("stream.json")) == streams


def test_bad_sql_names_the_tables_and_their_columns(store):
    line = one_line(["query", str(store), "SELEC segment_id FROM manifest"])
    assert "bad SQL: sql parser error" in line and "Resolved plan" not in line
    assert re.search(r"Tables: segments \([^)]*segment_id[^)]*\); manifest \([^)]*status[^)]*error_reason", line)
    line = one_line(["query", str(store), "SELECT nope FROM segments"])
    assert 'unable to find column "nope"' in line and "manifest (" in line


def test_debug_shows_the_traceback(store):
    for argv in (["--debug", "query", str(store), "SELEC 1"], ["query", str(store), "SELEC 1", "--debug"]):
        result = runner.invoke(app, argv)
        assert result.exit_code == 1 and type(result.exception).__name__ == "QueryError", result.output


def test_a_read_only_store_stops_extract_in_one_line(dataset, store, tmp_path, monkeypatch):
    copy = tmp_path / "store"
    subprocess.run(["cp", "-a", str(store), str(copy)], check=True)
    before = store_files(copy)
    Disk(monkeypatch, errno.EROFS)
    line = one_line(extract_args(dataset, copy, "--tag", "more"))
    assert f"store {copy} is on a read-only filesystem" in line and "remount" in line
    assert store_files(copy) == before


def test_a_full_disk_stops_a_query_free_command_in_one_line(dataset, tmp_path, monkeypatch):
    Disk(monkeypatch, errno.ENOSPC)
    line = one_line(["segments", str(dataset.annotations_dir / "EPIC_100_train.csv"), "--store", str(tmp_path / "s")])
    assert "no space left for store" in line and "free space" in line


def test_a_permission_denied_store_stops_extract_in_one_line(dataset, store, tmp_path):
    copy = tmp_path / "store"
    subprocess.run(["cp", "-a", str(store), str(copy)], check=True)
    before = store_files(copy)
    chmod_tree(copy, writable=False)
    try:
        result = subprocess.run(unprivileged([sys.executable, "-m", "egofeat", *extract_args(dataset, copy, "--tag", "x")]),
                                capture_output=True, text=True, timeout=180, env={"COLUMNS": "1000", "PATH": "/usr/bin:/bin",
                                                                                "PYTHONPATH": str(PACKAGE.parent)})
    finally:
        chmod_tree(copy, writable=True)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert "permission denied" in result.stderr and str(copy) in result.stderr
    assert store_files(copy) == before


def test_a_newer_store_format_stops_every_store_command_in_one_line(dataset, store, tmp_path):
    copy = tmp_path / "store"
    subprocess.run(["cp", "-a", str(store), str(copy)], check=True)
    marker = copy / "egofeat-store.json"
    marker.write_text(json.dumps({**json.loads(marker.read_text()), "format_version": 99}))
    before = store_files(copy)
    for argv in (extract_args(dataset, copy), ["info", str(copy)], ["query", str(copy), "SELECT 1"],
                 ["export", str(copy), "--stream", "tiny/full", "--out", str(tmp_path / "x.npy")],
                 ["train", "--store", str(copy), "--stream", "tiny/full", "--out", str(tmp_path / "run")]):
        line = one_line(argv)
        assert "format version 99" in line and "upgrade egofeat" in line, (argv[0], line)
    assert store_files(copy) == before and not (tmp_path / "run").exists()


def test_messages_name_cli_flags(dataset, tmp_path):
    pkl = tmp_path / "EPIC_100_train.pkl"
    pkl.write_bytes(b"not read")
    line = one_line(["segments", str(pkl)])
    assert "--allow-pickle" in line and "allow_pickle" not in line
    renamed = tmp_path / "my_segments.csv"
    renamed.write_bytes((dataset.annotations_dir / "EPIC_100_train.csv").read_bytes())
    line = one_line(["segments", str(renamed)])
    assert "--split" in line and "split=" not in line


#: messages whose advice names an argument that no command-line flag sets: the Python API is
#: the only way to act on them (none left: each names its flag, or its Python call beside it)
PYTHON_ONLY: set[str] = set()


def test_no_error_message_gives_python_argument_advice():
    """``pass name=...`` advice in a string: what a command-line user cannot act on."""
    advice = re.compile(r"""["'][^"'\n]*\bpass [a-z_]+=""")
    found = []
    for path in PACKAGE.rglob("*.py"):
        name = str(path.relative_to(PACKAGE))
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if advice.search(line) and name not in PYTHON_ONLY:
                found.append(f"{name}:{number}: {line.strip()}")
    assert not found, "\n".join(found)


def test_version_and_json_catalogs():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"egofeat {egofeat.__version__}"
    heads = json.loads(runner.invoke(app, ["heads", "--json"]).stdout)
    assert heads["heads"]["linear"]["task"] == "classification" and "classification" in heads["tasks"]
    encoders = json.loads(runner.invoke(app, ["encoders", "--json"]).stdout)
    assert encoders["tiny"] == "tiny" and encoders["clip"].startswith("clip:")


def test_missing_encoder_weights_name_cache_dir_and_nothing_is_written(dataset, tmp_path):
    empty = tmp_path / "hub"
    empty.mkdir()
    store = tmp_path / "store"
    line = one_line(extract_args(dataset, store, "--encoder", "dino:vit_s16", "--cache-dir", str(empty)))
    assert "not cached" in line and str(empty) in line and "--cache-dir" in line and "cache_dir=" not in line
    assert not store.exists()
