"""Engine vs PyTorch on the same machine, threads and random-init weights (issue 8), for
export/side_by_side.py (its docstring says what runs): `measure` runs the engine's `h2o speed`
and export/torch_speed.py per size as subprocesses, `table` renders the markdown table.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path


def run(cmd: list[str], env: dict | None = None) -> None:
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, env=env)


def measure(root: Path, sizes: list[str], *, threads: int, prompt: int, gen: int, budget: str, ref_policy: str,
            init_seed: int, data: str, engine: str, skip_reference: bool) -> tuple[dict, Path]:
    """Run every size (exporting models/random-SIZE/onnx first where absent); returns the
    document written to results/side-by-side-<time>/side-by-side.json and that folder."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_dir = root / "results" / f"side-by-side-{stamp}"
    out_dir.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    tok = root.parent / "shared/data/pythia-tokenizer.json"
    doc = {"threads": threads, "prompt": prompt, "gen": gen, "init_seed": init_seed, "sizes": {}}
    for size in sizes:
        model = root / f"models/random-{size}/onnx"
        if not (model / "model.onnx").is_file():
            run(["make", f"models/random-{size}/onnx/model.onnx", f"INIT_SEED={init_seed}"])
        eng = out_dir / f"engine-{size}.json"
        run([engine, "speed", "--model", str(model), "--data", data, "--threads", str(threads),
             "--exp", "full," + budget, "--prompt", str(prompt), "--gen", str(gen),
             "--warmup", "1", "--json", str(eng)])
        hf = out_dir / f"torch-hf-{size}.json"
        run([py, str(root / "export/torch_speed.py"), "--random-init", size, "--init-seed", str(init_seed), "--impl", "hf",
             "--threads", str(threads), "--prompt", str(prompt), "--gen", str(gen),
             "--data", data, "--tokenizer", str(tok), "--out", str(hf)])
        entry = {"engine": json.loads(eng.read_text()), "torch_hf": json.loads(hf.read_text())}
        if not skip_reference:
            ref = out_dir / f"torch-ref-{size}.json"
            run([py, str(root / "export/torch_speed.py"), "--random-init", size, "--init-seed", str(init_seed),
                 "--impl", "reference", "--policy", ref_policy, "--threads", str(threads),
                 "--prompt", str(prompt), "--gen", str(gen), "--data", data,
                 "--tokenizer", str(tok), "--out", str(ref)])
            entry["torch_reference"] = json.loads(ref.read_text())
        doc["sizes"][size] = entry
        (out_dir / "side-by-side.json").write_text(json.dumps(doc, indent=2))

    return doc, out_dir


def table(doc: dict, ref_policy: str) -> str:
    """Markdown table: TPOT medians, TTFT, engine / PyTorch ratios and the bandwidth floor."""
    lines = ["| size | impl | policy | TPOT median (ms) | TTFT (ms) | engine / PyTorch (TPOT) | floor (ms) | TPOT / floor |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for size, e in doc["sizes"].items():
        hf_tpot = e["torch_hf"]["tpot_median_ms"]
        ref_tpot = e.get("torch_reference", {}).get("tpot_median_ms")
        for r in e["engine"]["runs"]:
            s = r["speed"]
            base = hf_tpot if r["policy"] == "full" else (ref_tpot if r["policy"] == ref_policy else None)
            ratio = f"{s['tpot_median_ms'] / base:.3f}" if base else "-"
            floor = r.get("floor_ms")
            lines.append(f"| {size} | engine | {r['policy']} | {s['tpot_median_ms']:.2f} | {s['ttft_ms']:.0f} | {ratio} | "
                         f"{floor:.2f} | {s['tpot_median_ms'] / floor:.2f} |" if floor else
                         f"| {size} | engine | {r['policy']} | {s['tpot_median_ms']:.2f} | {s['ttft_ms']:.0f} | {ratio} | - | - |")
        lines.append(f"| {size} | transformers eager | full | {hf_tpot:.2f} | {e['torch_hf']['ttft_ms']:.0f} | 1 | | |")
        if ref_tpot:
            lines.append(f"| {size} | PyTorch reference | {ref_policy} | {ref_tpot:.2f} | "
                         f"{e['torch_reference']['ttft_ms']:.0f} | 1 | | |")
    return "\n".join(lines)
