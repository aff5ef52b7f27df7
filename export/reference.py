#!/usr/bin/env python3
"""PyTorch reference for the engine's eviction policies (issue 4, design §3 and §4).

A GPT-NeoX model from a Hugging Face checkpoint directory (transformers' GPTNeoXForCausalLM
supplies the weights) is driven through an explicit token-by-token loop that keeps its own
compressed K/V cache per layer and head. Nothing in transformers is patched and no transformers
cache is used: the loop calls the layers' linear/norm/MLP modules and does attention, RoPE and
the cache itself, written from docs/architecture.md ("Cache and policy semantics"), not from the
engine's code.

Semantics (streaming from the first token):
- step t feeds token t at absolute position t (keys stored rotated) and scores token t+1, so N
  tokens give N-1 predictions; PPL = exp(mean NLL), NLL summed in float64.
- a step attends to the cached entries of each head plus its own new token; every cached token's
  score grows by the attention probability it receives, the new token's starts at the
  probability its own query gives it (scores are float32, as in the engine's contract).
- after the step, if a head holds more than `budget` entries it evicts down to exactly `budget`:
  the last R positions (pos > t - R) and, for sink, the first S positions (pos < S) are kept;
  among the rest the H largest scores are kept. Victims go lowest score first, then oldest
  position. Scope `layer` (h2o-layer) ranks by the scores summed over the layer's heads, so all
  heads of a layer keep the same positions.

Policy specs: `full`, `local:R`, `sink:S+R`, `h2o:H+R`, `h2o-layer:H+R`.

Output JSON: {"policy", "model", "n_tokens", "nll", "ppl", "trace", ...} where "trace" is an
eviction trace in the format "h2o-evict-trace/1" (see `TRACE_FORMAT`), shared with the engine.
With `--replay TRACE.json` the reference evicts exactly what the trace says (lockstep) and checks
every victim against its own accumulated scores.

Library use: `load_model(hf_dir)`, `load_tokens(tokenizer, data, n)`, `parse_policy(spec)`,
`run_reference(model, ids, policy)`, `kept_sets(trace)` / `iter_kept_sets(trace)`. The library
leaves torch's thread count alone; the CLI sets it (--threads, default 1).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import torch

TRACE_FORMAT = "h2o-evict-trace/1"
ACCEPTED_FORMS = (
    "full | local:R | sink:S+R | h2o:H+R | h2o-layer:H+R "
    "(non-negative integers, budget >= 1; e.g. local:256, sink:4+252, h2o:192+64)"
)
DEFAULT_REL_TOL = 1e-5


class ReferenceError(ValueError):
    """Bad input to the reference (spec, checkpoint, data or trace); the message names the fix."""


# --------------------------------------------------------------------------------------------
# Policy specs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    """One eviction policy. `kind` is full/local/sink/h2o; `scope` is head/layer (h2o only)."""

    kind: str
    sinks: int = 0
    heavy: int = 0
    recent: int = 0
    scope: str = "head"

    @property
    def budget(self) -> Optional[int]:
        """Most entries kept per head between steps; None for the full cache."""
        if self.kind == "full":
            return None
        return self.sinks + self.heavy + self.recent

    @property
    def uses_scores(self) -> bool:
        return self.kind == "h2o"

    @property
    def spec(self) -> str:
        """Canonical spec string (what results and traces record)."""
        if self.kind == "full":
            return "full"
        if self.kind == "local":
            return f"local:{self.recent}"
        if self.kind == "sink":
            return f"sink:{self.sinks}+{self.recent}"
        name = "h2o" if self.scope == "head" else "h2o-layer"
        return f"{name}:{self.heavy}+{self.recent}"


_SPEC_RE = re.compile(r"^(full|local|sink|h2o|h2o-layer)(?::(\d+)(?:\+(\d+))?)?$")


def parse_policy(text: str, max_positions: Optional[int] = None) -> Policy:
    """Parse a policy spec; refuse malformed specs, budget 0 and budgets above `max_positions`."""
    raw = text
    text = text.strip()
    m = _SPEC_RE.match(text)
    if not m:
        raise ReferenceError(f"invalid policy spec {raw!r}: accepted forms are {ACCEPTED_FORMS}")
    name, a, b = m.group(1), m.group(2), m.group(3)
    if name == "full":
        if a is not None:
            raise ReferenceError(
                f"invalid policy spec {raw!r}: `full` takes no numbers; accepted forms are {ACCEPTED_FORMS}"
            )
        return Policy("full")
    if name == "local":
        if a is None or b is not None:
            raise ReferenceError(
                f"invalid policy spec {raw!r}: `local` takes one number (local:R); accepted forms are {ACCEPTED_FORMS}"
            )
        pol = Policy("local", recent=int(a))
    else:
        if a is None or b is None:
            raise ReferenceError(
                f"invalid policy spec {raw!r}: `{name}` takes two numbers ({name}:A+B); accepted forms are {ACCEPTED_FORMS}"
            )
        if name == "sink":
            pol = Policy("sink", sinks=int(a), recent=int(b))
        else:
            pol = Policy("h2o", heavy=int(a), recent=int(b), scope="head" if name == "h2o" else "layer")
    if pol.budget == 0:
        raise ReferenceError(f"invalid policy spec {raw!r}: the budget is 0; accepted forms are {ACCEPTED_FORMS}")
    if max_positions is not None and pol.budget > max_positions:
        raise ReferenceError(
            f"policy {pol.spec}: budget {pol.budget} exceeds the model's {max_positions} positions; "
            f"use a smaller budget or `full`"
        )
    return pol


# --------------------------------------------------------------------------------------------
# Eviction traces
# --------------------------------------------------------------------------------------------


def _check_trace_header(trace: Any) -> None:
    if not isinstance(trace, dict) or trace.get("format") != TRACE_FORMAT:
        got = trace.get("format") if isinstance(trace, dict) else type(trace).__name__
        raise ReferenceError(f"not an eviction trace: format is {got!r}, expected {TRACE_FORMAT!r}")
    for key in ("policy", "tokens", "layers", "heads", "steps"):
        if key not in trace:
            raise ReferenceError(f"eviction trace lacks the field {key!r} (format {TRACE_FORMAT})")
    toks = trace["tokens"]
    if not isinstance(toks, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in toks):
        raise ReferenceError("eviction trace: `tokens` must be a list of integer token ids")
    for key in ("layers", "heads"):
        if not isinstance(trace[key], int) or trace[key] < 1:
            raise ReferenceError(f"eviction trace: `{key}` must be a positive integer, got {trace[key]!r}")
    if not isinstance(trace["policy"], str):
        raise ReferenceError("eviction trace: `policy` must be a spec string such as h2o:192+64")
    if not isinstance(trace["steps"], list):
        raise ReferenceError("eviction trace: `steps` must be a list of {pos, evicted}")


def _trace_steps(trace: dict) -> list[tuple[int, list]]:
    """The trace's steps as (pos, evicted) sorted by pos, validated for shape and duplicates."""
    layers, heads = int(trace["layers"]), int(trace["heads"])
    seen: set[int] = set()
    out = []
    for i, step in enumerate(trace["steps"]):
        if not isinstance(step, dict) or "pos" not in step or "evicted" not in step:
            raise ReferenceError(f"eviction trace: steps[{i}] must be an object with `pos` and `evicted`")
        pos = step["pos"]
        if not isinstance(pos, int) or pos < 0:
            raise ReferenceError(f"eviction trace: steps[{i}].pos = {pos!r} is not a non-negative integer")
        if pos in seen:
            raise ReferenceError(f"eviction trace: step pos {pos} appears twice")
        seen.add(pos)
        ev = step["evicted"]
        if not isinstance(ev, list) or len(ev) != layers or any(
            not isinstance(row, list) or len(row) != heads for row in ev
        ):
            raise ReferenceError(
                f"eviction trace: step pos {pos}: `evicted` must be [layers={layers}][heads={heads}] lists of positions"
            )
        for layer_row in ev:
            for victims in layer_row:
                if not isinstance(victims, list) or not all(
                    isinstance(p, int) and not isinstance(p, bool) for p in victims
                ):
                    raise ReferenceError(f"eviction trace: step pos {pos}: victims must be lists of integer positions")
        out.append((pos, ev))
    out.sort(key=lambda s: s[0])
    return out


