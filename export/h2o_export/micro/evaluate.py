"""pythia-micro's evaluation (eval.json): the full forward's NLL by position bucket, and the
streaming token-by-token evaluation of each policy with its compressed KV cache, run through
the PyTorch reference loop (h2o_export.reference: the same loop the engine's parity tests use),
plus the attention-sink evidence read from the full cache's accumulated scores.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Sequence

import numpy as np
import torch

from ..config import PREPEND_BOS_KEY
from ..policies import parse_policy
from ..reference import StepView, declared_bos, run_reference
from .model import build_model, load_canonical
from .windows import lm_window

DEFAULT_POLICIES = ["full", "local:256", "h2o:192+64", "sink:4+252", "local:512", "h2o:448+64", "sink:4+508"]


def stream_eval(model, ids: Sequence[int], policies: Sequence[str] = DEFAULT_POLICIES,
                deadline: float | None = None) -> dict:
    """Streaming NLL of each policy (h2o_export.reference.run_reference, one policy after the
    other; `deadline`, a time.time() value, stops the current policy and skips the rest).

    Returns {"complete", "policies": {spec: {"budget", "recent", "tokens", "complete", "nll",
    "ppl"[, "heads_keeping_pos0_at_end", "layer_heads"]}}, "sink" (when "full" is run), "_nll":
    {spec: per-token NLL list}, "_kept": {spec: kept positions [layer][head] at the end}}.
    """
    ids = [int(x) for x in ids]
    res: dict = {"complete": True, "policies": {}, "_nll": {}, "_kept": {}}
    last: dict[int, torch.Tensor] = {}  # layer -> the full cache's scores at the latest step [heads, n]
    for spec in policies:
        if deadline is not None and time.time() > deadline:
            res["complete"] = False
            continue
        pol = parse_policy(spec)

        def observe(v: StepView) -> None:
            last[v.layer] = v.scores

        r = run_reference(model, ids, pol, deadline=deadline, observer=observe if pol.kind == "full" else None)
        res["complete"] &= r["complete"]
        mean = math.fsum(r["nll"]) / len(r["nll"])
        entry = {"budget": pol.budget, "recent": pol.recent, "tokens": len(r["nll"]) + 1, "complete": r["complete"],
                 "nll": mean, "ppl": math.exp(mean)}
        if pol.kind == "h2o":
            entry["heads_keeping_pos0_at_end"] = sum(0 in head for layer in r["kept_final"] for head in layer)
            entry["layer_heads"] = sum(len(layer) for layer in r["kept_final"])
        if pol.kind == "full":
            res["sink"] = sink_evidence([last[li] for li in sorted(last)])
        res["policies"][spec] = entry
        res["_nll"][spec] = r["nll"]
        res["_kept"][spec] = r["kept_final"]
    return res


def sink_evidence(scores: list[torch.Tensor]) -> dict:
    """Attention-sink evidence from the full cache's accumulated scores at the last step, per
    layer [heads, n] (n = tokens fed): the mean attention position 0 received per query, and the
    heads whose top accumulated score is position 0."""
    s = torch.stack([x.float().cpu() for x in scores])  # [layers, heads, n]
    return {
        "mean_attention_to_pos0_by_layer": (s[:, :, 0] / s.shape[-1]).mean(-1).tolist(),
        "heads_with_pos0_top_score_by_layer": (s.argmax(-1) == 0).sum(-1).tolist(),
        "heads": s.shape[1],
    }


def hf_model(sd: dict, fields: dict, device):
    """transformers' GPTNeoXForCausalLM (eager, float32, eval mode) holding the weights `sd`;
    its config declares the fields' BOS (PREPEND_BOS_KEY) when they have one, as a checkpoint
    loaded by the reference does."""
    model = build_model(fields, "eager")
    if fields.get(PREPEND_BOS_KEY) is not None:
        setattr(model.config, PREPEND_BOS_KEY, fields[PREPEND_BOS_KEY])
    load_canonical(model, {k: v.cpu() for k, v in sd.items()})
    return model.to(device).eval()


@torch.no_grad()
def position_nll(model, windows: torch.Tensor) -> torch.Tensor:
    """Per-position NLL [n_windows, T-1] of the model's full forward over text windows [n, T]
    (entry i predicts token i+1; the model's declared BOS, if any, is fed first, not scored)."""
    device = model.gpt_neox.embed_in.weight.device
    bos = declared_bos(model)
    outs = []
    for i in range(0, len(windows), 4):
        x, y = lm_window(windows[i:i + 4].to(device), bos)
        logits = model(input_ids=x, use_cache=False).logits.double()
        if bos is not None:  # drop the BOS position (its target is IGNORE)
            logits, y = logits[:, 1:], y[:, 1:]
        lp = torch.log_softmax(logits, -1)
        outs.append(-lp.gather(-1, y[..., None])[..., 0].cpu())
    return torch.cat(outs)


BUCKETS = [(0, 16), (16, 64), (64, 128), (128, 256), (256, 512), (512, 768), (768, 1024),
           (1024, 1280), (1280, 1536), (1536, 1792), (1792, 2047)]


def evaluate(sd: dict, fields: dict, test: np.ndarray, device, n_tokens: int = 2048,
             deadline: float | None = None, n_windows: int = 0, log: Callable[[str], None] = print) -> dict:
    """Full-forward NLL by position and the streaming evaluation of every policy (eval.json)."""
    torch.set_float32_matmul_precision("highest")  # evaluation in true fp32
    T = min(n_tokens, fields["max_position_embeddings"])
    first = torch.from_numpy(test[:T].astype(np.int64))[None]
    res: dict = {"eval_tokens": T, "device": str(device)}
    model = hf_model(sd, fields, device)
    nll0 = position_nll(model, first)[0]  # [T-1]; entry i predicts token i+1
    res["full_forward_ppl_first_window"] = math.exp(nll0.mean().item())
    bk = [(a, min(b, T - 1)) for a, b in BUCKETS if a < T - 1]
    res["nll_by_position_first_window"] = [
        {"positions": f"{a + 1}-{b}", "nll": nll0[a:b].mean().item()} for a, b in bk]
    if n_windows:
        nw = min(n_windows, len(test) // T)
        wins = torch.from_numpy(test[: nw * T].astype(np.int64)).view(nw, T)
        nllw = position_nll(model, wins)
        res["windows"] = nw
        res["full_forward_ppl_all_windows"] = math.exp(nllw.mean().item())
        res["nll_by_position_all_windows"] = [
            {"positions": f"{a + 1}-{b}", "nll": nllw[:, a:b].mean().item()} for a, b in bk]
    log(f"full forward (transformers, eager fp32) ppl on the first {T} tokens: "
        f"{res['full_forward_ppl_first_window']:.3f}")
    for row, row_w in zip(res["nll_by_position_first_window"],
                          res.get("nll_by_position_all_windows", [None] * len(bk))):
        log(f"  NLL positions {row['positions']:>10}: {row['nll']:.4f}"
            + (f"   ({res['windows']} windows: {row_w['nll']:.4f})" if row_w else ""))
    t0 = time.time()
    st = stream_eval(model, test[:T], deadline=deadline)
    st["seconds"] = round(time.time() - t0, 1)
    snll = st.pop("_nll")["full"]
    st.pop("_kept")
    res["streaming"] = st
    full_ppl = st["policies"]["full"]["ppl"]
    k = len(snll)
    res["stream_full_vs_forward_max_abs_nll_diff"] = (torch.tensor(snll, dtype=torch.float64) - nll0[:k].double()).abs().max().item()
    log(f"streaming full vs transformers forward: max |NLL difference| over {k} positions "
        f"{res['stream_full_vs_forward_max_abs_nll_diff']:.2e}")
    log(f"streaming eval ({T} tokens, {st['seconds']}s, complete={st['complete']}):")
    for name, r in st["policies"].items():
        gap = r["ppl"] - full_ppl
        log(f"  {name:>12}: ppl {r['ppl']:9.3f}  gap to full {gap:8.3f}"
            + (f"  heads keeping pos0 {r['heads_keeping_pos0_at_end']}/{r['layer_heads']}"
               if "heads_keeping_pos0_at_end" in r else ""))
    checks = {}
    for b, loc, h2o in ((256, "local:256", "h2o:192+64"), (512, "local:512", "h2o:448+64")):
        f, lo, hh = full_ppl, st["policies"][loc]["ppl"], st["policies"][h2o]["ppl"]
        checks[str(b)] = {"full<h2o<local": f < hh < lo, "h2o_gap": hh - f, "local_gap": lo - f,
                          "h2o_gap<=half_local_gap": (hh - f) <= 0.5 * (lo - f)}
        log(f"  budget {b}: full<h2o<local {f < hh < lo}; h2o gap {hh - f:.3f} vs local gap {lo - f:.3f} "
            f"-> at most half: {(hh - f) <= 0.5 * (lo - f)}")
    res["checks"] = checks
    if "sink" in st:
        log("  mean attention to position 0 by layer (full cache): "
            + " ".join(f"{x:.3f}" for x in st["sink"]["mean_attention_to_pos0_by_layer"]))
        log(f"  heads whose top accumulated score is position 0, by layer (of {st['sink']['heads']}): "
            + " ".join(str(x) for x in st["sink"]["heads_with_pos0_top_score_by_layer"]))
    return res
