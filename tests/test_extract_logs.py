"""What `egofeat extract` prints where a cluster shows it: progress lines in a log file, JSON
lines with --json, and native decoder output kept off the console (in the error row and the
run log instead).

The runs that must last a few seconds encode with ``slow``, the ``tiny`` encoder registered
under another name with a sleep per batch: long runs without CPU load.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from test_pipeline_crash import CHILD_ENV
from typer.testing import CliRunner

from egofeat.cli import app
from egofeat.extract.encoders import registry
from egofeat.extract.encoders.tiny import create_tiny_encoder
from egofeat.extract.synthetic import write_synthetic_dataset
from egofeat.store import FeatureStore

PROGRESS_LINE = re.compile(r"^extract: (\d+)/(\d+) parts \(\d+%\) \| [\d.,]+ frames/s \| ETA \S+ \| "
                           r"segments ok [\d,]+ segments errors [\d,]+$")


def slow_encoder(spec: str, **kwargs):
    """``slow:<seconds>``: the tiny encoder, sleeping that long per batch."""
    encoder = create_tiny_encoder("", **kwargs)
    encode = encoder.encode

    def slowly(images: np.ndarray) -> np.ndarray:
        time.sleep(float(spec))
        return encode(images)

    encoder.encode = slowly
    return encoder


#: `python -c` prelude of a child `egofeat` with the slow encoder (and FFmpeg's own logging
#: on stderr, as PyAV builds that log natively print it)
CHILD = """
import sys
import av.logging
av.logging.restore_default_callback()
from test_extract_logs import slow_encoder
from egofeat.extract.encoders import register_encoder
register_encoder("slow", slow_encoder)
from egofeat.cli import main
sys.argv = ["egofeat", *sys.argv[1:]]
main()
"""


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_synthetic_dataset(tmp_path_factory.mktemp("logs") / "data", n_videos=6, segments_per_video=2)


def extract_args(dataset, store: Path, *extra: str) -> list[str]:
    annotations = dataset.annotations_dir
    return ["extract", "--annotations", str(annotations / "EPIC_100_train.csv"),
            "--annotations", str(annotations / "EPIC_100_validation.csv"), "--videos", str(dataset.videos_root),
            "--store", str(store), "--frames", "2", "--workers", "0", "--no-text", *extra]


def run_child(args: list[str], log: Path) -> int:
    """`egofeat <args>` in a child process, stdout and stderr into ``log`` (as SLURM does)."""
    with log.open("w") as out:
        return subprocess.run([sys.executable, "-c", CHILD, *args], stdout=out, stderr=subprocess.STDOUT,
                              env={**CHILD_ENV, "PYTHONPATH": f"{Path(__file__).parent}:{CHILD_ENV.get('PYTHONPATH', '')}"},
                              timeout=300).returncode


def test_a_log_file_gets_a_progress_line_every_log_interval(dataset, tmp_path):
    store, log = tmp_path / "store", tmp_path / "slurm.out"
    code = run_child(extract_args(dataset, store, "--encoder", "slow:1", "--log-interval", "1"), log)
    text = log.read_text()
    assert code == 0, text
    lines = [line for line in text.splitlines() if line.startswith("extract: ")]
    assert all(PROGRESS_LINE.match(line) for line in lines), lines
    (run_log,) = (store / "runs").glob("*.jsonl")
    events = [json.loads(line) for line in run_log.read_text().splitlines()]
    seconds = events[-1]["time"] - events[0]["time"]
    assert seconds >= 5, f"the run took {seconds:.1f} s: too short to test"
    assert len(lines) >= 3 and len(lines) >= int(seconds) - 2, (seconds, lines)
    done = [int(PROGRESS_LINE.match(line).group(1)) for line in lines]
    assert done == sorted(done) and done[-1] == 6 and lines[-1].startswith("extract: 6/6 parts (100%)")
    assert f"videos: 6 of 6 found under {dataset.videos_root}" in text


def test_json_lines_on_stderr_and_the_summary_on_stdout(dataset, tmp_path, monkeypatch):
    monkeypatch.setitem(registry._FAMILIES, "slow", registry._Family(slow_encoder, "slow:<seconds>"))
    result = CliRunner().invoke(app, extract_args(dataset, tmp_path / "store", "--encoder", "slow:0.3",
                                                  "--log-interval", "0.2", "--json"))
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["ok"] == {"slow-0.3/full": 12}
    records = [json.loads(line) for line in result.stderr.splitlines()]
    videos, progress = records[0], records[1:]
    assert videos["what"] == "videos" and videos["found"] == 6
    assert len(progress) >= 4 and all(r["what"] == "extract" and r["unit"] == "parts" for r in progress)
    last = progress[-1]
    assert (last["done"], last["total"], last["segments_ok"], last["segments_errors"]) == (6, 6, 12, 0)
    assert last["rate_unit"] == "frames/s" and last["eta_sec"] == 0


def test_native_decoder_output_goes_to_the_error_row_and_the_run_log_not_the_console(dataset, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(dataset.root, root)
    broken = root / "P01" / "videos" / "P01_02.MP4"
    broken.write_bytes(broken.read_bytes()[: broken.stat().st_size // 2])  # its moov atom is at the end
    store, log = tmp_path / "store", tmp_path / "console.txt"
    args = extract_args(dataset, store)
    args[args.index("--videos") + 1] = str(root)
    args[args.index("--annotations") + 1] = str(root / "annotations" / "EPIC_100_train.csv")
    args[args.index("--annotations", 2) + 1] = str(root / "annotations" / "EPIC_100_validation.csv")
    assert run_child(args, log) == 1
    console = log.read_text()
    assert "moov atom" not in console and "error rows for the requested segments" in console
    rows = FeatureStore.open(store).stream("tiny/full").manifest().collect().filter(pl.col("status") == "error")
    assert rows.height == 2 and all("[decoder output: [mov,mp4" in e and "moov atom not found" in e for e in rows["error"])
    assert set(rows["error_reason"]) == {"unreadable-video"}
    (run_log,) = (store / "runs").glob("*.jsonl")
    outputs = [json.loads(line) for line in run_log.read_text().splitlines() if '"decoder_output"' in line]
    assert [(e["path"], "moov atom not found" in e["output"]) for e in outputs] == [(str(broken), True)]
