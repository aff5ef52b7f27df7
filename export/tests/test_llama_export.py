"""Llama-family exports (issue 26): the graph of LlamaForCausalLM / Qwen2ForCausalLM checkpoints
against transformers (eager attention, the oracle; nothing of the exporter is used to compute the
expected values), the committed fixtures tests/fixtures/tiny-llama and tiny-qwen2, the RoPE
scalings, fp16 within transformers-fp16's own error, sharded and tied checkpoints, per-layer masks,
quantized weights, random init with a borrowed tokenizer, and the refusals.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from common import FIXTURE, REPO

from h2o_export import graph_parity as ref
from h2o_export.errors import ExportError
from h2o_export.exporter import export, resolve_random_config
from h2o_export.reference import load_model

FIXTURES = {"tiny-llama": REPO / "tests/fixtures/tiny-llama", "tiny-qwen2": REPO / "tests/fixtures/tiny-qwen2"}
TOKENS = json.loads((FIXTURE / "golden.json").read_text())["tokens"]
TOL32 = {"logits": 1e-4, "kv": 1e-5, "attention_sums": 1e-5}
LOOSE = {"logits": np.inf, "kv": np.inf, "attention_sums": np.inf}
CAPS16 = {"logits": 2e-2, "kv": 1e-2, "attention_sums": 5e-3}  # as test_export_fp16.py, which justifies them
QUIET = dict(log=lambda m: None)


def make_checkpoint(out: Path, arch: str, seed: int = 7, **overrides) -> Path:
    """A random transformers LlamaForCausalLM / Qwen2ForCausalLM with O(1) activations, saved with the
    tiny fixture's tokenizer (4 query heads, 2 KV heads, head_dim 16 unless overridden)."""
    import torch
    import transformers

    kw = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, head_dim=16, max_position_embeddings=2048, rms_norm_eps=1e-6,
              bos_token_id=0, eos_token_id=0, tie_word_embeddings=False)
    kw.update(overrides)
    cfg_cls, model_cls = (("LlamaConfig", "LlamaForCausalLM") if arch == "llama" else ("Qwen2Config", "Qwen2ForCausalLM"))
    torch.manual_seed(seed)
    model = getattr(transformers, model_cls)(getattr(transformers, cfg_cls)(**kw)).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1]))
    model.save_pretrained(out, safe_serialization=True)
    shutil.copyfile(FIXTURE / "tokenizer.json", out / "tokenizer.json")
    return out


def parity(model_dir: Path, hf: Path, tol: dict) -> dict:
    """Every standard case (prefill, gapped and scrambled past, padded batch of 2 and its decode step,
    four token-by-token steps) through the export and through transformers; the largest difference
    per kind (compare raises past `tol`)."""
    manifest = json.loads((model_dir / "manifest.json").read_text())
    model = load_model(hf)
    sess = ref.ort_session(model_dir / "model.onnx")
    worst: dict = {}
    for name, step in ref.standard_cases(model, TOKENS, manifest["num_layers"]).items():
        for k, d in ref.compare(ref.run_onnx(sess, step, manifest), ref.run_hf(model, step), step, tol).items():
            kind = k.split(".")[0]
            worst[kind] = max(worst.get(kind, 0.0), d)
    return worst


# ---- the committed fixtures

@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_reproduces_golden(name):
    d = FIXTURES[name]
    manifest = json.loads((d / "manifest.json").read_text())
    doc, golden = ref.read_golden(d / "golden.json")
    sess = ref.ort_session(d / "model.onnx")
    for case, (step, want) in golden.items():
        ref.compare(ref.run_onnx(sess, step, manifest), want, step, doc["tolerances"])
    assert manifest["num_heads"] == 4 and manifest["num_kv_heads"] == 2 and manifest["head_dim"] == 16
    k = golden["continuation_gapped"][1]["new_key_values.0.key"]
    s = golden["continuation_gapped"][1]["attention_sums.0"]
    assert k.shape[1] == 2 and s.shape[1] == 4  # K/V per KV head, sums per query head


@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_export_is_reproducible(tmp_path, name):
    """Re-exporting the committed checkpoint gives the committed graph, byte for byte."""
    d = FIXTURES[name]
    export(tmp_path / "o", checkpoint=d / "hf", name=name, **QUIET)
    assert (tmp_path / "o/model.onnx").read_bytes() == (d / "model.onnx").read_bytes()


