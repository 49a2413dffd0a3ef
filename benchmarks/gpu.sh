#!/usr/bin/env bash
# Issue 8's GPU measurements in one go (about 6 minutes on an H100/H200): the three benchmarks at the paper's
# shapes, each printed as one JSON line and merged into benchmarks/results/<gpu>-<date>.json.
# Usage (repository root, venv with a CUDA torch): bash benchmarks/gpu.sh [output dir]
set -euo pipefail
out=${1:-benchmarks/results}
py=${PY:-.venv/bin/selfsynth}
for what in selection sft sampling; do
  "$py" -v bench "$what" --scale paper --device cuda --save "$out" || echo "bench $what failed (exit $?)" >&2
done
ls -l "$out"
