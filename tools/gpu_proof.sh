#!/usr/bin/env bash
# The GPU proof (issue 12): run the GPU checks on this machine and write benchmarks/gpu.md.
#
#   bash tools/gpu_proof.sh            # or: make gpu-proof
#   WHEELS=/path/to/wheels bash tools/gpu_proof.sh   # offline: install from a wheel folder first
#
# Offline: on a machine with the internet, fill a folder with every wheel the checks need and
# carry it to the GPU machine:
#   pip download -d wheels torch==2.13.0 -e '.[gpu,dev]'     # same Python and CUDA as the target
# WHEELS=wheels then installs from it with `pip install --no-index --find-links wheels`.
# Without CUDA it says so and exits 0 (nothing is run, benchmarks/gpu.md is left as it is).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
if [ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ]; then PY=.venv/bin/python; fi

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu-proof: needs a CUDA GPU (no torch, or torch.cuda.is_available() is False, with $PY);" \
         "nothing was run and benchmarks/gpu.md is unchanged"
    exit 0
fi
if [ -n "${WHEELS:-}" ]; then
    "$PY" -m pip install -q --no-index --find-links "$WHEELS" -e '.[gpu,dev]'
fi
exec "$PY" tools/gpu_proof.py "$@"