@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_manifest(name):
    m = json.loads((FIXTURES[name] / "manifest.json").read_text())
    assert m["rotary_dims"] == 16 and m["use_parallel_residual"] is False
    if name == "tiny-llama":
        assert m["model_type"] == "llama" and m["prepend_bos_token_id"] == 0 and m["hidden_size"] == 48
        assert m["rope_scaling"] == {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                     "high_freq_factor": 4.0, "original_max_position_embeddings": 256}
        assert m["layer_norm_eps"] == 1e-6 and m["rotary_base"] == 10000.0
    else:
        assert m["model_type"] == "qwen2" and "prepend_bos_token_id" not in m and m["rope_scaling"] is None
        assert m["rotary_base"] == 1e6
    assert "tokenizer" not in m  # a checkpoint's own tokenizer


@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_fp16_within_transformers_fp16_error(name):
    """The fp16 export against transformers float32: at most 2x transformers-fp16's own error + 1e-4, and
    under the absolute caps (test_export_fp16.py's rule)."""
    d, d16 = FIXTURES[name], FIXTURES[name].parent / f"{name}-fp16"
    manifest = json.loads((d16 / "manifest.json").read_text())
    assert manifest["dtype"] == "float16"
    m32, m16 = load_model(d / "hf"), load_model(d / "hf", "float16")
    sess = ref.ort_session(d16 / "model.onnx")
    failures = []
    for case, step in ref.standard_cases(m32, TOKENS, manifest["num_layers"]).items():
        want = ref.run_hf(m32, step)
        ours, theirs = {}, {}
        for got, into in ((ref.run_onnx(sess, step, manifest), ours), (ref.run_hf(m16, step), theirs)):
            for k, v in ref.compare(got, want, step, LOOSE).items():
                kind = "logits" if k == "logits" else "kv" if k.startswith("new_key") else "attention_sums"
                into[kind] = max(into.get(kind, 0.0), v)
        # the logits cap scales with the logits: tiny-llama's tied N(0, 1) embeddings give logits up to
        # ~37 (tiny's: ~4.5), and float16's relative 4.9e-4 moves a logit of 37 by ~2e-2 alone
        caps = dict(CAPS16, logits=CAPS16["logits"] * max(1.0, float(np.abs(want["logits"]).max()) / 4.5))
        for kind, d_ours in ours.items():
            if d_ours > min(2 * theirs[kind] + 1e-4, caps[kind]):
                failures.append(f"{case} {kind}: {d_ours:.3g} vs transformers-fp16 {theirs[kind]:.3g}")
    assert not failures, failures


# ---- exports of fresh checkpoints

@pytest.mark.parametrize("arch,overrides", [
    ("llama", dict(rope_scaling={"rope_type": "linear", "factor": 4.0}, rope_theta=500000.0)),
    ("llama", dict(attention_bias=True, tie_word_embeddings=True, hidden_size=40, num_attention_heads=6,
                   num_key_value_heads=3, head_dim=8)),
    ("llama", dict(num_key_value_heads=4)),  # plain multi-head attention (G = 1)
    ("llama", dict(num_key_value_heads=1, rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                                        "high_freq_factor": 4.0,
                                                        "original_max_position_embeddings": 128})),
    ("qwen2", dict(tie_word_embeddings=True, rope_theta=1000000.0)),
], ids=["llama-linear", "llama-bias-tied-6q3kv", "llama-mha", "llama-mqa-llama3", "qwen2-tied"])
def test_export_matches_transformers(tmp_path, arch, overrides):
    hf = make_checkpoint(tmp_path / "hf", arch, **overrides)
    export(tmp_path / "onnx", checkpoint=hf, **QUIET)
    parity(tmp_path / "onnx", hf, TOL32)


def test_sharded_checkpoint(tmp_path):
    """model.safetensors.index.json and its shards: the same graph as the single file."""
    import torch
    import transformers

    hf = make_checkpoint(tmp_path / "hf", "qwen2")
    export(tmp_path / "one", checkpoint=hf, name="m", **QUIET)
    model = transformers.Qwen2ForCausalLM.from_pretrained(hf, dtype=torch.float32)
    sharded = tmp_path / "sharded"
    model.save_pretrained(sharded, safe_serialization=True, max_shard_size="60KB")
    shutil.copyfile(hf / "tokenizer.json", sharded / "tokenizer.json")
    assert (sharded / "model.safetensors.index.json").is_file()
    res = export(tmp_path / "two", checkpoint=sharded, name="m", **QUIET)
    assert len(res.manifest["source"]["weight_files"]) > 1
    assert (tmp_path / "one/model.onnx").read_bytes() == (tmp_path / "two/model.onnx").read_bytes()


