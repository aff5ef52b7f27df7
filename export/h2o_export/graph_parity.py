"""Parity of the exported graph with transformers, one graph call at a time (tests and the
fixture generator): tiny random GPT-NeoX checkpoints made with transformers, the same step run
through transformers (eager attention, the reference) and through onnxruntime (the exported
graph), the comparison rules of the graph contract, the standard cases and the golden file.

Needs torch and transformers (export/requirements-torch.txt); the exporter itself does not.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from .graph import with_logits_from

TINY_DEFAULTS = dict(
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=256,
    rotary_pct=0.25,
    rotary_emb_base=10000,
    max_position_embeddings=2048,
    layer_norm_eps=1e-5,
    use_parallel_residual=True,
    hidden_act="gelu",
    tie_word_embeddings=False,
    bos_token_id=0,
    eos_token_id=0,
)


def make_tiny_checkpoint(out_dir: Path, vocab_size: int, seed: int, tokenizer: Optional[Path] = None,
                         **overrides) -> Path:
    """Write a random GPT-NeoX checkpoint (config.json, model.safetensors[, tokenizer.json]).

    Weights are drawn so that activations are O(1) (linear weights ~ N(0, 1/fan_in), embeddings
    ~ N(0, 1), biases and layer-norm shifts ~ N(0, 0.1), layer-norm scales ~ 1 + N(0, 0.1)):
    attention is then far from uniform and every parameter matters, which makes the parity
    tests sensitive (transformers' own init, std 0.02 and zero biases, gives near-uniform
    attention and would hide mistakes in RoPE, masking or bias handling)."""
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    kw = dict(TINY_DEFAULTS)
    kw.update(overrides)
    config = GPTNeoXConfig(vocab_size=vocab_size, **kw)
    torch.manual_seed(seed)
    model = GPTNeoXForCausalLM(config).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layernorm" in name or "layer_norm" in name:
                base = 1.0 if name.endswith("weight") else 0.0
                p.copy_(base + 0.1 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif "embed_in" in name:
                p.copy_(torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1]))
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    if tokenizer is not None:
        shutil.copyfile(tokenizer, out_dir / "tokenizer.json")
    return out_dir


@dataclass
class Step:
    """One graph call: inputs named as the graph's, past as [batch, kv_heads, past, head_dim] arrays."""

    input_ids: np.ndarray  # int64 [batch, seq]
    position_ids: np.ndarray  # int64 [batch, seq]
    attention_mask: np.ndarray  # int64 [batch, past + seq]
    past: list = field(default_factory=list)  # per layer (key, value)

    @property
    def past_len(self) -> int:
        return self.past[0][0].shape[2] if self.past else 0

    def query_mask(self) -> np.ndarray:
        """[batch, seq] bool: True for real (non-padding) new tokens."""
        return self.attention_mask[:, self.past_len:].astype(bool)

    def feeds(self, num_layers: int, num_heads: int, head_dim: int, dtype=np.float32) -> dict:
        b = self.input_ids.shape[0]
        feeds = {
            "input_ids": self.input_ids.astype(np.int64),
            "position_ids": self.position_ids.astype(np.int64),
            "attention_mask": self.attention_mask.astype(np.int64),
        }
        for i in range(num_layers):
            if self.past:
                k, v = self.past[i]
            else:
                k = v = np.zeros((b, num_heads, 0, head_dim), dtype)
            feeds[f"past_key_values.{i}.key"] = np.ascontiguousarray(k, dtype=dtype)
            feeds[f"past_key_values.{i}.value"] = np.ascontiguousarray(v, dtype=dtype)
        return feeds


def run_hf(model, step: Step) -> dict:
    """The step through transformers (eager attention): outputs under the graph's names.
    attention_sums = output_attentions summed over the non-padding new queries."""
    import torch
    from transformers import DynamicCache

    dtype = next(model.parameters()).dtype
    cache = DynamicCache()
    for i, (k, v) in enumerate(step.past):
        cache.update(torch.from_numpy(np.ascontiguousarray(k)).to(dtype),
                     torch.from_numpy(np.ascontiguousarray(v)).to(dtype), i)
    with torch.no_grad():
        out = model(
            input_ids=torch.from_numpy(step.input_ids.astype(np.int64)),
            position_ids=torch.from_numpy(step.position_ids.astype(np.int64)),
            attention_mask=torch.from_numpy(step.attention_mask.astype(np.int64)),
            past_key_values=cache,
            use_cache=True,
            output_attentions=True,
        )
    P = step.past_len
    qm = torch.from_numpy(step.query_mask()).to(torch.float32)[:, None, :, None]  # [batch, 1, seq, 1]
    res = {"logits": out.logits.float().numpy()}
    kv = out.past_key_values
    for i, att in enumerate(out.attentions):
        layer = kv.layers[i]
        res[f"new_key_values.{i}.key"] = layer.keys[:, :, P:, :].numpy()
        res[f"new_key_values.{i}.value"] = layer.values[:, :, P:, :].numpy()
        res[f"attention_sums.{i}"] = (att.float() * qm).sum(dim=2).numpy()
    return res


