#!/usr/bin/env bash
# The GPU checks of issue #16 in one go (fits a 10-minute slot on one H100): every zoo model built with
# `--device cuda -n all` (CPU and CUDA forwards compared with the golden, csim == golden), the CUDA
# numeric settings measured on the float-scaled models, and 2-epoch convnet training on CUDA vs CPU.
#   scripts/gpu_check.sh OUT_DIR [--no-cuda] [--models convnet ...] [-n 50] [--budget-s 540] ...
# Writes OUT_DIR/gpu_check.md (the table) and OUT_DIR/gpu_check.json; exit 1 if a build failed or a
# device was not compared. PYTHON overrides the interpreter (default: python3).
set -euo pipefail
if [ $# -lt 1 ]; then
    echo "usage: $0 OUT_DIR [options of python -m fpga_flow.gpu_check]" >&2
    exit 2
fi
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" -m fpga_flow.gpu_check "$@"
