"""The exported graph streamed token by token through onnxruntime's Python API with the engine's
cache layout, so that `h2o ppl` can be checked against ONNX Runtime's own run of the graph it
loads (tests of quantized exports, whose reference is the graph itself, not transformers).

The cache is laid out as docs/architecture.md ("Cache and policy semantics") describes the
engine's: per layer K/V [heads, capacity, head_dim] slots handed to the graph whole as past, a
slot mask (empty slots 0), capacity growing after the run in `chunk`-slot steps (64 in the
engine) up to the budget (the model's positions for `full`), scores += this step's attention
sums, a new token written to the first free slot, and once a head is over budget the policy
(policies/, the reference's) evicts one candidate and the new token takes the victim's slot.
With the same slots the graph gets the same inputs as in the engine, so its outputs are the
same floats: needed for int8/int4 graphs, whose activations are quantized inside MatMulNBits,
so that a difference in float summation order (e.g. masked empty columns or a slot order)
can flip a rounding and grow through the layers (docs/perf/quantization.md measures it).
Needs torch (the policies) and onnxruntime. Batch 1, one token per step.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .errors import ReferenceError
from .graph import with_logits_from
from .policies import Policy, parse_policy
from .trace import TRACE_FORMAT

ENGINE_CHUNK = 64  # the engine's growth step of a cache's slots (src/cache/store.rs)


def graph_session(model_dir: str | Path, threads: int = 1):
    """An onnxruntime CPU session on model_dir/model.onnx (default optimisations, `threads` intra-op)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(Path(model_dir) / "model.onnx"), so, providers=["CPUExecutionProvider"])


@dataclass
class SlotCache:
    """One layer's slots: k, v [heads, capacity, head_dim] (model dtype), pos [heads, capacity]
    int64 (-1 = empty), score [heads, capacity] float32. Every head has the same empty slots."""

    k: np.ndarray
    v: np.ndarray
    pos: np.ndarray
    score: np.ndarray

    @classmethod
    def empty(cls, heads: int, head_dim: int, dtype) -> "SlotCache":
        return cls(np.zeros((heads, 0, head_dim), dtype), np.zeros((heads, 0, head_dim), dtype),
                   np.zeros((heads, 0), np.int64), np.zeros((heads, 0), np.float32))

    def grow(self, capacity: int) -> None:
        """Append empty slots up to `capacity`."""
        extra = capacity - self.pos.shape[1]
        pad3 = ((0, 0), (0, extra), (0, 0))
        self.k, self.v = np.pad(self.k, pad3), np.pad(self.v, pad3)
        self.pos = np.pad(self.pos, ((0, 0), (0, extra)), constant_values=-1)
        self.score = np.pad(self.score, ((0, 0), (0, extra)))

    def put(self, h: int, slot: int, t: int, k: np.ndarray, v: np.ndarray, score: float) -> None:
        self.k[h, slot], self.v[h, slot], self.pos[h, slot], self.score[h, slot] = k, v, t, score

    def commit(self, t: int, k_new: np.ndarray, v_new: np.ndarray, own: np.ndarray, policy: Policy,
               budget: int) -> list[list[int]]:
        """Store token t (k_new, v_new [heads, head_dim], its own attention `own` [heads]) per head:
        into the first free slot, or over budget into the slot of the policy's victim. Returns
        the evicted positions per head."""
        heads = self.pos.shape[0]
        free = np.flatnonzero(self.pos[0] < 0)
        if self.pos.shape[1] - free.size + 1 <= budget:
            for h in range(heads):
                self.put(h, int(free[0]), t, k_new[h], v_new[h], own[h])
            return [[] for _ in range(heads)]
        # over budget (every slot holds a token): candidates = the slots, then the new token
        cand_pos = np.concatenate((self.pos, np.full((heads, 1), t, np.int64)), axis=1)  # [heads, C+1]
        cand_score = np.concatenate((self.score, own[:, None].astype(np.float32)), axis=1)
        order = np.argsort(cand_pos, axis=1, kind="stable")  # the policies want ascending positions
        pos_sorted = torch.from_numpy(np.take_along_axis(cand_pos, order, axis=1))
        score_sorted = torch.from_numpy(np.take_along_axis(cand_score, order, axis=1))
        victims = policy.choose_victims(t, pos_sorted, score_sorted).numpy()  # [heads, 1]
        evicted = []
        for h in range(heads):
            idx = int(order[h, victims[h, 0]])  # candidate index = slot, or C for the new token
            evicted.append([int(cand_pos[h, idx])])
            if idx < self.pos.shape[1]:
                self.put(h, idx, t, k_new[h], v_new[h], own[h])
        return evicted


