"""Train, save and evaluate models/pythia-micro: a small GPT-NeoX (Pythia architecture).

Subcommands
  config   write the model's config.json and the list of weight names/shapes it must save
           (made with the transformers installed here, so the checkpoint loads in it)
  train    train transformers' GPTNeoXForCausalLM on packed windows of the token stream made by
           export/prepare_micro_data.py; stops itself by wall clock or after --steps; saves
           config.json + safetensors (fp32, sharded when asked) + train_log.jsonl, then runs
           `eval` on the result and writes eval.json
  eval     on the first 2048 tokens of wiki.test.raw (and on all 2048-token windows of it):
           NLL by position bucket with the whole window in context, and a streaming
           token-by-token evaluation with a compressed KV cache (full, local, sink, h2o),
           written as an explicit loop with its own K/V, positions and scores per layer/head
  merge    join the shards written by `train --shard-mib` into one model.safetensors

The same script runs unchanged on a CPU (use --tiny for a smoke test) and on a CUDA GPU
(bf16 autocast, SDPA attention). Training is seeded: the initial weights are drawn on the CPU,
and the windows' start offsets come from a NumPy generator, so a run with the same --steps
sees the same data in the same order on any machine.

Architecture (see `model_config`): parallel residual, rotary on 25% of each head's dims with
base 10000, exact GELU, untied input/output embeddings, LayerNorm eps 1e-5, 2048 positions.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import traceback
from pathlib import Path

T_START = time.time()

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

# ---------------------------------------------------------------------------------------------
# model shape


def model_config(tiny: bool = False) -> dict:
    """GPTNeoXConfig fields of pythia-micro (or of the tiny smoke-test model)."""
    cfg = dict(
        model_type="gpt_neox",
        architectures=["GPTNeoXForCausalLM"],
        vocab_size=4096,
        hidden_size=256,
        num_hidden_layers=8,
        num_attention_heads=8,
        intermediate_size=1024,
        hidden_act="gelu",
        rotary_pct=0.25,
        rotary_emb_base=10000,
        max_position_embeddings=2048,
        initializer_range=0.02,
        layer_norm_eps=1e-5,
        use_parallel_residual=True,
        tie_word_embeddings=False,
        attention_bias=True,
        attention_dropout=0.0,
        hidden_dropout=0.0,
        bos_token_id=0,
        eos_token_id=0,
        use_cache=True,
        torch_dtype="float32",
    )
    if tiny:
        cfg.update(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256)
    return cfg


def hf_config(fields: dict):
    from transformers import GPTNeoXConfig

    kw = {k: v for k, v in fields.items() if k not in ("model_type", "architectures", "torch_dtype",
                                                        "transformers_version")}
    cfg = GPTNeoXConfig(**kw)
    cfg.architectures = ["GPTNeoXForCausalLM"]
    return cfg


def build_model(fields: dict, attn: str):
    from transformers import GPTNeoXForCausalLM

    cfg = hf_config(fields)
    cfg._attn_implementation = attn
    return GPTNeoXForCausalLM(cfg)


# transformers 5 renamed the output projection; checkpoints use the 4.x name (what loads here)
RENAMES = {"lm_head.weight": "embed_out.weight"}
BUFFERS = ("inv_freq", "masked_bias", ".attention.bias")


def canonical_state_dict(model) -> dict:
    """The model's weights under the transformers-4.x names, float32 on the CPU, no buffers."""
    return {RENAMES.get(k, k): v.detach().to("cpu", torch.float32).contiguous()
            for k, v in model.state_dict().items() if not k.endswith(BUFFERS)}


def load_canonical(model, sd: dict) -> None:
    """Load 4.x-named weights into a model of the installed transformers (strict)."""
    back = {v: k for k, v in RENAMES.items()}
    names = {k for k in model.state_dict() if not k.endswith(BUFFERS)}
    mapped = {(back[k] if k in back and back[k] in names else k): v for k, v in sd.items()}
    missing, unexpected = names - set(mapped), set(mapped) - names
    if missing or unexpected:
        raise RuntimeError(f"weights do not match the model: missing {sorted(missing)[:5]}, "
                           f"unexpected {sorted(unexpected)[:5]}")
    model.load_state_dict(mapped, strict=False)


