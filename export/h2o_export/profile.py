"""Where a prefill spends its time: ONNX Runtime's own per-node profile of one decoder-step run
(issue 16). A prompt of P tokens with an empty past is run `runs` times through onnxruntime with
profiling on (the engine's settings: CPU provider, `threads` intra-op threads, all optimisations);
the first run is a warm-up and is not counted. Node times are summed per op type (and per node
name's stem), as a share of the counted runs' node time.

`matmul_nbits_paths` (issue 31): which MatMulNBits path this CPU's ONNX Runtime takes for each
bits / block size / accuracy level (docs/perf/quantized.md).
"""

from __future__ import annotations

import json
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

from .graph import with_logits_from
from .graph_parity import Step


def prefill_feeds(manifest: dict, tokens: int) -> dict:
    """Feeds of a `tokens`-token prefill of batch 1 with an empty past (ids 1..tokens, positions 0..):
    graph_parity's Step, with one mask per layer for a `--layer-masks` graph."""
    dt = np.float16 if manifest["dtype"] == "float16" else np.float32
    ids = (np.arange(tokens, dtype=np.int64) % 1000 + 1)[None]
    step = Step(ids, np.arange(tokens, dtype=np.int64)[None], np.ones((1, tokens), np.int64))
    feeds = step.feeds(manifest["num_layers"], manifest["num_heads"], manifest["head_dim"], dt)
    if manifest.get("attention_masks") == "per_layer":
        mask = feeds.pop("attention_mask")
        feeds.update({f"attention_mask.{i}": mask for i in range(manifest["num_layers"])})
    return feeds


DENORMALS = ("flush", "keep")


def session_options(threads: int, denormals: str = "flush"):
    """ONNX Runtime session options as the engine sets them: `threads` intra-op threads, one
    inter-op, and subnormal floats flushed to zero (`flush`, the engine's `--denormals` default:
    a softmax over masked scores runs several times faster) or kept (`keep`, ONNX Runtime's own
    default)."""
    import onnxruntime as ort

    if denormals not in DENORMALS:
        raise ValueError(f"denormals must be one of {DENORMALS}, got {denormals!r}")
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    if denormals == "flush":
        so.add_session_config_entry("session.set_denormal_as_zero", "1")
    return so


def profile_prefill(model_dir: str | Path, tokens: int = 512, threads: int = 2, runs: int = 3,
                    logits_from: int = 0, denormals: str = "flush") -> dict:
    """{"op_types": {op: ms per run}, "total_ms": node ms per run, "runs": counted runs, ...} for a
    prefill of `tokens` tokens; `logits_from` as the graph input (graphs without it: ignored);
    session options as the engine's (`session_options`)."""
    import onnxruntime as ort

    if runs < 2:
        raise ValueError("runs must be at least 2: the first is a warm-up")
    model_dir = Path(model_dir)
    manifest = json.loads((model_dir / "manifest.json").read_text(encoding="utf-8"))
    with tempfile.TemporaryDirectory() as tmp:
        so = session_options(threads, denormals)
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(tmp) / "prefill")
        sess = ort.InferenceSession(str(model_dir / "model.onnx"), so, providers=["CPUExecutionProvider"])
        feeds = with_logits_from(prefill_feeds(manifest, tokens), sess, logits_from)
        names = [o.name for o in sess.get_outputs()]
        for _ in range(runs):
            sess.run(names, feeds)
        events = json.loads(Path(sess.end_profiling()).read_text(encoding="utf-8"))
    return summarize(events, runs)


# Nodes that run a subgraph: ONNX Runtime times them and, as nodes of their own, every node of the
# subgraph, so counting them would count those nodes twice (an int4 graph with a prefill copy,
# graph_route.py: If 756 ms around 750 ms of its branch's nodes at 410m).
CONTAINER_OPS = ("If", "Loop", "Scan")


def summarize(events: list, runs: int) -> dict:
    """Node events of runs 2..`runs` (the first is the warm-up) summed per op type, ms per run;
    subgraph nodes counted as themselves, their container (CONTAINER_OPS) not."""
    run_starts = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    if len(run_starts) != runs:
        raise ValueError(f"the profile has {len(run_starts)} runs, expected {runs}")
    counted = runs - 1
    per_op: dict[str, float] = defaultdict(float)
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
            continue
        if e["ts"] < run_starts[1]:
            continue  # the warm-up run
        op = e.get("args", {}).get("op_name", "?")
        if op in CONTAINER_OPS:
            continue
        per_op[op] += e["dur"] / 1e3 / counted
    total = sum(per_op.values())
    ordered = dict(sorted(per_op.items(), key=lambda kv: -kv[1]))
    return {"op_types": ordered, "total_ms": total, "runs": counted}


def table(doc: dict, top: int = 12) -> str:
    """Markdown: op type, ms per run, share of the node time."""
    lines = ["| op type | ms per run | share |", "| --- | ---: | ---: |"]
    for op, ms in list(doc["op_types"].items())[:top]:
        lines.append(f"| {op} | {ms:.1f} | {100 * ms / doc['total_ms']:.1f}% |")
    lines.append(f"| all nodes | {doc['total_ms']:.1f} | 100% |")
    return "\n".join(lines)


def matmul_nbits_paths(bits=(4, 8), blocks=(32, 128), levels=(1, 4), k: int = 256, n: int = 128) -> list[dict]:
    """Which path this CPU's ONNX Runtime takes for MatMulNBits at each bits / block size /
    accuracy_level (docs/perf/quantized.md): "MLAS QNBitGemm" (the weight prepacked at load, fused
    quantized kernels) or "dequantize + sgemm" (no MLAS kernel for that configuration: the whole
    weight dequantized to float32 on every call; ONNX Runtime logs "Falling back to using unpacked
    compute mode" at its verbose level, which is what is read here). One [n, k] node per case, run
    at M = 1 and M = 8."""
    import os

    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from .quantize import quantize_blockwise

    w = np.random.default_rng(0).standard_normal((n, k)).astype(np.float32)
    rows = []
    for nb in bits:
        for block in blocks:
            q, s = quantize_blockwise(w, nb, block)
            for level in levels:
                node = helper.make_node("MatMulNBits", ["a", "q", "s"], ["y"], domain="com.microsoft", K=k, N=n,
                                        bits=nb, block_size=block, accuracy_level=level)
                g = helper.make_graph([node], "probe",
                                      [helper.make_tensor_value_info("a", TensorProto.FLOAT, [None, k])],
                                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                                      initializer=[numpy_helper.from_array(q, "q"), numpy_helper.from_array(s, "s")])
                model = helper.make_model(g, ir_version=8, opset_imports=[helper.make_opsetid("", 17),
                                                                          helper.make_opsetid("com.microsoft", 1)])
                so = ort.SessionOptions()
                so.log_severity_level = 0  # verbose: the fallback is logged at INFO
                with tempfile.TemporaryFile() as log:
                    saved = os.dup(2)
                    os.dup2(log.fileno(), 2)  # ONNX Runtime's default logger writes to stderr
                    try:
                        sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
                        for m in (1, 8):
                            sess.run(None, {"a": np.ones((m, k), np.float32)})
                    finally:
                        os.dup2(saved, 2)
                        os.close(saved)
                    log.seek(0)
                    fell_back = b"Falling back to using unpacked compute mode" in log.read()
                rows.append({"bits": nb, "block_size": block, "accuracy_level": level,
                             "path": "dequantize + sgemm" if fell_back else "MLAS QNBitGemm"})
    return rows
