#!/usr/bin/env python3
"""PyTorch side of the speed comparison (issue 8): decode speed on the CPU, batch 1.

    python export/torch_speed.py --hf-dir models/pythia-micro --impl hf --threads 4 --prompt 512 --gen 256 --out hf.json
    python export/torch_speed.py --random-init 160m --seed 0 --impl hf --threads 4 --out hf-160m.json
    python export/torch_speed.py --random-init 160m --impl reference --policy h2o:192+64 --out ref-160m.json

Implementations (`--impl`):
- `hf`: transformers' GPTNeoXForCausalLM, eager attention, with its own KV cache (DynamicCache),
  full cache: prefill the P prompt tokens in one call (TTFT), then greedy decode (each step feeds
  the previous argmax) until G tokens are generated: G-1 timed decode steps, as the engine's
  `speed` does (src/eval/speed.rs).
- `reference`: the project's PyTorch reference loop (export/reference.py) with a policy. It has
  no batched prefill and scores a given text, so it streams P + G tokens one at a time: its
  "TTFT" is the time of the first P steps and its decode steps are the G-1 steps after them.
  Step times come from the reference's observer hook (the time between the last layer's
  callbacks of two consecutive steps, i.e. one whole step: all layers, eviction, logits and NLL).
  It is not optimised; it shows what eviction costs when written plainly in PyTorch.

Figures, as the engine's (src/report/figures.rs): ttft_ms; tpot_median_ms / tpot_p90_ms /
tpot_mean_ms over decode steps (p90 by linear interpolation); throughput_tps = decode steps /
decode time; prefill_tps; seed_tpot_ms = (prefill + decode) / generated tokens and
seed_throughput_tps, its inverse.

Weights: `--hf-dir` (a checkpoint folder) or `--random-init SIZE|CONFIG.json --seed N`, which
uses the exporter's own seeded generator (h2o_export.weights.RandomWeights: the same values the
exporter writes into model.onnx for `export.py --random-init SIZE --seed N --dtype fp32`), so
engine and PyTorch figures are on identical weights; `weights_sha256` is the digest the exporter
records in the manifest's source.sha256, for checking that.

Prompt tokens: the first P (+ G for the reference) tokens of `--data` with the model's tokenizer
(`--tokenizer`, default DIR/tokenizer.json), or seeded random ids (`--token-seed`) when no data
is given. Output: one JSON object (--out, and a one-line summary on stdout).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

EXPORT_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(EXPORT_DIR))

import reference as ref  # noqa: E402


class SpeedError(ValueError):
    """Bad input; exit status 2."""


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


def random_init_model(spec: str, seed: int):
    """GPTNeoXForCausalLM (eager, float32) holding the exporter's seeded random weights for
    `spec` (a Pythia size or a config.json), and the sha256 the exporter's manifest records."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM
    from transformers.modeling_utils import no_init_weights

    from h2o_export.errors import ExportError
    from h2o_export.exporter import resolve_random_config
    from h2o_export.weights import RandomWeights, expected_tensors

    try:
        raw, cfg, label = resolve_random_config(spec)
    except ExportError as e:
        raise SpeedError(str(e)) from e
    hf_cfg = GPTNeoXConfig(**{k: v for k, v in raw.items() if not k.startswith("_")})
    hf_cfg._attn_implementation = "eager"
    with no_init_weights():
        model = GPTNeoXForCausalLM(hf_cfg)
    model = model.float().eval()
    params = dict(model.named_parameters())
    weights = RandomWeights(cfg, seed)
    digest = hashlib.sha256()
    with torch.no_grad():
        for name, shape in expected_tensors(cfg):
            arr = weights.get(name)
            # the exporter's digest: the array as drawn (linear weights [in, out], contiguous)
            digest.update((arr if arr.flags.c_contiguous else np.ascontiguousarray(arr.T)).data)
            if name not in params:
                raise SpeedError(f"random init: transformers' model has no parameter {name}")
            params[name].copy_(torch.from_numpy(np.ascontiguousarray(arr)))
    if hf_cfg.tie_word_embeddings:
        model.tie_weights()
    name = f"random-{Path(label).stem if label.endswith('.json') else label}"
    return model, name, digest.hexdigest()


def load(args):
    """(model, name, weights_sha256 or None, tokenizer path or None)."""
    if args.hf_dir:
        try:
            model = ref.load_model(args.hf_dir)
        except ref.ReferenceError as e:
            raise SpeedError(str(e)) from e
        tok = Path(args.tokenizer) if args.tokenizer else Path(args.hf_dir) / "tokenizer.json"
        d = Path(args.hf_dir).resolve()
        return model, (d.parent.name if d.name in ("hf", "onnx") else d.name), None, tok
    model, name, sha = random_init_model(args.random_init, args.seed)
    return model, name, sha, Path(args.tokenizer) if args.tokenizer else None


