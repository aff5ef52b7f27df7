# Two commands for a new user:
#   make bench   - the main job: the default benchmark suite on the embedded default model (pythia-micro)
#   make test    - every test: Rust (unit, integration, CLI) and Python (exporter, reference, parity)
# Everything else (.venv with the pinned Python packages, ONNX export, release build) is set up on the way.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ORT_LIB = $(shell ls $(VENV)/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.* 2>/dev/null | head -1)
MICRO_HF := models/pythia-micro
MICRO := models/pythia-micro/onnx
DATA ?= ../shared/data/wikitext-2-raw-v1/wiki.test.raw
BIN := target/release/h2o

PYTHIA_TOKENIZER ?= ../shared/data/pythia-tokenizer.json
INIT_SEED ?= 0

.PHONY: all venv build test test-rust test-python lint fixtures export-micro bench info heatmaps random-models clean-results

all: build

$(STAMP): export/requirements.txt export/requirements-torch.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r export/requirements.txt -r export/requirements-torch.txt
	touch $(STAMP)

venv: $(STAMP)

build:
	cargo build --release

fixtures: $(STAMP)
	$(PY) export/make_fixture.py

$(MICRO)/model.onnx: $(STAMP) $(MICRO_HF)/model.safetensors $(MICRO_HF)/config.json
	$(PY) export/export.py --checkpoint $(MICRO_HF) --out $(MICRO) --name pythia-micro --dtype fp32 --force

export-micro: $(MICRO)/model.onnx

test-rust: $(STAMP) export-micro
	ORT_DYLIB_PATH=$(abspath $(ORT_LIB)) cargo test --release

# H2O_REQUIRE_ALL=1: a test that would skip for a missing input fails instead (export/tests/conftest.py)
test-python: $(STAMP) build export-micro
	H2O_REQUIRE_ALL=1 ORT_DYLIB_PATH=$(abspath $(ORT_LIB)) $(PY) -m pytest -q export/tests

test: test-rust test-python

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
models/random-%/onnx/model.onnx: $(STAMP)
	$(PY) export/export.py --random-init $* --init-seed $(INIT_SEED) --dtype fp32 --tokenizer $(PYTHIA_TOKENIZER) --out models/random-$*/onnx --name random-$* --force

random-models: models/random-160m/onnx/model.onnx models/random-410m/onnx/model.onnx models/random-1b/onnx/model.onnx
