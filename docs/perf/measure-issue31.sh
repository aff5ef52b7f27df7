#!/usr/bin/env bash
# Issue 31, in one quiet run: prefill (TTFT at PROMPT tokens) and decode (TPOT over GEN tokens) of
# the engine with today's fp32 graph, the fused fp32 graph (`export.py --graph-ops fused`), int8
# and int4 weights (int4 at both MatMulNBits accuracy levels), int8-dq (DynamicQuantizeMatMul),
# int4-pd (int4 with an int8-dq prefill copy, `--prefill-weights int8-dq`),
# against transformers eager, at
# each size in SIZES; plus the per-node profile of the PROMPT-token prefill at PROFILE_SIZE.
# Every point runs ROUNDS times, alternating (round 1 of every model and of transformers, then
# round 2, ...); the table shows each round. Writes $OUT/issue31.md (and every JSON beside it).
#
# Run from the repository root on a quiet machine, after `make build` (target/release/h2o) and
# `make venv-torch` (.venv with transformers):
#     bash docs/perf/measure-issue31.sh                 # 160m and 410m: about 14 minutes, exports included
#     SIZES="160m 410m 1b" bash docs/perf/measure-issue31.sh   # + 1b: about 13 minutes more
# Settings (environment): SIZES, ROUNDS (2), THREADS (2), PROMPT (512), GEN (64), PROFILE_SIZE
# (410m; "" = no profile), PROFILE_VARIANTS, VARIANTS (the same list at every size instead of the
# per-size default), OUT (results/issue31-<time>), H2O_BIN, PY, DATA, TOKENIZER.
# TABLE_ONLY=1 OUT=<an earlier run's folder> renders its table again without measuring.
# QUICK=1 rehearses every command at toy settings (160m, prompt 32, gen 4, one round): a check
# that the script runs, never a measurement.
# Exports land in models/random-SIZE/onnx[-VARIANT] and are reused when their manifest matches.
set -euo pipefail

REPO=${REPO:-$(pwd)}
cd "$REPO"
[ -f Cargo.toml ] && [ -d export/h2o_export ] || { echo "run from the repository root (or set REPO)" >&2; exit 2; }
H2O_BIN=${H2O_BIN:-target/release/h2o}
PY=${PY:-.venv/bin/python}
DATA=${DATA:-../shared/data/wikitext-2-raw-v1/wiki.test.raw}
TOKENIZER=${TOKENIZER:-../shared/data/pythia-tokenizer.json}
if [ "${QUICK:-0}" = 1 ]; then
  SIZES=${SIZES:-160m}; ROUNDS=${ROUNDS:-1}; PROMPT=${PROMPT:-32}; GEN=${GEN:-4}; PROFILE_SIZE=${PROFILE_SIZE-160m}
fi
SIZES=${SIZES:-160m 410m}
ROUNDS=${ROUNDS:-2}
THREADS=${THREADS:-2}
PROMPT=${PROMPT:-512}
GEN=${GEN:-64}
PROFILE_SIZE=${PROFILE_SIZE-410m}
OUT=${OUT:-results/issue31-$(date +%Y%m%d-%H%M%S)}
export PYTHONPATH="$REPO/export${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's exporter, not another one's
if [ -z "${ORT_DYLIB_PATH:-}" ]; then
  ORT_DYLIB_PATH=$(ls .venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.* | head -1)
  export ORT_DYLIB_PATH
fi
for f in "$H2O_BIN" "$PY" "$DATA" "$TOKENIZER"; do [ -e "$f" ] || { echo "missing: $f" >&2; exit 2; }; done
mkdir -p "$OUT"
if [ "${TABLE_ONLY:-0}" = 1 ]; then
  [ -f "$OUT/settings.sh" ] || { echo "TABLE_ONLY=1 needs OUT= an earlier run's folder" >&2; exit 2; }
  # shellcheck disable=SC1091
  . "$OUT/settings.sh"  # that run's sizes, rounds, prompt, gen, threads, profile size and duration