def prompt_ids(args, model, tok: Optional[Path], n: int) -> list[int]:
    if args.data:
        if tok is None or not tok.is_file():
            raise SpeedError(f"--data needs a tokenizer: pass --tokenizer (looked for {tok})")
        try:
            ids = ref.load_tokens(tok, args.data, n)
        except ref.ReferenceError as e:
            raise SpeedError(str(e)) from e
        if max(ids) >= model.config.vocab_size:
            raise SpeedError(f"tokenizer {tok} produces id {max(ids)} beyond the model's vocab {model.config.vocab_size}")
        return ids
    g = torch.Generator().manual_seed(args.token_seed)
    return torch.randint(0, model.config.vocab_size, (n,), generator=g).tolist()


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------


def percentile(sorted_ms: list[float], p: float) -> float:
    """Linear interpolation between closest ranks (as the engine's percentile_sorted)."""
    if not sorted_ms:
        return math.nan
    pos = p * (len(sorted_ms) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_ms) - 1)
    return sorted_ms[lo] + (sorted_ms[hi] - sorted_ms[lo]) * (pos - lo)


def figures(prompt: int, ttft_ms: float, steps_ms: list[float]) -> dict:
    n = len(steps_ms)
    decode_ms = math.fsum(steps_ms)
    total_ms = ttft_ms + decode_ms
    s = sorted(steps_ms)
    return {
        "prompt": prompt,
        "decode_steps": n,
        "generated_tokens": n + 1,
        "ttft_ms": ttft_ms,
        "tpot_median_ms": percentile(s, 0.5),
        "tpot_p90_ms": percentile(s, 0.9),
        "tpot_mean_ms": decode_ms / n if n else math.nan,
        "tpot_min_ms": s[0] if s else math.nan,
        "tpot_max_ms": s[-1] if s else math.nan,
        "throughput_tps": n / (decode_ms / 1e3) if n and decode_ms > 0 else math.nan,
        "prefill_tps": prompt / (ttft_ms / 1e3) if ttft_ms > 0 else math.nan,
        "seed_tpot_ms": total_ms / (n + 1),
        "seed_throughput_tps": (n + 1) / (total_ms / 1e3) if total_ms > 0 else math.nan,
    }


# --------------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------------


@torch.inference_mode()
def run_hf(model, prompt: list[int], gen: int, warmup: int) -> dict:
    """transformers with DynamicCache: prefill, then gen-1 greedy decode steps."""
    from transformers import DynamicCache

    ids = torch.tensor([prompt], dtype=torch.int64)

    def generate(steps: int, times: Optional[list]):
        cache = DynamicCache()
        t0 = time.perf_counter()
        out = model(input_ids=ids, past_key_values=cache, use_cache=True)
        nxt = out.logits[0, -1].argmax()
        ttft = time.perf_counter() - t0
        for _ in range(steps):
            t = time.perf_counter()
            out = model(input_ids=nxt.view(1, 1), past_key_values=out.past_key_values, use_cache=True)
            nxt = out.logits[0, -1].argmax()
            if times is not None:
                times.append((time.perf_counter() - t) * 1e3)
        return ttft * 1e3, out.past_key_values

    for _ in range(warmup):
        generate(min(gen, 8), None)
    steps: list[float] = []
    ttft_ms, cache = generate(gen - 1, steps)
    kv = 0
    for layer in getattr(cache, "layers", []):  # transformers >= 4.56: cache.layers[i].keys/values
        for t in (getattr(layer, "keys", None), getattr(layer, "values", None)):
            if isinstance(t, torch.Tensor):
                kv += t.numel() * t.element_size()
    res = figures(len(prompt), ttft_ms, steps)
    res.update(policy="full", kv_bytes=kv or None, cache="transformers DynamicCache", attention="eager")
    return res


