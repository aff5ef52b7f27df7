"""The engine's device KV store against its host store, end to end (`h2o ppl --kv device|host`), issue 13.

With `--kv device` the K/V slot arrays live in memory of ONNX Runtime's allocator for the execution
provider's device, are bound with IoBinding, and the kept new tokens are written into their slots by
a companion graph; on the CPU provider this is the code path CUDA takes. The same graph then reads the
same bytes, so per-token NLLs and eviction traces must be identical to the host store's, bit for bit
(JSON floats round-trip exactly), for every policy family, on the tiny fixture and on pythia-micro
(made by `make export-micro`; `make test` exports it first). The engine's Rust tests
(tests/engine_device.rs) check the same on the fixture with batches, padding, fp16 and the K/V bytes.

A missing input (engine binary, exported model) skips with the reason, which H2O_REQUIRE_ALL=1
(`make test`, CI) turns into a failure (conftest.py).

Environment: H2O_BIN (default target/release/h2o), H2O_DATA (default
tests/data/wiki.test.excerpt.raw), ORT_DYLIB_PATH (default .venv's onnxruntime library when found).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from common import FIXTURE, REPO, data_path, engine_bin, engine_env

MODELS = {
    "tiny": (FIXTURE, 256, ["full", "local:64", "sink:4+60", "h2o:32+32", "h2o-layer:32+32"]),
    "pythia-micro": (
        REPO / "models/pythia-micro/onnx",
        300,
        ["full", "local:64", "sink:4+60", "h2o:48+16", "h2o-layer:48+16"],
    ),
}
CASES = [(m, p) for m, (_, _, pols) in MODELS.items() for p in pols]


def ppl(model: Path, tokens: int, policy: str, kv: str, tmp: Path) -> tuple[dict, dict]:
    """`h2o ppl` with K/V where `kv` says: its JSON and its eviction trace."""
    out, trace = tmp / f"{kv}.json", tmp / f"{kv}-trace.json"
    cmd = [str(engine_bin()), "ppl", "--model", str(model), "--data", str(data_path()),
           "--tokens", str(tokens), "--policy", policy, "--threads", "1", "--kv", kv,
           "--json", str(out), "--trace", str(trace)]
    r = subprocess.run(cmd, env=engine_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stderr}"
    return json.loads(out.read_text()), json.loads(trace.read_text())


@pytest.mark.parametrize("model,policy", CASES)
def test_device_store_gives_the_host_stores_nlls_and_evictions(model, policy, tmp_path):
    path, tokens, _ = MODELS[model]
    if not engine_bin().is_file():
        pytest.skip(f"no engine binary at {engine_bin()} (cargo build --release)")
    if not (path / "model.onnx").is_file():
        pytest.skip(f"{path} is not exported (make export-micro)")
    host, host_trace = ppl(path, tokens, policy, "host", tmp_path)
    device, device_trace = ppl(path, tokens, policy, "device", tmp_path)
    assert len(host["nll"]) == tokens - 1
    assert device["nll"] == host["nll"], "per-token NLLs bit for bit"
    assert device["ppl"] == host["ppl"]
    assert device_trace == host_trace, "the same positions evicted at every step, layer and head"
    evicting = any(step["evicted"] for step in host_trace["steps"])
    assert evicting == (policy != "full"), "the bounded policies evict within the text"


@pytest.fixture(scope="module")
def layer_masks_fixture(tmp_path_factory):
    """The tiny fixture exported with one attention mask per layer (what `@pyramid` runs on)."""
    from h2o_export.exporter import export

    out = tmp_path_factory.mktemp("device-kv") / "layer-masks"
    export(out, checkpoint=FIXTURE / "hf", name="tiny-neox", layer_masks=True, log=lambda _m: None)
    return out


@pytest.mark.parametrize("policy", ["h2o:24+8@pyramid", "tova:32@pyramid"])
def test_device_store_with_per_layer_budgets(policy, layer_masks_fixture, tmp_path):
    """Per-layer budgets on a per-layer-mask graph: each layer's mask and past are bound on the device
    path as on the host path, so NLLs and evictions are again identical."""
    if not engine_bin().is_file():
        pytest.skip(f"no engine binary at {engine_bin()} (cargo build --release)")
    host, host_trace = ppl(layer_masks_fixture, 200, policy, "host", tmp_path)
    device, device_trace = ppl(layer_masks_fixture, 200, policy, "device", tmp_path)
    assert device["nll"] == host["nll"]
    assert device_trace == host_trace
    assert any(step["evicted"] for step in host_trace["steps"])


def test_key_norm_is_refused_with_device_kv(tmp_path):
    """knorm ranks by the new keys' norms, computed on the host: with K/V in device memory the keys
    never come back, so the engine refuses the combination instead of ranking by nothing."""
    if not engine_bin().is_file():
        pytest.skip(f"no engine binary at {engine_bin()} (cargo build --release)")
    cmd = [str(engine_bin()), "ppl", "--model", str(FIXTURE), "--data", str(data_path()),
           "--tokens", "64", "--policy", "knorm:16", "--kv", "device", "--json", str(tmp_path / "x.json")]
    r = subprocess.run(cmd, env=engine_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "keys" in r.stderr and "host" in r.stderr, r.stderr
    assert not (tmp_path / "x.json").exists()
