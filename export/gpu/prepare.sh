#!/usr/bin/env bash
# Prepare the GPU run of issue 9 on THIS machine (no GPU needed): the h2o binary built with the
# `cuda` feature, the onnxruntime-gpu wheel compressed and split into parts small enough to carry
# (the device tool carries at most 64 MiB per call, working tree included), and the data files.
# Everything goes under .carry/ (git-ignored). Then, on the GPU machine, over consecutive calls:
#   call k (k = 1..N): carry [".carry/ort-gpu/part-0k"] (+ the rest on the last call), command: true
#   last call:         carry [".carry/bin", ".carry/data", ".carry/ort-gpu"], command: bash export/gpu/run.sh
# See export/gpu/README.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
PART_MB=${PART_MB:-24}
mkdir -p .carry/bin .carry/data .carry/ort-gpu .carry/wheel
CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target-cuda} cargo build --release --features cuda
cp "${CARGO_TARGET_DIR:-target-cuda}/release/h2o" .carry/bin/h2o-cuda
cp ../shared/data/wikitext-2-raw-v1/wiki.test.raw ../shared/data/pythia-tokenizer.json .carry/data/
if ! ls .carry/wheel/onnxruntime_gpu-1.31.1-*.whl >/dev/null 2>&1; then
  .venv/bin/python -m pip download --no-deps --only-binary=:all: onnxruntime-gpu==1.31.1 -d .carry/wheel
fi
whl=$(ls .carry/wheel/onnxruntime_gpu-1.31.1-*.whl | head -1)
rm -f .carry/ort-gpu/part-*
xz -9 -T2 -c "$whl" | split -b "${PART_MB}M" -d - .carry/ort-gpu/part-
(cd .carry/ort-gpu && sha256sum part-* > SHA256SUMS && basename "$whl" > WHEEL)
ls -la .carry/ort-gpu .carry/bin .carry/data