else
  printf 'SIZES="%s" ROUNDS=%s THREADS=%s PROMPT=%s GEN=%s PROFILE_SIZE="%s"\n' \
    "$SIZES" "$ROUNDS" "$THREADS" "$PROMPT" "$GEN" "$PROFILE_SIZE" >"$OUT/settings.sh"
fi
LOG="$OUT/log.txt"
START=$SECONDS
say() { echo "[$(( SECONDS - START ))s] $*" | tee -a "$LOG"; }

# variant -> export flags (all from the same seeded random weights, --init-seed 0)
declare -A FLAGS=(
  [fp32]=""
  [fp32-fused]="--graph-ops fused"
  [int8]="--weights int8 --graph-ops fused"
  [int8-dq]="--weights int8-dq --graph-ops fused"
  [int4]="--weights int4 --graph-ops fused"
  [int4-acc1]="--weights int4 --accuracy-level 1 --graph-ops fused"
  [int4-b128]="--weights int4 --block-size 128 --graph-ops fused"
  [int4-pd]="--weights int4 --prefill-weights int8-dq --graph-ops fused"
)
EXTRA_VARIANTS=${EXTRA_VARIANTS:-}  # e.g. "int4-b128": added at 160m and 410m (about a minute more)
variants_of() {  # which variants each size measures (1b: the fp32 pair and int4, to stay in time)
  if [ -n "${VARIANTS:-}" ]; then echo "$VARIANTS"; return; fi  # e.g. VARIANTS="fp32 int8-dq int4": every size
  case "$1" in
    1b|1.4b|2.8b) echo "fp32 fp32-fused int8-dq int4" ;;
    *) echo "fp32 fp32-fused int8 int8-dq int4 int4-acc1 $EXTRA_VARIANTS" ;;
  esac
}
model_dir() { [ "$2" = fp32 ] && echo "models/random-$1/onnx" || echo "models/random-$1/onnx-$2"; }

# the manifest says what we want: weights format, accuracy level, graph ops, seed 0
matches() {
  "$PY" - "$1/manifest.json" "$2" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))
flags = sys.argv[2].split()
want_w = flags[flags.index("--weights") + 1] if "--weights" in flags else "fp32"
want_acc = int(flags[flags.index("--accuracy-level") + 1]) if "--accuracy-level" in flags else 4
want_ops = flags[flags.index("--graph-ops") + 1] if "--graph-ops" in flags else "plain"
want_block = int(flags[flags.index("--block-size") + 1]) if "--block-size" in flags else 32
want_pre = flags[flags.index("--prefill-weights") + 1] if "--prefill-weights" in flags else None
w = m.get("weights", {"format": "fp32"})
ok = (w["format"] == want_w and m.get("graph_ops", "plain") == want_ops and m.get("init_seed") == 0
      and (w.get("prefill") or {}).get("format") == want_pre
      and (want_w in ("fp32", "int8-dq") or (w.get("accuracy_level") == want_acc and w.get("block_size") == want_block)))
sys.exit(0 if ok else 1)
EOF
}

ensure_export() {  # size variant
  local dir flags t0
  dir=$(model_dir "$1" "$2"); flags=${FLAGS[$2]}
  if [ -f "$dir/model.onnx" ] && matches "$dir" "$flags"; then say "reuse $dir"; return; fi
  t0=$SECONDS
  # shellcheck disable=SC2086
  "$PY" export/export.py --random-init "$1" --init-seed 0 --dtype fp32 --tokenizer "$TOKENIZER" \
    --out "$dir" --name "random-$1${2:+-$2}" --force $flags >>"$LOG" 2>&1
  echo "$1 $2 $(( SECONDS - t0 ))" >>"$OUT/export-seconds.txt"
  say "exported $dir in $(( SECONDS - t0 )) s"
}

