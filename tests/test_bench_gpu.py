"""bench/gpu.sh and bench/gpu.py: what runs without a GPU (the script's checks, the sections'
code on the CPU with the tiny encoder), so the GPU run does not break on a first try."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def test_gpu_sh_parses_and_refuses_unknown_options():
    assert subprocess.run(["bash", "-n", str(BENCH / "gpu.sh")]).returncode == 0
    shown = subprocess.run(["bash", str(BENCH / "gpu.sh"), "--help"], capture_output=True, text=True)
    assert shown.returncode == 0 and "--wheels DIR" in shown.stdout
    wrong = subprocess.run(["bash", str(BENCH / "gpu.sh"), "--fast"], capture_output=True, text=True)
    assert wrong.returncode == 2 and "unknown option --fast" in wrong.stderr


def test_gpu_sh_names_missing_packages_and_how_to_bring_them(tmp_path):
    # A Python that finds none of egofeat's dependencies: isolated mode, no site-packages.
    python = tmp_path / "python3"
    python.write_text(f"#!/bin/sh\nexec {sys.executable} -I -S \"$@\"\n")
    python.chmod(0o755)
    done = subprocess.run(["bash", str(BENCH / "gpu.sh"), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, env={**os.environ, "PYTHON": str(python)})
    assert done.returncode == 2
    assert "missing Python packages: av numpy" in done.stderr and "--fetch-wheels" in done.stderr


@pytest.mark.slow
def test_gpu_py_sections_run_on_the_cpu_and_report_nvdec_fallbacks(tmp_path):
    command = [sys.executable, str(BENCH / "gpu.py"), "--device", "cpu", "--quick",
               "--sections", "decode,encode", "--workers", "1", "--encode-frames", "64",
               "--dir", str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(BENCH.parent)})
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["environment"]["device"] == "cpu"
    decode = result["decode"]
    assert decode["256p_cpu"]["useful_fps"] > 0 and decode["256p_cpu"]["errors"] == []
    assert decode["256p_cpu"]["cpu_fallbacks"] == 0
    # no CUDA here: every NVDEC job was decoded on the CPU, and says so
    nvdec = decode["256p_cuda"]
    assert nvdec["errors"] == [] and nvdec["cpu_fallbacks"] == nvdec["jobs"] > 0
    assert nvdec["fallback_example"].startswith("decoded on the CPU")
    assert result["encode"]["frames"] == 64 and result["encode"]["eager_fps"] > 0
