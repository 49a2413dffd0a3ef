#!/usr/bin/env bash
# Issue 8's GPU measurements in one go (about 5 minutes on an H100/H200): the three benchmarks at the paper's
# shapes, each printed as one JSON line and merged into <output dir>/<gpu>-<date>.json.
# Usage (repository root): bash benchmarks/gpu.sh [output dir]   (PYTHON: the interpreter, default .venv's or python3;
# SCALE: paper unless set; each benchmark is stopped after BENCH_TIMEOUT seconds so that one that hangs costs no other)
set -uo pipefail
out=${1:-benchmarks/results}
py=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
"$py" -c 'import torch, transformers, peft; print("torch", torch.__version__, "transformers", transformers.__version__, "peft", peft.__version__)'
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
for what in selection sampling sft; do
  timeout "${BENCH_TIMEOUT:-300}" "$py" -c 'import sys; from selfsynth.cli import main; sys.exit(main())' \
    -v bench "$what" --scale "${SCALE:-paper}" --device cuda --save "$out" || echo "bench $what failed (exit $?)" >&2
done
ls -l "$out"