def init_weights(model, fields: dict, seed: int) -> None:
    """Pythia's initialisation, drawn on the CPU from `seed` (device independent).

    Embeddings and input projections: normal(0, sqrt(2 / (5 d))) ("small_init"); the two
    projections back into the residual stream (attention.dense, mlp.dense_4h_to_h):
    normal(0, 2 / (L sqrt(d))) ("wang_init"); biases 0; LayerNorm weight 1, bias 0.
    """
    d, n_layers = fields["hidden_size"], fields["num_hidden_layers"]
    small, wang = math.sqrt(2.0 / (5 * d)), 2.0 / (n_layers * math.sqrt(d))
    gen = torch.Generator().manual_seed(seed)
    params = sorted((RENAMES.get(n, n), p) for n, p in model.named_parameters())
    with torch.no_grad():
        for name, p in params:
            if "layernorm" in name or "layer_norm" in name:
                p.fill_(1.0 if name.endswith("weight") else 0.0)
            elif name.endswith("bias"):
                p.zero_()
            else:
                std = wang if (name.endswith("attention.dense.weight")
                               or name.endswith("dense_4h_to_h.weight")) else small
                p.copy_(torch.randn(p.shape, generator=gen) * std)


# ---------------------------------------------------------------------------------------------
# saving


def save_checkpoint(model, cfg_json: dict, expected: dict | None, out: Path, shard_mib: float) -> list[str]:
    """config.json + weights as float32 safetensors, one file or shards of at most shard_mib."""
    sd = canonical_state_dict(model)
    if expected is not None:
        missing = [k for k in expected if k not in sd]
        if missing:
            raise RuntimeError(f"weights missing from the trained model: {missing[:5]}")
        bad = [k for k in expected if list(sd[k].shape) != expected[k]]
        if bad:
            raise RuntimeError(f"weight shapes differ from the expected ones: {bad[:5]}")
        sd = {k: sd[k] for k in expected}
    (out / "config.json").write_text(json.dumps(cfg_json, indent=2) + "\n")
    limit = int(shard_mib * 2**20) if shard_mib > 0 else None
    total = sum(t.numel() * 4 for t in sd.values())
    if limit is None or total <= limit:
        save_file(sd, str(out / "model.safetensors"), metadata={"format": "pt"})
        return ["model.safetensors"]
    shards, cur, size = [], {}, 0
    for k in sorted(sd):
        n = sd[k].numel() * 4
        if cur and size + n > limit:
            shards.append(cur)
            cur, size = {}, 0
        cur[k] = sd[k]
        size += n
    shards.append(cur)
    names = []
    for i, sh in enumerate(shards):
        name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(sh, str(out / name), metadata={"format": "pt"})
        names.append(name)
    return names


def config_json(fields: dict) -> dict:
    """The config.json written next to the weights (what transformers here writes, plus dtype)."""
    cfg = hf_config(fields).to_diff_dict()
    cfg["architectures"] = ["GPTNeoXForCausalLM"]
    cfg["torch_dtype"] = "float32"
    return cfg


def cmd_config(args) -> None:
    fields = model_config(args.tiny)
    model = build_model(fields, "eager")
    expected = {k: list(v.shape) for k, v in canonical_state_dict(model).items()}
    out = {"fields": fields, "config_json": config_json(fields), "expected_weights": expected,
           "transformers_version": __import__("transformers").__version__,
           "parameters": sum(math.prod(s) for s in expected.values())}
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}: {out['parameters']:,} parameters, {len(expected)} tensors")


def cmd_merge(args) -> None:
    src = Path(args.dir)
    shards = sorted(src.glob("model-*-of-*.safetensors"))
    if not shards:
        sys.exit(f"error: no model-*-of-*.safetensors in {src}")
    sd = {}
    for s in shards:
        sd.update(load_file(str(s)))
    dst = Path(args.out)
    save_file({k: sd[k] for k in sorted(sd)}, str(dst), metadata={"format": "pt"})
    print(f"merged {len(shards)} shards, {len(sd)} tensors -> {dst}")


# ---------------------------------------------------------------------------------------------
# training


def lr_at(step: int, total: int, warmup: int, peak: float, floor_frac: float) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    frac = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (floor_frac + (1 - floor_frac) * 0.5 * (1 + math.cos(math.pi * frac)))


def log(msg: str) -> None:
    print(f"[{time.time() - T_START:7.1f}s] {msg}", flush=True)