[ "${TABLE_ONLY:-0}" = 1 ] || say "CPU: $(lscpu | sed -n 's/^Model name: *//p' | head -1); $(nproc) CPUs; threads $THREADS; sizes $SIZES; rounds $ROUNDS; prompt $PROMPT, gen $GEN"
if [ "${TABLE_ONLY:-0}" != 1 ]; then
lscpu >"$OUT/lscpu.txt"
"$H2O_BIN" --version >"$OUT/versions.txt" 2>&1 || true
"$PY" -c "import onnxruntime, torch, transformers; print('onnxruntime', onnxruntime.__version__, 'torch', torch.__version__, 'transformers', transformers.__version__)" >>"$OUT/versions.txt"
fi

if [ "${TABLE_ONLY:-0}" != 1 ]; then
# 1. On this CPU: the fused graph gives the plain graph's outputs bit for bit (ONNX Runtime's kernels
#    can take other paths on other ISAs), and the same perplexity through the engine.
say "bit-for-bit check of --graph-ops fused on this CPU"
"$PY" -m pytest -q -p no:cacheprovider export/tests/test_graph_ops.py -k bit_identical >"$OUT/bit-identical.txt" 2>&1 \
  && say "fused == plain, bit for bit: $(tail -1 "$OUT/bit-identical.txt")" \
  || say "FUSED DIFFERS FROM PLAIN on this CPU: see $OUT/bit-identical.txt"
"$PY" -c "import json; from h2o_export.profile import matmul_nbits_paths; print(json.dumps(matmul_nbits_paths()))" \
  >"$OUT/nbits-paths.json" 2>>"$LOG" || say "the MatMulNBits path probe failed (see $LOG)"
for ops in plain fused; do
  d="$OUT/pythia-micro-$ops"
  "$PY" export/export.py --checkpoint models/pythia-micro --out "$d" --graph-ops "$ops" --force >>"$LOG" 2>&1
  "$H2O_BIN" ppl --model "$d" --data "$DATA" --tokens 2048 --policy full --threads "$THREADS" \
    --json "$OUT/ppl-micro-$ops.json" >>"$LOG" 2>&1
done

# 2. Exports (timed; reused when present)
for s in $SIZES; do for v in $(variants_of "$s"); do ensure_export "$s" "$v"; done; done

# 3. Speed, alternating: round r of every model and transformers, then round r+1
for r in $(seq 1 "$ROUNDS"); do
  for s in $SIZES; do
    for v in $(variants_of "$s"); do
      say "round $r: engine $s $v"
      floor=(); [ "$r" -gt 1 ] && floor=(--no-floor)  # the bandwidth probe once per point (round 1)
      "$H2O_BIN" speed --model "$(model_dir "$s" "$v")" --data "$DATA" --threads "$THREADS" --exp full \
        --prompt "$PROMPT" --gen "$GEN" --warmup 1 --rounds 1 "${floor[@]}" \
        --json "$OUT/engine-$s-$v-r$r.json" >>"$LOG" 2>&1
    done
    say "round $r: transformers eager $s"
    "$PY" export/torch_speed.py --random-init "$s" --init-seed 0 --impl hf --threads "$THREADS" \
      --prompt "$PROMPT" --gen "$GEN" --data "$DATA" --tokenizer "$TOKENIZER" \
      --out "$OUT/hf-$s-r$r.json" >>"$LOG" 2>&1
  done
done

# 4. Where the prefill spends its time (last token's logits, as `h2o speed` asks)
if [ -n "$PROFILE_SIZE" ]; then
  for v in ${PROFILE_VARIANTS:-fp32 fp32-fused int8-dq int4 int4-acc1}; do
    d=$(model_dir "$PROFILE_SIZE" "$v")
    [ -f "$d/model.onnx" ] || ensure_export "$PROFILE_SIZE" "$v"
    say "profile $PROFILE_SIZE $v"
    "$PY" export/profile_prefill.py --model "$d" --tokens "$PROMPT" --threads "$THREADS" --runs 3 --logits last \
      --json "$OUT/profile-$PROFILE_SIZE-$v.json" >>"$LOG" 2>&1
  done
