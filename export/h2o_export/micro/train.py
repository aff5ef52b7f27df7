"""pythia-micro's training (`train_micro.py train`): transformers' GPTNeoXForCausalLM on packed
windows of the token stream made by prepare_micro_data.py, AdamW with warmup and cosine decay,
bf16 autocast on CUDA, stopped by wall clock (with a calibrated step count) or after --steps;
then the checkpoint is saved and evaluated (evaluate.py).

Seeded: the initial weights are drawn on the CPU and the windows' start offsets come from a
NumPy generator, both from --train-seed, so a run with the same --steps sees the same data in
the same order on any machine.
"""

from __future__ import annotations

import json
import math
import time
import traceback
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .evaluate import evaluate
from .model import build_model, canonical_state_dict, config_json, init_weights, model_config, save_checkpoint


def lr_at(step: int, total: int, warmup: int, peak: float, floor_frac: float) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    frac = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (floor_frac + (1 - floor_frac) * 0.5 * (1 + math.cos(math.pi * frac)))


def make_log(t_start: float) -> Callable[[str], None]:
    """print with the seconds since t_start in front."""
    def log(msg: str) -> None:
        print(f"[{time.time() - t_start:7.1f}s] {msg}", flush=True)
    return log


def train(args, t_start: float) -> None:
    """`train_micro.py train`: the options are train_micro.py's (args is its argparse Namespace);
    `t_start` is when the script started (--train-seconds and --eval-deadline count from it).
    One function on purpose for now: issue 15 replaces the fixed-length schedule by stopping at
    the validation minimum."""
    log = make_log(t_start)
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
        raise ValueError("token ids exceed the model's vocab; rerun prepare_micro_data.py")
    T, B = args.seq, args.batch
    log(f"train tokens {train.size:,}, held-out valid tokens {valid.size:,}; window {T}, batch {B} "
        f"({T * B:,} tokens/step)")

    torch.manual_seed(args.train_seed)
    model = build_model(fields, "sdpa")
    init_weights(model, fields, args.train_seed)
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
    rng = np.random.default_rng(args.train_seed)
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

    deadline = t_start + args.train_seconds
    total = args.steps if args.steps else None
    warmup = args.warmup
    logf = open(out / "train_log.jsonl", "w")
    meta = {"event": "start", "train_seed": args.train_seed, "params": n_params, "window": T, "batch": B,
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
                       t_start + args.eval_deadline if args.eval_deadline else None, args.eval_windows, log)
        res["training"] = end
        (out / "eval.json").write_text(json.dumps(res, indent=2) + "\n")
        log("wrote eval.json")
    except Exception:  # the checkpoint is saved; report the evaluation failure and go on
        traceback.print_exc()
