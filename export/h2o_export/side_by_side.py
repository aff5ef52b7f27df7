"""Engine vs PyTorch on the same machine, threads and random-init weights (issue 8), for
export/side_by_side.py (its docstring says what runs): `measure` runs the engine's `h2o speed`
(once per weight format: fp32, int8, int4 exports of the same random weights) and
export/torch_speed.py per size as subprocesses, optionally with one core kept busy, and `table`
renders the markdown table, naming the CPU.
"""

from __future__ import annotations

import contextlib
import json
import platform
import subprocess
import sys
import time
from pathlib import Path


def run(cmd: list[str], env: dict | None = None) -> None:
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, env=env)


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), else what the platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@contextlib.contextmanager
def busy_core(on: bool):
    """With `on`: one `yes > /dev/null` runs for the duration (a core kept busy, issue 16's loaded machine)."""
    if not on:
        yield
        return
    p = subprocess.Popen(["yes"], stdout=subprocess.DEVNULL)
    try:
        yield
    finally:
        p.kill()
        p.wait()


def engine_dir(root: Path, size: str, weights: str) -> Path:
    """The engine's export of random-SIZE: models/random-SIZE/onnx (fp32) or onnx-int8 / onnx-int4."""
    return root / f"models/random-{size}/onnx" if weights == "fp32" else root / f"models/random-{size}/onnx-{weights}"


def ensure_export(root: Path, size: str, weights: str, init_seed: int, tok: Path) -> Path:
    """Export random-SIZE with `weights` (the same random weights for every format) where absent."""
    model = engine_dir(root, size, weights)
    if not (model / "model.onnx").is_file():
        if weights == "fp32":
            run(["make", f"models/random-{size}/onnx/model.onnx", f"INIT_SEED={init_seed}"])
        else:
            run([sys.executable, str(root / "export/export.py"), "--random-init", size, "--init-seed", str(init_seed),
                 "--dtype", "fp32", "--weights", weights, "--tokenizer", str(tok), "--out", str(model),
                 "--name", f"random-{size}-{weights}", "--force"])
    return model


def measure(root: Path, sizes: list[str], *, threads: int, prompt: int, gen: int, budget: str, ref_policy: str,
            init_seed: int, data: str, engine: str, skip_reference: bool, weights: tuple[str, ...] = ("fp32",),
            loaded: bool = False) -> tuple[dict, Path]:
    """Run every size (exporting models/random-SIZE/onnx[-int8|-int4] first where absent), the
    engine once per weight format; with `loaded`, one core is kept busy by `yes` during the
    measurements (the exports run before it starts). Returns the document written to
    results/side-by-side-<time>/side-by-side.json and that folder."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_dir = root / "results" / f"side-by-side-{stamp}"
    out_dir.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    tok = root.parent / "shared/data/pythia-tokenizer.json"
    doc = {"threads": threads, "prompt": prompt, "gen": gen, "init_seed": init_seed, "cpu": cpu_model(),
           "loaded": loaded, "weights": list(weights), "sizes": {}}
    for size in sizes:
        models = {w: ensure_export(root, size, w, init_seed, tok) for w in weights}
        entry: dict = {"engines": {}}
        with busy_core(loaded):
            for w, model in models.items():
                eng = out_dir / f"engine-{size}-{w}.json"
                run([engine, "speed", "--model", str(model), "--data", data, "--threads", str(threads),
                     "--exp", "full," + budget, "--prompt", str(prompt), "--gen", str(gen),
                     "--warmup", "1", "--json", str(eng)])
                entry["engines"][w] = json.loads(eng.read_text())
            hf = out_dir / f"torch-hf-{size}.json"
            run([py, str(root / "export/torch_speed.py"), "--random-init", size, "--init-seed", str(init_seed),
                 "--impl", "hf", "--threads", str(threads), "--prompt", str(prompt), "--gen", str(gen),
                 "--data", data, "--tokenizer", str(tok), "--out", str(hf)])
            entry["torch_hf"] = json.loads(hf.read_text())
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
    """Markdown table, headed by the CPU and the load: per size and weight format, TPOT medians,
    TTFT, engine / PyTorch ratios of both and the bandwidth floor. A document of before the
    weight formats (one `engine` per size) reads as fp32."""
    head = (f"CPU: {doc.get('cpu', 'not recorded')}; {doc['threads']} threads; prompt {doc['prompt']}, "
            f"gen {doc['gen']}; {'one core kept busy by `yes > /dev/null`' if doc.get('loaded') else 'quiet machine'}")
    lines = [head, "",
             "| size | impl | weights | policy | TPOT median (ms) | TTFT (ms) | TPOT / PyTorch | TTFT / transformers "
             "| floor (ms) | TPOT / floor |",
             "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for size, e in doc["sizes"].items():
        hf_tpot, hf_ttft = e["torch_hf"]["tpot_median_ms"], e["torch_hf"]["ttft_ms"]
        ref_tpot = e.get("torch_reference", {}).get("tpot_median_ms")
        engines = e.get("engines", {"fp32": e["engine"]} if "engine" in e else {})
        for w, eng in engines.items():
            for r in eng["runs"]:
                s = r["speed"]
                base = hf_tpot if r["policy"] == "full" else (ref_tpot if r["policy"] == ref_policy else None)
                ratio = f"{s['tpot_median_ms'] / base:.3f}" if base else "-"
                floor = r.get("floor_ms")
                floors = f"{floor:.2f} | {s['tpot_median_ms'] / floor:.2f}" if floor else "- | -"
                lines.append(f"| {size} | engine | {w} | {r['policy']} | {s['tpot_median_ms']:.2f} | {s['ttft_ms']:.0f} | "
                             f"{ratio} | {s['ttft_ms'] / hf_ttft:.3f} | {floors} |")
        lines.append(f"| {size} | transformers eager | fp32 | full | {hf_tpot:.2f} | {hf_ttft:.0f} | 1 | 1 | | |")
        if ref_tpot:
            lines.append(f"| {size} | PyTorch reference | fp32 | {ref_policy} | {ref_tpot:.2f} | "
                         f"{e['torch_reference']['ttft_ms']:.0f} | 1 | | | |")
    return "\n".join(lines)
