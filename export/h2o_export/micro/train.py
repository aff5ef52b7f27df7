"""pythia-micro's training (`train_micro.py train`): transformers' GPTNeoXForCausalLM on windows
of the token stream made by prepare_micro_data.py, AdamW with warmup and cosine decay, bf16
autocast on CUDA.

Windows: with a BOS (`--bos`, the recipe of issue 15) each window of `--seq` positions is the
BOS (`<|endoftext|>`, id 0) followed by seq-1 text tokens from a random offset; without it
(`--no-bos`, the control and the old recipe) seq+1 text tokens give seq positions. The BOS is
fed, never scored (windows.py), so N text tokens give N-1 scored predictions either way.

Validation: the held-out wiki.valid articles (valid.npy) cut into windows of seq text tokens,
evaluated every `--eval-every` steps: the loss over the same seq-1 predictions for both
recipes (so runs with and without a BOS compare), a sink score per layer (`sink_scores`:
attention from queries >= 16 to position 0) and a checkpoint (ckpt/step-NNNNNN/). Training
stops at the validation minimum (`Patience`), at --steps, or by wall clock (a calibrated
step count sets the cosine's length); the chosen checkpoint is the one of lowest validation
loss (`--choose last` keeps the final one, as the old recipe did) and is copied to --out.

Seeded: the initial weights are drawn on the CPU and the windows' start offsets come from a
NumPy generator, both from --train-seed, so a run with the same --steps sees the same data in
the same order on any machine.
"""

from __future__ import annotations

import json
import math
import shutil
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from .. import rope
from ..config import PREPEND_BOS_KEY
from .evaluate import evaluate
from .model import build_model, config_json, init_weights, model_config, reshard, save_checkpoint
from .windows import IGNORE, lm_window, text_len

SINK_MIN_QUERY = 16  # the sink score counts queries at positions >= 16


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


@dataclass
class Patience:
    """The stopping rule: stop once the validation loss has not improved on its best by more
    than `min_delta` for `patience` evaluations in a row (patience 0: never stop early)."""

    patience: int
    min_delta: float = 0.0
    best: float = math.inf
    best_step: int = -1
    bad: int = 0

    def update(self, step: int, loss: float) -> bool:
        """Record the loss at `step`; True when training should stop now."""
        if loss < self.best - self.min_delta:
            self.best, self.best_step, self.bad = loss, step, 0
        else:
            self.bad += 1
        return self.patience > 0 and self.bad >= self.patience


def _qkv_modules(model) -> list:
    """The layers' query_key_value Linear modules, in layer order."""
    return [layer.attention.query_key_value for layer in model.gpt_neox.layers]


def attention_to_first(qkv: torch.Tensor, fields: dict, min_query: int = SINK_MIN_QUERY) -> torch.Tensor:
    """Mean causal attention probability that queries at positions >= min_query give to
    position 0, per head [heads], from one layer's fused projection qkv [batch, seq, 3*hidden]
    (GPT-NeoX layout: per head q|k|v; RoPE on the first rotary dims at positions 0..seq-1)."""
    heads = fields["num_attention_heads"]
    head_dim = fields["hidden_size"] // heads
    b, n, _ = qkv.shape
    q, k, _v = qkv.float().view(b, n, heads, 3 * head_dim).split(head_dim, dim=-1)  # each [b, n, heads, hd]
    cos, sin = rope.tables(rope.inv_freq(int(head_dim * fields["rotary_pct"]), fields["rotary_emb_base"]), n)
    cos, sin = cos.to(qkv.device)[:, None, :], sin.to(qkv.device)[:, None, :]  # [n, 1, rotary], made on the CPU
    q, k = rope.apply(q, cos, sin), rope.apply(k, cos, sin)
    qs = q[:, min_query:].transpose(1, 2)  # [b, heads, n - min_query, hd]
    logits = qs @ k.permute(0, 2, 3, 1) * head_dim**-0.5  # [b, heads, n - min_query, n]
    rows = torch.arange(min_query, n, device=qkv.device)[:, None]
    logits = logits.masked_fill(torch.arange(n, device=qkv.device)[None, :] > rows, float("-inf"))
    return torch.softmax(logits, dim=-1)[..., 0].mean(dim=(0, 2))  # [heads]


@torch.no_grad()
def sink_scores(model, x: torch.Tensor, fields: dict, amp: dict) -> dict:
    """Sink score per layer over the windows x [batch, seq]: the attention that queries at
    positions >= 16 give to position 0, averaged over queries and windows; "mean" over heads
    and "max_head" (the largest head) per layer."""
    captured: list[torch.Tensor] = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: captured.append(out.detach()))
             for m in _qkv_modules(model)]
    try:
        with torch.autocast(**amp):
            model(input_ids=x, use_cache=False)
    finally:
        for h in hooks:
            h.remove()
    per_head = torch.stack([attention_to_first(c, fields) for c in captured])  # [layers, heads]
    return {"mean": per_head.mean(-1).tolist(), "max_head": per_head.max(-1).values.tolist()}