def run_ref(model, ids: list[int], prompt: int, policy: str, warmup: int) -> dict:
    """The reference loop over prompt + gen tokens; per-step times from the observer."""
    layers = model.config.num_hidden_layers
    last = layers - 1
    for _ in range(warmup):
        ref.run_reference(model, ids[: min(len(ids), prompt + 8)], policy)
    stamps: list[float] = []

    def observer(view):
        if view.layer == last:
            stamps.append(time.perf_counter())

    t0 = time.perf_counter()
    res = ref.run_reference(model, ids, policy, observer=observer)
    # stamps[t]: end of step t's last layer; step t (t >= 1) took stamps[t] - stamps[t-1]
    ttft_ms = (stamps[prompt - 1] - t0) * 1e3
    steps = [(stamps[t] - stamps[t - 1]) * 1e3 for t in range(prompt, len(stamps))]
    out = figures(prompt, ttft_ms, steps)
    out.update(policy=res["policy"], budget=res["budget"], kv_bytes=None, ppl=res["ppl"],
               cache="export/reference.py compressed per-head cache",
               note="no batched prefill: ttft is P single-token steps; decode feeds the text, not argmax")
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description="PyTorch decode speed on the CPU (transformers eager or the reference loop).",
                                 epilog="Exit status: 0 ok, 2 bad input.")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--hf-dir", help="Hugging Face checkpoint folder (config.json, model.safetensors)")
    src.add_argument("--random-init", metavar="SIZE|CONFIG.json",
                     help="the exporter's seeded random weights at a Pythia size (e.g. 160m) or a config.json's shape")
    ap.add_argument("--seed", type=int, default=0, help="seed for --random-init (as export.py --seed; default 0)")
    ap.add_argument("--impl", choices=["hf", "reference"], default="hf",
                    help="hf: transformers eager + DynamicCache, full cache (default); reference: export/reference.py")
    ap.add_argument("--policy", default="h2o:192+64", help="policy for --impl reference (default h2o:192+64)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch intra-op threads (default: all CPUs)")
    ap.add_argument("--prompt", type=int, default=512, help="prompt tokens P (default 512)")
    ap.add_argument("--gen", type=int, default=128, help="generated tokens G: G-1 timed decode steps (default 128)")
    ap.add_argument("--warmup", type=int, default=1, help="discarded warm-up runs of min(G, 8) steps (default 1)")
    ap.add_argument("--data", help="text file for the prompt (default: seeded random ids)")
    ap.add_argument("--tokenizer", help="tokenizer.json for --data (default: HF_DIR/tokenizer.json)")
    ap.add_argument("--token-seed", type=int, default=0, help="seed of the random prompt ids (default 0)")
    ap.add_argument("--out", help="write the result JSON here")
    args = ap.parse_args(argv)

    try:
        if args.threads < 1:
            raise SpeedError("--threads must be >= 1")
        if args.prompt < 1 or args.gen < 2:
            raise SpeedError("--prompt must be at least 1 and --gen at least 2")
        if args.warmup < 0:
            raise SpeedError("--warmup must be >= 0")
        if args.impl == "hf" and args.policy != ap.get_default("policy"):
            raise SpeedError("--policy applies to --impl reference; transformers' cache is the full cache")
        if args.impl == "reference":
            ref.parse_policy(args.policy)
        torch.set_num_threads(args.threads)
        model, name, sha, tok = load(args)
        max_pos = int(model.config.max_position_embeddings)
        if args.prompt + args.gen > max_pos:
            raise SpeedError(f"--prompt {args.prompt} + --gen {args.gen} is beyond the model's {max_pos} positions")
        if args.impl == "hf":
            ids = prompt_ids(args, model, tok, args.prompt)
            res = run_hf(model, ids, args.gen, args.warmup)
        else:
            ids = prompt_ids(args, model, tok, args.prompt + args.gen)
            res = run_ref(model, ids, args.prompt, args.policy, args.warmup)
    except (SpeedError, ref.ReferenceError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    doc = {
        "impl": "transformers-eager" if args.impl == "hf" else "pytorch-reference",
        "model": name,
        "weights": {"hf_dir": str(args.hf_dir)} if args.hf_dir else {"random_init": args.random_init, "seed": args.seed},
        "weights_sha256": sha,
        "weight_bytes": sum(p.numel() * p.element_size() for p in model.parameters()),
        "dtype": "float32",
        "device": "cpu",
        "batch": 1,
        "threads": torch.get_num_threads(),
        "gen": args.gen,
        "warmup": args.warmup,
        "prompt_source": args.data or f"random ids (seed {args.token_seed})",
        **res,
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "processor": platform.processor()},
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    doc = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in doc.items()}
    text = json.dumps(doc, indent=2)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    print(f"{doc['impl']} {name} {doc['policy']} threads {doc['threads']}: prompt {args.prompt}, gen {args.gen}: "
          f"TTFT {doc['ttft_ms']:.2f} ms, TPOT median {doc['tpot_median_ms']:.3f} ms, p90 {doc['tpot_p90_ms']:.3f} ms, "
          f"{doc['throughput_tps']:.1f} tok/s" + (f" -> {args.out}" if args.out else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
