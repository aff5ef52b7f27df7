#!/usr/bin/env bash
# Prepare the GPU run (issue 14: the device KV store of issue 13 against host K/V on an H100/H200) on
# THIS machine, no GPU needed. Builds `h2o` with the `cuda` feature, takes the three libraries the
# engine loads from the onnxruntime-gpu wheel (CUDA 13), adds the data files, and packs them as
# .carry/gpu/part-NN: one tar.xz stream cut into parts that each fit one device call next to the
# working tree (the device tool carries at most 64 MiB per call, working tree included).
# Everything goes under .carry/ (git-ignored). Then, on the GPU machine (export/gpu/README.md):
#   calls 1..N-1: carry [".carry/gpu/part-NN"], command: true
#   call N:       carry [".carry/gpu/part-NN", ".carry/gpu/SHA256SUMS"], command: bash export/gpu/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
ORT_VERSION=1.31.1
TARGET=${CARGO_TARGET_DIR:-target-cuda}
STAGE=.carry/stage
CARRY=.carry/gpu
rm -rf "$STAGE" && mkdir -p "$STAGE/bin" "$STAGE/data" "$STAGE/lib" .carry/wheel "$CARRY"

CARGO_TARGET_DIR=$TARGET cargo build --release --features cuda
strip -o "$STAGE/bin/h2o-cuda" "$TARGET/release/h2o"
cp ../shared/data/wikitext-2-raw-v1/wiki.test.raw ../shared/data/pythia-tokenizer.json "$STAGE/data/"

# The wheel for the GPU machine's Python 3.12 (only its native libraries are used, not the module).
whl=.carry/wheel/onnxruntime_gpu-$ORT_VERSION-cp312-cp312-manylinux_2_28_x86_64.whl
if [ ! -f "$whl" ]; then
  .venv/bin/python -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 onnxruntime-gpu==$ORT_VERSION -d .carry/wheel
fi
.venv/bin/python - "$whl" "$STAGE/lib" <<'PY'
import sys, zipfile, pathlib
whl, out = sys.argv[1], pathlib.Path(sys.argv[2])
keep = ("libonnxruntime.so.", "libonnxruntime_providers_shared.so", "libonnxruntime_providers_cuda.so")
with zipfile.ZipFile(whl) as z:
    names = [n for n in z.namelist() if n.startswith("onnxruntime/capi/") and n.rsplit("/", 1)[1].startswith(keep)]
    assert len(names) == 3, names
    for n in names:
        (out / n.rsplit("/", 1)[1]).write_bytes(z.read(n))
print("libraries:", sorted(p.name for p in out.iterdir()))
PY

# Part size: what the working tree (tracked + untracked, not ignored) leaves of 64 MiB, less 2 MiB.
tree_mib=$(git ls-files -co --exclude-standard -z | xargs -0 stat -c %s | awk '{s += $1} END {print int(s / 1048576) + 1}')
PART_MB=${PART_MB:-$((62 - tree_mib))}
rm -f "$CARRY"/part-* "$CARRY"/SHA256SUMS
tar -C "$STAGE" -cf - bin data lib | xz -9 -T2 | split -b "${PART_MB}M" -d - "$CARRY/part-"
(cd "$CARRY" && sha256sum part-* > SHA256SUMS)
ls -la "$CARRY"
echo "working tree ${tree_mib} MiB + parts of ${PART_MB} MiB per call; $(ls "$CARRY"/part-* | wc -l) calls"
