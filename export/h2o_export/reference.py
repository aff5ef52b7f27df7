"""PyTorch reference for the engine's eviction policies (issue 4, design §3 and §4).

A GPT-NeoX model from a Hugging Face checkpoint directory (transformers' GPTNeoXForCausalLM
supplies the weights) is driven through an explicit token-by-token loop that keeps its own
compressed K/V cache per layer and head. Nothing in transformers is patched and no transformers
cache is used: the loop calls the layers' linear/norm/MLP modules and does attention, RoPE
(rope.py) and the cache itself, written from docs/architecture.md ("Cache and policy
semantics"), not from the engine's code. The policies live in policies/, the trace format and
lockstep replay in trace.py.

Semantics (streaming from the first token):
- step t feeds token t at absolute position t (keys stored rotated) and scores token t+1, so N
  tokens give N-1 predictions; PPL = exp(mean NLL), NLL summed in float64.
- a model that declares a BOS (config.json's `prepend_bos_token_id`, `declared_bos`) gets it fed
  first, at position 0, as an ordinary cache entry; its own prediction (of text token 0) is not
  scored, so N text tokens still give N-1 predictions, and text token i sits at position i+1.
- a step attends to the cached entries of each head plus its own new token; each candidate's
  score is the policy's (policies/base.py `update_scores`: for h2o every cached token's score
  grows by the attention probability it receives, the new token's starts at the probability its
  own query gives it; scores are float32, as in the engine's contract).
- after the step, if a head holds more than `budget` entries (the layer's, under a budget
  schedule) it evicts down to exactly `budget` (policies/base.py states the rule).
- rolling positions (a spec's `@rolling`, positions.py): keys are cached unrotated and rotated
  at every step by their rank in the cache; the token fed takes position P (the most entries a
  layer holds) instead of t, so a text of any length stays within the model's positions.

The loop runs on the model's device and leaves torch's thread count alone (the CLI,
export/reference.py, sets it).
"""

from __future__ import annotations

import dataclasses

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

from . import rope
from .config import PREPEND_BOS_KEY
from .errors import ReferenceError
from .policies import Policy, parse_policy
from .positions import key_positions, rolling_spec, split_rolling
from .trace import DEFAULT_REL_TOL, TRACE_FORMAT, Replay

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


def load_model(hf_dir: str | Path, dtype: str = "float32"):
    """Load GPTNeoXForCausalLM weights (eager attention, eval mode) from a checkpoint directory.

    `dtype` is float32, float16, bfloat16 or auto (the checkpoint's own dtype).
    """
    d = Path(hf_dir)
    if not (d / "config.json").is_file():
        raise ReferenceError(f"{d}: no config.json; pass --hf-dir a Hugging Face checkpoint directory")
    if dtype != "auto" and dtype not in _DTYPES:
        raise ReferenceError(f"unknown dtype {dtype!r}; use one of float32, float16, bfloat16, auto")
    raw = json.loads((d / "config.json").read_text(encoding="utf-8"))
    cls = _model_class(raw.get("model_type") if isinstance(raw, dict) else None, d)
    try:
        model = cls.from_pretrained(
            str(d), dtype="auto" if dtype == "auto" else _DTYPES[dtype], attn_implementation="eager"
        )
    except (OSError, ValueError) as e:
        raise ReferenceError(f"{d}: cannot load a {cls.__name__} checkpoint ({e})") from e
    bos = raw.get(PREPEND_BOS_KEY)
    if raw.get("model_type") in ("llama", "qwen2"):
        # the BOS the exporter declares for this checkpoint (config, tokenizer_config.json's add_bos_token)
        from .config import config_from_dict
        from .errors import ExportError
        from .exporter import llama_declared_bos

        try:
            bos = llama_declared_bos(raw, config_from_dict(raw, str(d / "config.json")), d)
        except ExportError as e:
            raise ReferenceError(str(e)) from e
    setattr(model.config, PREPEND_BOS_KEY, bos)  # whatever transformers keeps
    declared_bos(model)  # refuse a malformed declaration here, before any step
    return model.eval()