@dataclass
class Validation:
    """The held-out windows: x, y [n, positions] (lm_window of seq text tokens each)."""

    x: torch.Tensor
    y: torch.Tensor
    sink_windows: int
    amp: dict = field(default_factory=dict)

    @classmethod
    def from_stream(cls, valid: np.ndarray, seq: int, n_windows: int, bos: Optional[int], device,
                    amp: dict, sink_windows: int) -> "Validation":
        n = min(n_windows, valid.size // seq)
        if n < 1:
            raise ValueError(f"valid.npy holds {valid.size} tokens, fewer than one window of {seq}; "
                             f"lower --seq or rerun prepare_micro_data.py")
        text = torch.from_numpy(valid[: n * seq].astype(np.int64)).view(n, seq).to(device)
        x, y = lm_window(text, bos)
        return cls(x, y, max(0, min(sink_windows, n)), amp)

    @torch.no_grad()
    def run(self, model, fields: dict) -> tuple[float, Optional[dict]]:
        """(mean validation loss, sink scores or None) in eval mode; back to train mode after."""
        model.eval()
        total = 0.0
        for i in range(0, len(self.x), 4):
            total += batch_loss(model, self.x[i:i + 4], self.y[i:i + 4], self.amp).item() * len(self.x[i:i + 4])
        sink = sink_scores(model, self.x[: self.sink_windows], fields, self.amp) if self.sink_windows else None
        model.train()
        return total / len(self.x), sink


def batch_loss(model, x: torch.Tensor, y: torch.Tensor, amp: dict) -> torch.Tensor:
    """Mean cross-entropy of the scored targets (IGNORE positions left out)."""
    with torch.autocast(**amp):
        logits = model(input_ids=x, use_cache=False).logits
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=IGNORE)


def pick_device(name: str) -> torch.device:
    return torch.device(name if name != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))


def run_fields(args) -> tuple[dict, dict, Optional[dict]]:
    """(fields, config.json, expected weights) of the run: from --spec (made by `config` with
    the transformers that will read the checkpoint) or built here; --bos must agree with it."""
    bos = 0 if args.bos else None
    if args.spec:
        spec = json.loads(Path(args.spec).read_text())
        fields, cfg_json, expected = spec["fields"], spec["config_json"], spec["expected_weights"]
        if fields.get(PREPEND_BOS_KEY) != bos:
            raise ValueError(f"{args.spec} declares {PREPEND_BOS_KEY}={fields.get(PREPEND_BOS_KEY)} but the run "
                             f"has {'--bos' if args.bos else '--no-bos'}; make the spec with the same flag")
        return fields, cfg_json, expected
    fields = model_config(args.tiny, args.width, args.layers, bos)
    return fields, config_json(fields), None


def load_streams(data: Path, vocab: int, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """train.npy (its first `limit` tokens when limit > 0) and valid.npy, checked against the vocab."""
    train = np.load(data / "train.npy")
    valid = np.load(data / "valid.npy")
    if limit:
        train = train[:limit]
    if int(train.max()) >= vocab or int(valid.max()) >= vocab:
        raise ValueError("token ids exceed the model's vocab; rerun prepare_micro_data.py")
    return train, valid


def make_optimizer(model, args, device) -> torch.optim.Optimizer:
    decay = [p for _, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for _, p in model.named_parameters() if p.ndim < 2]
    kw = dict(lr=args.lr, betas=(0.9, 0.95), eps=1e-8)
    if device.type == "cuda":
        kw["fused"] = True
    return torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], **kw)


