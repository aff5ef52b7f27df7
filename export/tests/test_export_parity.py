"""fp32 exports run through onnxruntime match transformers' GPTNeoXForCausalLM (eager attention):
logits within 1e-4, new K/V equal to transformers' cache entries (1e-5), attention sums equal
to output_attentions summed over the real new queries (1e-5); for prefill, continuation with
gapped positions, scrambled and empty (masked) slots, batch 2 with left padding, and
token-by-token decoding. Also checks the committed fixture (tests/fixtures/tiny)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from common import FIXTURE  # noqa: E402

from h2o_export import graph_parity as ref  # noqa: E402
from h2o_export.reference import load_model  # noqa: E402
from h2o_export.exporter import export  # noqa: E402
from h2o_export.graph import input_names, output_names, with_logits_from  # noqa: E402

TOKENIZER = FIXTURE / "tokenizer.json"
TOL = {"logits": 1e-4, "kv": 1e-5, "attention_sums": 1e-5}

CONFIGS = {
    "parallel_rot0.25": dict(use_parallel_residual=True, rotary_pct=0.25),
    "sequential_rot0.25": dict(use_parallel_residual=False, rotary_pct=0.25),
    "parallel_rot1.0": dict(use_parallel_residual=True, rotary_pct=1.0),
    "sequential_rot1.0": dict(use_parallel_residual=False, rotary_pct=1.0, num_attention_heads=2,
                              layer_norm_eps=1e-3, rotary_emb_base=500),
}


def tokens() -> list[int]:
    return json.loads((FIXTURE / "golden.json").read_text())["tokens"]


@pytest.fixture(scope="module", params=list(CONFIGS), ids=list(CONFIGS))
def exported(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(request.param)
    seed = 10 + list(CONFIGS).index(request.param)
    hf = ref.make_tiny_checkpoint(tmp / "hf", 512, seed, tokenizer=TOKENIZER, **CONFIGS[request.param])
    res = export(tmp / "onnx", checkpoint=hf, dtype="fp32", log=lambda m: None)
    model = load_model(hf)
    return request.param, res.manifest, ref.ort_session(tmp / "onnx/model.onnx"), model


def test_fp32_matches_transformers(exported):
    label, manifest, sess, model = exported
    cases = ref.standard_cases(model, tokens(), manifest["num_layers"])
    failures = []
    for name, step in cases.items():
        try:
            ref.compare(ref.run_onnx(sess, step, manifest), ref.run_hf(model, step), step, TOL)
        except AssertionError as e:
            failures.append(f"{name}: {e}")
    assert not failures, f"{label}: " + " | ".join(failures)


def test_attention_sums_count_real_queries(exported):
    """Each real query's probabilities sum to 1 and padding queries add nothing. Row 1 holds a
    left-padding query (a fully masked row) and two right-padding queries that see real keys
    (their probabilities on real columns are not 0, so counting them would show): summed over
    the keys, attention_sums[b, h] = number of real new tokens of row b; row 1's sums equal
    those of its real tokens run alone, and its padding columns are exactly 0."""
    _, manifest, sess, _ = exported
    t = np.asarray(tokens()[:8])
    pad = 1
    ids = np.stack([t, np.concatenate([[pad], t[1:6], [pad, pad]])])  # row 1: pad, 5 tokens, pad, pad
    pos = np.stack([np.arange(8), np.array([0, 0, 1, 2, 3, 4, 5, 6])])
    am = np.stack([np.ones(8, np.int64), np.array([0, 1, 1, 1, 1, 1, 0, 0])])
    step = ref.Step(ids, pos, am)
    assert step.query_mask().sum(axis=1).tolist() == [8, 5]
    out = ref.run_onnx(sess, step, manifest)
    alone = ref.run_onnx(sess, ref.Step(t[None, 1:6], np.arange(5)[None], np.ones((1, 5), np.int64)), manifest)
    for i in range(manifest["num_layers"]):
        sums = out[f"attention_sums.{i}"]  # [batch, heads, past+seq]
        np.testing.assert_allclose(sums.sum(axis=2), np.broadcast_to([[8.0], [5.0]], sums.shape[:2]), atol=1e-5)
        np.testing.assert_allclose(sums[1][:, 1:6], alone[f"attention_sums.{i}"][0], atol=1e-5)
        assert not sums[1][:, [0, 6, 7]].any(), "padding columns must be exactly 0"


def test_masked_slots_ignored_whatever_they_hold(exported):
    """Empty slots (mask 0) may hold stale or arbitrary finite data: outputs must not change."""
    _, manifest, sess, model = exported
    step = ref.standard_cases(model, tokens(), manifest["num_layers"], stepwise=0)["continuation_slots"]
    base = ref.run_onnx(sess, step, manifest)
    rng = np.random.default_rng(0)
    empty = ~step.attention_mask[0, : step.past_len].astype(bool)
    noisy = []
    for k, v in step.past:
        k, v = k.copy(), v.copy()
        k[:, :, empty, :] = rng.normal(0, 1e4, k[:, :, empty, :].shape)
        v[:, :, empty, :] = rng.normal(0, 1e4, v[:, :, empty, :].shape)
        noisy.append((k, v))
    out = ref.run_onnx(sess, ref.Step(step.input_ids, step.position_ids, step.attention_mask, noisy), manifest)
    for name in base:
        np.testing.assert_array_equal(out[name], base[name], err_msg=name)


def test_positions_come_from_position_ids(exported):
    """The same token at another position gives another key: RoPE reads position_ids, not the
    cache length (and a prefill shifted by 100 positions changes keys but not values)."""
    _, manifest, sess, _ = exported
    t = np.asarray(tokens()[:4])[None]
    a = ref.run_onnx(sess, ref.Step(t, np.arange(4)[None], np.ones((1, 4), np.int64)), manifest)
    b = ref.run_onnx(sess, ref.Step(t, np.arange(100, 104)[None], np.ones((1, 4), np.int64)), manifest)
    assert not np.allclose(a["new_key_values.0.key"], b["new_key_values.0.key"])
    np.testing.assert_allclose(a["new_key_values.0.value"], b["new_key_values.0.value"], atol=1e-6)


def test_logits_from_computes_the_last_rows_only(exported):
    """`logits_from` = k: logits [batch, seq - k, vocab] are rows k.. of the full logits (the head
    is per token: LN then one matmul; within 1e-6, GEMM blocking may differ with the row count);
    K/V and attention sums do not depend on it, bit for bit. The manifest lists the input."""
    _, manifest, sess, _ = exported
    assert manifest["inputs"][-1] == "logits_from"
    t = np.asarray(tokens()[:6])
    step = ref.Step(np.stack([t, t[::-1]]), np.tile(np.arange(6), (2, 1)), np.ones((2, 6), np.int64))
    full = ref.run_onnx(sess, step, manifest)
    assert full["logits"].shape[:2] == (2, 6)
    for k in (1, 5):
        part = ref.run_onnx(sess, step, manifest, logits_from=k)
        assert part["logits"].shape == (2, 6 - k, full["logits"].shape[2])
        np.testing.assert_allclose(part["logits"], full["logits"][:, k:], rtol=1e-6, atol=1e-6)
        for name in full:
            if name != "logits":
                np.testing.assert_array_equal(part[name], full[name], err_msg=name)


# ---- the committed fixture -------------------------------------------------------------------

def test_fixture_golden_reproduced_by_committed_onnx():
    manifest = json.loads((FIXTURE / "manifest.json").read_text())
    sess = ref.ort_session(FIXTURE / "model.onnx")
    doc, cases = ref.read_golden(FIXTURE / "golden.json")
    assert doc["format"] == "h2o-golden/1"
    assert {"prefill", "continuation_gapped", "batch2_padded"} <= set(cases)
    for name, (step, want) in cases.items():
        ref.compare(ref.run_onnx(sess, step, manifest), want, step, doc["tolerances"])


def test_fixture_golden_matches_its_checkpoint():
    """golden.json is what transformers computes from tests/fixtures/tiny/hf (same tolerances)."""
    model = load_model(FIXTURE / "hf")
    doc, cases = ref.read_golden(FIXTURE / "golden.json")
    for name in ("prefill", "continuation_gapped", "batch2_padded"):
        step, want = cases[name]
        ref.compare(ref.run_hf(model, step), want, step, doc["tolerances"])


def test_fixture_manifest_matches_graph():
    import onnx

    manifest = json.loads((FIXTURE / "manifest.json").read_text())
    model = onnx.load(str(FIXTURE / "model.onnx"))
    assert [i.name for i in model.graph.input] == manifest["inputs"] == input_names(2)
    # the same checkpoint as exporter 1.2.0 wrote it, without logits_from: kept so that older
    # graphs stay tested in the engine (tests/engine_logits_from.rs)
    old = FIXTURE.parent / "tiny-exp120"
    before_logits_from = [n for n in input_names(2) if n != "logits_from"]
    assert [i.name for i in onnx.load(str(old / "model.onnx")).graph.input] == before_logits_from
    assert json.loads((old / "manifest.json").read_text())["inputs"] == before_logits_from
    assert [o.name for o in model.graph.output] == manifest["outputs"] == output_names(2)
    assert manifest["format_version"] == 1 and manifest["model_type"] == "gpt_neox"
    assert manifest["dtype"] == "float32" and manifest["random_init"] is False
    assert manifest["tokenizer_vocab_size"] == 500 and manifest["vocab_size"] == 512
    assert manifest["rotary_dims"] == 4 and manifest["head_dim"] == 16
    total = sum(p.stat().st_size for p in FIXTURE.rglob("*") if p.is_file())
    assert total < 2_000_000, f"fixture is {total} bytes"


def test_attention_reads_past_in_place(exported, tmp_path):
    """The past K/V inputs are consumed only by MatMuls (after ONNX Runtime's optimizations: no
    Concat or Transpose copies the cache each step), and past = 0 runs (empty [b, h, 0, hd])."""
    import onnx
    import onnxruntime as ort

    label, manifest, sess, model = exported
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.optimized_model_filepath = str(tmp_path / "opt.onnx")
    ort.InferenceSession(sess._model_path, so, providers=["CPUExecutionProvider"])
    opt = onnx.load(str(tmp_path / "opt.onnx"))
    past = {f"past_key_values.{i}.{kv}" for i in range(manifest["num_layers"]) for kv in ("key", "value")}
    users = [(n.op_type, x) for n in opt.graph.node for x in n.input if x in past]
    assert users and {op for op, _ in users} <= {"MatMul", "FusedMatMul", "Shape"}, f"{label}: {users}"

    for seq in (1, 3):  # no past given: feeds() passes empty [2, heads, 0, head_dim] arrays
        step = ref.Step(np.array([tokens()[:seq]] * 2, np.int64), np.tile(np.arange(seq), (2, 1)),
                        np.ones((2, seq), np.int64))
        assert step.past_len == 0
        out = ref.run_onnx(sess, step, manifest)
        assert all(np.isfinite(v).all() for v in out.values())
        ref.compare(out, ref.run_hf(model, step), step, TOL)


def test_layer_masks_graph(tmp_path):
    """`--layer-masks`: one attention_mask.{i} per layer, each layer with its own past length.
    With equal masks it computes what the shared-mask graph does, bit for bit; a layer given more
    (masked, garbage-filled) slots than another changes nothing, and its masked columns sum to 0."""
    import onnxruntime as ort

    shared = FIXTURE
    res = export(tmp_path / "lm", checkpoint=FIXTURE / "hf", name="tiny-neox", layer_masks=True, log=lambda m: None)
    man = res.manifest
    assert man["attention_masks"] == "per_layer"
    assert man["inputs"] == input_names(2, layer_masks=True)
    assert man["inputs"][:4] == ["input_ids", "position_ids", "attention_mask.0", "attention_mask.1"]
    assert man["outputs"] == output_names(2)
    assert "attention_masks" not in json.loads((shared / "manifest.json").read_text())
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    s_shared = ort.InferenceSession(str(shared / "model.onnx"), so, providers=["CPUExecutionProvider"])
    s_layer = ort.InferenceSession(str(tmp_path / "lm/model.onnx"), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in s_shared.get_outputs()]
    rng = np.random.default_rng(3)
    heads, hd = man["num_heads"], man["head_dim"]
    past = 3
    kv = [rng.standard_normal((1, heads, past, hd)).astype(np.float32) for _ in range(4)]
    mask = np.array([[1, 0, 1, 1]], np.int64)  # slot 1 empty, then the new token
    base = {"input_ids": np.array([[7]], np.int64), "position_ids": np.array([[5]], np.int64)}
    for i in range(2):
        base[f"past_key_values.{i}.key"], base[f"past_key_values.{i}.value"] = kv[2 * i], kv[2 * i + 1]
    want = dict(zip(names, s_shared.run(names, with_logits_from({**base, "attention_mask": mask}, s_shared))))
    got = dict(zip(names, s_layer.run(names, with_logits_from({**base, "attention_mask.0": mask,
                                                               "attention_mask.1": mask}, s_layer))))
    for n in names:
        assert np.array_equal(got[n], want[n]), n
    # layer 1 with two more slots, garbage and masked: the same outputs, zeros in its extra columns
    extra = [np.concatenate((x, 1e3 * rng.standard_normal((1, heads, 2, hd)).astype(np.float32)), axis=2)
             for x in kv[2:]]
    feeds = {**base, "past_key_values.1.key": extra[0], "past_key_values.1.value": extra[1],
             "attention_mask.0": mask, "attention_mask.1": np.array([[1, 0, 1, 0, 0, 1]], np.int64)}
    wide = dict(zip(names, s_layer.run(names, with_logits_from(feeds, s_layer))))
    assert wide["attention_sums.1"].shape == (1, heads, past + 2 + 1)
    assert (wide["attention_sums.1"][:, :, [1, 3, 4]] == 0).all()
    np.testing.assert_allclose(wide["attention_sums.1"][:, :, [0, 2, 5]], want["attention_sums.1"][:, :, [0, 2, 3]],
                               atol=1e-6)
    np.testing.assert_allclose(wide["logits"], want["logits"], atol=1e-5)
    assert np.array_equal(wide["attention_sums.0"], want["attention_sums.0"])
