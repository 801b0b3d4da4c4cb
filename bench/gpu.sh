#!/usr/bin/env bash
# The GPU benchmark of egofeat, for one H100/H200 node without internet (under 8 minutes).
#
#   bench/gpu.sh [--wheels DIR] [--out DIR] [--compile]    run it; JSON in OUT/gpu.json
#   bench/gpu.sh --fetch-wheels DIR                         where PyPI is reachable: download
#                                                          the wheels a CUDA node may lack
#
# What it measures (bench/gpu.py): decode frames/s on the CPU and with NVDEC (torchcodec),
# CLIP ViT-B/16 (random weights, 224 px, bf16) encode frames/s, `egofeat extract` with full and
# hand streams on 456x256 and 1080p synthetic videos, the dask executor with one worker per
# GPU, one X-MIC epoch (15 implied) and a TRN epoch at EPIC-100-train scale on synthetic
# features. Nothing is downloaded: videos, boxes, features and weights are made on the spot.
#
# Python: the `python3` on PATH (or $PYTHON) with torch and CUDA. egofeat's other dependencies
# come from --wheels DIR (pip --no-index) when they are not importable. NVDEC through torchcodec
# needs FFmpeg's shared libraries (4 to 8); put them in $EGOFEAT_FFMPEG_LIBDIR if the system
# has none. Without them, the NVDEC rows say why and every video is decoded on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
OUT=${OUT:-bench-gpu-out}
WHEELS=""
EXTRA=()
NEEDED=(av numpy polars zarr numcodecs pyarrow dask distributed open_clip timm typer rich fsspec PIL yaml sklearn)
# pip names of the modules above (and of torchcodec), for --fetch-wheels
PIP_NAMES="av polars zarr numcodecs pyarrow dask[distributed] open_clip_torch timm typer rich fsspec pillow pyyaml scikit-learn ftfy regex torchcodec decord"

while [ $# -gt 0 ]; do
  case "$1" in
    --wheels) WHEELS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --compile) EXTRA+=(--compile); shift ;;
    --fetch-wheels)
      # For the node's Python (3.12 on the CUDA images seen so far); match torchcodec to the
      # node's torch with TORCHCODEC_VERSION (e.g. 0.11 for torch 2.11).
      mkdir -p "$2"
      for name in $PIP_NAMES; do
        spec=$name
        [ "$name" = torchcodec ] && [ -n "${TORCHCODEC_VERSION:-}" ] && spec="torchcodec==$TORCHCODEC_VERSION"
        "$PYTHON" -m pip download --only-binary=:all: --python-version "${WHEEL_PYTHON:-3.12}" \
          --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
          --platform manylinux2014_x86_64 -d "$2" "$spec" --no-deps
      done
      echo "wheels in $2; on the node: bench/gpu.sh --wheels $2"
      exit 0 ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "bench/gpu.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

missing=$("$PYTHON" - "${NEEDED[@]}" <<'EOF'
import importlib.util, sys
print(" ".join(name for name in sys.argv[1:] if importlib.util.find_spec(name) is None))
EOF
)
if [ -n "$missing" ]; then
  if [ -z "$WHEELS" ]; then
    echo "bench/gpu.sh: missing Python packages: $missing; pass --wheels DIR (made with --fetch-wheels)" >&2
    exit 2
  fi
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target /tmp/egofeat-site "$WHEELS"/*.whl
  export PYTHONPATH=/tmp/egofeat-site${PYTHONPATH:+:$PYTHONPATH}
fi
if [ -n "${EGOFEAT_FFMPEG_LIBDIR:-}" ]; then
  export LD_LIBRARY_PATH=$EGOFEAT_FFMPEG_LIBDIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >"$OUT/gpu.txt" 2>&1 || true
# 470 s: the whole run stays under 8 minutes even if a section hangs
timeout 470 "$PYTHON" bench/gpu.py --device cuda "${EXTRA[@]}" >"$OUT/gpu.json" 2>"$OUT/gpu.log" || {
  status=$?
  echo "bench/gpu.sh: bench/gpu.py exited with $status; see $OUT/gpu.log" >&2
  exit "$status"
}
echo "bench/gpu.sh: results in $OUT/gpu.json ($(cat "$OUT/gpu.txt"))"