def iter_kept_sets(trace: dict) -> Iterator[tuple[int, list[list[list[int]]]]]:
    """Yield (pos, kept) after each recorded step; kept[layer][head] = sorted positions.

    The kept set after step t is positions 0..t minus everything evicted so far. Raises
    ReferenceError if a step evicts a position that is not held at that point.
    """
    _check_trace_header(trace)
    layers, heads = int(trace["layers"]), int(trace["heads"])
    held = [[set() for _ in range(heads)] for _ in range(layers)]
    next_pos = 0
    for pos, ev in _trace_steps(trace):
        new = range(next_pos, pos + 1)
        next_pos = max(next_pos, pos + 1)
        for layer in range(layers):
            for head in range(heads):
                s = held[layer][head]
                s.update(new)
                for p in ev[layer][head]:
                    if p not in s:
                        raise ReferenceError(
                            f"eviction trace: step {pos} layer {layer} head {head} evicts position {p}, "
                            f"which is not held then"
                        )
                    s.remove(p)
        yield pos, [[sorted(held[layer][head]) for head in range(heads)] for layer in range(layers)]


def kept_sets(trace: dict, pos: Optional[int] = None) -> list[list[list[int]]]:
    """kept[layer][head] after step `pos` (default: the last recorded step)."""
    kept = None
    for p, k in iter_kept_sets(trace):
        if pos is not None and p > pos:
            break
        kept = k
    if kept is None:
        raise ReferenceError(f"eviction trace has no step at or before pos {pos}")
    return kept


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def load_model(hf_dir: str | Path, dtype: str = "float32"):
    """Load GPTNeoXForCausalLM weights (eager attention, eval mode) from a checkpoint directory.

    `dtype` is float32, float16, bfloat16 or auto (the checkpoint's own dtype).
    """
    from transformers import GPTNeoXForCausalLM

    d = Path(hf_dir)
    if not (d / "config.json").is_file():
        raise ReferenceError(f"{d}: no config.json; pass --hf-dir a Hugging Face checkpoint directory")
    if dtype != "auto" and dtype not in _DTYPES:
        raise ReferenceError(f"unknown dtype {dtype!r}; use one of float32, float16, bfloat16, auto")
    try:
        model = GPTNeoXForCausalLM.from_pretrained(
            str(d), dtype="auto" if dtype == "auto" else _DTYPES[dtype], attn_implementation="eager"
        )
    except (OSError, ValueError) as e:
        raise ReferenceError(f"{d}: cannot load a GPT-NeoX checkpoint ({e})") from e
    return model.eval()


