"""Train, save and evaluate models/pythia-micro: a small GPT-NeoX (Pythia architecture).

Subcommands
  config   write the model's config.json and the list of weight names/shapes it must save
           (made with the transformers installed here, so the checkpoint loads in it)
  train    train transformers' GPTNeoXForCausalLM on windows of the token stream made by
           export/prepare_micro_data.py, with a BOS at position 0 of every window (--bos, the
           default; --no-bos for the control / the old recipe); validation on the held-out
           wiki.valid articles every --eval-every steps (loss, sink score per layer, a
           checkpoint in ckpt/step-N/); stops at the validation minimum (--patience), at
           --steps or by wall clock; copies the checkpoint of lowest validation loss to --out
           (config.json + safetensors, sharded when asked) with train_log.jsonl and run.json,
           then runs `eval` on it and writes eval.json (unless --skip-eval)
  eval     on the first 2048 tokens of wiki.test.raw (and on all 2048-token windows of it):
           NLL by position bucket with the whole window in context, and a streaming
           token-by-token evaluation with a compressed KV cache (full, local, sink, h2o),
           through the PyTorch reference loop (its own K/V, positions and scores per layer/head)
  merge    join the shards written by `train --shard-mib` into one model.safetensors

The command line over h2o_export.micro (model.py: shape, init, checkpoints; train.py;
evaluate.py: the streaming evaluation runs the PyTorch reference loop, h2o_export.reference).
The same script runs unchanged on a CPU (use --tiny for a smoke test) and on a CUDA GPU
(bf16 autocast, SDPA attention). Training is seeded: the initial weights are drawn on the CPU,
and the windows' start offsets come from a NumPy generator, so a run with the same --steps
sees the same data in the same order on any machine (--train-seed; --seed is its old name).

Architecture (see `model_config`): parallel residual, rotary on 25% of each head's dims with
base 10000, exact GELU, untied input/output embeddings, LayerNorm eps 1e-5, 2048 positions.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

T_START = time.time()

import numpy as np  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from ..micro.evaluate import evaluate  # noqa: E402
from ..micro.model import merge_shards, model_config, model_spec  # noqa: E402
from ..micro.train import make_log, train  # noqa: E402


def cmd_config(args) -> None:
    out = model_spec(model_config(args.tiny, args.width, args.layers, 0 if args.bos else None))
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}: {out['parameters']:,} parameters, {len(out['expected_weights'])} tensors")


def cmd_merge(args) -> None:
    n_shards, n_tensors = merge_shards(Path(args.dir), Path(args.out))
    print(f"merged {n_shards} shards, {n_tensors} tensors -> {args.out}")


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
    res = evaluate(sd, fields, test, device, args.eval_tokens, None, args.eval_windows, make_log(T_START))
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
        print(f"wrote {args.out}")


def add_shape_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tiny", action="store_true", help="tiny model for a CPU smoke test")
    p.add_argument("--width", type=int, default=None, help="hidden size (heads of 32 dims, MLP 4x); default 256")
    p.add_argument("--layers", type=int, default=None, help="layers; default 8")
    p.add_argument("--bos", action=argparse.BooleanOptionalAction, default=True,
                   help="BOS (<|endoftext|>, id 0) at position 0 of every window, declared in config.json as "
                        "prepend_bos_token_id (default); --no-bos: the control, as the old recipe")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("config", help="write config + expected weight names (run with the target transformers)")
    c.add_argument("--out", default=".carry/model_spec.json")
    add_shape_args(c)
    t = sub.add_parser("train")
    t.add_argument("--data", default=".carry", help="folder with train.npy, valid.npy, test.npy")
    t.add_argument("--spec", default=None, help="model_spec.json from `config` (else the built-in shape)")
    t.add_argument("--out", required=True)
    add_shape_args(t)
    t.add_argument("--device", default="auto")
    t.add_argument("--train-seed", type=int, default=1234, help="RNG seed of the initial weights and the window order")
    t.add_argument("--seed", type=int, dest="train_seed", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    t.add_argument("--seq", type=int, default=2048)
    t.add_argument("--batch", type=int, default=64)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--min-lr-frac", type=float, default=0.1)
    t.add_argument("--warmup", type=int, default=100)
    t.add_argument("--weight-decay", type=float, default=0.1)
    t.add_argument("--clip", type=float, default=1.0)
    t.add_argument("--steps", type=int, default=0,
                   help="planned step count (the cosine's length; reproduction); else calibrated by wall clock")
    t.add_argument("--train-seconds", type=float, default=400.0,
                   help="training stops this many seconds after the script started")
    t.add_argument("--train-tokens", type=int, default=0, help="train on the first N tokens of train.npy only")
    t.add_argument("--calib-start", type=int, default=10)
    t.add_argument("--calib-steps", type=int, default=15)
    t.add_argument("--eval-every", type=int, default=0,
                   help="validate (and save a checkpoint) every N steps (default: planned steps / --val-points)")
    t.add_argument("--val-points", type=int, default=20)
    t.add_argument("--val-windows", type=int, default=16, help="held-out validation windows of --seq text tokens")
    t.add_argument("--sink-windows", type=int, default=2, help="validation windows the sink score reads (0: none)")
    t.add_argument("--patience", type=int, default=4,
                   help="stop after this many validations without a new minimum (0: never stop early)")
    t.add_argument("--min-delta", type=float, default=0.0, help="an improvement must exceed this")
    t.add_argument("--choose", choices=("best", "last"), default="best",
                   help="the checkpoint copied to --out: lowest validation loss (default) or the last")
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
    try:
        {"config": cmd_config, "train": lambda a: train(a, T_START), "eval": cmd_eval, "merge": cmd_merge}[args.cmd](args)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
