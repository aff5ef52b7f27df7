# Two commands for a new user:
#   make bench   - the main job: the default benchmark suite on the embedded default model (pythia-micro)
#   make test    - every test: Rust (unit, integration, CLI) and Python (exporter, reference, parity)
# Everything else (.venv with the pinned Python packages, ONNX export, release build) is set up on the way.
# `make bench` installs only what the main job needs (the Python package h2o_export, export/pyproject.toml,
# with the exporter's packages and ONNX Runtime, at export/requirements.txt's versions); torch, transformers
# and the test tools (its `test` extra, export/requirements-torch.txt) are installed for `make test`, the
# fixtures and the PyTorch comparisons only.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-base
STAMP_TORCH := $(VENV)/.installed-torch
ORT_LIB = $(shell ls $(VENV)/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.* 2>/dev/null | head -1)
MICRO_HF := models/pythia-micro
MICRO := models/pythia-micro/onnx
DATA ?= ../shared/data/wikitext-2-raw-v1/wiki.test.raw
BIN := target/release/h2o

PYTHIA_TOKENIZER ?= ../shared/data/pythia-tokenizer.json
INIT_SEED ?= 0

.PHONY: all venv venv-torch build test test-rust test-python test-dist lint fixtures export-micro export-micro-layer-masks export-micro-rolling bench info heatmaps random-models random-llama-models clean-results dist dist-cuda

all: build

# The package h2o_export, editable (the venv runs this checkout's export/h2o_export), with the exporter's
# packages and its `engine` extra, ONNX Runtime (libonnxruntime.so for the engine): all `make bench` needs.
# The requirements files are constraints: they pin the versions pyproject.toml's dependencies resolve to.
# (-qq: errors only; -q would still print setuptools' banner about editable installs.)
# --no-cache-dir: pip would also keep a copy of every wheel it downloads in ~/.cache/pip, ~3 GB for
# torch and its CUDA libraries, on top of the ~5 GB installed; CI's disk ran out there (stop 36).
$(STAMP): export/requirements.txt export/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --no-cache-dir --quiet --upgrade pip
	$(PY) -m pip install --no-cache-dir -qq -c export/requirements.txt -e 'export[engine]'
	touch $(STAMP)

# The `test` extra on top (torch, transformers, safetensors, pyarrow, pytest): the tests, the fixture and
# the PyTorch comparisons.
$(STAMP_TORCH): $(STAMP) export/requirements-torch.txt
	$(PY) -m pip install --no-cache-dir -qq -c export/requirements.txt -c export/requirements-torch.txt -e 'export[test]'
	touch $(STAMP_TORCH)

venv: $(STAMP)

venv-torch: $(STAMP_TORCH)

build:
	cargo build --release

fixtures: $(STAMP_TORCH)
	$(PY) export/make_fixture.py
	$(PY) export/make_fixture.py --llama-only

# The exporter's own sources, derived from the package: every module of h2o_export/, subpackages included,
# and its pyproject.toml, so a new module or a RoPE change re-exports the default model (the reference and
# tools in it only cost a needless 3-second export).
EXPORTER_SRC := export/export.py export/pyproject.toml $(sort $(shell find export/h2o_export -name '*.py'))

$(MICRO)/model.onnx: $(STAMP) $(MICRO_HF)/model.safetensors $(MICRO_HF)/config.json $(EXPORTER_SRC)
	$(PY) export/export.py --checkpoint $(MICRO_HF) --out $(MICRO) --name pythia-micro --dtype fp32 --force

export-micro: $(MICRO)/model.onnx

# The default model with one attention mask per layer: what per-layer budgets (`@pyramid`,
# `bench --groups pyramid`) run on.
$(MICRO)-layer-masks/model.onnx: $(STAMP) $(MICRO_HF)/model.safetensors $(MICRO_HF)/config.json $(EXPORTER_SRC)
	$(PY) export/export.py --checkpoint $(MICRO_HF) --out $(MICRO)-layer-masks --name pythia-micro --dtype fp32 --layer-masks --force

export-micro-layer-masks: $(MICRO)-layer-masks/model.onnx

# The default model caching keys unrotated (key_positions.{i} inputs): what rolling positions
# (`@rolling`, StreamingLLM's renumbering) run on; absolute positions on it give the default's results.
$(MICRO)-rolling/model.onnx: $(STAMP) $(MICRO_HF)/model.safetensors $(MICRO_HF)/config.json $(EXPORTER_SRC)
	$(PY) export/export.py --checkpoint $(MICRO_HF) --out $(MICRO)-rolling --name pythia-micro --dtype fp32 --key-cache unrotated --force

