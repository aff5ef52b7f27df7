"""PyTorch side of the speed comparison (issue 8): decode speed on the CPU, batch 1, for
export/torch_speed.py (its docstring describes the measurement; this module holds it).

Implementations: `run_hf` (transformers' GPTNeoXForCausalLM, eager attention, DynamicCache, full
cache, prefill then greedy decode) and `run_ref` (the PyTorch reference loop with a policy,
timed per step through its observer). Figures as the engine's (src/report/figures.rs).
Random-init weights come from the exporter's own generator (weights.RandomWeights), so engine
and PyTorch figures are on identical weights.
"""

from __future__ import annotations

import hashlib
import math
import os
import platform
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .errors import ExportError, ReferenceError
from .exporter import resolve_random_config
from .reference import load_model, load_tokens, run_reference
from .weights import RandomWeights, expected_tensors


class SpeedError(ValueError):
    """Bad input; exit status 2."""


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


# transformers' (config, model) classes per model_type
_HF_CLASSES = {"gpt_neox": ("GPTNeoXConfig", "GPTNeoXForCausalLM"), "llama": ("LlamaConfig", "LlamaForCausalLM"),
               "qwen2": ("Qwen2Config", "Qwen2ForCausalLM")}


def random_init_model(spec: str, init_seed: int):
    """GPTNeoXForCausalLM, LlamaForCausalLM or Qwen2ForCausalLM (eager, float32) holding the exporter's
    seeded random weights for `spec` (a Pythia or Llama-family size, or a config.json), and the sha256
    the exporter's manifest records."""
    import transformers
    from transformers.modeling_utils import no_init_weights

    try:
        raw, cfg, label = resolve_random_config(spec)
    except ExportError as e:
        raise SpeedError(str(e)) from e
    cfg_cls, model_cls = (getattr(transformers, c) for c in _HF_CLASSES[cfg.model_type])
    hf_cfg = cfg_cls(**{k: v for k, v in raw.items() if not k.startswith("_")})
    hf_cfg._attn_implementation = "eager"
    with no_init_weights():
        model = model_cls(hf_cfg)
    model = model.float().eval()
    params = dict(model.named_parameters())
    weights = RandomWeights(cfg, init_seed)
    digest = hashlib.sha256()
    with torch.no_grad():
        for name, shape in expected_tensors(cfg):
            arr = weights.get(name)
            # the exporter's digest: the array as drawn (linear weights [in, out], contiguous)
            digest.update((arr if arr.flags.c_contiguous else np.ascontiguousarray(arr.T)).data)
            if name == cfg.head_name and cfg.tie_word_embeddings and name not in params:
                continue  # tied: transformers lists the head once, as the embedding (tied below)
            if name not in params:
                raise SpeedError(f"random init: transformers' model has no parameter {name}")
            params[name].copy_(torch.from_numpy(np.ascontiguousarray(arr)))
    if hf_cfg.tie_word_embeddings:
        model.tie_weights()
    name = f"random-{Path(label).stem if label.endswith('.json') else label}"
    return model, name, digest.hexdigest()


def load(hf_dir: Optional[str], random_init: Optional[str], init_seed: int, tokenizer: Optional[str]):
    """The model of `hf_dir` or of `random_init` (+ init_seed): (model, name, weights_sha256 or
    None, tokenizer path or None)."""
    if hf_dir:
        try:
            model = load_model(hf_dir)
        except ReferenceError as e:
            raise SpeedError(str(e)) from e
        tok = Path(tokenizer) if tokenizer else Path(hf_dir) / "tokenizer.json"
        d = Path(hf_dir).resolve()
        return model, (d.parent.name if d.name in ("hf", "onnx") else d.name), None, tok
    model, name, sha = random_init_model(random_init, init_seed)
    return model, name, sha, Path(tokenizer) if tokenizer else None


def prompt_ids(model, n: int, data: Optional[str], tok: Optional[Path], token_seed: int) -> list[int]:
    """The first n tokens of `data` with tokenizer `tok`, or n seeded random ids without data."""
    if data:
        if tok is None or not tok.is_file():
            raise SpeedError(f"--data needs a tokenizer: pass --tokenizer (looked for {tok})")
        try:
            ids = load_tokens(tok, data, n)
        except ReferenceError as e:
            raise SpeedError(str(e)) from e
        if max(ids) >= model.config.vocab_size:
            raise SpeedError(f"tokenizer {tok} produces id {max(ids)} beyond the model's vocab {model.config.vocab_size}")
        return ids
    g = torch.Generator().manual_seed(token_seed)
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
        run_reference(model, ids[: min(len(ids), prompt + 8)], policy)
    stamps: list[float] = []

    def observer(view):
        if view.layer == last:
            stamps.append(time.perf_counter())

    t0 = time.perf_counter()
    res = run_reference(model, ids, policy, observer=observer)
    # stamps[t]: end of step t's last layer; step t (t >= 1) took stamps[t] - stamps[t-1]
    ttft_ms = (stamps[prompt - 1] - t0) * 1e3
    steps = [(stamps[t] - stamps[t - 1]) * 1e3 for t in range(prompt, len(stamps))]
    out = figures(prompt, ttft_ms, steps)
    out.update(policy=res["policy"], budget=res["budget"], kv_bytes=None, ppl=res["ppl"],
               cache="PyTorch reference (h2o_export.reference) compressed per-head cache",
               note="no batched prefill: ttft is P single-token steps; decode feeds the text, not argmax")
    return out


def document(impl: str, name: str, weights: dict, sha: Optional[str], model, res: dict, *, gen: int,
             warmup: int, prompt_source: str) -> dict:
    """The result JSON of one measurement (non-finite figures as null)."""
    doc = {
        "impl": "transformers-eager" if impl == "hf" else "pytorch-reference",
        "model": name,
        "weights": weights,
        "weights_sha256": sha,
        "weight_bytes": sum(p.numel() * p.element_size() for p in model.parameters()),
        "dtype": "float32",
        "device": "cpu",
        "batch": 1,
        "threads": torch.get_num_threads(),
        "gen": gen,
        "warmup": warmup,
        "prompt_source": prompt_source,
        **res,
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "processor": platform.processor()},
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in doc.items()}
