#!/usr/bin/env python3
"""Engine vs PyTorch, same machine, same threads, same random-init weights (issue 8).

For each size: the engine (`h2o speed --json`) for full, local and h2o at one budget, transformers
eager with its own DynamicCache (full cache, export/torch_speed.py --impl hf) and the project's
PyTorch reference with H2O (torch_speed.py --impl reference). Prompt P + G generated tokens, batch 1.
Writes results/side-by-side-<time>.json and prints a markdown table of TPOT medians and the
engine / PyTorch ratios. The engine's model dirs are made by `make models/random-SIZE/onnx/model.onnx`.

    .venv/bin/python export/side_by_side.py --sizes 160m,410m --threads 2 --prompt 512 --gen 64
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(cmd: list[str], env: dict | None = None) -> None:
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, env=env)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="160m,410m")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--gen", type=int, default=64)
    ap.add_argument("--budget", default="local:256,h2o:192+64", help="engine policies besides full")
    ap.add_argument("--ref-policy", default="h2o:192+64")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", default=os.environ.get("H2O_DATA", str(ROOT.parent / "shared/data/wikitext-2-raw-v1/wiki.test.raw")))
    ap.add_argument("--bin", default=str(ROOT / "target/release/h2o"))
    ap.add_argument("--skip-reference", action="store_true", help="skip the (slow) PyTorch reference loop")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_dir = ROOT / "results" / f"side-by-side-{stamp}"
    out_dir.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    tok = ROOT.parent / "shared/data/pythia-tokenizer.json"
    doc = {"threads": args.threads, "prompt": args.prompt, "gen": args.gen, "seed": args.seed, "sizes": {}}
    for size in args.sizes.split(","):
        model = ROOT / f"models/random-{size}/onnx"
        if not (model / "model.onnx").is_file():
            run(["make", f"models/random-{size}/onnx/model.onnx", f"SEED={args.seed}"])
        eng = out_dir / f"engine-{size}.json"
        run([args.bin, "speed", "--model", str(model), "--data", args.data, "--threads", str(args.threads),
             "--exp", "full," + args.budget, "--prompt", str(args.prompt), "--gen", str(args.gen),
             "--warmup", "1", "--json", str(eng)])
        hf = out_dir / f"torch-hf-{size}.json"
        run([py, str(ROOT / "export/torch_speed.py"), "--random-init", size, "--seed", str(args.seed), "--impl", "hf",
             "--threads", str(args.threads), "--prompt", str(args.prompt), "--gen", str(args.gen),
             "--data", args.data, "--tokenizer", str(tok), "--out", str(hf)])
        entry = {"engine": json.loads(eng.read_text()), "torch_hf": json.loads(hf.read_text())}
        if not args.skip_reference:
            ref = out_dir / f"torch-ref-{size}.json"
            run([py, str(ROOT / "export/torch_speed.py"), "--random-init", size, "--seed", str(args.seed),
                 "--impl", "reference", "--policy", args.ref_policy, "--threads", str(args.threads),
                 "--prompt", str(args.prompt), "--gen", str(args.gen), "--data", args.data,
                 "--tokenizer", str(tok), "--out", str(ref)])
            entry["torch_reference"] = json.loads(ref.read_text())
        doc["sizes"][size] = entry
        (out_dir / "side-by-side.json").write_text(json.dumps(doc, indent=2))

    lines = ["| size | impl | policy | TPOT median (ms) | TTFT (ms) | engine / PyTorch (TPOT) | floor (ms) | TPOT / floor |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for size, e in doc["sizes"].items():
        hf_tpot = e["torch_hf"]["tpot_median_ms"]
        ref_tpot = e.get("torch_reference", {}).get("tpot_median_ms")
        for r in e["engine"]["runs"]:
            s = r["speed"]
            base = hf_tpot if r["policy"] == "full" else (ref_tpot if r["policy"] == args.ref_policy else None)
            ratio = f"{s['tpot_median_ms'] / base:.3f}" if base else "-"
            floor = r.get("floor_ms")
            lines.append(f"| {size} | engine | {r['policy']} | {s['tpot_median_ms']:.2f} | {s['ttft_ms']:.0f} | {ratio} | "
                         f"{floor:.2f} | {s['tpot_median_ms'] / floor:.2f} |" if floor else
                         f"| {size} | engine | {r['policy']} | {s['tpot_median_ms']:.2f} | {s['ttft_ms']:.0f} | {ratio} | - | - |")
        lines.append(f"| {size} | transformers eager | full | {hf_tpot:.2f} | {e['torch_hf']['ttft_ms']:.0f} | 1 | | |")
        if ref_tpot:
            lines.append(f"| {size} | PyTorch reference | {args.ref_policy} | {ref_tpot:.2f} | "
                         f"{e['torch_reference']['ttft_ms']:.0f} | 1 | | |")
    table = "\n".join(lines)
    (out_dir / "side-by-side.md").write_text(table + "\n")
    print(table)
    print(f"\n{out_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
