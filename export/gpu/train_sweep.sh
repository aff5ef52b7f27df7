#!/usr/bin/env bash
# Issue 15's training sweep on the GPU machine, from the repo root, carrying .carry/micro (made
# here by export/gpu/prepare_sweep.sh):
#   bash export/gpu/train_sweep.sh [BUDGET_S] [PLAN_DIR]
# BUDGET_S (default: the plan's, 450) counts from this script's start; the runs share the GPU as
# separate processes, train until BUDGET_S - 30 s and are stopped by BUDGET_S - 10 s. Writes into
# $OUT: choice.json, logs.tar.gz (every run's logs, the runner's log, nvidia-smi samples),
# model/config.json, model/train_log.jsonl, model/model-0000k-of-0000n.safetensors (the chosen
# checkpoint, lowest held-out validation loss). The same script rehearses on a CPU:
#   OUT=/tmp/sweep-out PYTHON=.venv/bin/python THREADS_PER_RUN=1 bash export/gpu/train_sweep.sh 150 .carry/micro-rehearsal
set -euo pipefail
T0=$(date +%s)
cd "$(dirname "$0")/../.."
BUDGET=${1:-0}
PLAN_DIR=${2:-.carry/micro}
OUT=${OUT:?set OUT, the folder that comes back (the device tool sets it)}
PYTHON=${PYTHON:-python3}
WORK=${WORK:-/tmp/micro-sweep}
STREAMS=$WORK/data
rm -rf "$WORK" && mkdir -p "$STREAMS" "$OUT"
# train.npy back from xz and both streams checked against SHA256SUMS (Python's stdlib only)
"$PYTHON" - "$PLAN_DIR" "$STREAMS" <<'PY'
import hashlib, lzma, shutil, sys
from pathlib import Path
plan, streams = Path(sys.argv[1]), Path(sys.argv[2])
with lzma.open(plan / "train.npy.xz") as src, open(streams / "train.npy", "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
for name in ("valid.npy", "data.json"):
    shutil.copyfile(plan / name, streams / name)
for line in (plan / "SHA256SUMS").read_text().splitlines():
    digest, name = line.split()
    if hashlib.sha256((streams / name).read_bytes()).hexdigest() != digest:
        sys.exit(f"error: {name} does not match SHA256SUMS; rerun export/gpu/prepare_sweep.sh")
print(f"streams ready in {streams}: " + ", ".join(f"{p.name} {p.stat().st_size:,} bytes" for p in sorted(streams.iterdir())))
PY
"$PYTHON" -c "import torch, transformers, numpy; print('torch', torch.__version__, 'transformers', transformers.__version__, \
'numpy', numpy.__version__, 'cuda', torch.cuda.is_available() and torch.cuda.get_device_name(0))"
SMI=
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used,memory.total --format=csv -l 5 > "$WORK/nvidia-smi.csv" &
  SMI=$!
fi
trap '[ -n "$SMI" ] && kill $SMI 2>/dev/null || true' EXIT
[ "$BUDGET" -gt 0 ] || BUDGET=$("$PYTHON" -c "import json; print(int(json.load(open('$PLAN_DIR/sweep.json'))['budget_s']))")
LEFT=$((BUDGET - ($(date +%s) - T0)))
echo "sweep budget ${BUDGET}s, ${LEFT}s left after unpacking"
PYTHONUNBUFFERED=1 "$PYTHON" export/micro_sweep.py run --plan "$PLAN_DIR/sweep.json" --data "$STREAMS" \
  --work "$WORK" --out "$OUT" --budget "$LEFT" --threads-per-run "${THREADS_PER_RUN:-4}" 2>&1 | tee "$WORK/sweep.log"
echo "done in $(($(date +%s) - T0))s"
