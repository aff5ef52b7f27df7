#!/usr/bin/env bash
# After issue 15's sweep, on THIS machine (CPU): turn what came back from the GPU into a model
# folder, export it, and evaluate it on wiki.test.raw (reported, never used for the choice):
#   bash export/gpu/after_sweep.sh BACK [DEST]
# BACK: the folder holding what train_sweep.sh wrote into $OUT (the device tool's files_at).
# DEST (default .carry/candidate, git-ignored): config.json, model.safetensors (shards merged),
# tokenizer.json (models/pythia-micro's), train_log.jsonl, choice.json, logs.tar.gz; onnx/ (the
# export: its manifest declares prepend_bos_token_id when the checkpoint does); eval/: `h2o ppl`
# at full, local:256, h2o:192+64, local:512, h2o:384+128 on the first 2048 tokens (ppl-*.json),
# issue 15's claim (claim.json), and the PyTorch reference vs the engine over REF_TOKENS tokens
# with h2o:48+16 (ref-*.json, engine-*.json): the BOS fed first, unscored, on both sides.
# models/pythia-micro is left alone; promoting the candidate is a separate, reviewed step.
set -euo pipefail
cd "$(dirname "$0")/../.."
BACK=${1:?usage: after_sweep.sh BACK [DEST]}
DEST=${2:-.carry/candidate}
PY=${PY:-.venv/bin/python}
BIN=${BIN:-target/release/h2o}
DATA=${DATA:-../shared/data/wikitext-2-raw-v1/wiki.test.raw}
REF_TOKENS=${REF_TOKENS:-300}
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$(ls "$PWD"/.venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.* | head -1)}
mkdir -p "$DEST/eval"
cp "$BACK/model/config.json" "$BACK/model/train_log.jsonl" "$BACK/choice.json" "$BACK/logs.tar.gz" "$DEST/"
cp models/pythia-micro/tokenizer.json "$DEST/tokenizer.json"
if ls "$BACK"/model/model-*-of-*.safetensors >/dev/null 2>&1; then
  "$PY" export/train_micro.py merge --dir "$BACK/model" --out "$DEST/model.safetensors"
else
  cp "$BACK/model/model.safetensors" "$DEST/model.safetensors"
fi
"$PY" export/export.py --checkpoint "$DEST" --out "$DEST/onnx" --name "$(basename "$DEST")" --dtype fp32 --force
"$PY" - "$DEST" <<'PY'
import json, sys
from pathlib import Path
d = Path(sys.argv[1])
cfg, man = json.loads((d / "config.json").read_text()), json.loads((d / "onnx/manifest.json").read_text())
want, got = cfg.get("prepend_bos_token_id"), man.get("prepend_bos_token_id")
print(f"config.json prepend_bos_token_id {want}, manifest {got}")
sys.exit(0 if want == got else f"error: the manifest's prepend_bos_token_id {got} differs from config.json's {want}")
PY
[ -x "$BIN" ] || cargo build --release
ppl_files=()
for p in full local:256 h2o:192+64 local:512 h2o:384+128; do
  f="$DEST/eval/ppl-${p//[:+]/-}.json"
  "$BIN" ppl --model "$DEST/onnx" --data "$DATA" --tokens 2048 --policy "$p" --json "$f"
  ppl_files+=("$f")
done
"$PY" export/micro_sweep.py claim "${ppl_files[@]}" --out "$DEST/eval/claim.json"
# The engine against the PyTorch reference on the same checkpoint (both must feed the declared BOS).
"$PY" export/reference.py --hf-dir "$DEST" --tokenizer "$DEST/tokenizer.json" --data "$DATA" \
  --tokens "$REF_TOKENS" --policy h2o:48+16 --out "$DEST/eval/ref-h2o-48-16.json"
"$BIN" ppl --model "$DEST/onnx" --data "$DATA" --tokens "$REF_TOKENS" --policy h2o:48+16 \
  --json "$DEST/eval/engine-h2o-48-16.json"
"$PY" - "$DEST/eval/ref-h2o-48-16.json" "$DEST/eval/engine-h2o-48-16.json" <<'PY'
import json, sys
ref, eng = (json.load(open(p)) for p in sys.argv[1:])
rel = abs(eng["ppl"] / ref["ppl"] - 1)
print(f"reference ppl {ref['ppl']:.6f} (BOS {ref.get('prepend_bos_token_id')}), engine ppl {eng['ppl']:.6f}, "
      f"relative difference {rel:.2e} over {ref['n_tokens']} tokens")
sys.exit(0 if rel <= 1e-3 else "error: engine and reference differ by more than 1e-3 relative "
         "(does the engine feed the manifest's prepend_bos_token_id first?)")
PY