def _model_class(model_type, where):
    """transformers' causal-LM class of a model_type this project runs (GPT-NeoX, Llama, Qwen2)."""
    import transformers

    classes = {"gpt_neox": "GPTNeoXForCausalLM", "llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}
    if model_type not in classes:
        raise ReferenceError(f"{where}: model_type {model_type!r} is not supported; the reference runs "
                             f"{', '.join(classes)}")
    return getattr(transformers, classes[model_type])


def declared_bos(model) -> Optional[int]:
    """The BOS the model declares (its config's prepend_bos_token_id), fed before the text; None
    for a model that declares none (Pythia's own)."""
    v = getattr(model.config, PREPEND_BOS_KEY, None)
    if v is None:
        return None
    vocab = model.config.vocab_size
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < vocab:
        raise ReferenceError(f"config {PREPEND_BOS_KEY} must be a token id in [0, {vocab}) or absent, got {v!r}")
    return v


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


# --------------------------------------------------------------------------------------------
# Model geometry
# --------------------------------------------------------------------------------------------


@dataclass
class _Geometry:
    layers: int
    heads: int  # the cache's heads: KV heads (= query heads for GPT-NeoX)
    head_dim: int
    hidden: int
    rotary_dim: int
    scaling: float
    parallel_residual: bool
    llama: bool = False  # Llama / Qwen2 (RMSNorm, SwiGLU, separate q/k/v, grouped-query attention)
    query_heads: int = 0  # query heads (0: = heads)

    @property
    def group(self) -> int:
        """Query heads per KV head (G)."""
        return (self.query_heads or self.heads) // self.heads


def _geometry(model) -> _Geometry:
    cfg = model.config
    mt = getattr(cfg, "model_type", None)
    if mt in ("llama", "qwen2"):
        return _llama_geometry(model)
    if mt != "gpt_neox":
        raise ReferenceError(f"model type {mt!r} is not gpt_neox, llama or qwen2")
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


def _llama_geometry(model) -> _Geometry:
    cfg = model.config
    heads = cfg.num_attention_heads
    kv = getattr(cfg, "num_key_value_heads", None) or heads
    if heads % kv != 0:
        raise ReferenceError(f"num_attention_heads {heads} is not divisible by num_key_value_heads {kv}")
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    rot = model.model.rotary_emb
    if getattr(rot, "rope_type", "default") not in ("default", "linear", "llama3"):
        raise ReferenceError(f"rope type {rot.rope_type!r} is not supported by the reference (default, linear, "
                             f"llama3)")
    if 2 * rot.inv_freq.numel() != head_dim:
        raise ReferenceError(f"rotary dims {2 * rot.inv_freq.numel()} != head_dim {head_dim}")
    return _Geometry(layers=cfg.num_hidden_layers, heads=kv, head_dim=head_dim, hidden=cfg.hidden_size,
                     rotary_dim=head_dim, scaling=head_dim**-0.5, parallel_residual=False, llama=True,
                     query_heads=heads)


class _Parts:
    """The modules the loop calls, named once per architecture."""

    def __init__(self, model, geo: _Geometry):
        if geo.llama:
            self.embed, self.layers = model.model.embed_tokens, model.model.layers
            self.rotary, self.final_norm, self.head = model.model.rotary_emb, model.model.norm, model.lm_head
        else:
            gpt = model.gpt_neox
            self.embed, self.layers = gpt.embed_in, gpt.layers
            self.rotary, self.final_norm, self.head = gpt.rotary_emb, gpt.final_layer_norm, model.embed_out


# --------------------------------------------------------------------------------------------
# The decode loop
# --------------------------------------------------------------------------------------------


@dataclass
class StepView:
    """What an observer sees for one (step, layer) before eviction (tests use it for invariants).

    positions/scores: [heads, n] candidates (cached entries then the new token), positions
    ascending along the last axis; scores are the per-head scores of the layer's policy (float32).
    victims: [heads, k] candidate indices evicted at this step (k may be 0).
    """

    pos: int
    layer: int
    positions: torch.Tensor
    scores: torch.Tensor
    victims: torch.Tensor


class _LayerCache:
    """One layer's compressed cache. K, V: [heads, n, head_dim]; pos: [heads, n] int64 (ascending
    along n); score: [heads, n] float32; extra: the policy's state per entry [heads, n, ...] or
    None. Every head holds the same count n."""

    def __init__(self, heads: int, head_dim: int, dtype: torch.dtype, device: torch.device):
        self.k = torch.empty(heads, 0, head_dim, dtype=dtype, device=device)
        self.v = torch.empty(heads, 0, head_dim, dtype=dtype, device=device)
        self.pos = torch.empty(heads, 0, dtype=torch.int64, device=device)
        self.score = torch.empty(heads, 0, dtype=torch.float32, device=device)
        self.extra: Optional[torch.Tensor] = None

    def keep_all_but(self, victims: torch.Tensor, keys, vals, positions, scores, extra) -> None:
        """Store the candidates [heads, n, ...] less the victims [heads, k], row order (ascending
        positions) preserved."""
        heads, n = positions.shape
        kk = victims.shape[1]
        if not kk:
            self.k, self.v, self.pos, self.score, self.extra = keys, vals, positions, scores, extra
            return
        keep = torch.ones(heads, n, dtype=torch.bool, device=positions.device)
        keep.scatter_(1, victims, False)  # [heads, n]
        self.k = keys[keep].view(heads, n - kk, keys.shape[-1])
        self.v = vals[keep].view(heads, n - kk, vals.shape[-1])
        self.pos = positions[keep].view(heads, n - kk)
        self.score = scores[keep].view(heads, n - kk)
        self.extra = None if extra is None else extra[keep].view(heads, n - kk, *extra.shape[2:])


def _attend(layer, geo: _Geometry, c: _LayerCache, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
            past_rope: Optional[tuple[torch.Tensor, torch.Tensor]] = None):
    """One layer on the hidden state h [1, hidden] of the token fed: returns the new hidden
    state, the candidates' keys/values [heads, n, head_dim] as cached and this step's attention
    row probs [heads, n] (cached entries, then the new token). Keys are cached rotated, or with
    `past_rope` (cos, sin [heads, n-1, rotary_dims] at each cached key's rolling position)
    unrotated and rotated here for the scores."""
    att = layer.attention
    x = layer.input_layernorm(h)  # [1, hidden]
    qkv = att.query_key_value(x).view(geo.heads, 3 * geo.head_dim)  # [heads, 3*head_dim]
    q, k_raw, v = qkv.split(geo.head_dim, dim=-1)  # each [heads, head_dim]
    q, k = rope.apply(q, cos, sin), rope.apply(k_raw, cos, sin)
    if past_rope is None:
        keys = torch.cat((c.k, k[:, None, :]), dim=1)  # [heads, n, head_dim], as cached and as attended
        attended = keys
    else:
        keys = torch.cat((c.k, k_raw[:, None, :]), dim=1)  # as cached: unrotated
        attended = torch.cat((rope.apply(c.k, *past_rope), k[:, None, :]), dim=1)
    vals = torch.cat((c.v, v[:, None, :]), dim=1)  # [heads, n, head_dim]
    logits = torch.matmul(attended, q[:, :, None]).squeeze(-1) * geo.scaling  # [heads, n]
    probs = torch.softmax(logits, dim=-1, dtype=torch.float32)  # [heads, n]
    out = torch.matmul(probs.to(vals.dtype)[:, None, :], vals).squeeze(1)  # [heads, head_dim]
    attn_out = att.dense(out.reshape(1, geo.hidden))  # [1, hidden]
    if geo.parallel_residual:
        h = h + attn_out + layer.mlp(layer.post_attention_layernorm(h))
    else:
        h = h + attn_out
        h = h + layer.mlp(layer.post_attention_layernorm(h))
    return h, keys, vals, probs


def _attend_llama(layer, geo: _Geometry, c: _LayerCache, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
    """One Llama / Qwen2 layer on h [1, hidden]: returns the new hidden state, the candidates'
    keys/values [kv_heads, n, head_dim] and this step's attention row per KV head [kv_heads, n]: the
    SUM over the G query heads that share the KV head (query head j reads KV head j // G, transformers'
    repeat_kv order) of their probabilities, the rule every policy ranks by (docs/architecture.md)."""
    att = layer.self_attn
    x = layer.input_layernorm(h)  # [1, hidden]
    q = att.q_proj(x).view(geo.query_heads, geo.head_dim)  # [heads, head_dim]
    k = att.k_proj(x).view(geo.heads, geo.head_dim)  # [kv_heads, head_dim]
    v = att.v_proj(x).view(geo.heads, geo.head_dim)
    q, k = rope.apply(q, cos, sin), rope.apply(k, cos, sin)
    keys = torch.cat((c.k, k[:, None, :]), dim=1)  # [kv_heads, n, head_dim]
    vals = torch.cat((c.v, v[:, None, :]), dim=1)  # [kv_heads, n, head_dim]
    qg = q.view(geo.heads, geo.group, geo.head_dim)  # [kv_heads, G, head_dim]
    logits = torch.matmul(qg, keys.transpose(1, 2)) * geo.scaling  # [kv_heads, G, n]
    probs = torch.softmax(logits, dim=-1, dtype=torch.float32)  # [kv_heads, G, n]
    out = torch.matmul(probs.to(vals.dtype), vals)  # [kv_heads, G, head_dim]
    h = h + att.o_proj(out.reshape(1, geo.query_heads * geo.head_dim))
    h = h + layer.mlp(layer.post_attention_layernorm(h))
    return h, keys, vals, probs.sum(dim=1)  # [kv_heads, n]: summed over the group's query heads


def _check_inputs(model, geo: _Geometry, token_ids: Sequence[int], policy: Policy | str) -> tuple[list[int], Policy]:
    max_pos = int(model.config.max_position_embeddings)
    if isinstance(policy, str):
        policy = parse_policy(policy, max_positions=max_pos, layers=geo.layers)
    elif policy.budget is not None:
        worst = max((b for li in range(geo.layers) if (b := policy.for_layer(li, geo.layers).budget) is not None),
                    default=0)
        if worst > max_pos:
            raise ReferenceError(f"policy {policy.spec}: budget {worst} exceeds the model's {max_pos} positions")
    ids = [int(x) for x in token_ids]
    if len(ids) < 2:
        raise ReferenceError(f"need at least 2 tokens for one prediction, got {len(ids)}")
    vocab = model.config.vocab_size
    if min(ids) < 0 or max(ids) >= vocab:
        raise ReferenceError(f"token ids must lie in [0, {vocab}); got min {min(ids)}, max {max(ids)}")
    return ids, policy


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
    deadline: Optional[float] = None,
    rolling: bool = False,
) -> dict:
    """Stream `token_ids` through `model` with the policy's compressed cache.

    Returns {"policy", "model", "n_tokens", "nll", "ppl", "trace", "kept_final", "budget",
    "complete", "prepend_bos_token_id"} and, with `replay` (an eviction trace), a "replay"
    section with the violations found. With `deadline` (a time.time() value) the loop stops
    after the first step that ends past it: "complete" is then false and nll/ppl/trace cover the
    steps done. `token_ids` is the text; a declared BOS is fed before it (the trace's tokens
    and positions include it). `rolling` (or `@rolling` in a spec string): rolling positions
    (positions.py); traces keep the original positions either way.
    """
    geo = _geometry(model)
    if isinstance(policy, str):
        policy, in_spec = split_rolling(policy)
        rolling = rolling or in_spec
    if replay is not None and isinstance(replay, dict) and isinstance(replay.get("policy"), str):
        replay = dict(replay, policy=split_rolling(replay["policy"])[0])
    text, policy = _check_inputs(model, geo, token_ids, policy)
    if rolling and policy.budget is None:
        raise ReferenceError(f"policy {policy.spec}: rolling positions need a bounded policy, not `full`")
    bos = declared_bos(model)
    ids = text if bos is None else [bos] + text  # what is fed: position p holds ids[p]
    first_scored = 0 if bos is None else 1  # the step whose prediction is the first one scored
    n_tok = len(ids)
    rep = Replay.prepare(replay, geo.layers, geo.heads, ids, policy, rel_tol, bos) if replay is not None else None

    parts = _Parts(model, geo)
    dtype = parts.embed.weight.dtype
    device = parts.embed.weight.device
    rot = parts.rotary
    if rolling and geo.llama:
        raise ReferenceError(f"policy {policy.spec}: rolling positions are built for GPT-NeoX models only")
    attend = _attend_llama if geo.llama else _attend
    # rolling positions stay below the largest layer budget + 1; absolute ones below n_tok
    n_tab = n_tok if not rolling else min(n_tok, max(p.budget for p in (policy.for_layer(li, geo.layers)
                                                                          for li in range(geo.layers))) + 1)
    cos_tab, sin_tab = rope.tables(rot.inv_freq, n_tab, dtype, float(getattr(rot, "attention_scaling", 1.0)))
    cos_tab, sin_tab = cos_tab.to(device), sin_tab.to(device)
    caches = [_LayerCache(geo.heads, geo.head_dim, dtype, device) for _ in range(geo.layers)]
    layer_policies = [policy.for_layer(li, geo.layers) for li in range(geo.layers)]
    if geo.group > 1:  # scissor's mean share counts the G query heads each KV head's row sums
        layer_policies = [dataclasses.replace(p, group=geo.group) if hasattr(p, "group") else p
                          for p in layer_policies]
    ids_t = torch.tensor(ids, dtype=torch.int64, device=device)
    nll: list[float] = []
    steps: list[dict] = []

    for t in range(n_tok - 1):
        h = parts.embed(ids_t[t : t + 1])  # [1, hidden]
        step_evicted = []
        if rolling:  # the token's position and each layer's cached keys' (ascending along n)
            q_pos, past_pos = key_positions([c.pos.shape[1] for c in caches])
        else:
            q_pos, past_pos = t, None
        for li, layer in enumerate(parts.layers):
            c, pol = caches[li], layer_policies[li]
            if past_pos is None:
                h, keys, vals, probs = attend(layer, geo, c, h, cos_tab[q_pos], sin_tab[q_pos])
            else:
                idx = torch.tensor(past_pos[li], dtype=torch.int64, device=device)  # [n-1]
                past_rope = (cos_tab[idx][None].expand(geo.heads, -1, -1), sin_tab[idx][None].expand(geo.heads, -1, -1))
                h, keys, vals, probs = _attend(layer, geo, c, h, cos_tab[q_pos], sin_tab[q_pos], past_rope)
            positions = torch.cat((c.pos, torch.full((geo.heads, 1), t, dtype=torch.int64, device=device)), dim=1)
            scores, extra = pol.update_scores(c.score, probs, key=keys[:, -1], position=t, layer=li,
                                              extra=c.extra)  # [heads, n], [heads, n, ...] | None
            if rep is None:
                victims = pol.choose_victims(t, positions, scores)  # [heads, k]
                ev_lists = positions.gather(1, victims).tolist() if victims.shape[1] else [[] for _ in range(geo.heads)]
            else:
                victims, ev_lists = rep.victims(pol, t, li, positions, scores)
            if observer is not None:
                observer(StepView(t, li, positions, scores, victims))
            step_evicted.append([sorted(int(p) for p in row) for row in ev_lists])
            c.keep_all_but(victims, keys, vals, positions, scores, extra)

        if t >= first_scored:
            logits_out = parts.head(parts.final_norm(h))[0]  # [vocab]
            logp = torch.log_softmax(logits_out.double(), dim=-1)
            nll.append(-float(logp[ids[t + 1]]))
        steps.append({"pos": t, "evicted": step_evicted})
        if deadline is not None and time.time() > deadline:
            break

    result = _result(model, model_name, policy, ids, bos, dtype, geo, nll, steps, caches, rolling)
    if rep is not None:
        result["replay"] = rep.summary()
    return result


def _result(model, model_name: Optional[str], policy: Policy, ids: list[int], bos: Optional[int],
            dtype: torch.dtype, geo: _Geometry, nll: list[float], steps: list[dict], caches: list[_LayerCache],
            rolling: bool = False) -> dict:
    """The result document; `ids` is what was fed (the declared BOS, if any, then the text)."""
    total = math.fsum(nll)
    n_text = len(ids) - (bos is not None)
    spec = rolling_spec(policy.spec, rolling)
    trace = {"format": TRACE_FORMAT, "policy": spec, "tokens": ids, "layers": geo.layers,
             "heads": geo.heads, "steps": steps}
    if bos is not None:
        trace[PREPEND_BOS_KEY] = bos
    return {
        "policy": spec,
        "model": model_name if model_name is not None else str(getattr(model.config, "_name_or_path", "")),
        "n_tokens": n_text,
        PREPEND_BOS_KEY: bos,
        "budget": policy.budget,
        "dtype": str(dtype).replace("torch.", ""),
        "complete": len(nll) == n_text - 1,
        "nll": nll,
        "nll_sum": total,
        "ppl": math.exp(total / len(nll)),
        "trace": trace,
        "kept_final": [[c.pos[hh].tolist() for hh in range(geo.heads)] for c in caches],
    }
