#!/usr/bin/env bash
# Prepare issue 15's training sweep on THIS machine (no GPU needed), into .carry/ (git-ignored):
#   bash export/gpu/prepare_sweep.sh [PLAN_DIR] [micro_sweep.py plan flags...]
# PLAN_DIR (default .carry/micro) receives sweep.json + specs/ (made with this .venv's
# transformers, so the checkpoints load here), train.npy.xz + its sha256, valid.npy, data.json.
# The token streams are encoded with models/pythia-micro/tokenizer.json (the default model's
# vocabulary; data.json's hashes then equal models/pythia-micro/data.json's). Ends by checking
# that the working tree plus PLAN_DIR stay under the device tool's 64 MiB per call.
# The rehearsal: bash export/gpu/prepare_sweep.sh .carry/micro-rehearsal --rehearsal --budget 150
set -euo pipefail
cd "$(dirname "$0")/../.."
PLAN_DIR=${1:-.carry/micro}
shift || true
PY=${PY:-.venv/bin/python}
SHARED=${SHARED:-../shared/data}
STREAMS=.carry/micro-data
if [ ! -f "$STREAMS/train.npy" ] || ! cmp -s "$STREAMS/data.json" models/pythia-micro/data.json; then
  "$PY" export/prepare_micro_data.py --data "$SHARED" --tokenizer-from models/pythia-micro/tokenizer.json --out "$STREAMS"
fi
cmp "$STREAMS/data.json" models/pythia-micro/data.json \
  || { echo "error: $STREAMS/data.json differs from models/pythia-micro/data.json (other data or tokenizer)" >&2; exit 1; }
rm -rf "$PLAN_DIR" && mkdir -p "$PLAN_DIR"
"$PY" export/micro_sweep.py plan --out "$PLAN_DIR" "$@"
xz -6 -T2 -c "$STREAMS/train.npy" > "$PLAN_DIR/train.npy.xz"
(cd "$STREAMS" && sha256sum train.npy valid.npy) > "$PLAN_DIR/SHA256SUMS"
cp "$STREAMS/valid.npy" "$STREAMS/data.json" "$PLAN_DIR/"
# What one device call carries: tracked + untracked-not-ignored files, and PLAN_DIR.
tree=$( { git ls-files -z; git ls-files -z --others --exclude-standard; } | xargs -0 stat -c %s 2>/dev/null | awk '{s += $1} END {print s}')
plan=$(du -sb "$PLAN_DIR" | cut -f1)
echo "working tree $((tree / 1048576)) MiB + $PLAN_DIR $((plan / 1048576)) MiB = $(((tree + plan) / 1048576)) MiB (limit 64)"
if [ $((tree + plan)) -gt $((62 * 1048576)) ]; then
  echo "error: over 62 MiB: the device call would be refused; remove untracked files or carry less" >&2
  exit 1
fi