@dataclass
class _Geometry:
    layers: int
    heads: int
    head_dim: int
    hidden: int
    rotary_dim: int
    scaling: float
    parallel_residual: bool


def _geometry(model) -> _Geometry:
    cfg = model.config
    if getattr(cfg, "model_type", None) != "gpt_neox":
        raise ReferenceError(f"model type {getattr(cfg, 'model_type', None)!r} is not gpt_neox")
    heads = cfg.num_attention_heads
    head_dim = cfg.hidden_size // heads
    rot = model.gpt_neox.rotary_emb
    if getattr(rot, "rope_type", "default") != "default":
        raise ReferenceError(
            f"rope type {rot.rope_type!r} is not supported by the reference (plain RoPE only); "
            "remove rope_scaling from config.json"
        )
    rotary_dim = 2 * rot.inv_freq.numel()
    if rotary_dim != int(head_dim * cfg.rotary_pct):
        raise ReferenceError(
            f"rotary dims disagree: inv_freq gives {rotary_dim}, head_dim*rotary_pct gives "
            f"{int(head_dim * cfg.rotary_pct)}"
        )
    return _Geometry(
        layers=cfg.num_hidden_layers,
        heads=heads,
        head_dim=head_dim,
        hidden=cfg.hidden_size,
        rotary_dim=rotary_dim,
        scaling=head_dim**-0.5,
        parallel_residual=bool(cfg.use_parallel_residual),
    )


