"""export/torch_speed.py on the tiny fixture with tiny P/G: the JSON fields (no timing
assertions), bad input, and --random-init giving the very weights the exporter writes."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from common import EXPORT_DIR, data_path  # noqa: E402
from common import FIXTURE as TINY  # noqa: E402

from h2o_export.commands import torch_speed as cli  # noqa: E402  (export/torch_speed.py)
from h2o_export import speed as ts  # noqa: E402
PY = sys.executable
FIELDS = ["impl", "model", "threads", "prompt", "gen", "ttft_ms", "tpot_median_ms", "tpot_p90_ms",
          "throughput_tps", "tpot_mean_ms", "seed_tpot_ms", "seed_throughput_tps", "prefill_tps",
          "decode_steps", "generated_tokens", "policy", "weight_bytes", "torch", "transformers", "machine"]


@pytest.fixture(scope="module", autouse=True)
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def run(tmp_path, *args) -> dict:
    out = tmp_path / "speed.json"
    assert cli.main([*args, "--threads", "1", "--out", str(out)]) == 0
    return json.loads(out.read_text(encoding="utf-8"))


def check_doc(doc: dict, impl: str, prompt: int, gen: int) -> None:
    for f in FIELDS:
        assert f in doc, f"missing field {f}"
    assert doc["impl"] == impl
    assert doc["threads"] == 1
    assert (doc["prompt"], doc["gen"]) == (prompt, gen)
    assert doc["decode_steps"] == gen - 1 and doc["generated_tokens"] == gen
    for f in ("ttft_ms", "tpot_median_ms", "tpot_p90_ms", "tpot_mean_ms", "throughput_tps", "seed_tpot_ms"):
        assert isinstance(doc[f], float) and math.isfinite(doc[f]) and doc[f] > 0, f
    assert doc["tpot_min_ms"] <= doc["tpot_median_ms"] <= doc["tpot_p90_ms"] <= doc["tpot_max_ms"]
    assert math.isclose(doc["throughput_tps"], 1e3 / doc["tpot_mean_ms"], rel_tol=1e-9)
    total = doc["ttft_ms"] + doc["tpot_mean_ms"] * doc["decode_steps"]
    assert math.isclose(doc["seed_tpot_ms"], total / gen, rel_tol=1e-9)


def test_hf_eager(tmp_path):
    doc = run(tmp_path, "--hf-dir", str(TINY / "hf"), "--prompt", "12", "--gen", "5")
    check_doc(doc, "transformers-eager", 12, 5)
    assert doc["model"] == "tiny"
    assert doc["policy"] == "full"
    # DynamicCache after P + G - 1 tokens: 2 layers x (K + V) x 4 heads x 16 x float32
    assert doc["kv_bytes"] == 2 * 2 * 4 * (12 + 5 - 1) * 16 * 4
    assert doc["weights_sha256"] is None and doc["weight_bytes"] > 0


def test_reference_with_data(tmp_path):
    doc = run(tmp_path, "--hf-dir", str(TINY / "hf"), "--impl", "reference", "--policy", "h2o:4+4",
              "--prompt", "10", "--gen", "6", "--data", str(data_path()))
    check_doc(doc, "pytorch-reference", 10, 6)
    assert doc["policy"] == "h2o:4+4" and doc["budget"] == 8
    assert math.isfinite(doc["ppl"])
    assert doc["prompt_source"] == str(data_path())


def test_percentile_matches_engine_definition():
    assert ts.percentile([1.0, 2.0, 3.0, 4.0, 5.0], 0.5) == 3.0
    assert math.isclose(ts.percentile([1.0, 2.0, 3.0, 4.0, 5.0], 0.9), 4.6)
    assert ts.percentile([7.0], 0.9) == 7.0
    assert math.isnan(ts.percentile([], 0.5))


@pytest.mark.parametrize("args,msg", [
    (["--prompt", "0"], "--prompt"),
    (["--gen", "1"], "--gen"),
    (["--prompt", "2000", "--gen", "100"], "positions"),
    (["--policy", "h2o:4+4"], "--impl reference"),
    (["--impl", "reference", "--policy", "h2o:x"], "invalid policy spec"),
    (["--data", "/nonexistent/wiki.raw"], "data file not found"),
])
def test_bad_input(args, msg, capsys):
    assert cli.main(["--hf-dir", str(TINY / "hf"), "--threads", "1", "--gen", "3", *args]) == 2
    assert msg in capsys.readouterr().err


def test_random_init_weights_equal_the_exporters(tmp_path):
    """--random-init CONFIG --init-seed N builds the weights `export.py --random-init CONFIG --init-seed N`
    writes: the manifest's sha256 matches, and the fp32 graph reproduces transformers' logits."""
    from h2o_export import graph_parity as hr
    from h2o_export.exporter import export

    cfg = TINY / "hf/config.json"
    res = export(tmp_path / "onnx", random_init=str(cfg), init_seed=3, tokenizer=TINY / "tokenizer.json",
                 dtype="fp32", log=lambda m: None)
    model, name, sha = ts.random_init_model(str(cfg), 3)
    assert sha == res.manifest["source"]["sha256"]
    assert name == "random-config"
    _, _, sha_other_seed = ts.random_init_model(str(cfg), 4)
    assert sha_other_seed != sha
    sess = hr.ort_session(tmp_path / "onnx/model.onnx")
    ids = np.array([[5, 17, 99, 3, 250, 42, 7, 11]], dtype=np.int64)
    step = hr.Step(ids, np.arange(8, dtype=np.int64)[None], np.ones((1, 8), dtype=np.int64))
    got, want = hr.run_onnx(sess, step, res.manifest), hr.run_hf(model, step)
    assert np.abs(got["logits"] - want["logits"]).max() < 1e-4


def test_cli_random_init_pythia_shape(tmp_path):
    """The script as a user runs it, on a Pythia size small enough for a test (14m, seeded ids)."""
    out = tmp_path / "r.json"
    p = subprocess.run([PY, str(EXPORT_DIR / "torch_speed.py"), "--random-init", "14m", "--init-seed", "1",
                        "--threads", "1", "--prompt", "4", "--gen", "3", "--warmup", "0", "--out", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    doc = json.loads(out.read_text(encoding="utf-8"))
    check_doc(doc, "transformers-eager", 4, 3)
    assert doc["model"] == "random-pythia-14m"
    assert doc["weights"] == {"random_init": "14m", "init_seed": 1}
    assert len(doc["weights_sha256"]) == 64
    assert "tok/s" in p.stdout


@pytest.mark.parametrize("fixture", ["tiny-llama", "tiny-qwen2"])
def test_random_init_llama_family_weights_equal_the_exporters(tmp_path, fixture):
    """The same for the Llama family (issue 26): LlamaForCausalLM / Qwen2ForCausalLM with the exporter's
    random weights (tied head included: tiny-llama's config ties it), the manifest's sha256, and the
    fp32 graph reproducing transformers' logits and attention sums."""
    from h2o_export import graph_parity as hr
    from h2o_export.exporter import export

    cfg = TINY.parent / fixture / "hf/config.json"
    res = export(tmp_path / "onnx", random_init=str(cfg), init_seed=3, tokenizer=TINY / "tokenizer.json",
                 dtype="fp32", log=lambda m: None)
    model, name, sha = ts.random_init_model(str(cfg), 3)
    assert type(model).__name__ == {"tiny-llama": "LlamaForCausalLM", "tiny-qwen2": "Qwen2ForCausalLM"}[fixture]
    assert sha == res.manifest["source"]["sha256"]
    sess = hr.ort_session(tmp_path / "onnx/model.onnx")
    ids = np.array([[5, 17, 99, 3, 250, 42, 7, 11]], dtype=np.int64)
    step = hr.Step(ids, np.arange(8, dtype=np.int64)[None], np.ones((1, 8), dtype=np.int64))
    got, want = hr.run_onnx(sess, step, res.manifest), hr.run_hf(model, step)
    assert np.abs(got["logits"] - want["logits"]).max() < 1e-4
    assert np.abs(got["attention_sums.1"] - want["attention_sums.1"]).max() < 1e-5


def test_random_init_llama_size_resolves():
    """A carried Llama-family size name (as `side_by_side.py --sizes smollm2-135m` passes it) builds
    transformers' model of that shape (weights not drawn here: the shape only)."""
    from h2o_export.exporter import resolve_random_config

    raw, cfg, label = resolve_random_config("qwen2.5-0.5b")
    assert (label, cfg.model_type, cfg.num_kv_heads, cfg.qkv_bias) == ("qwen2.5-0.5b", "qwen2", 2, True)