def run_graph(model_dir: str | Path, token_ids: Sequence[int], policy: Policy | str, *,
              chunk: int = ENGINE_CHUNK, threads: int = 1, session=None) -> dict:
    """Stream `token_ids` through the graph in model_dir (streaming perplexity as `h2o ppl`:
    step t feeds token t at position t and scores token t+1).

    Returns {"policy", "model", "n_tokens", "nll", "ppl", "trace", "max_row_sum_error"}:
    `trace` in the engine's format (h2o-evict-trace/1, a step per fed token), and the largest
    |1 - sum| over the steps' attention rows (a decode step's row sums to 1)."""
    model_dir = Path(model_dir)
    manifest = json.loads((model_dir / "manifest.json").read_text(encoding="utf-8"))
    layers, hd = manifest["num_layers"], manifest["head_dim"]
    heads = manifest.get("num_kv_heads", manifest["num_heads"])  # the cache's heads: KV heads
    group = manifest["num_heads"] // heads  # query heads per KV head
    limit = int(manifest["max_position_embeddings"])
    if isinstance(policy, str):
        policy = parse_policy(policy, max_positions=limit)
    if policy.kind not in ("full", "local", "sink", "h2o") or policy.schedule != "uniform":
        raise ReferenceError(f"graph_stream runs full, local, sink and h2o(-layer) with the uniform schedule, "
                             f"not {policy.spec}; use the reference loop (reference.py) for the others")
    ids = [int(x) for x in token_ids]
    if len(ids) < 2:
        raise ReferenceError(f"need at least 2 tokens for one prediction, got {len(ids)}")
    budget = limit if policy.budget is None else min(policy.budget, limit)
    dtype = np.float16 if manifest["dtype"] == "float16" else np.float32
    sess = session or graph_session(model_dir, threads)
    names = [o.name for o in sess.get_outputs()]
    caches = [SlotCache.empty(heads, hd, dtype) for _ in range(layers)]
    nll: list[float] = []
    steps: list[dict] = []
    worst_row = 0.0
    for t in range(len(ids) - 1):
        past = caches[0].pos.shape[1]
        feeds = {"input_ids": np.array([[ids[t]]], np.int64), "position_ids": np.array([[t]], np.int64),
                 "attention_mask": np.append(caches[0].pos[0] >= 0, True).astype(np.int64)[None]}
        for i, c in enumerate(caches):
            feeds[f"past_key_values.{i}.key"], feeds[f"past_key_values.{i}.value"] = c.k[None], c.v[None]
        out = dict(zip(names, sess.run(names, with_logits_from(feeds, sess))))
        want = min(int((caches[0].pos[0] >= 0).sum()) + 1, budget)
        grown = min(math.ceil(want / chunk) * chunk, budget) if want > past else past
        evicted = []
        for i, c in enumerate(caches):
            sums = out[f"attention_sums.{i}"][0]  # [query heads, past + 1]
            worst_row = max(worst_row, float(np.abs(sums.astype(np.float64).sum(axis=1) - 1).max()))
            if group > 1:  # a KV head receives the sum over the query heads that share it
                sums = sums.reshape(heads, group, -1).sum(axis=1)  # [kv heads, past + 1]
            c.score[:, :past] += sums[:, :past]
            if grown > past:
                c.grow(grown)
            k_new, v_new = out[f"new_key_values.{i}.key"][0, :, 0], out[f"new_key_values.{i}.value"][0, :, 0]
            evicted.append(c.commit(t, k_new, v_new, sums[:, past], policy, budget))  # k/v_new [heads, head_dim]
        logits = out["logits"][0, 0].astype(np.float64)  # [vocab]
        m = logits.max()
        nll.append(float(m + math.log(np.exp(logits - m).sum()) - logits[ids[t + 1]]))
        steps.append({"pos": t, "evicted": evicted})
    return {
        "policy": policy.spec, "model": manifest["name"], "n_tokens": len(ids), "nll": nll,
        "ppl": math.exp(math.fsum(nll) / len(nll)), "max_row_sum_error": worst_row,
        "trace": {"format": TRACE_FORMAT, "policy": policy.spec, "tokens": ids, "layers": layers,
                  "heads": heads, "steps": steps},
    }