fi

echo "RUN_SECONDS=$(( SECONDS - START ))" >>"$OUT/settings.sh"
fi  # TABLE_ONLY=1 OUT=results/issue31-...: only the table below, again, from that folder's JSON

# 5. The table
"$PY" - "$OUT" "$SIZES" "$ROUNDS" "$PROMPT" "$GEN" "$THREADS" "$PROFILE_SIZE" "${RUN_SECONDS:-$(( SECONDS - START ))}" <<'EOF' >"$OUT/issue31.md"
import json, statistics, subprocess, sys
from pathlib import Path
out, sizes, rounds, prompt, gen, threads, prof, secs = sys.argv[1:]
out, sizes, rounds = Path(out), sizes.split(), int(rounds)
cpu = next((l.split(":", 1)[1].strip() for l in (out / "lscpu.txt").read_text().splitlines() if l.startswith("Model name")), "?")
flags = next((l.split(":", 1)[1].split() for l in (out / "lscpu.txt").read_text().splitlines() if l.startswith("Flags")), [])
isa = " ".join(f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f in flags)
load = lambda p: json.loads(p.read_text()) if p.is_file() else None
fmt = lambda xs, f="{:.0f}": ", ".join(f.format(x) for x in xs) if xs else "-"
med = lambda xs: statistics.median(xs) if xs else float("nan")
ORDER = ["fp32", "fp32-fused", "int8", "int8-dq", "int4", "int4-pd", "int4-acc1", "int4-b128"]
print(f"# Issue 31 measurement\n\nCPU: {cpu} ({isa}); {threads} threads; prompt {prompt}, gen {gen}; {rounds} "
      f"alternating rounds (each cell: round 1, round 2, ...); total run {int(secs) // 60} min {int(secs) % 60} s; "
      f"{(out / 'versions.txt').read_text().strip().replace(chr(10), '; ')}\n")
dn = sorted({(load(p) or {}).get("denormals", "keep (an engine before --denormals)") for p in out.glob("engine-*.json")})
print(f"Engine subnormals (`h2o --denormals`, in its JSON): {', '.join(dn) or '-'}; the profiles use the engine's "
      "default (flush) unless an older profile_prefill.py made them (keep).\n")
print("Rows: fp32 = today's graph (`--graph-ops plain`); fp32-fused = `--graph-ops fused` (same arithmetic, fewer "
      "nodes); int8 / int4 = MatMulNBits block 32, accuracy_level 4 (int8 activations), fused graph; int4-acc1 = "
      "accuracy_level 1 (float32 activations); int4-b128 = block 128, level 4; int8-dq = DynamicQuantizeMatMul (int8 weights, "
      "a scale per column, activations quantized per call to uint8: MLAS's QGEMM), fused graph; int4-pd = int4 with "
      "`--prefill-weights int8-dq` (steps of 4+ new tokens on an int8 DynamicQuantizeMatMul copy, decode on int4). TTFT / fp32 and TPOT / floor use the medians of the rounds; "
      "TPOT p10-p90 is the decode steps' spread in round 1.\n")
for f in ("bit-identical.txt",):
    p = out / f
    if p.is_file():
        print(f"Bit for bit, fused vs plain on this CPU (export/tests/test_graph_ops.py -k bit_identical): "
              f"{p.read_text().strip().splitlines()[-1]}", end="")
ppl = {o: load(out / f"ppl-micro-{o}.json") for o in ("plain", "fused")}
if all(ppl.values()):
    get = lambda d: d.get("ppl") if isinstance(d, dict) and "ppl" in d else d.get("results", [{}])[0].get("ppl")
    print(f"; pythia-micro full cache, 2048 tokens, `h2o ppl`: plain {get(ppl['plain'])!r}, fused {get(ppl['fused'])!r}")