def _rope_tables(model, n: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin for positions 0..n-1: [n, rotary_dim] (NeoX layout: the two halves repeat)."""
    rot = model.gpt_neox.rotary_emb
    inv_freq = rot.inv_freq.float()  # [rotary_dim / 2]
    freqs = torch.arange(n, dtype=torch.float32)[:, None] * inv_freq[None, :]  # [n, rotary_dim/2]
    emb = torch.cat((freqs, freqs), dim=-1)  # [n, rotary_dim]
    scale = float(getattr(rot, "attention_scaling", 1.0))
    return (emb.cos() * scale).to(dtype), (emb.sin() * scale).to(dtype)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, rd: int) -> torch.Tensor:
    """Apply RoPE to the first `rd` dims of x [heads, head_dim]; cos/sin [rd]."""
    xr, xp = x[:, :rd], x[:, rd:]
    half = rd // 2
    rotated_half = torch.cat((-xr[:, half:], xr[:, :half]), dim=-1)
    return torch.cat((xr * cos + rotated_half * sin, xp), dim=-1)


# --------------------------------------------------------------------------------------------
# The decode loop
# --------------------------------------------------------------------------------------------


@dataclass
class StepView:
    """What an observer sees for one (step, layer) before eviction (tests use it for invariants).

    positions/scores: [heads, n] candidates (cached entries then the new token), positions
    ascending along the last axis; scores are the per-head accumulated scores (float32).
    victims: [heads, k] candidate indices evicted at this step (k may be 0).
    """

    pos: int
    layer: int
    positions: torch.Tensor
    scores: torch.Tensor
    victims: torch.Tensor


class _LayerCache:
    """One layer's compressed cache. K, V: [heads, n, head_dim]; pos: [heads, n] int64 (ascending
    along n); score: [heads, n] float32. Every head holds the same count n."""

    def __init__(self, heads: int, head_dim: int, dtype: torch.dtype):
        self.k = torch.empty(heads, 0, head_dim, dtype=dtype)
        self.v = torch.empty(heads, 0, head_dim, dtype=dtype)
        self.pos = torch.empty(heads, 0, dtype=torch.int64)
        self.score = torch.empty(heads, 0, dtype=torch.float32)


def _ranking_scores(policy: Policy, scores: torch.Tensor) -> torch.Tensor:
    """Scores the policy ranks by, [heads, n]: per head, summed over heads (layer scope), or 0
    for policies that ignore scores (their victims are fixed by position alone)."""
    if not policy.uses_scores:
        return torch.zeros_like(scores)
    if policy.scope == "layer":
        return scores.sum(dim=0, keepdim=True).expand_as(scores)
    return scores


def _protected(policy: Policy, positions: torch.Tensor, t: int) -> torch.Tensor:
    """[heads, n] bool: the recent window (pos > t - R) and the sinks (pos < S)."""
    return (positions > t - policy.recent) | (positions < policy.sinks)


def _choose_victims(policy: Policy, t: int, positions: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """Candidate indices to evict per head, [heads, k]: lowest ranking score first, then oldest."""
    heads, n = positions.shape
    budget = policy.budget
    if budget is None or n <= budget:
        return torch.empty(heads, 0, dtype=torch.int64)
    k = n - budget
    rank = _ranking_scores(policy, scores).masked_fill(_protected(policy, positions, t), math.inf)
    # Positions ascend along n, so a stable sort by score breaks ties by the oldest position.
    order = torch.sort(rank, dim=1, stable=True).indices  # [heads, n]
    victims = order[:, :k]
    if torch.isinf(rank.gather(1, victims)).any():
        raise RuntimeError(f"policy {policy.spec}: fewer than {k} evictable candidates at step {t}")
    return victims


def _replay_victims(
    trace_ev: list, t: int, layer: int, positions: torch.Tensor
) -> tuple[torch.Tensor, list[list[int]]]:
    """Map the trace's victim positions at (t, layer) to candidate indices [heads, k]."""
    heads = positions.shape[0]
    per_head = [list(trace_ev[layer][h]) for h in range(heads)]
    counts = {len(v) for v in per_head}
    if len(counts) != 1:
        raise ReferenceError(
            f"replay: step {t} layer {layer}: heads evict different counts {[len(v) for v in per_head]}; "
            "every head must hold the same number of entries"
        )
    k = counts.pop()
    if k == 0:
        return torch.empty(heads, 0, dtype=torch.int64), per_head
    for h, v in enumerate(per_head):
        if len(set(v)) != len(v):
            raise ReferenceError(f"replay: step {t} layer {layer} head {h}: a position is evicted twice: {v}")
    want = torch.tensor(per_head, dtype=torch.int64)  # [heads, k]
    match = positions[:, :, None] == want[:, None, :]  # [heads, n, k]
    found = match.any(dim=1)  # [heads, k]
    if not bool(found.all()):
        h, j = (~found).nonzero()[0].tolist()
        raise ReferenceError(
            f"replay: step {t} layer {layer} head {h}: victim position {per_head[h][j]} is not in the cache "
            "(the trace does not match this model/policy/text)"
        )
    return match.to(torch.int8).argmax(dim=1), per_head  # [heads, k]