def test_layer_masks_equal_shared_mask(tmp_path):
    """--layer-masks: fed the same mask for every layer, the outputs equal the shared-mask graph's."""
    hf = FIXTURES["tiny-qwen2"] / "hf"
    res = export(tmp_path / "lm", checkpoint=hf, layer_masks=True, **QUIET)
    m = res.manifest
    assert m["attention_masks"] == "per_layer" and "attention_mask.2" in m["inputs"]
    shared = ref.ort_session(FIXTURES["tiny-qwen2"] / "model.onnx")
    per_layer = ref.ort_session(tmp_path / "lm/model.onnx")
    _, golden = ref.read_golden(FIXTURES["tiny-qwen2"] / "golden.json")
    for case, (step, _) in golden.items():
        a = ref.run_onnx(shared, step, m)
        feeds = step.feeds(m["num_layers"], m["num_kv_heads"], m["head_dim"])
        mask = feeds.pop("attention_mask")
        feeds |= {f"attention_mask.{i}": mask for i in range(m["num_layers"])}
        feeds["logits_from"] = np.array([0], np.int64)
        names = [o.name for o in per_layer.get_outputs()]
        b = dict(zip(names, per_layer.run(names, feeds)))
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=f"{case} {k}")


@pytest.mark.parametrize("weights,limit", [("int8", 0.05), ("int4", 0.4), ("int8-dq", 0.05)])
def test_quantized_close_to_fp32(tmp_path, weights, limit):
    """int8 / int4 MatMulNBits and int8-dq DynamicQuantizeMatMul (all linears, q/k/v biases fused,
    and the LM head): logits within the relative RMS bound test_quantized.py sets for Pythia."""
    hf = FIXTURES["tiny-qwen2"] / "hf"
    blocks = {} if weights == "int8-dq" else dict(block_size=16)
    res = export(tmp_path / "q", checkpoint=hf, weights=weights, **blocks, **QUIET)
    assert res.manifest["weights"]["format"] == weights
    _, golden = ref.read_golden(FIXTURES["tiny-qwen2"] / "golden.json")
    step, want = golden["prefill"]
    got = ref.run_onnx(ref.ort_session(tmp_path / "q/model.onnx"), step, res.manifest)["logits"]
    rel = float(np.sqrt(np.mean((got - want["logits"]) ** 2) / np.mean(want["logits"] ** 2)))
    assert 0 < rel <= limit


def test_logits_from(tmp_path):
    """logits_from = 5 gives the last 3 of 8 prefill rows, equal to the full run's."""
    d = FIXTURES["tiny-llama"]
    manifest = json.loads((d / "manifest.json").read_text())
    _, golden = ref.read_golden(d / "golden.json")
    step, want = golden["prefill"]
    sess = ref.ort_session(d / "model.onnx")
    got = ref.run_onnx(sess, step, manifest, logits_from=5)["logits"]
    assert got.shape == (1, 3, 512)
    np.testing.assert_allclose(got, want["logits"][:, 5:], atol=1e-4)


def test_rope_scaling_inv_freq_equals_transformers():
    """The graph's inv_freq (rope.scaled_inv_freq_np, numpy float32) equals transformers' rope_init_fns
    element for element for the shapes this project exports."""
    import torch  # noqa: F401
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    from h2o_export.rope import scaled_inv_freq_np

    l3 = {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 8192}
    for hd, theta, sc in [(64, 500000.0, l3), (128, 500000.0, dict(l3, factor=8.0)), (16, 10000.0, dict(
            l3, factor=8.0, original_max_position_embeddings=256)), (64, 10000.0, {"rope_type": "linear", "factor": 4.0}),
            (64, 1e6, None), (64, 100000.0, None)]:
        c = LlamaConfig(hidden_size=4 * hd, num_attention_heads=4, head_dim=hd, rope_theta=theta, rope_scaling=sc,
                        max_position_embeddings=131072)
        want, _ = ROPE_INIT_FUNCTIONS[sc["rope_type"] if sc else "default"](c, "cpu")
        np.testing.assert_array_equal(scaled_inv_freq_np(hd, theta, sc), want.numpy(), err_msg=f"{hd} {theta} {sc}")


# ---- random init