print()
paths = load(out / "nbits-paths.json")
if paths:
    print("MatMulNBits on this CPU's ONNX Runtime (`h2o_export.profile.matmul_nbits_paths`): " + "; ".join(
        f"{p['bits']}-bit block {p['block_size']} level {p['accuracy_level']}: {p['path']}" for p in paths) + "\n")
ex = out / "export-seconds.txt"
if ex.is_file():
    print("Export times (s): " + "; ".join(" ".join(l.split()[:2]) + f" {l.split()[2]}" for l in ex.read_text().splitlines()) + "\n")
print("| size | impl | TTFT (ms) | TPOT median (ms) | TPOT p10-p90 (ms) | TTFT / fp32 | TTFT / transformers | "
      "TPOT / transformers | floor (ms) | TPOT / floor |")
print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for s in sizes:
    hf = [d for d in (load(out / f"hf-{s}-r{r}.json") for r in range(1, rounds + 1)) if d]
    hf_ttft, hf_tpot = med([d["ttft_ms"] for d in hf]), med([d["tpot_median_ms"] for d in hf])
    variants = sorted({p.name.split(f"engine-{s}-")[1].rsplit("-r", 1)[0] for p in out.glob(f"engine-{s}-*-r1.json")},
                      key=lambda v: ORDER.index(v) if v in ORDER else 99)
    base = None
    for v in variants:
        runs = [d["runs"][0] for d in (load(out / f"engine-{s}-{v}-r{r}.json") for r in range(1, rounds + 1)) if d]
        ttft, tpot = [r["speed"]["ttft_ms"] for r in runs], [r["speed"]["tpot_median_ms"] for r in runs]
        sp = runs[0]["speed"]
        floor = runs[0].get("floor_ms")
        if v == "fp32":
            base = med(ttft)
        rel = f"{med(ttft) / base:.2f}" if base else "-"
        print(f"| {s} | engine {v} | {fmt(ttft)} | {fmt(tpot, '{:.1f}')} | {sp['tpot_p10_ms']:.1f}-{sp['tpot_p90_ms']:.1f} | "
              f"{rel} | {med(ttft) / hf_ttft:.2f} | {med(tpot) / hf_tpot:.2f} | "
              + (f"{floor:.1f} | {med(tpot) / floor:.2f} |" if floor else "- | - |"))
    if hf:
        print(f"| {s} | transformers eager | {fmt([d['ttft_ms'] for d in hf])} | {fmt([d['tpot_median_ms'] for d in hf], '{:.1f}')} | "
              f"{hf[0]['tpot_min_ms']:.1f} (min)-{hf[0]['tpot_p90_ms']:.1f} | | 1 | 1 | | |")
if prof:
    docs = {v: load(out / f"profile-{prof}-{v}.json") for v in ORDER}
    docs = {v: list(d.values())[0] for v, d in docs.items() if d}
    for d in docs.values():  # profiles written before profile.summarize left out If nodes counted them twice
        if d["op_types"].pop("If", None) is not None:
            d["total_ms"] = sum(d["op_types"].values())
    if docs:
        ops = []
        for d in docs.values():
            ops += [o for o in list(d["op_types"])[:10] if o not in ops]
        print(f"\nPer-node time of one {prompt}-token prefill at {prof} (last token's logits; ms per run, share), "
              f"`export/profile_prefill.py --logits last`:\n")
        print("| op type | " + " | ".join(docs) + " |")
        print("| --- |" + " ---: |" * len(docs))
        for o in ops:
            cells = [f"{d['op_types'][o]:.1f} ({100 * d['op_types'][o] / d['total_ms']:.0f}%)" if o in d["op_types"] else "-"
                     for d in docs.values()]
            print(f"| {o} | " + " | ".join(cells) + " |")
        print("| all nodes | " + " | ".join(f"{d['total_ms']:.1f}" for d in docs.values()) + " |")
EOF
say "done: $OUT/issue31.md"
cat "$OUT/issue31.md"
