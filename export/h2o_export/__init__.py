"""h2o_export: Hugging Face GPT-NeoX (Pythia) checkpoint -> ONNX decoder-step graph + manifest.

The graph follows docs/architecture.md ("Graph contract", version 1). Entry points:
`python export/export.py --help` or `python -m h2o_export --help` (with export/ on sys.path).
"""

__version__ = "1.1.0"