def cmd_train(args) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    import transformers

    log(f"torch {torch.__version__}, transformers {transformers.__version__}, numpy {np.__version__}, device {device}")
    if device.type == "cuda":
        log(f"gpu {torch.cuda.get_device_name(0)}, {torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB")
        torch.set_float32_matmul_precision("high")  # TF32 outside autocast (fp32 masters, optimizer)

    spec = json.loads(Path(args.spec).read_text()) if args.spec else None
    fields = spec["fields"] if spec else model_config(args.tiny)
    expected = spec["expected_weights"] if spec else None
    data = Path(args.data)
    train = np.load(data / "train.npy")
    valid = np.load(data / "valid.npy")
    V = fields["vocab_size"]
    if int(train.max()) >= V or int(valid.max()) >= V:
        sys.exit("error: token ids exceed the model's vocab; rerun prepare_micro_data.py")
    T, B = args.seq, args.batch
    log(f"train tokens {train.size:,}, held-out valid tokens {valid.size:,}; window {T}, batch {B} "
        f"({T * B:,} tokens/step)")

    torch.manual_seed(args.seed)
    model = build_model(fields, "sdpa")
    init_weights(model, fields, args.seed)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model: {n_params:,} parameters")
    model.to(device).train()

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt_kw = dict(lr=args.lr, betas=(0.9, 0.95), eps=1e-8)
    if device.type == "cuda":
        opt_kw["fused"] = True
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], **opt_kw)

    tokens = torch.from_numpy(train.astype(np.int64)).to(device)
    rng = np.random.default_rng(args.seed)
    ar = torch.arange(T + 1, device=device)
    # fixed held-out windows (valid) for the validation loss
    n_val = max(1, min(args.val_windows, (valid.size - 1) // T))
    val = torch.from_numpy(valid[: n_val * T + 1].astype(np.int64)).to(device)
    val_x = torch.stack([val[i * T:(i + 1) * T] for i in range(n_val)])
    val_y = torch.stack([val[i * T + 1:(i + 1) * T + 1] for i in range(n_val)])
    amp = dict(device_type=device.type, dtype=torch.bfloat16, enabled=not args.no_amp)

    def batch_loss(x, y):
        with torch.autocast(**amp):
            logits = model(input_ids=x, use_cache=False).logits
        return F.cross_entropy(logits.float().reshape(-1, V), y.reshape(-1))

    @torch.no_grad()
    def val_loss() -> float:
        model.eval()
        ls = [batch_loss(val_x[i:i + 4], val_y[i:i + 4]).item() * len(val_x[i:i + 4]) for i in range(0, n_val, 4)]
        model.train()
        return sum(ls) / n_val

    deadline = T_START + args.train_seconds
    total = args.steps if args.steps else None
    warmup = args.warmup
    logf = open(out / "train_log.jsonl", "w")
    meta = {"event": "start", "seed": args.seed, "params": n_params, "window": T, "batch": B,
            "lr": args.lr, "warmup": warmup, "weight_decay": args.weight_decay, "grad_clip": args.clip,
            "device": str(device), "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
            "torch": torch.__version__, "transformers": transformers.__version__,
            "fields": fields, "train_tokens": int(train.size), "amp_bf16": not args.no_amp}
    logf.write(json.dumps(meta) + "\n")
    step, run_loss, run_n = 0, torch.zeros((), device=device), 0
    t_train0 = time.time()
    calib_t0 = None
    stop_reason = "steps"
    val_every = None
    while True:
        if total is not None and step >= total:
            break
        if time.time() > deadline:
            stop_reason = "wall clock"
            log(f"wall-clock limit reached at step {step}")
            break
        starts = rng.integers(0, tokens.numel() - T - 1, size=B)
        idx = torch.from_numpy(starts).to(device)[:, None] + ar
        win = tokens[idx]
        x, y = win[:, :-1], win[:, 1:]
        lr = lr_at(step, total or 10**9, warmup, args.lr, args.min_lr_frac)
        for g in opt.param_groups:
            g["lr"] = lr
        loss = batch_loss(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        opt.step()
        step += 1
        run_loss += loss.detach()
        run_n += 1
        # calibrate the number of steps that fit before the deadline (then fixed: cosine needs it)
        if total is None and step == args.calib_start:
            if device.type == "cuda":
                torch.cuda.synchronize()
            calib_t0 = time.time()
        if total is None and step == args.calib_start + args.calib_steps:
            if device.type == "cuda":
                torch.cuda.synchronize()
            dt = (time.time() - calib_t0) / args.calib_steps
            left = deadline - time.time() - args.val_points * 0.5
            total = step + max(1, int(left / dt * 0.97))
            warmup = min(warmup, max(1, total // 10))
            log(f"calibration: {dt * 1000:.1f} ms/step -> {total} steps in all "
                f"({total * T * B / 1e6:.0f}M tokens), warmup {warmup}")
            logf.write(json.dumps({"event": "calibrated", "ms_per_step": dt * 1000, "total_steps": total,
                                   "warmup": warmup}) + "\n")
        if total is not None and val_every is None:
            val_every = max(1, total // args.val_points)
        if step % args.log_every == 0 or step <= 3:
            rec = {"step": step, "tokens": step * T * B, "loss": run_loss.item() / max(1, run_n), "lr": lr,
                   "grad_norm": float(gnorm), "elapsed_s": round(time.time() - t_train0, 2)}
            if val_every and (step % val_every < args.log_every or step == total):
                rec["val_loss"] = val_loss()
            logf.write(json.dumps(rec) + "\n")
            logf.flush()
            if step % (args.log_every * 10) == 0 or "val_loss" in rec or step <= 3:
                log(f"step {step}/{total} loss {rec['loss']:.4f}"
                    + (f" val {rec['val_loss']:.4f}" if "val_loss" in rec else "")
                    + f" lr {lr:.2e} gnorm {rec['grad_norm']:.2f} "
                    f"{step * T * B / max(1e-9, time.time() - t_train0) / 1e6:.2f}M tok/s")
            run_loss, run_n = torch.zeros((), device=device), 0
    if device.type == "cuda":
        torch.cuda.synchronize()
    train_s = time.time() - t_train0
    final_val = val_loss()
    end = {"event": "end", "steps": step, "planned_steps": total, "stop": stop_reason,
           "tokens_seen": step * T * B, "train_seconds": round(train_s, 1), "final_val_loss": final_val,
           "epochs": step * T * B / train.size}
    logf.write(json.dumps(end) + "\n")
    logf.close()
    log(f"trained {step} steps, {step * T * B / 1e6:.1f}M tokens ({end['epochs']:.1f} epochs) "
        f"in {train_s:.0f}s; held-out valid loss {final_val:.4f} (ppl {math.exp(final_val):.2f})")
    # config.json as made by `config` with the transformers that will read it (not this one's)
    cfg_json = spec["config_json"] if spec else config_json(fields)
    names = save_checkpoint(model, cfg_json, expected, out, args.shard_mib)
    log(f"saved config.json + {names}")
    if args.skip_eval:
        return
    model.eval()
    try:
        sd = canonical_state_dict(model)
        res = evaluate(sd, fields, np.load(data / "test.npy"), device, args.eval_tokens,
                       T_START + args.eval_deadline if args.eval_deadline else None, args.eval_windows)
        res["training"] = end
        (out / "eval.json").write_text(json.dumps(res, indent=2) + "\n")
        log("wrote eval.json")
    except Exception:  # the checkpoint is saved; report the evaluation failure and go on
        traceback.print_exc()


# ---------------------------------------------------------------------------------------------
# evaluation


def rope_tables(fields: dict, n: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    hd = fields["hidden_size"] // fields["num_attention_heads"]
    rot = int(hd * fields["rotary_pct"])
    inv = 1.0 / (fields["rotary_emb_base"] ** (torch.arange(0, rot, 2, dtype=torch.float32) / rot))
    freqs = torch.arange(n, dtype=torch.float32)[:, None] * inv[None, :]
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos().to(device), emb.sin().to(device)  # [n, rot]


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [..., hd]; rotates the first rot dims (GPT-NeoX rotate_half layout)."""
    rot = cos.shape[-1]
    xr, xp = x[..., :rot], x[..., rot:]
    x1, x2 = xr[..., : rot // 2], xr[..., rot // 2:]
    return torch.cat([xr * cos + torch.cat([-x2, x1], dim=-1) * sin, xp], dim=-1)


DEFAULT_POLICIES = [
    ("full", None, 0), ("local:256", 256, 256), ("h2o:192+64", 256, 64), ("sink:4+252", 256, 252),
    ("local:512", 512, 512), ("h2o:448+64", 512, 64), ("sink:4+508", 512, 508),
]


@torch.no_grad()
def stream_eval(sd: dict, fields: dict, ids: np.ndarray, device, policies=DEFAULT_POLICIES,
                deadline: float | None = None) -> dict:
    """Token-by-token streaming NLL with a compressed cache, all policies side by side.

    Per layer, per policy c and head h, the cache is its own K, V [C, H, N, hd] (rotated keys,
    position p in row p), a kept flag and an accumulated score [C, H, N]. Step t feeds token t
    (absolute position t) and scores token t+1; the query attends to the kept entries plus
    itself; every entry's score grows by the attention probability it receives (its own query
    included). Then, where the cache holds budget+1 entries, one entry is evicted per layer and
    head: among kept entries older than the recent window R (position <= t - R), the lowest
    score, ties to the oldest. `local R` = budget R, recent R; `h2o H+R` = budget H+R, recent
    R; `sink S+R` keeps positions < S by an infinite score and is otherwise local.
    """
    L, H, d = fields["num_hidden_layers"], fields["num_attention_heads"], fields["hidden_size"]
    hd, eps = d // H, fields["layer_norm_eps"]
    n = len(ids)
    C = len(policies)
    W = {k: v.to(device, torch.float32) for k, v in sd.items()}
    pre = "gpt_neox."
    cos, sin = rope_tables(fields, n, device)
    Kc = torch.zeros(L, C, H, n, hd, device=device)
    Vc = torch.zeros(L, C, H, n, hd, device=device)
    kept = torch.zeros(L, C, H, n, dtype=torch.bool, device=device)
    score = torch.zeros(L, C, H, n, device=device)
    budgets = [b if b is not None else n + 1 for _, b, _ in policies]
    recent = torch.tensor([r for _, _, r in policies], device=device)
    sinks = torch.tensor([int(name.split(":")[1].split("+")[0]) if name.startswith("sink") else 0
                          for name, _, _ in policies], device=device)
    pos = torch.arange(n, device=device)
    sink_mask = pos[None, :] < sinks[:, None]  # [C, n]
    ids_t = torch.from_numpy(ids.astype(np.int64)).to(device)
    nll = torch.zeros(C, n - 1, dtype=torch.float64, device=device)
    scale = hd ** -0.5
    done = 0
    for t in range(n - 1):
        h = W[pre + "embed_in.weight"][ids_t[t]].expand(C, d)
        c_t, s_t = cos[t], sin[t]
        for li in range(L):
            p = f"{pre}layers.{li}."
            a = F.layer_norm(h, (d,), W[p + "input_layernorm.weight"], W[p + "input_layernorm.bias"], eps)
            qkv = F.linear(a, W[p + "attention.query_key_value.weight"], W[p + "attention.query_key_value.bias"])
            q, k, v = qkv.view(C, H, 3 * hd).split(hd, dim=-1)  # each [C, H, hd]
            q, k = apply_rope(q, c_t, s_t), apply_rope(k, c_t, s_t)
            Kc[li, :, :, t] = k
            Vc[li, :, :, t] = v
            kept[li, :, :, t] = True
            s = torch.einsum("chd,chnd->chn", q, Kc[li, :, :, : t + 1]) * scale
            s = s.masked_fill(~kept[li, :, :, : t + 1], float("-inf"))
            prob = torch.softmax(s, dim=-1)  # [C, H, t+1], exactly 0 where not kept
            score[li, :, :, : t + 1] += prob
            o = torch.einsum("chn,chnd->chd", prob, Vc[li, :, :, : t + 1]).reshape(C, d)
            attn = F.linear(o, W[p + "attention.dense.weight"], W[p + "attention.dense.bias"])
            m = F.layer_norm(h, (d,), W[p + "post_attention_layernorm.weight"],
                             W[p + "post_attention_layernorm.bias"], eps)
            mlp = F.linear(F.gelu(F.linear(m, W[p + "mlp.dense_h_to_4h.weight"], W[p + "mlp.dense_h_to_4h.bias"])),
                           W[p + "mlp.dense_4h_to_h.weight"], W[p + "mlp.dense_4h_to_h.bias"])
            h = h + attn + mlp
        hf = F.layer_norm(h, (d,), W[pre + "final_layer_norm.weight"], W[pre + "final_layer_norm.bias"], eps)
        logits = F.linear(hf, W["embed_out.weight"]).double()  # [C, V]
        nll[:, t] = torch.logsumexp(logits, -1) - logits[:, ids_t[t + 1]]
        # eviction: policies whose cache now holds budget + 1 entries drop one per layer and head
        need = [c for c in range(C) if t + 1 > budgets[c]]
        if need:
            ni = torch.tensor(need, device=device)
            cand = kept[:, ni, :, : t + 1] & (pos[None, None, None, : t + 1] <= (t - recent[ni])[None, :, None, None])
            cand = cand & ~sink_mask[ni, None, : t + 1][None]
            sc = torch.where(cand, score[:, ni, :, : t + 1], torch.full_like(score[:, ni, :, : t + 1], float("inf")))
            j = sc.argmin(dim=-1, keepdim=True)  # [L, len(need), H, 1]; first minimum = oldest
            sub = kept[:, ni]
            sub.scatter_(-1, j, False)
            kept[:, ni] = sub
        done = t + 1
        if deadline is not None and time.time() > deadline:
            break
    nll = nll[:, :done].cpu()
    res = {"tokens": done + 1, "complete": done == n - 1, "policies": {}, "_nll": nll, "_kept": kept.cpu()}
    for c, (name, b, r) in enumerate(policies):
        mean = nll[c].mean().item()
        res["policies"][name] = {"budget": b, "recent": r, "nll": mean, "ppl": math.exp(mean)}
    # attention-sink evidence from the full cache: accumulated score of position 0
    full = [c for c, (nm, _, _) in enumerate(policies) if nm == "full"]
    if full:
        sc0 = score[:, full[0], :, : done + 1]  # [L, H, done+1]
        top = sc0.argmax(-1)  # [L, H]
        res["sink"] = {
            "mean_attention_to_pos0_by_layer": (sc0[:, :, 0] / (done + 1)).mean(-1).tolist(),
            "heads_with_pos0_top_score_by_layer": (top == 0).sum(-1).tolist(),
            "heads": H,
        }
    for c, (name, _, _) in enumerate(policies):
        if name.startswith("h2o"):
            res["policies"][name]["heads_keeping_pos0_at_end"] = int(kept[:, c, :, 0].sum().item())
            res["policies"][name]["layer_heads"] = L * H
    return res


@torch.no_grad()
def position_nll(sd: dict, fields: dict, windows: torch.Tensor, device) -> torch.Tensor:
    """Per-position NLL [n_windows, T-1] of transformers' GPTNeoXForCausalLM (eager, fp32)."""
    model = build_model(fields, "eager")
    load_canonical(model, {k: v.cpu() for k, v in sd.items()})
    model.to(device).eval()
    outs = []
    for i in range(0, len(windows), 4):
        x = windows[i:i + 4].to(device)
        logits = model(input_ids=x, use_cache=False).logits.double()
        lp = torch.log_softmax(logits[:, :-1], -1)
        outs.append(-lp.gather(-1, x[:, 1:, None])[..., 0].cpu())
    return torch.cat(outs)


BUCKETS = [(0, 16), (16, 64), (64, 128), (128, 256), (256, 512), (512, 768), (768, 1024),
           (1024, 1280), (1280, 1536), (1536, 1792), (1792, 2047)]


def evaluate(sd: dict, fields: dict, test: np.ndarray, device, n_tokens: int = 2048,
             deadline: float | None = None, n_windows: int = 0) -> dict:
    torch.set_float32_matmul_precision("highest")  # evaluation in true fp32
    T = min(n_tokens, fields["max_position_embeddings"])
    first = torch.from_numpy(test[:T].astype(np.int64))[None]
    res: dict = {"eval_tokens": T, "device": str(device)}
    nll0 = position_nll(sd, fields, first, device)[0]  # [T-1]; entry i predicts token i+1
    res["full_forward_ppl_first_window"] = math.exp(nll0.mean().item())
    bk = [(a, min(b, T - 1)) for a, b in BUCKETS if a < T - 1]
    res["nll_by_position_first_window"] = [
        {"positions": f"{a + 1}-{b}", "nll": nll0[a:b].mean().item()} for a, b in bk]
    if n_windows:
        nw = min(n_windows, len(test) // T)
        wins = torch.from_numpy(test[: nw * T].astype(np.int64)).view(nw, T)
        nllw = position_nll(sd, fields, wins, device)
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
    st = stream_eval(sd, fields, test[:T], device, deadline=deadline)
    st["seconds"] = round(time.time() - t0, 1)
    snll, _ = st.pop("_nll"), st.pop("_kept")
    res["streaming"] = st
    full_ppl = st["policies"]["full"]["ppl"]
    k = snll.shape[1]
    res["stream_full_vs_forward_max_abs_nll_diff"] = (snll[0] - nll0[:k].double()).abs().max().item()
    log(f"streaming full vs transformers forward: max |NLL difference| over {k} positions "
        f"{res['stream_full_vs_forward_max_abs_nll_diff']:.2e}")
    log(f"streaming eval ({st['tokens']} tokens, {st['seconds']}s, complete={st['complete']}):")
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


def cmd_eval(args) -> None:
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    mdir = Path(args.model)
    fields = json.loads((mdir / "config.json").read_text())
    sd = load_file(str(mdir / "model.safetensors"))
    test = np.load(Path(args.data) / "test.npy") if args.data else None
    if test is None:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(mdir / "tokenizer.json"))
        text = Path(args.test_raw).read_text(encoding="utf-8")
        test = np.asarray(tok.encode(text, add_special_tokens=False).ids, dtype=np.int64)
    torch.set_num_threads(args.threads) if args.threads else None
    res = evaluate(sd, fields, test, device, args.eval_tokens, None, args.eval_windows)
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
        print(f"wrote {args.out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("config", help="write config + expected weight names (run with the target transformers)")
    c.add_argument("--out", default=".carry/model_spec.json")
    c.add_argument("--tiny", action="store_true")
    t = sub.add_parser("train")
    t.add_argument("--data", default=".carry", help="folder with train.npy, valid.npy, test.npy")
    t.add_argument("--spec", default=None, help="model_spec.json from `config` (else the built-in shape)")
    t.add_argument("--out", required=True)
    t.add_argument("--tiny", action="store_true", help="tiny model for a CPU smoke test")
    t.add_argument("--device", default="auto")
    t.add_argument("--seed", type=int, default=1234)
    t.add_argument("--seq", type=int, default=2048)
    t.add_argument("--batch", type=int, default=64)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--min-lr-frac", type=float, default=0.1)
    t.add_argument("--warmup", type=int, default=100)
    t.add_argument("--weight-decay", type=float, default=0.1)
    t.add_argument("--clip", type=float, default=1.0)
    t.add_argument("--steps", type=int, default=0, help="fixed step count (reproduction); else by wall clock")
    t.add_argument("--train-seconds", type=float, default=400.0,
                   help="training stops this many seconds after the script started")
    t.add_argument("--calib-start", type=int, default=10)
    t.add_argument("--calib-steps", type=int, default=15)
    t.add_argument("--val-points", type=int, default=20)
    t.add_argument("--val-windows", type=int, default=16)
    t.add_argument("--log-every", type=int, default=10)
    t.add_argument("--shard-mib", type=float, default=0.0, help="split weights into shards of at most this size")
    t.add_argument("--no-amp", action="store_true")
    t.add_argument("--skip-eval", action="store_true")
    t.add_argument("--eval-tokens", type=int, default=2048)
    t.add_argument("--eval-windows", type=int, default=0, help="also average NLL by position over this many windows")
    t.add_argument("--eval-deadline", type=float, default=0.0,
                   help="stop the streaming eval this many seconds after the script started")
    e = sub.add_parser("eval")
    e.add_argument("--model", default="models/pythia-micro")
    e.add_argument("--data", default=None, help="folder with test.npy (else tokenize --test-raw)")
    e.add_argument("--test-raw", default="../shared/data/wikitext-2-raw-v1/wiki.test.raw")
    e.add_argument("--device", default="auto")
    e.add_argument("--eval-tokens", type=int, default=2048)
    e.add_argument("--eval-windows", type=int, default=0)
    e.add_argument("--threads", type=int, default=0)
    e.add_argument("--out", default=None)
    m = sub.add_parser("merge")
    m.add_argument("--dir", required=True)
    m.add_argument("--out", required=True)
    args = ap.parse_args()
    {"config": cmd_config, "train": cmd_train, "eval": cmd_eval, "merge": cmd_merge}[args.cmd](args)


if __name__ == "__main__":
    main()
