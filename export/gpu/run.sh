#!/usr/bin/env bash
# Issue 9's device checks, run on the GPU machine from the repo root (after export/gpu/prepare.sh here
# and the parts carried over). Writes into $OUT: checks.json (CPU vs CUDA on the tiny fixture),
# speed-2.8b-fp16.json (TPOT of full, local:256, h2o:192+64 at 512 + 1024), nvidia-smi.csv (device memory).
# This measures the engine as it is: the KV store in host memory, copied to the device each step by
# ONNX Runtime. The device-memory store (IoBinding) is still to be built; these are its baseline.
set -euo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
cd "$(dirname "$0")/../.."
(cd .carry/ort-gpu && sha256sum -c SHA256SUMS)
rm -rf /tmp/ortgpu && mkdir -p /tmp/ortgpu
cat .carry/ort-gpu/part-* | xz -d > "/tmp/ortgpu/$(cat .carry/ort-gpu/WHEEL)"
(cd /tmp/ortgpu && python3 -m zipfile -e ./*.whl .)
export ORT_DYLIB_PATH=$(ls /tmp/ortgpu/onnxruntime/capi/libonnxruntime.so.* | head -1)
# CUDA 13 runtime libraries from the machine's PyTorch wheels (nvidia-*-cu13 packages).
CUDA_LIBS=$(python3 - <<'PY'
import glob, os, site
dirs = set()
for sp in site.getsitepackages():
    for f in glob.glob(os.path.join(sp, "nvidia", "**", "lib*.so*"), recursive=True):
        dirs.add(os.path.dirname(f))
print(":".join(sorted(dirs)))
PY
)
export LD_LIBRARY_PATH="/tmp/ortgpu/onnxruntime/capi:${CUDA_LIBS}:${LD_LIBRARY_PATH:-}"
H2O=.carry/bin/h2o-cuda; chmod +x "$H2O"
DATA=.carry/data/wiki.test.raw
nvidia-smi --query-gpu=timestamp,name,memory.used,memory.total --format=csv -lms 200 > "$OUT/nvidia-smi.csv" &
SMI=$!
trap 'kill $SMI 2>/dev/null || true' EXIT
# 1. CPU vs CUDA on the tiny fixture (fp32): per-token NLL within 1e-4, h2o keeps the same positions.
for p in cpu cuda; do
  "$H2O" ppl --model tests/fixtures/tiny --data "$DATA" --tokens 512 --policy h2o:32+32 --provider $p \
    --threads 4 --json "/tmp/fix-$p.json" --trace "/tmp/fix-$p-trace.json"
done
python3 - "$OUT/checks.json" <<'PY'
import json, sys
c, g = (json.load(open(f"/tmp/fix-{p}.json")) for p in ("cpu", "cuda"))
tc, tg = (json.load(open(f"/tmp/fix-{p}-trace.json")) for p in ("cpu", "cuda"))
diff = max(abs(a - b) for a, b in zip(c["nll"], g["nll"]))
same = tc["steps"] == tg["steps"]
out = {"max_nll_diff": diff, "nll_ok": diff <= 1e-4, "same_evictions": same, "ppl_cpu": c["ppl"], "ppl_cuda": g["ppl"]}
json.dump(out, open(sys.argv[1], "w"), indent=2); print(out)
PY
# 2. Random-init Pythia-2.8B fp16 (exported here: 5.6 GB is too big to carry) at the seed's setting.
python3 export/export.py --random-init 2.8b --seed 0 --dtype fp16 --tokenizer .carry/data/pythia-tokenizer.json \
  --out /tmp/random-2.8b-fp16 --name random-2.8b-fp16 --force
"$H2O" speed --model /tmp/random-2.8b-fp16 --provider cuda --data "$DATA" --exp full,local:256,h2o:192+64 \
  --prompt 512 --gen 1024 --warmup 1 --json "$OUT/speed-2.8b-fp16.json"
nvidia-smi --query-gpu=name,memory.total,clocks.max.memory --format=csv > "$OUT/gpu.csv"
