#!/usr/bin/env bash
# The GPU checks of issue 14 (the device KV store of issue 13), run on the GPU machine from the repo
# root after export/gpu/prepare.sh here and the parts carried over (export/gpu/README.md). Ends within
# LIMIT_S seconds (default 470: under 8 minutes), whatever finishes, and writes into $OUT:
#   checks.json   tiny fixture, CPU (host K/V) vs CUDA (device K/V and host K/V): per-token NLL within
#                 1e-4, identical evictions, and CUDA device vs CUDA host
#   summary.json  random-init Pythia-2.8B fp16, prompt 512 + gen 1024 (the seed's setting), full,
#                 local:256 and h2o:192+64 with --kv device and --kv host: TTFT, TPOT, bytes crossing
#                 per step, peak device memory (nvidia-smi, one process per run), each run's speed JSON
#   run.log       everything printed
set -uo pipefail
START=$SECONDS
LIMIT=${LIMIT_S:-470}
left() { echo $((LIMIT - (SECONDS - START))); }
# seconds left less $1, at least 1 (a timeout for the next command)
within() { local s=$(($(left) - $1)); echo $((s < 1 ? 1 : s)); }
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
cd "$(dirname "$0")/../.."
exec > >(tee -a "$OUT/run.log") 2>&1
W=/tmp/h2o-gpu
rm -rf "$W" && mkdir -p "$W/runs"

# 1. Unpack the binary, the data and the onnxruntime-gpu libraries; CUDA 13 libraries of the
#    machine's PyTorch (nvidia-*-cu13 wheels) on the loader path.
(cd .carry/gpu && sha256sum -c --quiet SHA256SUMS) || { echo "parts missing or damaged: carry them again"; exit 1; }
cat .carry/gpu/part-* | xz -d -T0 | tar -C "$W" -xf - || { echo "cannot unpack the parts"; exit 1; }
export ORT_DYLIB_PATH=$(ls "$W"/lib/libonnxruntime.so.* | head -1)
CUDA_LIBS=$(python3 - <<'PY'
import glob, os, site
dirs = {os.path.dirname(f) for sp in site.getsitepackages()
        for f in glob.glob(os.path.join(sp, "nvidia", "**", "lib*.so*"), recursive=True)}
print(":".join(sorted(dirs)))
PY
)
export LD_LIBRARY_PATH="$W/lib:${CUDA_LIBS}:${LD_LIBRARY_PATH:-}"
H2O=$W/bin/h2o-cuda
DATA=$W/data/wiki.test.raw
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$W/gpu.txt"
echo "unpacked at $((SECONDS - START)) s"

