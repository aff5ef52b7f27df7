"""What an export needs of the machine, estimated from the config before anything is allocated
or written: memory (refused up front rather than dying of MemoryError or the kernel's OOM killer
half way) and disk space under `--out`.

The exporter holds one weight tensor at a time (weights.py, onnx_builder.TensorSink), so its
peak memory is the interpreter and libraries, a few copies of the largest tensor (the draw or
the read, its transposed / converted copy, the finiteness checks' masks), the graph's nodes, and
with the weights inside model.onnx (no external data) the whole protobuf twice (the message and
its serialization). Measured on Pythia-2.8B (export/README.md): 575-835 MiB peak against this
estimate's 1.9 GiB, so the estimate errs on the safe side. Everything is arithmetic on the
config's numbers: nothing here loops over layers, so an absurd num_hidden_layers costs nothing.
"""

from __future__ import annotations

import resource
import shutil
from pathlib import Path
from typing import Optional

from .config import NeoxConfig

BASE_BYTES = 256 << 20  # interpreter, numpy, onnx, tokenizers
LARGEST_COPIES = 3  # float32 copies of the largest tensor alive at once (upper bound)
PER_LAYER_BYTES = 64 << 10  # one layer's nodes and initializer entries in the protobuf (generous)
INLINE_COPIES = 2  # weights inside model.onnx: the message and its serialization
DISK_MARGIN = 16 << 20  # model.onnx's graph, manifest, tokenizer


def largest_tensor(cfg: NeoxConfig) -> tuple[str, tuple[int, int]]:
    """The largest weight (HF name, shape) the export handles."""
    H, I, V = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
    if cfg.model_type != "gpt_neox":  # Llama family: its own tensor names, one layer's worth
        import dataclasses

        from .weights import llama_tensors

        two_d = [(n, s) for n, s in llama_tensors(dataclasses.replace(cfg, num_layers=1)) if len(s) == 2]
        return max(two_d, key=lambda c: c[1][0] * c[1][1])
    candidates = [
        ("gpt_neox.embed_in.weight", (V, H)),
        ("gpt_neox.layers.0.mlp.dense_h_to_4h.weight", (I, H)),
        ("gpt_neox.layers.0.attention.query_key_value.weight", (3 * H, H)),
    ]
    return max(candidates, key=lambda c: c[1][0] * c[1][1])


def memory_needed(cfg: NeoxConfig, nbytes: int, inline: bool) -> list[tuple[str, int]]:
    """Estimated peak bytes of exporting `cfg` whose weights take `nbytes` in the graph, as
    (what, bytes) parts; their sum is the estimate."""
    big, (rows, cols) = largest_tensor(cfg)
    parts = [
        ("the interpreter and libraries", BASE_BYTES),
        (f"{LARGEST_COPIES} float32 copies of the largest weight, {big} [{rows}, {cols}]",
         LARGEST_COPIES * 4 * rows * cols),
        (f"the graph of {cfg.num_layers} layers", PER_LAYER_BYTES * cfg.num_layers),
    ]
    if inline:
        parts.append(("the weights held whole for model.onnx (no external data)", INLINE_COPIES * nbytes))
    return parts


def memory_available() -> Optional[int]:
    """Bytes this process may still allocate: /proc/meminfo's MemAvailable, lowered by a cgroup
    (v2 or v1) memory limit and by an address-space limit (`ulimit -v`) less what the process
    already maps; None where none of them can be read (then nothing is refused)."""
    avail = None
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text().strip())
            if limit == "max" or int(limit) >= 1 << 60:
                continue
            left = max(int(limit) - usage, 0)
            avail = left if avail is None else min(avail, left)
            break
        except (OSError, ValueError):
            continue
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft != resource.RLIM_INFINITY:
            mapped = 0
            with open("/proc/self/status", encoding="ascii") as f:
                for line in f:
                    if line.startswith("VmSize:"):
                        mapped = int(line.split()[1]) * 1024
                        break
            left = max(soft - mapped, 0)
            avail = left if avail is None else min(avail, left)
    except (OSError, ValueError, IndexError):
        pass
    return avail


def disk_free(path: Path) -> tuple[Optional[int], Optional[int]]:
    """(free, total) bytes of the file system that holds `path` (or its nearest existing
    ancestor); (None, None) where that cannot be read."""
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        u = shutil.disk_usage(p)
        return u.free, u.total
    except OSError:
        return None, None


def gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 / 10 else f"{n / 2**20:.0f} MiB"