class Schedule:
    """The planned step count (--steps, or calibrated on steps calib_start..+calib_steps so that
    training ends by the deadline), the warmup, and the evaluation interval."""

    def __init__(self, args, deadline: float, device):
        self.args, self.deadline, self.device = args, deadline, device
        self.total: Optional[int] = args.steps or None
        self.warmup = args.warmup
        self.eval_every: Optional[int] = args.eval_every or None
        self.t0: Optional[float] = None
        if self.total is not None:
            self._set_eval_every()

    def _set_eval_every(self) -> None:
        if self.eval_every is None:
            self.eval_every = max(1, self.total // self.args.val_points)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def after_step(self, step: int) -> Optional[dict]:
        """Calibrate when due; returns the calibration record once, else None."""
        a = self.args
        if self.total is not None:
            return None
        if step == a.calib_start:
            self._sync()
            self.t0 = time.time()
        if step == a.calib_start + a.calib_steps:
            self._sync()
            dt = (time.time() - self.t0) / a.calib_steps
            left = self.deadline - time.time() - a.val_points * 0.75  # the evaluations' time, roughly
            self.total = step + max(1, int(left / dt * 0.95))
            self.warmup = min(self.warmup, max(1, self.total // 10))
            self._set_eval_every()
            return {"event": "calibrated", "ms_per_step": dt * 1000, "total_steps": self.total,
                    "warmup": self.warmup, "eval_every": self.eval_every}
        return None


def train(args, t_start: float) -> None:
    """`train_micro.py train`: the options are train_micro.py's (args is its argparse Namespace);
    `t_start` is when the script started (--train-seconds and --eval-deadline count from it)."""
    log = make_log(t_start)
    out = Path(args.out)
    (out / "ckpt").mkdir(parents=True, exist_ok=True)
    device = pick_device(args.device)
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")  # TF32 outside autocast (fp32 masters, optimizer)
    fields, cfg_json, expected = run_fields(args)
    bos = fields.get(PREPEND_BOS_KEY)
    train_ids, valid = load_streams(Path(args.data), fields["vocab_size"], args.train_tokens)
    amp = dict(device_type=device.type, dtype=torch.bfloat16, enabled=not args.no_amp)
    val = Validation.from_stream(valid, args.seq, args.val_windows, bos, device, amp, args.sink_windows)

    torch.manual_seed(args.train_seed)
    model = build_model(fields, "sdpa")
    init_weights(model, fields, args.train_seed)
    model.to(device).train()
    opt = make_optimizer(model, args, device)
    meta = start_record(args, fields, model, device, train_ids, len(val.x), bos)
    log(f"device {device}{' ' + meta['gpu'] if meta['gpu'] else ''}; {meta['params']:,} parameters; "
        f"train tokens {train_ids.size:,}, held-out valid windows {len(val.x)}; window {args.seq} "
        f"({f'BOS + {args.seq - 1}' if bos is not None else args.seq} text tokens), "
        f"batch {args.batch}")
    with open(out / "train_log.jsonl", "w") as logf:
        logf.write(json.dumps(meta) + "\n")
        end = train_loop(args, model, opt, val, fields, cfg_json, expected, train_ids, device, amp, bos,
                         logf, t_start, log, out)
        logf.write(json.dumps(end) + "\n")
    (out / "run.json").write_text(json.dumps(end, indent=2) + "\n")
    chosen = out / end["chosen_checkpoint"]
    publish_checkpoint(chosen, out, args.shard_mib)
    log(f"{end['stop']}: {end['steps']} steps, {end['tokens_seen'] / 1e6:.1f}M tokens ({end['epochs']:.2f} epochs) "
        f"in {end['train_seconds']:.0f}s; chosen {end['chosen_checkpoint']} (valid loss {end['chosen_val_loss']:.4f}) "
        f"-> {out}/config.json + weights")
    if not args.skip_eval:
        final_eval(args, chosen, fields, device, end, t_start, log, out)


def start_record(args, fields, model, device, train_ids, n_val, bos) -> dict:
    import transformers

    return {"event": "start", "train_seed": args.train_seed, "params": sum(p.numel() for p in model.parameters()),
            "window": args.seq, "bos": bos, "batch": args.batch, "lr": args.lr, "warmup": args.warmup,
            "weight_decay": args.weight_decay, "grad_clip": args.clip, "patience": args.patience,
            "min_delta": args.min_delta, "choose": args.choose, "val_windows": n_val, "device": str(device),
            "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
            "torch": torch.__version__, "transformers": transformers.__version__, "numpy": np.__version__,
            "fields": fields, "train_tokens": int(train_ids.size), "amp_bf16": not args.no_amp}


def train_loop(args, model, opt, val: Validation, fields, cfg_json, expected, train_ids, device, amp, bos,
               logf, t_start: float, log, out: Path) -> dict:
    """Steps until the stopping rule, --steps or the deadline; an evaluation (loss, sink score,
    checkpoint) every eval_every steps and at the end. Returns the "end" record."""
    T, B = args.seq, args.batch
    L = text_len(T, bos)
    tokens = torch.from_numpy(train_ids.astype(np.int64)).to(device)
    rng = np.random.default_rng(args.train_seed)
    ar = torch.arange(L, device=device)
    sched = Schedule(args, t_start + args.train_seconds, device)
    stop_rule = Patience(args.patience, args.min_delta)
    step, stop, last_eval, run_loss, run_n = 0, "steps", 0, torch.zeros((), device=device), 0
    val_losses: dict[int, float] = {}
    t0 = time.time()

    def evaluate_now() -> bool:
        loss, sink = val.run(model, fields)
        name = f"ckpt/step-{step:06d}"
        save_checkpoint(model, cfg_json, expected, out / name, 0.0)
        halt = stop_rule.update(step, loss)
        val_losses[step] = loss
        rec = {"event": "eval", "step": step, "tokens": step * T * B, "val_loss": loss, "sink": sink,
               "checkpoint": name, "best_step": stop_rule.best_step, "elapsed_s": round(time.time() - t0, 2)}
        logf.write(json.dumps(rec) + "\n")
        logf.flush()
        log(f"eval step {step}: valid loss {loss:.4f} (best {stop_rule.best:.4f} at {stop_rule.best_step})"
            + (" sink " + " ".join(f"{s:.3f}" for s in sink["mean"]) if sink else ""))
        return halt

    while sched.total is None or step < sched.total:
        if time.time() > sched.deadline:
            stop = "wall clock"
            break
        starts = rng.integers(0, tokens.numel() - T - 1, size=B)  # the same offsets with or without a BOS
        x, y = lm_window(tokens[torch.from_numpy(starts).to(device)[:, None] + ar], bos)
        lr = lr_at(step, sched.total or 10**9, sched.warmup, args.lr, args.min_lr_frac)
        for g in opt.param_groups:
            g["lr"] = lr
        loss = batch_loss(model, x, y, amp)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        opt.step()
        step += 1
        run_loss, run_n = run_loss + loss.detach(), run_n + 1
        cal = sched.after_step(step)
        if cal:
            logf.write(json.dumps(cal) + "\n")
            log(f"calibration: {cal['ms_per_step']:.1f} ms/step -> {cal['total_steps']} steps, warmup "
                f"{cal['warmup']}, eval every {cal['eval_every']}")
        if step % args.log_every == 0 or step <= 3:
            rec = {"step": step, "tokens": step * T * B, "loss": run_loss.item() / run_n, "lr": lr,
                   "grad_norm": float(gnorm), "elapsed_s": round(time.time() - t0, 2)}
            logf.write(json.dumps(rec) + "\n")
            if step % (args.log_every * 10) == 0 or step <= 3:
                log(f"step {step}/{sched.total} loss {rec['loss']:.4f} lr {lr:.2e} gnorm {rec['grad_norm']:.2f} "
                    f"{step * T * B / max(1e-9, time.time() - t0) / 1e6:.2f}M tok/s")
            run_loss, run_n = torch.zeros((), device=device), 0
        if sched.eval_every and step % sched.eval_every == 0:
            last_eval = step
            if evaluate_now():
                stop = "validation minimum"
                break
    if step == 0:
        raise ValueError("no training step before the deadline; raise --train-seconds")
    if step > last_eval:
        evaluate_now()
    chosen_step = stop_rule.best_step if args.choose == "best" else step
    return {"event": "end", "steps": step, "planned_steps": sched.total, "stop": stop,
            "tokens_seen": step * T * B, "epochs": step * T * B / train_ids.size,
            "train_seconds": round(time.time() - t0, 1), "best_step": stop_rule.best_step,
            "best_val_loss": stop_rule.best, "choose": args.choose, "chosen_step": chosen_step,
            "chosen_checkpoint": f"ckpt/step-{chosen_step:06d}",
            "chosen_val_loss": val_losses[chosen_step], "bos": bos}


def publish_checkpoint(src: Path, out: Path, shard_mib: float) -> list[str]:
    """Copy the chosen checkpoint's config.json and weights to `out` (as shards of at most
    shard_mib when asked); stale weight files there are removed first."""
    for old in list(out.glob("model*.safetensors")):
        old.unlink()
    shutil.copyfile(src / "config.json", out / "config.json")
    return reshard(src, out, shard_mib)


def final_eval(args, chosen: Path, fields, device, end: dict, t_start: float, log, out: Path) -> None:
    """The streaming evaluation (evaluate.py) of the chosen checkpoint on test.npy (reported,
    never used for the choice); a failure is printed, the checkpoint stays."""
    from safetensors.torch import load_file

    try:
        sd = load_file(str(chosen / "model.safetensors"))
        res = evaluate(sd, fields, np.load(Path(args.data) / "test.npy"), device, args.eval_tokens,
                       t_start + args.eval_deadline if args.eval_deadline else None, args.eval_windows, log)
        res["training"] = end
        (out / "eval.json").write_text(json.dumps(res, indent=2) + "\n")
        log("wrote eval.json")
    except Exception:  # the checkpoint is saved; report the evaluation failure and go on
        traceback.print_exc()
