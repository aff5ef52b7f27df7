"""Microbench (docs/perf/quantized.md, issue 31): one [512, K] x [K, N] product in ONNX Runtime 1.31 CPU, 2 threads: fp32 MatMul vs
com.microsoft DynamicQuantizeMatMul (int8 weights, per-column scales) vs MatMulNBits (4-bit and 8-bit,
block 32, accuracy level 4). Shapes of Pythia-410m's linears (hidden 1024) and 1b (2048)."""
import time, numpy as np, onnx, onnxruntime as ort
from onnx import helper, TensorProto, numpy_helper
rng = np.random.default_rng(0)
def session(model):
    so = ort.SessionOptions(); so.intra_op_num_threads = 2; so.inter_op_num_threads = 1
    model.ir_version = 9
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
def mm_fp32(K, N):
    W = (rng.standard_normal((K, N), dtype=np.float32) / np.sqrt(K)).astype(np.float32)
    g = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["M", K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["M", N])], [numpy_helper.from_array(W, "W")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
def mm_dq(K, N):
    W = (rng.standard_normal((K, N), dtype=np.float32) / np.sqrt(K)).astype(np.float32)
    scale = (np.abs(W).max(axis=0) / 127).astype(np.float32)
    Wq = np.clip(np.round(W / scale), -127, 127).astype(np.int8)
    zp = np.zeros(N, np.int8)
    node = helper.make_node("DynamicQuantizeMatMul", ["x", "Wq", "s", "zp"], ["y"], domain="com.microsoft")
    g = helper.make_graph([node], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["M", K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["M", N])],
        [numpy_helper.from_array(Wq, "Wq"), numpy_helper.from_array(scale, "s"), numpy_helper.from_array(zp, "zp")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
def mm_nbits(K, N, bits):
    blk = 32; nb = K // blk
    per = blk * bits // 8
    Bq = rng.integers(0, 256, size=(N, nb, per), dtype=np.uint8)
    sc = (rng.random((N * nb,), dtype=np.float32) * 0.01).astype(np.float32)
    node = helper.make_node("MatMulNBits", ["x", "B", "sc"], ["y"], domain="com.microsoft",
                            K=K, N=N, bits=bits, block_size=blk, accuracy_level=4)
    g = helper.make_graph([node], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["M", K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["M", N])],
        [numpy_helper.from_array(Bq, "B"), numpy_helper.from_array(sc, "sc")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
def t(sess, M, K, reps):
    x = rng.standard_normal((M, K), dtype=np.float32)
    for _ in range(2): sess.run(None, {"x": x})
    ts = []
    for _ in range(reps):
        a = time.perf_counter(); sess.run(None, {"x": x}); ts.append(time.perf_counter() - a)
    return 1e3 * float(np.median(ts))
print(open("/proc/cpuinfo").read().split("model name")[1].split("\n")[0].strip(": \t"), "| onnxruntime", ort.__version__)
print("| K x N | M | fp32 MatMul (ms) | DynamicQuantizeMatMul int8 (ms) | MatMulNBits 8-bit (ms) | MatMulNBits 4-bit (ms) | DQ / fp32 | 4-bit / fp32 |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for K, N in [(1024, 4096), (4096, 1024), (2048, 8192), (8192, 2048)]:
    s = {k: session(f) for k, f in [("fp32", mm_fp32(K, N)), ("dq", mm_dq(K, N)), ("n8", mm_nbits(K, N, 8)), ("n4", mm_nbits(K, N, 4))]}
    for M, reps in [(512, 15), (1, 200)]:
        r = {k: t(v, M, K, reps) for k, v in s.items()}
        print(f"| {K} x {N} | {M} | {r['fp32']:.2f} | {r['dq']:.2f} | {r['n8']:.2f} | {r['n4']:.2f} | {r['dq']/r['fp32']:.2f} | {r['n4']/r['fp32']:.2f} |")
