"""h2o_export: everything Python of the project, once; the scripts in export/ are thin CLIs over it.

- The exporter (numpy + onnx + tokenizers only, the package's base dependencies): Hugging Face GPT-NeoX (Pythia) checkpoint -> ONNX
  decoder-step graph + manifest (config, weights, graph, graph_blocks, onnx_builder, quantize,
  exporter, cli; docs/architecture.md "Graph contract", version 1). `python export/export.py --help` or
  `python -m h2o_export --help` or `h2o-export --help` (the package installed: `pip install -e export`).
- RoPE (rope), shared by the graph and the PyTorch loops.
- The PyTorch reference (torch + transformers): policies/ (spec grammar, one module per
  family), trace (eviction traces, lockstep replay), reference (the loop).
- Tools: graph_parity (graph vs transformers, one step), graph_stream (the graph streamed through
  onnxruntime in the engine's cache layout), fixture, speed, side_by_side,
  wikitext, micro/ (pythia-micro's data, model, training, evaluation); commands/ (the programs'
  command lines besides the exporter's: reference, torch_speed, train_micro, ...).

export/README.md ("Layout") lists the modules and their scripts.
"""

__version__ = "1.3.0"