def _check_victims(
    policy: Policy,
    t: int,
    layer: int,
    positions: torch.Tensor,
    scores: torch.Tensor,
    victims: torch.Tensor,
    rel_tol: float,
) -> list[dict]:
    """Violations of the policy by replayed victims [heads, k] at (t, layer)."""
    out: list[dict] = []
    heads, n = positions.shape
    k = victims.shape[1]
    budget = policy.budget
    left = n - k
    if budget is None:
        if k:
            out.append({"step": t, "layer": layer, "head": None, "kind": "full-evicts",
                        "detail": f"the full cache evicted {k} entries per head"})
        return out
    if left > budget:
        out.append({"step": t, "layer": layer, "head": None, "kind": "over-budget",
                    "detail": f"{left} entries kept per head, budget {budget}"})
    if left < min(budget, n):
        out.append({"step": t, "layer": layer, "head": None, "kind": "over-eviction",
                    "detail": f"{left} entries kept per head, {min(budget, n)} required"})
    if k == 0:
        return out
    prot = _protected(policy, positions, t)
    vict_prot = prot.gather(1, victims)  # [heads, k]
    for h, j in vict_prot.nonzero().tolist():
        p = int(positions[h, victims[h, j]])
        what = "recent window" if p > t - policy.recent else "sinks"
        out.append({"step": t, "layer": layer, "head": h, "kind": "protected",
                    "detail": f"victim position {p} is in the {what}"})
    if policy.scope == "layer":
        vpos = positions.gather(1, victims).sort(dim=1).values
        for h in range(1, heads):
            if not torch.equal(vpos[h], vpos[0]):
                out.append({"step": t, "layer": layer, "head": h, "kind": "layer-scope",
                            "detail": f"victims {vpos[h].tolist()} differ from head 0's {vpos[0].tolist()}"})
    if policy.uses_scores:
        rank = _ranking_scores(policy, scores).double()
        evictable = ~prot
        is_victim = torch.zeros(heads, n, dtype=torch.bool)
        is_victim.scatter_(1, victims, True)
        kept_ev = rank.masked_fill(~evictable | is_victim, math.inf)
        lowest_kept, lowest_idx = kept_ev.min(dim=1)  # [heads]
        vs = rank.gather(1, victims)  # [heads, k]
        limit = lowest_kept + rel_tol * lowest_kept.abs()
        bad = (vs > limit[:, None]) & torch.isfinite(lowest_kept)[:, None] & ~vict_prot
        for h, j in bad.nonzero().tolist():
            out.append({
                "step": t, "layer": layer, "head": h, "kind": "not-lowest",
                "detail": (f"victim position {int(positions[h, victims[h, j]])} score {float(vs[h, j]):.9g} > "
                           f"kept position {int(positions[h, lowest_idx[h]])} score {float(lowest_kept[h]):.9g} "
                           f"(rel tol {rel_tol:g})"),
            })
    return out