def test_random_init_sizes_carried():
    """The four public shapes of ../shared/data/llama-configs.json, carried in config_llama."""
    for size, (mt, heads, kv, layers) in {"smollm2-135m": ("llama", 9, 3, 30), "qwen2.5-0.5b": ("qwen2", 14, 2, 24),
                                          "tinyllama-1.1b": ("llama", 32, 4, 22),
                                          "llama-3.2-1b": ("llama", 32, 8, 16)}.items():
        raw, cfg, label = resolve_random_config(size)
        assert (cfg.model_type, cfg.num_heads, cfg.num_kv_heads, cfg.num_layers, label) == (mt, heads, kv, layers, size)
    shared = REPO.parent / "shared/data/llama-configs.json"
    if shared.is_file():
        from h2o_export.config_llama import LLAMA_SIZES

        assert json.loads(shared.read_text())["models"] == LLAMA_SIZES


def test_random_init_borrowed_tokenizer(tmp_path):
    """A random Llama-family shape with a tokenizer of more ids than its vocab: exported, the manifest
    naming the tokenizer's source (own: false); the random weights as transformers' init (RMSNorm 1)."""
    cfg = dict(json.loads(json.dumps(__import__("h2o_export.config_llama", fromlist=["x"]).LLAMA_SIZES["smollm2-135m"])))
    cfg.update(num_hidden_layers=2, hidden_size=64, intermediate_size=96, num_attention_heads=4,
               num_key_value_heads=2, head_dim=16, vocab_size=300)
    (tmp_path / "c.json").write_text(json.dumps(cfg))
    res = export(tmp_path / "o", random_init=str(tmp_path / "c.json"), tokenizer=FIXTURE / "tokenizer.json", **QUIET)
    m = res.manifest
    assert m["tokenizer"] == {"source": f"{FIXTURE / 'tokenizer.json'} (random init)", "own": False}
    assert m["tokenizer_vocab_size"] == 500 and m["vocab_size"] == 300 and m["random_init"] is True
    # the borrowed tokenizer adds no BOS of this model: a random-init shape declares none
    assert "prepend_bos_token_id" not in m and m["num_kv_heads"] == 2 and m["name"] == "random-c"
    import onnx
    from onnx import numpy_helper

    inits = {t.name: t for t in onnx.load(str(tmp_path / "o/model.onnx")).graph.initializer}
    assert np.all(numpy_helper.to_array(inits["model.layers.0.input_layernorm.weight"]) == 1.0)
    assert np.all(numpy_helper.to_array(inits["model.norm.weight"]) == 1.0)
    # tied: the LM head is the embedding
    np.testing.assert_array_equal(numpy_helper.to_array(inits["lm_head.weight"]),
                                  numpy_helper.to_array(inits["model.embed_tokens.weight"]).T)


def test_checkpoint_tokenizer_larger_than_vocab_refused(tmp_path):
    hf = make_checkpoint(tmp_path / "hf", "llama", vocab_size=300)
    with pytest.raises(ExportError, match="500 ids but the model's vocab_size is 300"):
        export(tmp_path / "o", checkpoint=hf, **QUIET)


def test_bos_follows_tokenizer_config(tmp_path):
    hf = make_checkpoint(tmp_path / "hf", "llama")
    (hf / "tokenizer_config.json").write_text(json.dumps({"add_bos_token": False}))
    assert "prepend_bos_token_id" not in export(tmp_path / "a", checkpoint=hf, **QUIET).manifest
    (hf / "tokenizer_config.json").write_text(json.dumps({"add_bos_token": True}))
    assert export(tmp_path / "b", checkpoint=hf, **QUIET).manifest["prepend_bos_token_id"] == 0


def test_bos_follows_the_post_processor(tmp_path):
    """Without add_bos_token anywhere, tokenizer.json's post-processor decides: a template that starts
    with the BOS (Llama 2/3, TinyLlama) declares it; a byte-level one (SmolLM2) declares none."""
    hf = make_checkpoint(tmp_path / "hf", "llama")
    (hf / "tokenizer_config.json").unlink(missing_ok=True)
    tok = json.loads((hf / "tokenizer.json").read_text())
    assert tok["post_processor"]["type"] == "ByteLevel"
    assert "prepend_bos_token_id" not in export(tmp_path / "a", checkpoint=hf, **QUIET).manifest
    tok["post_processor"] = {"type": "Sequence", "processors": [
        {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
        {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                                  {"Sequence": {"id": "A", "type_id": 0}}],
         "pair": [], "special_tokens": {"<s>": {"id": "<s>", "ids": [0], "tokens": ["<s>"]}}}]}
    (hf / "tokenizer.json").write_text(json.dumps(tok))
    assert export(tmp_path / "b", checkpoint=hf, **QUIET).manifest["prepend_bos_token_id"] == 0


