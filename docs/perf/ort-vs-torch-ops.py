#!/usr/bin/env python3
"""One operator of a Pythia-410m 512-token prefill, ONNX Runtime's CPU kernel against torch's, in
one process, alternating blocks of 5 calls (40 each), 2 threads; ONNX Runtime without spinning
and torch with OMP_WAIT_POLICY=PASSIVE (set it in the environment), so neither pool steals the
other's cores. Prints min and median ms and ONNX Runtime / torch at the min.

- linear: MatMul [512, K] x [K, N] (B an initializer, prepacked) against F.linear, at the four
  linear shapes of 410m;
- softmax over [1, 16, 512, 512] scores: unmasked, and causal with the masked entries at float32
  min (the graph's MASK_VALUE), -1e9 and -1e4;
- BiasGelu [512, 4096] (com.microsoft, the fused graph's GELU) against F.gelu (exact, erf).

`--denormals flush` sets ONNX Runtime's session.set_denormal_as_zero (the engine's default).

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python docs/perf/ort-vs-torch-ops.py --denormals keep
"""

import argparse
import time

import numpy as np
import onnxruntime as ort
import torch
from onnx import TensorProto, helper, numpy_helper


def session(nodes, inputs, outputs, inits, denormals):
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = 2, 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if denormals == "flush":
        so.add_session_config_entry("session.set_denormal_as_zero", "1")
    g = helper.make_graph(nodes, "op", inputs, outputs, inits)
    m = helper.make_model(g, ir_version=8, opset_imports=[helper.make_opsetid("", 17),
                                                         helper.make_opsetid("com.microsoft", 1)])
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])


def vi(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


def compare(name, sess, feeds, fn, arg):
    o, t = [], []
    with torch.inference_mode():
        for _ in range(3):
            sess.run(None, feeds)
            fn(arg)
        for _ in range(8):
            for _ in range(5):
                a = time.perf_counter()
                sess.run(None, feeds)
                o.append(time.perf_counter() - a)
            for _ in range(5):
                a = time.perf_counter()
                fn(arg)
                t.append(time.perf_counter() - a)
    o, t = np.array(o) * 1e3, np.array(t) * 1e3
    print(f"| {name} | {o.min():.2f} | {np.median(o):.2f} | {t.min():.2f} | {np.median(t):.2f} | {o.min() / t.min():.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--denormals", choices=("flush", "keep"), default="keep")
    a = ap.parse_args()
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    print(f"ONNX Runtime {ort.__version__} (subnormals {a.denormals}) against torch {torch.__version__}, 2 threads")
    print("| op | ORT min (ms) | ORT median | torch min | torch median | ORT / torch (min) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for k, n in [(1024, 3072), (1024, 1024), (1024, 4096), (4096, 1024)]:
        w = rng.standard_normal((k, n), dtype=np.float32) * 0.02
        x = rng.standard_normal((512, k), dtype=np.float32)
        s = session([helper.make_node("MatMul", ["x", "w"], ["y"])], [vi("x", (512, k))], [vi("y", (512, n))],
                    [numpy_helper.from_array(w, "w")], a.denormals)
        wt, b = torch.from_numpy(w.T.copy()), torch.zeros(n)
        compare(f"linear 512 x {k} x {n}", s, {"x": x}, lambda v, wt=wt, b=b: torch.nn.functional.linear(v, wt, b),
                torch.from_numpy(x))
    shape = (1, 16, 512, 512)
    s = session([helper.make_node("Softmax", ["x"], ["y"], axis=-1)], [vi("x", shape)], [vi("y", shape)], [],
                a.denormals)
    scores = rng.standard_normal(shape, dtype=np.float32)
    causal = np.tril(np.ones(shape[-2:], bool))
    for label, masked in [("unmasked", None), ("causal, float32 min", np.finfo(np.float32).min),
                          ("causal, -1e9", -1e9), ("causal, -1e4", -1e4)]:
        x = scores if masked is None else np.where(causal, scores, np.float32(masked))
        compare(f"softmax [1,16,512,512] {label}", s, {"x": x}, lambda v: torch.softmax(v, -1), torch.from_numpy(x))
    u = rng.standard_normal((1, 512, 4096), dtype=np.float32)
    bias = rng.standard_normal(4096, dtype=np.float32)
    s = session([helper.make_node("BiasGelu", ["u", "b"], ["y"], domain="com.microsoft")], [vi("u", u.shape)],
                [vi("y", u.shape)], [numpy_helper.from_array(bias, "b")], a.denormals)
    compare("BiasGelu / gelu [512, 4096]", s, {"u": u}, lambda v: torch.nn.functional.gelu(v), torch.from_numpy(u + bias))


if __name__ == "__main__":
    main()
