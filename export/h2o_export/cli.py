"""Command line: `python export/export.py ...` or `python -m h2o_export ...`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import PYTHIA_SIZES
from .errors import ExportError
from .exporter import export


def parser() -> argparse.ArgumentParser:
    sizes = ", ".join(s[len("pythia-"):] for s in PYTHIA_SIZES)
    p = argparse.ArgumentParser(
        prog="export.py",
        description="Export a Hugging Face GPT-NeoX (Pythia) checkpoint to the h2o-engine ONNX "
        "decoder-step graph (docs/architecture.md): model.onnx [+ model.onnx.data], manifest.json, "
        "tokenizer.json.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", type=Path, metavar="DIR",
                     help="HF checkpoint folder: config.json, model.safetensors (or "
                          "model.safetensors.index.json + shards), tokenizer.json")
    src.add_argument("--random-init", metavar="SIZE|CONFIG.json",
                     help=f"seeded random weights at a Pythia shape ({sizes}) or a config.json's shape")
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="output folder (default: models/<name>)")
    p.add_argument("--name", help="model name in the manifest (default: the checkpoint folder's name, "
                                  "or random-<size>)")
    p.add_argument("--dtype", choices=("fp32", "fp16"), default="fp32",
                   help="weights and K/V dtype; softmax, layer norms, logits and attention sums stay "
                        "float32 (default fp32)")
    p.add_argument("--weights", default="fp32", metavar="fp32|int8|int4",
                   help="the linears' weights (layers and LM head): fp32 = MatMul on --dtype weights "
                        "(default); int8/int4 = ONNX Runtime's MatMulNBits, symmetric block quantization, "
                        "int8 activations in the kernel (accuracy_level 4); the input embedding stays --dtype")
    p.add_argument("--block-size", default=None, metavar="N",
                   help="values per quantization block along the input dimension: 16, 32, 64, 128 or 256 "
                        "(default 32 for int4 and int8)")
    p.add_argument("--lm-head", default=None, metavar="fp32|int8|int4",
                   help="the LM head's format with --weights int8/int4 (default: the same as --weights)")
    p.add_argument("--init-seed", type=int, default=0, help="RNG seed of --random-init's weights (default 0)")
    # the flag's old name, kept working for existing scripts ("seed" names the PyTorch project elsewhere)
    p.add_argument("--seed", type=int, dest="init_seed", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    p.add_argument("--tokenizer", type=Path, metavar="PATH",
                   help="tokenizer.json to ship (default: the checkpoint's; required with --random-init)")
    p.add_argument("--external-data", choices=("auto", "always", "never"), default="auto",
                   help="put weights in model.onnx.data: auto = when they pass 2 GB (default)")
    p.add_argument("--layer-masks", action="store_true",
                   help="one attention-mask input per layer (attention_mask.{i}), so layers may hold different "
                        "numbers of cache slots: needed by per-layer budget schedules such as h2o:192+64@pyramid "
                        "(default: one mask for all layers)")
    p.add_argument("--force", action="store_true",
                   help="overwrite the output folder's model files if it exists")
    p.add_argument("--no-check", action="store_true", help="skip onnx.checker on the result")
    return p


def _os_error(e: OSError, out: Path) -> str:
    """One line for a file system error: the path, what went wrong and the fix (no traceback)."""
    path = Path(e.filename) if e.filename else out
    what = e.strerror or str(e)
    o, p = out.absolute(), path.absolute()
    if p == o or p in o.parents or o in p.parents:
        return (f"--out {out}: cannot write {path} ({what}); give --out a folder path whose parent "
                f"folders exist or can be created, are folders (not files) and are writable")
    return f"cannot read {path} ({what}); check that the path exists, is of the right kind and is readable"


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.init_seed < 0:
        print("error: --init-seed must be a non-negative integer", file=sys.stderr)
        return 2
    if args.random_init is None and args.init_seed != 0:
        print("error: --init-seed only applies to --random-init", file=sys.stderr)
        return 2
    name = args.name
    out = args.out
    if out is None:
        if name is None:
            name = (args.checkpoint.resolve().name if args.checkpoint is not None
                    else f"random-{Path(args.random_init).stem}")
        out = Path("models") / name
    try:
        block_size = None
        if args.block_size is not None:
            try:
                block_size = int(args.block_size)
            except ValueError:
                raise ExportError(f"--block-size must be an integer (16, 32, 64, 128 or 256), "
                                  f"got {args.block_size!r}") from None
        export(
            out,
            checkpoint=args.checkpoint,
            random_init=args.random_init,
            init_seed=args.init_seed,
            dtype=args.dtype,
            weights=args.weights,
            block_size=block_size,
            lm_head=args.lm_head,
            name=name,
            tokenizer=args.tokenizer,
            force=args.force,
            external_data=args.external_data,
            check=not args.no_check,
            layer_masks=args.layer_masks,
            log=lambda msg: print(msg, file=sys.stderr),
        )
    except ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {_os_error(e, out)}", file=sys.stderr)
        return 2
    return 0