# 2. Tiny fixture: CPU with host K/V (the reference), CUDA with device and with host K/V.
for pol in h2o:32+32 local:64 full; do
  for cfg in cpu:host cuda:device cuda:host; do
    p=${cfg%%:*} kv=${cfg##*:} tag="${pol}_${p}_${kv}"
    timeout "$(within 300)" "$H2O" ppl --model tests/fixtures/tiny --data "$DATA" --tokens 512 --policy "$pol" \
      --provider "$p" --kv "$kv" --threads 4 --json "$W/runs/fix_$tag.json" --trace "$W/runs/fix_$tag.trace.json" \
      || echo "fixture $tag failed (exit $?)"
  done
done
python3 - "$W/runs" "$OUT/checks.json" <<'PY'
import json, os, sys
runs, out = sys.argv[1], sys.argv[2]
def load(pol, cfg):
    try:
        j = json.load(open(os.path.join(runs, f"fix_{pol}_{cfg}.json")))
        t = json.load(open(os.path.join(runs, f"fix_{pol}_{cfg}.trace.json")))
        return j, t
    except OSError as e:
        return None, str(e)
def compare(a, b):
    (ja, ta), (jb, tb) = a, b
    if ja is None or jb is None:
        return {"error": ta if ja is None else tb}
    diff = max(abs(x - y) for x, y in zip(ja["nll"], jb["nll"]))
    steps_a, steps_b = ta["steps"], tb["steps"]
    first = next((i for i, (x, y) in enumerate(zip(steps_a, steps_b)) if x != y), None)
    if first is None and len(steps_a) != len(steps_b):
        first = min(len(steps_a), len(steps_b))
    return {"max_nll_diff": diff, "nll_ok": diff <= 1e-4, "same_evictions": first is None,
            "first_differing_trace_step": first, "ppl": [ja["ppl"], jb["ppl"]],
            "bit_identical_nll": ja["nll"] == jb["nll"]}
doc = {"what": "tests/fixtures/tiny, 512 tokens of wiki.test.raw; tolerance: NLL within 1e-4, same evictions",
       "policies": {}}
for pol in ("h2o:32+32", "local:64", "full"):
    ref = load(pol, "cpu_host")
    doc["policies"][pol] = {
        "cuda_device_vs_cpu_host": compare(ref, load(pol, "cuda_device")),
        "cuda_host_vs_cpu_host": compare(ref, load(pol, "cuda_host")),
        "cuda_device_vs_cuda_host": compare(load(pol, "cuda_host"), load(pol, "cuda_device")),
    }
json.dump(doc, open(out, "w"), indent=2)
print(json.dumps(doc, indent=1))
PY
echo "fixture checks done at $((SECONDS - START)) s"

# 3. Random-init Pythia-2.8B fp16, exported here (5.6 GB cannot be carried).
M=$W/random-2.8b-fp16
timeout "$(within 60)" python3 export/export.py --random-init 2.8b --init-seed 0 --dtype fp16 \
  --tokenizer "$W/data/pythia-tokenizer.json" --out "$M" --name random-2.8b-fp16 --force --no-check \
  || echo "export failed or ran out of time (exit $?)"
echo "export done at $((SECONDS - START)) s"

# 4. One process per (K/V placement, policy), so each peak of device memory is its own; device
#    runs first, the host runs after them (the full cache with host K/V is the slowest).
for run in device:full device:local:256 device:h2o:192+64 host:local:256 host:h2o:192+64 host:full; do
  kv=${run%%:*} pol=${run#*:} tag="${kv}_${pol}"
  budget=$(($(left) - 15))
  if [ ! -f "$M/model.onnx" ] || [ "$budget" -lt 30 ]; then
    echo "skipped $tag (no model or ${budget} s left)" | tee "$W/runs/$tag.skipped"
    continue
  fi
  base=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1)
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 > "$W/runs/$tag.smi" &
  smi=$!
  t0=$SECONDS
  timeout "$budget" "$H2O" speed --model "$M" --provider cuda --kv "$kv" --data "$DATA" --exp "$pol" \
    --prompt 512 --gen 1024 --warmup 1 --no-floor --json "$W/runs/$tag.json"
  code=$?
  kill $smi 2>/dev/null; wait $smi 2>/dev/null
  echo "{\"exit\": $code, \"wall_s\": $((SECONDS - t0)), \"baseline_mib\": ${base:-null}}" > "$W/runs/$tag.meta"
  echo "$tag: exit $code after $((SECONDS - t0)) s ($(left) s left)"
done

python3 - "$W" "$OUT/summary.json" <<'PY'
import glob, json, os, sys
w, out = sys.argv[1], sys.argv[2]
doc = {"gpu": open(os.path.join(w, "gpu.txt")).read().strip(),
       "model": "random-init Pythia-2.8B fp16 (export.py --random-init 2.8b --init-seed 0 --dtype fp16)",
       "setting": "prompt 512 + gen 1024, warmup 1, batch 1, --provider cuda", "runs": []}
for meta in sorted(glob.glob(os.path.join(w, "runs", "*.meta"))):
    tag = os.path.basename(meta)[:-5]
    kv, pol = tag.split("_", 1)
    m = json.load(open(meta))
    r = {"kv": kv, "policy": pol, **m}
    smi = [int(x) for x in open(os.path.join(w, "runs", tag + ".smi")).read().split() if x.isdigit()]
    r["peak_device_mib"] = max(smi) if smi else None
    try:
        s = json.load(open(os.path.join(w, "runs", tag + ".json")))
        run = s["runs"][0]
        sp = run["speed"]
        r.update({k: sp.get(k) for k in ("ttft_ms", "tpot_median_ms", "tpot_p90_ms", "tpot_mean_ms",
                                          "throughput_tps", "seed_tpot_ms", "decode_steps")})
        r["traffic"] = sp.get("traffic")
        r["breakdown"] = sp.get("breakdown")
        r["kv_bytes"] = run.get("kv_bytes")
        r["speed_json"] = s
    except (OSError, KeyError, IndexError, ValueError) as e:
        r["error"] = f"no speed result: {e}"
    doc["runs"].append(r)
for skipped in sorted(glob.glob(os.path.join(w, "runs", "*.skipped"))):
    doc["runs"].append({"skipped": open(skipped).read().strip()})
json.dump(doc, open(out, "w"), indent=2)
for r in doc["runs"]:
    print({k: r.get(k) for k in ("kv", "policy", "exit", "ttft_ms", "tpot_median_ms", "peak_device_mib", "skipped")})
PY
echo "done at $((SECONDS - START)) s"