@torch.inference_mode()
def run_reference(
    model,
    token_ids: Sequence[int],
    policy: Policy | str,
    *,
    replay: Optional[dict] = None,
    rel_tol: float = DEFAULT_REL_TOL,
    observer: Optional[Callable[[StepView], None]] = None,
    model_name: Optional[str] = None,
) -> dict:
    """Stream `token_ids` through `model` with the policy's compressed cache.

    Returns {"policy", "model", "n_tokens", "nll", "ppl", "trace", "kept_final", "budget"} and,
    with `replay` (an eviction trace), a "replay" section with the violations found.
    """
    geo = _geometry(model)
    max_pos = int(model.config.max_position_embeddings)
    if isinstance(policy, str):
        policy = parse_policy(policy, max_positions=max_pos)
    elif policy.budget is not None and policy.budget > max_pos:
        raise ReferenceError(f"policy {policy.spec}: budget {policy.budget} exceeds the model's {max_pos} positions")
    ids = [int(x) for x in token_ids]
    n_tok = len(ids)
    if n_tok < 2:
        raise ReferenceError(f"need at least 2 tokens for one prediction, got {n_tok}")
    vocab = model.config.vocab_size
    if min(ids) < 0 or max(ids) >= vocab:
        raise ReferenceError(f"token ids must lie in [0, {vocab}); got min {min(ids)}, max {max(ids)}")

    replay_steps: dict[int, list] = {}
    ignored = 0
    if replay is not None:
        _check_trace_header(replay)
        if int(replay["layers"]) != geo.layers or int(replay["heads"]) != geo.heads:
            raise ReferenceError(
                f"replay: trace is for {replay['layers']} layers x {replay['heads']} heads, "
                f"the model has {geo.layers} x {geo.heads}"
            )
        if [int(x) for x in replay["tokens"]] != ids:
            raise ReferenceError("replay: the trace's tokens differ from the tokens given to the reference")
        try:
            trace_policy = parse_policy(str(replay["policy"]))
        except ReferenceError as e:
            raise ReferenceError(f"replay: the trace's policy: {e}") from e
        if trace_policy != policy:
            raise ReferenceError(f"replay: the trace is for policy {trace_policy.spec}, not {policy.spec}")
        for pos, ev in _trace_steps(replay):
            if pos > n_tok - 1:
                raise ReferenceError(f"replay: trace step pos {pos} lies beyond the {n_tok} tokens")
            if pos == n_tok - 1:  # the last token predicts nothing; the reference does not feed it
                ignored += 1
                continue
            replay_steps[pos] = ev

    gpt = model.gpt_neox
    dtype = gpt.embed_in.weight.dtype
    cos_tab, sin_tab = _rope_tables(model, n_tok, dtype)
    caches = [_LayerCache(geo.heads, geo.head_dim, dtype) for _ in range(geo.layers)]
    ids_t = torch.tensor(ids, dtype=torch.int64)
    nll: list[float] = []
    steps: list[dict] = []
    violations: list[dict] = []
    checked = 0

    for t in range(n_tok - 1):
        cos, sin = cos_tab[t], sin_tab[t]  # [rotary_dim]
        h = gpt.embed_in(ids_t[t : t + 1])  # [1, hidden]
        step_evicted = []
        for li, layer in enumerate(gpt.layers):
            c = caches[li]
            att = layer.attention
            x = layer.input_layernorm(h)  # [1, hidden]
            qkv = att.query_key_value(x).view(geo.heads, 3 * geo.head_dim)  # [heads, 3*head_dim]
            q, k, v = qkv.split(geo.head_dim, dim=-1)  # each [heads, head_dim]
            q = _rotate(q, cos, sin, geo.rotary_dim)
            k = _rotate(k, cos, sin, geo.rotary_dim)
            keys = torch.cat((c.k, k[:, None, :]), dim=1)  # [heads, n, head_dim]
            vals = torch.cat((c.v, v[:, None, :]), dim=1)  # [heads, n, head_dim]
            logits = torch.matmul(keys, q[:, :, None]).squeeze(-1) * geo.scaling  # [heads, n]
            probs = torch.softmax(logits, dim=-1, dtype=torch.float32)  # [heads, n]
            out = torch.matmul(probs.to(vals.dtype)[:, None, :], vals).squeeze(1)  # [heads, head_dim]
            attn_out = att.dense(out.reshape(1, geo.hidden))  # [1, hidden]
            if geo.parallel_residual:
                h = h + attn_out + layer.mlp(layer.post_attention_layernorm(h))
            else:
                h = h + attn_out
                h = h + layer.mlp(layer.post_attention_layernorm(h))

            positions = torch.cat((c.pos, torch.full((geo.heads, 1), t, dtype=torch.int64)), dim=1)  # [heads, n]
            scores = torch.cat((c.score + probs[:, :-1], probs[:, -1:]), dim=1)  # [heads, n]

            if replay is None:
                victims = _choose_victims(policy, t, positions, scores)  # [heads, k]
                ev_lists = positions.gather(1, victims).tolist() if victims.shape[1] else [[] for _ in range(geo.heads)]
            else:
                victims, ev_lists = _replay_victims(replay_steps.get(t, [[[]] * geo.heads] * geo.layers), t, li, positions)
                violations.extend(_check_victims(policy, t, li, positions, scores, victims, rel_tol))
                checked += victims.numel()
            if observer is not None:
                observer(StepView(t, li, positions, scores, victims))
            step_evicted.append([sorted(int(p) for p in row) for row in ev_lists])

            n = positions.shape[1]
            kk = victims.shape[1]
            if kk:
                keep = torch.ones(geo.heads, n, dtype=torch.bool)
                keep.scatter_(1, victims, False)  # [heads, n]; row order (ascending positions) preserved
                c.k = keys[keep].view(geo.heads, n - kk, geo.head_dim)
                c.v = vals[keep].view(geo.heads, n - kk, geo.head_dim)
                c.pos = positions[keep].view(geo.heads, n - kk)
                c.score = scores[keep].view(geo.heads, n - kk)
            else:
                c.k, c.v, c.pos, c.score = keys, vals, positions, scores

        logits_out = model.embed_out(gpt.final_layer_norm(h))[0]  # [vocab]
        logp = torch.log_softmax(logits_out.double(), dim=-1)
        nll.append(-float(logp[ids[t + 1]]))
        steps.append({"pos": t, "evicted": step_evicted})

    total = math.fsum(nll)
    result = {
        "policy": policy.spec,
        "model": model_name if model_name is not None else str(getattr(model.config, "_name_or_path", "")),
        "n_tokens": n_tok,
        "budget": policy.budget,
        "dtype": str(dtype).replace("torch.", ""),
        "nll": nll,
        "nll_sum": total,
        "ppl": math.exp(total / len(nll)),
        "trace": {
            "format": TRACE_FORMAT,
            "policy": policy.spec,
            "tokens": ids,
            "layers": geo.layers,
            "heads": geo.heads,
            "steps": steps,
        },
        "kept_final": [[c.pos[hh].tolist() for hh in range(geo.heads)] for c in caches],
    }
    if replay is not None:
        result["replay"] = {
            "rel_tol": rel_tol,
            "victims_checked": checked,
            "ignored_steps": ignored,
            "n_violations": len(violations),
            "violations": violations,
        }
    return result


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def load_tokens(tokenizer_path: str | Path, data_path: str | Path, n: Optional[int]) -> list[int]:
    """The first n tokens of the data file (whole file read as UTF-8, no special tokens added)."""
    from tokenizers import Tokenizer

    tp, dp = Path(tokenizer_path), Path(data_path)
    if not tp.is_file():
        raise ReferenceError(f"{tp}: tokenizer file not found; pass --tokenizer a tokenizer.json")
    if not dp.is_file():
        raise ReferenceError(f"{dp}: data file not found; pass --data a text file such as wiki.test.raw")
    try:
        tok = Tokenizer.from_file(str(tp))
    except Exception as e:  # tokenizers raises its own exception type
        raise ReferenceError(f"{tp}: not a Hugging Face tokenizer.json ({e})") from e
    try:
        text = dp.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ReferenceError(f"{dp}: not UTF-8 text ({e})") from e
    ids = tok.encode(text, add_special_tokens=False).ids
    if n is not None:
        if len(ids) < n:
            raise ReferenceError(f"{dp}: only {len(ids)} tokens, {n} requested; lower --tokens")
        ids = ids[:n]
    return ids


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(
        description="PyTorch reference: streaming NLL of a GPT-NeoX checkpoint under a KV eviction policy.",
        epilog=f"Policy specs: {ACCEPTED_FORMS}. Exit status: 0 ok, 1 replay violations, 2 bad input.",
    )
    ap.add_argument("--hf-dir", required=True, help="checkpoint directory (config.json + model.safetensors)")
    ap.add_argument("--tokenizer", help="tokenizer.json (optional with --replay: the trace holds the tokens)")
    ap.add_argument("--data", help="text file, read whole as UTF-8 (e.g. wiki.test.raw)")
    ap.add_argument("--tokens", type=int, help="number of tokens from the start of the text")
    ap.add_argument("--policy", help="policy spec (optional with --replay: taken from the trace)")
    ap.add_argument("--replay", help="eviction trace to follow in lockstep (h2o-evict-trace/1)")
    ap.add_argument("--rel-tol", type=float, default=DEFAULT_REL_TOL, help="replay: relative slack on 'lowest score'")
    ap.add_argument("--dtype", default="float32", help="float32 (default), float16, bfloat16 or auto")
    ap.add_argument(
        "--threads", type=int, default=1,
        help="torch CPU threads (default 1: a one-token step is mostly small ops, which extra threads slow "
             "down, badly so on a loaded machine; raise it for large models on an idle one)",
    )
    ap.add_argument("--out", required=True, help="output JSON")
    args = ap.parse_args(argv)

    try:
        if args.threads < 1:
            raise ReferenceError("--threads must be >= 1")
        torch.set_num_threads(args.threads)
        if args.tokens is not None and args.tokens < 2:
            raise ReferenceError("--tokens must be >= 2 (N tokens give N-1 predictions)")
        trace = None
        if args.replay:
            try:
                trace = json.loads(Path(args.replay).read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as e:
                raise ReferenceError(f"{args.replay}: cannot read the trace JSON ({e})") from e
            if isinstance(trace, dict) and "trace" in trace and "format" not in trace:
                trace = trace["trace"]  # a whole result document was given
            _check_trace_header(trace)
        spec = args.policy if args.policy is not None else (trace["policy"] if trace else None)
        if spec is None:
            raise ReferenceError(f"--policy is required without --replay; accepted forms are {ACCEPTED_FORMS}")
        parse_policy(spec)  # refuse a malformed spec before the slow steps
        model = load_model(args.hf_dir, args.dtype)
        if (args.tokenizer is None) != (args.data is None):
            raise ReferenceError("--tokenizer and --data go together")
        if args.data is not None:
            n = args.tokens if args.tokens is not None else (len(trace["tokens"]) if trace else None)
            if n is None:
                raise ReferenceError("--tokens is required without --replay")
            ids = load_tokens(args.tokenizer, args.data, n)
        elif trace is not None:
            ids = [int(x) for x in trace["tokens"]]
            if args.tokens is not None and args.tokens != len(ids):
                raise ReferenceError(f"--tokens {args.tokens} but the trace holds {len(ids)} tokens")
        else:
            raise ReferenceError("pass --tokenizer and --data (or --replay with a trace)")

        policy = parse_policy(spec, max_positions=int(model.config.max_position_embeddings))
        result = run_reference(model, ids, policy, replay=trace, rel_tol=args.rel_tol, model_name=str(args.hf_dir))
    except ReferenceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result) + "\n", encoding="utf-8")
    msg = f"{result['policy']}: {result['n_tokens']} tokens, ppl {result['ppl']:.6f} -> {out}"
    if trace is not None:
        rep = result["replay"]
        msg += f"; replay checked {rep['victims_checked']} victims, {rep['n_violations']} violations"
    print(msg)
    if trace is not None and result["replay"]["n_violations"]:
        for v in result["replay"]["violations"][:20]:
            print(f"violation: step {v['step']} layer {v['layer']} head {v['head']}: {v['kind']}: {v['detail']}",
                  file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
