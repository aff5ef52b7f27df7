"""Command line: `python export/export.py ...` or `python -m h2o_export ...`.

Every way it ends is one line on stderr at most: 0 done (progress on stdout); 2 refused or failed
(`error: ...`, naming the flag or file, the value and the fix; argparse's usage errors too);
130 interrupted by Ctrl-C, 143 by SIGTERM, 129 by SIGHUP (nothing written, or the finished export let finish its
move into place). A flag given twice, two spellings of one flag, and a flag that does not apply
to the rest of the command line are refused rather than one of them silently winning.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import Optional

from .config import PYTHIA_SIZES
from .config_llama import LLAMA_SIZES
from .errors import ExportError, ExportInterrupted
from .exporter import MAX_INIT_SEED, default_name, export
from .graph_ops import DEFAULT_GRAPH_OPS, GRAPH_OPS

DEBUG_ENV = "H2O_EXPORT_DEBUG"  # =1: an unexpected exception shows its traceback (for reporting a bug)


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's usage + message, as one line and exit 2
        raise _UsageError(message)


# The flags of one setting under two names; given together they are refused.
ALIASES = {"--seed": "--init-seed"}


class _Once(argparse.Action):
    """Stores the value like "store" (or True with nargs=0), refusing a second occurrence of the
    setting, under the same spelling or another (`--seed` is `--init-seed`'s old name)."""

    def __init__(self, option_strings, dest, nargs=None, **kw):
        self.flag = kw.pop("flag", False)
        super().__init__(option_strings, dest, nargs=0 if self.flag else nargs, **kw)

    def __call__(self, parser, namespace, values, option_string=None):
        given = namespace.__dict__.setdefault("_given", {})
        if self.dest in given:
            first = given[self.dest]
            if first == option_string:
                parser.error(f"{option_string} is given twice; give it once")
            a, b = sorted((first, option_string), key=lambda f: f in ALIASES)
            parser.error(f"{b} is the old name of {a}; give only {a}" if b in ALIASES
                         else f"{first} and {option_string} set the same thing; give one")
        given[self.dest] = option_string
        setattr(namespace, self.dest, True if self.flag else values)


def parser() -> argparse.ArgumentParser:
    sizes = ", ".join(s[len("pythia-"):] for s in PYTHIA_SIZES)
    p = _Parser(
        prog="export.py",
        description="Export a Hugging Face GPT-NeoX (Pythia), Llama or Qwen2 checkpoint to the h2o-engine ONNX "
        "decoder-step graph (docs/architecture.md): model.onnx [+ model.onnx.data], manifest.json, "
        "tokenizer.json.",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", metavar="DIR", action=_Once,
                     help="HF checkpoint folder: config.json, model.safetensors (or "
                          "model.safetensors.index.json + shards), tokenizer.json")
    src.add_argument("--random-init", metavar="SIZE|CONFIG.json", action=_Once,
                     help=f"seeded random weights at a Pythia shape ({sizes}), a Llama-family shape "
                          f"({', '.join(LLAMA_SIZES)}) or a config.json's shape")
    p.add_argument("--out", metavar="DIR", action=_Once,
                   help="output folder (default: models/<name>)")
    p.add_argument("--name", action=_Once,
                   help="model name in the manifest (default: the checkpoint folder's name, "
                        "or random-pythia-<size> / random-<llama-family size> / random-<config file name>)")
    p.add_argument("--dtype", choices=("fp32", "fp16"), default="fp32", action=_Once,
                   help="weights and K/V dtype; softmax, layer norms, logits and attention sums stay "
                        "float32 (default fp32)")
    p.add_argument("--weights", default="fp32", metavar="fp32|int8|int4|int8-dq", action=_Once,
                   help="the linears' weights (layers and LM head): fp32 = MatMul on --dtype weights "
                        "(default); int8/int4 = ONNX Runtime's MatMulNBits, symmetric block quantization, "
                        "int8 activations in the kernel (--accuracy-level 4); int8-dq = DynamicQuantizeMatMul, "
                        "a scale per output column, activations quantized per call (the fast int8 prefill on "
                        "AMX/VNNI CPUs; --dtype fp32 only); the input embedding stays --dtype")
    p.add_argument("--block-size", default=None, metavar="N", action=_Once,
                   help="values per quantization block along the input dimension: 16, 32, 64, 128 or 256 "
                        "(default 32 for int4 and int8; only with --weights int8/int4)")
    p.add_argument("--accuracy-level", default=None, metavar="1|4", action=_Once,
                   help="MatMulNBits' accuracy_level with --weights int8/int4: 4 = int8 activations, ONNX "
                        "Runtime's integer kernels (default); 1 = float32 activations (int4 only: int8 weights "
                        "have no such kernel). docs/perf/quantized.md says what each runs")
    p.add_argument("--lm-head", default=None, metavar="fp32|int8|int4|int8-dq", action=_Once,
                   help="the LM head's format with --weights int8/int4/int8-dq (default: the same as --weights; "
                        "int8-dq layers take an int8-dq or fp32 head)")
    p.add_argument("--prefill-weights", default=None, metavar="int8-dq", action=_Once,
                   help="with --weights int4/int8: also store an int8 copy of the layers' weights (their own "
                        "values, re-quantized per column) that prefills run on as DynamicQuantizeMatMul, the "
                        "fast int8 GEMM (AMX/VNNI); decode steps keep MatMulNBits. Costs the copy's bytes "
                        "(2x an int4 model's layer weights); --dtype fp32 only")
    p.add_argument("--prefill-min-tokens", default=None, metavar="N", action=_Once,
                   help="with --prefill-weights: steps of at least N new tokens run on the copy (default 4)")
    p.add_argument("--init-seed", type=int, default=None, action=_Once,
                   help="RNG seed of --random-init's weights (default 0; only with --random-init)")
    # the flag's old name, kept working for existing scripts ("seed" names the PyTorch project elsewhere)
    p.add_argument("--seed", type=int, dest="init_seed", default=None, action=_Once, help=argparse.SUPPRESS)
    p.add_argument("--tokenizer", metavar="PATH", action=_Once,
                   help="tokenizer.json to ship (default: the checkpoint's; required with --random-init)")
    p.add_argument("--external-data", choices=("auto", "always", "never"), default="auto", action=_Once,
                   help="put weights in model.onnx.data: auto = when they pass 2 GB (default)")
    p.add_argument("--layer-masks", action=_Once, flag=True, default=False,
                   help="one attention-mask input per layer (attention_mask.{i}), so layers may hold different "
                        "numbers of cache slots: needed by per-layer budget schedules such as h2o:192+64@pyramid "
                        "(default: one mask for all layers)")
    p.add_argument("--graph-ops", choices=GRAPH_OPS, default=None, action=_Once,
                   help="plain = ONNX operators only, the graph as before (default); fused = the same float "
                        "operations in fewer nodes (mask as a bias, rotary on halves, ONNX Runtime's "
                        "com.microsoft BiasGelu/Gelu): fp32 outputs bit for bit the same, faster prefill")
    p.add_argument("--key-cache", choices=("rotated", "unrotated"), default="rotated", action=_Once,
                   help="how keys are cached: rotated at their position (default), or unrotated, the graph "
                        "rotating them by key_positions.{i} the engine feeds: needed by rolling positions "
                        "(StreamingLLM's renumbering, a policy's @rolling)")
    p.add_argument("--force", action=_Once, flag=True, default=False,
                   help="the output folder may exist and hold files: its model.onnx, model.onnx.data, "
                        "manifest.json and tokenizer.json are replaced (other files are left alone)")
    p.add_argument("--no-check", action=_Once, flag=True, default=False, help="skip onnx.checker on the result")
    return p


def _os_error(e: OSError, out: Path) -> str:
    """One line for a file system error the exporter did not name itself: the path, what went
    wrong and which flags' paths to check (no traceback)."""
    path = e.filename or out
    what = e.strerror or str(e)
    return (f"{path}: {what}; check the paths given to --checkpoint, --random-init and --tokenizer (readable) "
            f"and --out {out} (a folder that can be created and written)")


def _int_flag(flag: str, value: Optional[str], what: str) -> Optional[int]:
    """A flag's integer value (None when absent); not an integer: "FLAG must be WHAT, got 'V'"."""
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise ExportError(f"{flag} must be {what}, got {value!r}") from None


def _check_flags(args: argparse.Namespace) -> None:
    """Values argparse lets through but the export cannot use, and flags that would be ignored."""
    given = getattr(args, "_given", {})
    for dest in ("checkpoint", "random_init", "out", "name", "tokenizer", "weights", "block_size", "lm_head"):
        v = getattr(args, dest)
        if v is not None and str(v).strip() == "" and dest in given:
            raise ExportError(f"{given[dest]} is empty; give a value (see --help)")
    if args.init_seed is not None:
        flag = given.get("init_seed", "--init-seed")
        if args.random_init is None:
            raise ExportError(f"{flag} only applies to --random-init (a checkpoint's weights are not drawn); drop it")
        if not 0 <= args.init_seed <= MAX_INIT_SEED:
            raise ExportError(f"{flag} must be an integer from 0 to {MAX_INIT_SEED}, got {args.init_seed}")
    if args.out is None and args.name is not None and (os.sep in args.name or args.name in (".", "..")):
        raise ExportError(f"--name {args.name!r} is not a plain name, and without --out it would name the folder "
                          f"models/{args.name}; give --out DIR as well, or a name without '{os.sep}'")


def _interrupted(e: KeyboardInterrupt, out: Path | None) -> int:
    signum = getattr(e, "signum", signal.SIGINT)
    what = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
    if getattr(e, "complete", False):
        msg = (f"interrupted ({what}) while the finished export was moved into place; the move was completed: "
               f"--out {out} holds the new export")
    else:
        where = f"--out {out} is as it was" if out is not None else "nothing was started"
        msg = f"interrupted ({what}) before the export finished; nothing was written: {where}"
    print(f"error: {msg}", file=sys.stderr)
    return 128 + int(signum)


def _on_sigterm(signum, _frame):
    raise ExportInterrupted(signum)


def main(argv: list[str] | None = None) -> int:
    out: Path | None = None
    old_handlers = {}
    try:
        if threading_main():
            for s in (signal.SIGTERM, signal.SIGHUP):  # a kill or a closed terminal: cleaned up like Ctrl-C
                if signal.getsignal(s) is not signal.SIG_IGN:  # nohup's ignored SIGHUP stays ignored
                    old_handlers[s] = signal.signal(s, _on_sigterm)
        try:
            args = parser().parse_args(argv)
        except _UsageError as e:
            print(f"error: {e}; see export.py --help", file=sys.stderr)
            return 2
        try:
            _check_flags(args)
            block_size = _int_flag("--block-size", args.block_size, "an integer (16, 32, 64, 128 or 256)")
            accuracy_level = _int_flag("--accuracy-level", args.accuracy_level, "1 or 4")
            prefill_min_tokens = _int_flag("--prefill-min-tokens", args.prefill_min_tokens,
                                           "an integer of at least 2")
            for dest in ("checkpoint", "out", "tokenizer"):  # strings until here: Path("") would be "."
                if getattr(args, dest) is not None:
                    setattr(args, dest, Path(getattr(args, dest)))
            out = args.out
            if out is None:
                out = Path("models") / (args.name or default_name(args.checkpoint, args.random_init))
            export(
                out,
                checkpoint=args.checkpoint,
                random_init=args.random_init,
                init_seed=args.init_seed,
                dtype=args.dtype,
                weights=args.weights,
                block_size=block_size,
                lm_head=args.lm_head,
                name=args.name,
                tokenizer=args.tokenizer,
                force=args.force,
                external_data=args.external_data,
                check=not args.no_check,
                layer_masks=args.layer_masks,
                graph_ops=args.graph_ops or DEFAULT_GRAPH_OPS,
                accuracy_level=accuracy_level,
                key_cache=args.key_cache,
                prefill_weights=args.prefill_weights,
                prefill_min_tokens=prefill_min_tokens,
                log=lambda msg: print(msg, flush=True),
            )
        except ExportError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        except OSError as e:
            print(f"error: {_os_error(e, out)}", file=sys.stderr)
            return 2
        except MemoryError:
            print(f"error: out of memory while exporting; nothing was written (--out {out} is as it was): the model "
                  f"is too large for this machine's free memory; check the config's sizes or use a larger machine",
                  file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            raise
        except Exception as e:  # a bug: one line, the traceback on request
            if os.environ.get(DEBUG_ENV) == "1":
                raise
            print(f"error: internal error ({type(e).__name__}: {str(e)[:300]}); nothing was written (--out {out} is "
                  f"as it was); please report it with the command line ({DEBUG_ENV}=1 shows the traceback)",
                  file=sys.stderr)
            return 2
        return 0
    except KeyboardInterrupt as e:
        return _interrupted(e, out)
    finally:
        for s, h in old_handlers.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)


def threading_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
