"""The decoder-step graph's operator sets (`export.py --graph-ops`), here without onnx so the
exporter checks the flag before it loads the graph modules.

"plain" (the default): the graph as it has always been, ONNX operators only. "fused" (issue 31):
the same float operations, in the same order, in fewer nodes and passes over memory: the mask
added as a float bias (0 or the mask value) instead of a Where, the rotary half-rotation as
Mul/Sub/Add on the halves (no Neg, one Concat less), and the exact GELU as ONNX Runtime's
com.microsoft BiasGelu (float32 linears) or Gelu. fp32 outputs are bit for bit those of "plain"
(export/tests/test_graph_ops.py; docs/perf/prefill-graph.md says why each one is exact).
"""

GRAPH_OPS = ("plain", "fused")
DEFAULT_GRAPH_OPS = "plain"