def ort_session(model_path: Path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(model_path), so, providers=["CPUExecutionProvider"])


def run_onnx(session, step: Step, manifest: dict, logits_from: int = 0) -> dict:
    """The graph's outputs for `step`; logits for the new tokens from `logits_from` on (a graph
    without that input, before exporter 1.3.0, gives every new token's whatever is asked)."""
    dt = np.float16 if manifest["dtype"] == "float16" else np.float32
    feeds = step.feeds(manifest["num_layers"], manifest.get("num_kv_heads", manifest["num_heads"]),
                       manifest["head_dim"], dt)
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, with_logits_from(feeds, session, logits_from))))


def compare(got: dict, want: dict, step: Step, tol: dict) -> dict:
    """Max abs difference per output under the contract's rules: logits and new K/V only for
    real (non-padding) new tokens, attention sums everywhere. Returns {name: max_abs_diff};
    raises AssertionError naming every output over its tolerance (keys of `tol`: logits, kv,
    attention_sums)."""
    qm = step.query_mask()  # [batch, seq]
    diffs, bad = {}, []
    for name, w in want.items():
        g = got[name].astype(np.float64)
        w = w.astype(np.float64)
        if g.shape != w.shape:
            raise AssertionError(f"{name}: shape {g.shape} != expected {w.shape}")
        if name == "logits":
            d = np.abs(g - w)[qm]
            kind = "logits"
        elif name.startswith("new_key_values"):
            d = np.abs(g - w).transpose(0, 2, 1, 3)[qm]  # [batch, seq, heads, hd] -> real tokens
            kind = "kv"
        else:
            d = np.abs(g - w)
            kind = "attention_sums"
            masked = np.broadcast_to(~step.attention_mask.astype(bool)[:, None, :], g.shape)
            if np.any(g[masked] != 0.0):
                bad.append(f"{name}: masked entries are not exactly 0")
        if not np.isfinite(got[name]).all():
            bad.append(f"{name}: non-finite values")
        diffs[name] = float(d.max()) if d.size else 0.0
        if diffs[name] > tol[kind]:
            bad.append(f"{name}: max abs diff {diffs[name]:.3g} > {tol[kind]:.3g}")
    if bad:
        raise AssertionError("; ".join(bad))
    return diffs


# ---- standard cases --------------------------------------------------------------------------

def gather_past(kv_list: list, slots: list[int], capacity: Optional[int] = None):
    """Past built from a cache: keep the given positions' entries (in the given slot order) and
    add empty slots (zeros) up to `capacity`. kv_list: per layer (key, value) [1, heads, n, hd]."""
    out = []
    for k, v in kv_list:
        ks, vs = k[:, :, slots, :], v[:, :, slots, :]
        if capacity is not None and capacity > len(slots):
            padk = np.zeros(ks.shape[:2] + (capacity - len(slots), ks.shape[3]), ks.dtype)
            ks = np.concatenate([ks, padk], axis=2)
            vs = np.concatenate([vs, padk.copy()], axis=2)
        out.append((ks, vs))
    return out