# ---- refusals: one line naming the field and its value

BASE = dict(model_type="llama", architectures=["LlamaForCausalLM"], hidden_size=64, intermediate_size=128,
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, vocab_size=512,
            max_position_embeddings=2048, rms_norm_eps=1e-6, hidden_act="silu", rope_theta=10000.0)
QWEN = dict(BASE, model_type="qwen2", architectures=["Qwen2ForCausalLM"])


@pytest.mark.parametrize("raw,words", [
    (dict(QWEN, use_sliding_window=True, sliding_window=4096), ("use_sliding_window true", "4096")),
    (dict(BASE, sliding_window=4096), ("sliding_window 4096",)),
    (dict(QWEN, layer_types=["full_attention", "sliding_attention"]), ("layer_types", "sliding_attention")),
    (dict(BASE, num_local_experts=8), ("num_local_experts 8", "mixture of experts")),
    (dict(QWEN, num_experts=60), ("num_experts 60", "mixture of experts")),
    (dict(BASE, rope_scaling={"rope_type": "dynamic", "factor": 2.0}), ("rope_type \"dynamic\"",)),
    (dict(BASE, rope_scaling={"type": "yarn", "factor": 4.0}), ("rope_type \"yarn\"",)),
    (dict(BASE, rope_scaling={"rope_type": "longrope"}), ("rope_type \"longrope\"",)),
    (dict(BASE, rope_scaling={"rope_type": "linear"}), ("rope_scaling factor", "null")),
    (dict(BASE, hidden_act="gelu"), ("hidden_act \"gelu\"", "silu")),
    (dict(BASE, num_key_value_heads=3), ("num_attention_heads 4", "num_key_value_heads 3")),
    (dict(BASE, architectures=["MistralForCausalLM"]), ("architectures", "MistralForCausalLM")),
    (dict(BASE, model_type="mistral"), ("model_type \"mistral\"", "not supported")),
    (dict(BASE, model_type="mixtral", num_local_experts=8), ("model_type \"mixtral\"", "num_local_experts 8",
                                                            "mixture of experts")),
    (dict(BASE, mlp_bias=True), ("mlp_bias true",)),
    (dict(BASE, partial_rotary_factor=0.5), ("partial_rotary_factor 0.5",)),
    (dict(BASE, head_dim=15), ("head_dim", "15")),
    ({k: v for k, v in BASE.items() if k != "rms_norm_eps"}, ("missing", "rms_norm_eps")),
], ids=["qwen-sliding", "llama-sliding", "layer-types", "moe-mixtral", "moe-qwen", "rope-dynamic", "rope-yarn",
        "rope-longrope", "rope-no-factor", "act", "heads", "architectures", "mistral", "mixtral", "mlp-bias", "partial-rotary",
        "odd-head-dim", "missing-eps"])
def test_refusals(tmp_path, raw, words):
    (tmp_path / "c.json").write_text(json.dumps(raw))
    with pytest.raises(ExportError) as e:
        export(tmp_path / "o", random_init=str(tmp_path / "c.json"), tokenizer=FIXTURE / "tokenizer.json", **QUIET)
    msg = str(e.value)
    assert "\n" not in msg and "c.json" in msg, msg
    for w in words:
        assert w in msg, msg
    assert not (tmp_path / "o").exists()


def test_external_data_same_outputs(tmp_path):
    """--external-data always (as a >2 GB model such as qwen2.5-0.5b in fp32 gets): model.onnx.data holds
    the weights, and the graph gives the committed graph's outputs bit for bit."""
    d = FIXTURES["tiny-llama"]
    res = export(tmp_path / "x", checkpoint=d / "hf", external_data="always", **QUIET)
    assert res.manifest["external_data"] == "model.onnx.data" and (tmp_path / "x/model.onnx.data").is_file()
    _, golden = ref.read_golden(d / "golden.json")
    step, _ = golden["continuation_slots"]
    a = ref.run_onnx(ref.ort_session(d / "model.onnx"), step, res.manifest)
    b = ref.run_onnx(ref.ort_session(tmp_path / "x/model.onnx"), step, res.manifest)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