export-micro-rolling: $(MICRO)-rolling/model.onnx

test-rust: $(STAMP) export-micro
	ORT_DYLIB_PATH=$(abspath $(ORT_LIB)) cargo test --release

# H2O_REQUIRE_ALL=1: a test that would skip for a missing input fails instead (export/tests/conftest.py)
test-python: $(STAMP_TORCH) build export-micro export-micro-rolling
	H2O_REQUIRE_ALL=1 ORT_DYLIB_PATH=$(abspath $(ORT_LIB)) $(PY) -m pytest -q export/tests

test: test-rust test-python test-dist

lint:
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings

info: export-micro build
	ORT_DYLIB_PATH=$(abspath $(ORT_LIB)) $(BIN) info --model $(MICRO)

bench: export-micro build
	ORT_DYLIB_PATH=$(abspath $(ORT_LIB)) $(BIN) bench --model $(MICRO) --data $(DATA)

# Attention heatmaps of the default model for the README (docs/heatmaps/).
heatmaps: export-micro build
	ORT_DYLIB_PATH=$(abspath $(ORT_LIB)) $(BIN) heatmap --model $(MICRO) --out docs/heatmaps

# Shape-true random-weight exports for speed and memory at real Pythia sizes (issue 8; not committed).
# e.g. `make models/random-160m/onnx/model.onnx`, or `make random-models` for 160m, 410m and 1b (fp32).
models/random-%/onnx/model.onnx: $(STAMP) $(EXPORTER_SRC)
	$(PY) export/export.py --random-init $* --init-seed $(INIT_SEED) --dtype fp32 --tokenizer $(PYTHIA_TOKENIZER) --out models/random-$*/onnx --name random-$* --force

random-models: models/random-160m/onnx/model.onnx models/random-410m/onnx/model.onnx models/random-1b/onnx/model.onnx

# The same for the Llama-family shapes of ../shared/data/llama-configs.json (issue 26; carried in
# export/h2o_export/config_llama.py): e.g. `make models/random-smollm2-135m/onnx/model.onnx`, or
# `make random-llama-models` for smollm2-135m and qwen2.5-0.5b (fp32). They borrow the Pythia tokenizer
# (the manifest's "tokenizer": {"source", "own": false}); ids beyond a model's vocab are refused when fed.
random-llama-models: models/random-smollm2-135m/onnx/model.onnx models/random-qwen2.5-0.5b/onnx/model.onnx

# The release archive (issue 30): binary, ONNX Runtime's library, the default model, the text and
# the seed's CSV; unpacked anywhere, ./h2o runs with nothing else (packaging/make_dist.sh).
ORT_VERSION = $(shell sed -n 's/^onnxruntime==//p' export/requirements.txt)
ORT_PKG = $(shell ls -d $(VENV)/lib/python3*/site-packages/onnxruntime 2>/dev/null | head -1)
SEED_CSV ?= ../shared/seed/pytorch-results.csv

dist: export-micro build
	bash packaging/make_dist.sh cpu $(BIN) $(ORT_PKG) $(MICRO) $(DATA) $(SEED_CSV)

# The CUDA build: the binary with `--features cuda` (target-cuda/) and onnxruntime-gpu's libraries
# (its wheel, downloaded into .cache/, never installed). Built and checked here; running it needs a GPU.
ORT_GPU := .cache/onnxruntime-gpu-$(ORT_VERSION)
$(ORT_GPU)/onnxruntime/capi: $(STAMP)
	$(PY) -m pip download --quiet --no-deps -d $(ORT_GPU) onnxruntime-gpu==$(ORT_VERSION)
	$(PY) -c "import glob, zipfile; z = zipfile.ZipFile(glob.glob('$(ORT_GPU)/*.whl')[0]); [z.extract(n, '$(ORT_GPU)') for n in z.namelist() if n.startswith('onnxruntime/capi/libonnxruntime') or n in ('onnxruntime/LICENSE', 'onnxruntime/ThirdPartyNotices.txt')]"

dist-cuda: export-micro $(ORT_GPU)/onnxruntime/capi
	CARGO_TARGET_DIR=target-cuda cargo build --release --features cuda --bin h2o
	bash packaging/make_dist.sh cuda target-cuda/release/h2o $(ORT_GPU)/onnxruntime $(MICRO) $(DATA) $(SEED_CSV)
	bash tests/dist/check_cuda_archive.sh

# The archive end to end: unpacked into an empty folder, run with no toolchain, venv or HOME.
test-dist: dist
	bash tests/dist/test_archive.sh