def standard_cases(model, tokens: list[int], num_layers: int, pad_id: int = 1,
                   stepwise: int = 4) -> dict[str, Step]:
    """The parity cases (shared by the pytest suite and the fixture). Needs >= 12 tokens.

    prefill               batch 1, 8 tokens at positions 0..7, past empty
    continuation_gapped   past = a 10-token prefill's cache with positions 3, 6 and 8 evicted
                          (7 entries, in position order); 2 new tokens at positions 10, 11
    continuation_slots    as above, but the 7 entries sit in scrambled slots (as after slot
                          reuse) and the slot array has 3 empty slots (mask 0, zeros): past 10
    batch2_padded         batch 2, seq 8: row 0 = 8 tokens, row 1 = 3 left-padding tokens
                          (mask 0, position 0) + 5 tokens at positions 0..4; past empty
    batch2_padded_decode  the next step of batch2_padded: past = its new K/V (row 1's padding
                          slots masked), 1 new token per row at positions 8 and 5
    stepwise_t            token-by-token from the first token: step t feeds token t at
                          position t with the full cache of steps < t as past
    """
    t = np.asarray(tokens, dtype=np.int64)
    assert len(t) >= 12
    cases: dict[str, Step] = {}
    cases["prefill"] = Step(t[None, :8], np.arange(8)[None], np.ones((1, 8), np.int64))

    pre10 = Step(t[None, :10], np.arange(10)[None], np.ones((1, 10), np.int64))
    out10 = run_hf(model, pre10)
    kv10 = [(out10[f"new_key_values.{i}.key"], out10[f"new_key_values.{i}.value"]) for i in range(num_layers)]
    keep = [0, 1, 2, 4, 5, 7, 9]
    cases["continuation_gapped"] = Step(t[None, 10:12], np.array([[10, 11]]), np.ones((1, len(keep) + 2), np.int64),
                                        gather_past(kv10, keep))
    scrambled = [5, 0, 9, 2, 7, 1, 4]
    cap = 10
    mask = np.zeros((1, cap + 2), np.int64)
    mask[0, : len(scrambled)] = 1
    mask[0, cap:] = 1
    cases["continuation_slots"] = Step(t[None, 10:12], np.array([[10, 11]]), mask, gather_past(kv10, scrambled, cap))

    ids = np.stack([t[:8], np.concatenate([[pad_id] * 3, t[1:6]])])
    pos = np.stack([np.arange(8), np.concatenate([[0, 0, 0], np.arange(5)])])
    am = np.stack([np.ones(8, np.int64), np.array([0, 0, 0, 1, 1, 1, 1, 1])])
    cases["batch2_padded"] = Step(ids, pos, am)
    out_b = run_hf(model, cases["batch2_padded"])
    kv_b = [(out_b[f"new_key_values.{i}.key"], out_b[f"new_key_values.{i}.value"]) for i in range(num_layers)]
    cases["batch2_padded_decode"] = Step(np.array([[t[8]], [t[6]]]), np.array([[8], [5]]),
                                         np.concatenate([am, np.ones((2, 1), np.int64)], axis=1), kv_b)

    past = []
    for s in range(stepwise):
        step = Step(t[None, s:s + 1], np.array([[s]]), np.ones((1, s + 1), np.int64), past)
        cases[f"stepwise_{s}"] = step
        out = run_hf(model, step)
        new = [(out[f"new_key_values.{i}.key"], out[f"new_key_values.{i}.value"]) for i in range(num_layers)]
        past = new if not past else [(np.concatenate([pk, nk], 2), np.concatenate([pv, nv], 2))
                                     for (pk, pv), (nk, nv) in zip(past, new)]
    return cases


# ---- golden file -----------------------------------------------------------------------------

def _arr_json(a: np.ndarray) -> str:
    a = np.asarray(a)
    if a.dtype.kind in "iu":
        data = ",".join(str(int(x)) for x in a.ravel())
    else:
        data = ",".join("%.9g" % float(x) for x in a.astype(np.float32).ravel())
    return '{"shape":%s,"data":[%s]}' % (json.dumps(list(a.shape)), data)


def write_golden(path: Path, header: dict, cases: dict[str, Step], expected: dict[str, dict],
                 num_layers: int, num_heads: int, head_dim: int, descriptions: dict[str, str]) -> None:
    """golden.json: header fields, then "cases": {name: {description, past_len, inputs, expected}}.
    Arrays are {"shape": [...], "data": [flat, row-major]}; floats written with 9 significant
    digits (exact for float32)."""
    parts = []
    for name, step in cases.items():
        feeds = step.feeds(num_layers, num_heads, head_dim)
        ins = ",".join(f'"{k}":{_arr_json(v)}' for k, v in feeds.items())
        outs = ",".join(f'"{k}":{_arr_json(v)}' for k, v in expected[name].items())
        parts.append(f'"{name}":{{"description":{json.dumps(descriptions.get(name, ""))},'
                     f'"past_len":{step.past_len},"inputs":{{{ins}}},"expected":{{{outs}}}}}')
    head = json.dumps(header, indent=1)[:-2]  # drop the closing "\n}"
    path.write_text(head + ',\n"cases":{\n' + ",\n".join(parts) + "\n}}\n", encoding="utf-8")


def read_golden(path: Path) -> tuple[dict, dict[str, tuple[Step, dict]]]:
    doc = json.loads(path.read_text(encoding="utf-8"))

    def arr(x, dtype):
        return np.asarray(x["data"], dtype=dtype).reshape(x["shape"])

    cases = {}
    for name, c in doc["cases"].items():
        ins = c["inputs"]
        layers = sorted({int(k.split(".")[1]) for k in ins if k.startswith("past_key_values.")})
        past = [(arr(ins[f"past_key_values.{i}.key"], np.float32), arr(ins[f"past_key_values.{i}.value"], np.float32))
                for i in layers] if c["past_len"] > 0 else []
        step = Step(arr(ins["input_ids"], np.int64), arr(ins["position_ids"], np.int64),
                    arr(ins["attention_mask"], np.int64), past)
        cases[name] = (step, {k: arr(v, np.float32) for k, v in c["expected"].items()})
    return doc, cases
