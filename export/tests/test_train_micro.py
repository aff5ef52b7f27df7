"""Tests of pythia-micro's training code (h2o_export.micro: model, evaluate, data; the CLIs
export/train_micro.py and prepare_micro_data.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from h2o_export.micro import data as prep  # noqa: E402
from h2o_export.micro import evaluate as ev  # noqa: E402
from h2o_export.micro import model as mm  # noqa: E402
from h2o_export.micro import train as tr  # noqa: E402
from h2o_export.micro import windows as win  # noqa: E402

N = 40
POLICIES = ["full", "local:8", "h2o:5+3", "sink:2+6"]


def tiny():
    fields = mm.model_config(tiny=True)
    fields.update(vocab_size=97, num_hidden_layers=2, hidden_size=32, num_attention_heads=4, intermediate_size=64)
    model = mm.build_model(fields, "eager")
    mm.init_weights(model, fields, init_seed=3)
    model.eval()
    ids = np.random.default_rng(0).integers(0, fields["vocab_size"], size=N)
    return fields, model, ids


def test_init_is_seeded_and_device_independent():
    f, a, _ = tiny()
    b = mm.build_model(f, "eager")
    mm.init_weights(b, f, init_seed=3)
    sa, sb = mm.canonical_state_dict(a), mm.canonical_state_dict(b)
    assert sa.keys() == sb.keys() and "embed_out.weight" in sa
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_streaming_full_matches_transformers_forward():
    f, model, ids = tiny()
    m = ev.hf_model(mm.canonical_state_dict(model), f, torch.device("cpu"))
    want = ev.position_nll(m, torch.from_numpy(ids)[None])[0]
    res = ev.stream_eval(m, ids, policies=POLICIES)
    assert res["complete"] and res["policies"]["full"]["tokens"] == N
    assert (torch.tensor(res["_nll"]["full"], dtype=torch.float64) - want.double()).abs().max().item() < 1e-4
    # the sink evidence reads the full cache's scores: per query, the attention sums to 1
    assert len(res["sink"]["mean_attention_to_pos0_by_layer"]) == 2 and res["sink"]["heads"] == 4
    assert all(0 < x <= 1 for x in res["sink"]["mean_attention_to_pos0_by_layer"])


def test_policies_keep_what_they_promise():
    f, model, ids = tiny()
    res = ev.stream_eval(ev.hf_model(mm.canonical_state_dict(model), f, torch.device("cpu")), ids, policies=POLICIES)
    t = N - 2  # the last token (N-1) is never fed
    kept = res["_kept"]  # spec -> [layer][head] positions at the end
    for layer in kept["full"]:
        assert all(head == list(range(t + 1)) for head in layer)
    for layer in kept["local:8"]:
        assert all(head == list(range(t - 7, t + 1)) for head in layer)
    for layer in kept["h2o:5+3"]:
        assert all(len(head) == 8 and head[-3:] == [t - 2, t - 1, t] for head in layer)
    for layer in kept["sink:2+6"]:
        assert all(head == [0, 1] + list(range(t - 5, t + 1)) for head in layer)
    h2o = res["policies"]["h2o:5+3"]
    assert h2o["layer_heads"] == 8 and 0 <= h2o["heads_keeping_pos0_at_end"] <= 8
    # evicting changes the prediction: a bounded cache is not the full model
    assert res["policies"]["local:8"]["nll"] != res["policies"]["full"]["nll"]


def test_checkpoint_round_trip_loads_in_transformers(tmp_path):
    from transformers import GPTNeoXForCausalLM

    f, model, ids = tiny()
    names = mm.save_checkpoint(model, mm.config_json(f), None, tmp_path, shard_mib=0.05)
    assert len(names) > 1  # sharded
    assert mm.merge_shards(tmp_path, tmp_path / "model.safetensors")[0] == len(names)
    loaded = GPTNeoXForCausalLM.from_pretrained(str(tmp_path), attn_implementation="eager").eval()
    x = torch.from_numpy(ids)[None]
    with torch.no_grad():
        assert torch.allclose(loaded(x).logits, model(x).logits, atol=1e-6)


def test_wikitext_spacing_and_chunked_encoding():
    s = prep.wikitext_spacing("In 1982, she won 1,000 U.S. dollars (3.5%) at the state-run event; it's John's.")
    assert s == "In 1982 , she won 1 @,@ 000 U.S. dollars ( 3 @.@ 5% ) at the state @-@ run event ; it 's John 's ."
    text = "".join(f" Line {i} , with words . \n \n = = H{i} = = \n \n" for i in range(50))
    chunks = prep.chunk_for_encoding(text, lines_per_chunk=7)
    assert len(chunks) > 1 and "".join(chunks) == text


# ---------------------------------------------------------------------------------- issue 15: BOS, validation, stopping


def test_lm_window_with_and_without_bos():
    text = torch.tensor([[10, 11, 12, 13], [20, 21, 22, 23]])
    x, y = win.lm_window(text, None)
    assert x.tolist() == [[10, 11, 12], [20, 21, 22]] and y.tolist() == [[11, 12, 13], [21, 22, 23]]
    x, y = win.lm_window(text, 0)
    assert x.tolist() == [[0, 10, 11, 12], [0, 20, 21, 22]]
    assert y.tolist() == [[win.IGNORE, 11, 12, 13], [win.IGNORE, 21, 22, 23]]
    # a training window of 2048 positions: BOS + 2047 text tokens, or 2049 text tokens without it
    assert win.text_len(2048, 0) == 2048 and win.text_len(2048, None) == 2049
    assert win.lm_window(torch.arange(win.text_len(2048, 0))[None], 0)[0].shape[-1] == 2048
    assert win.lm_window(torch.arange(win.text_len(2048, None))[None], None)[0].shape[-1] == 2048


def test_validation_scores_the_same_predictions_with_and_without_bos():
    valid = np.arange(100, 100 + 3 * 16 + 5, dtype=np.uint16)
    amp = dict(device_type="cpu", enabled=False)
    a = tr.Validation.from_stream(valid, 16, 8, None, torch.device("cpu"), amp, 1)
    b = tr.Validation.from_stream(valid, 16, 8, 0, torch.device("cpu"), amp, 1)
    assert len(a.x) == len(b.x) == 3 and a.x.shape[1] == 15 and b.x.shape[1] == 16
    assert torch.equal(b.y[:, 1:], a.y) and (b.y[:, 0] == win.IGNORE).all() and (b.x[:, 0] == 0).all()
    with pytest.raises(ValueError, match="fewer than one window"):
        tr.Validation.from_stream(valid[:10], 16, 8, 0, torch.device("cpu"), amp, 1)


def test_bos_loss_leaves_out_the_bos_prediction():
    f, model, ids = tiny()
    text = torch.from_numpy(ids[None, :20])
    x, y = win.lm_window(text, 0)
    amp = dict(device_type="cpu", enabled=False)
    with torch.no_grad():
        loss = tr.batch_loss(model, x, y, amp).item()
        logp = torch.log_softmax(model(x).logits[0, 1:].double(), -1)  # positions 1.. predict text[1:]
    assert abs(loss - (-logp.gather(-1, text[0, 1:, None])).mean().item()) < 1e-5


CURVE = [5.0, 4.0, 3.5, 3.4, 3.45, 3.41, 3.39, 3.5, 3.6, 3.7, 3.8, 3.9]


@pytest.mark.parametrize("patience,min_delta,stop_at,best", [
    (3, 0.0, 9, 6),     # 3.39 is a new minimum; then three evaluations without one
    (2, 0.0, 5, 3),     # stops before 3.39 arrives
    (3, 0.02, 6, 3),    # 3.39 does not beat 3.40 by more than 0.02
    (0, 0.0, None, 6),  # patience 0: never stops early, still tracks the minimum
])
def test_patience_on_a_synthetic_validation_curve(patience, min_delta, stop_at, best):
    rule = tr.Patience(patience, min_delta)
    stopped = None
    for i, loss in enumerate(CURVE):
        if rule.update(step=10 * (i + 1), loss=loss):
            stopped = i
            break
    assert stopped == stop_at
    assert rule.best_step == 10 * (best + 1) and rule.best == CURVE[best]


def test_sink_score_matches_transformers_attentions():
    """attention from queries >= 16 to position 0, per layer: our recomputation from the fused
    projections equals transformers' eager attention probabilities."""
    f, model, ids = tiny()
    x = torch.from_numpy(ids[None, :32])
    with torch.no_grad():
        att = model(x, output_attentions=True).attentions  # per layer [1, heads, 32, 32]
    per_head = torch.stack([a[0, :, 16:, 0].mean(-1) for a in att])  # [layers, heads]
    got = tr.sink_scores(model, x, f, dict(device_type="cpu", enabled=False))
    assert np.allclose(got["mean"], per_head.mean(-1).tolist(), atol=1e-6)
    assert np.allclose(got["max_head"], per_head.max(-1).values.tolist(), atol=1e-6)
    assert len(got["mean"]) == f["num_hidden_layers"]


def test_sink_score_keeps_to_the_device_of_its_input():
    """No CPU tensor meets the (GPU) input: on the meta device any such mix raises."""
    f = mm.model_config(tiny=True)
    qkv = torch.empty(2, 40, 3 * f["hidden_size"], device="meta", dtype=torch.bfloat16)
    out = tr.attention_to_first(qkv, f)
    assert out.device.type == "meta" and out.shape == (f["num_attention_heads"],)
    text = torch.empty(3, 17, dtype=torch.int64, device="meta")
    x, y = win.lm_window(text, 0)
    assert x.device.type == y.device.type == "meta" and x.shape == y.shape == (3, 17)


def test_fp32_bytes_and_shapes():
    assert mm.fp32_bytes(mm.model_config()) == 4 * 8_415_744  # the model card's parameter count
    f = mm.model_config(tiny=True, hidden=96, layers=1, bos=0)
    assert (f["num_attention_heads"], f["intermediate_size"], f["prepend_bos_token_id"]) == (3, 384, 0)
    m = mm.build_model(f, "eager")
    assert mm.fp32_bytes(f) == 4 * sum(t.numel() for t in mm.canonical_state_dict(m).values())
    assert "prepend_bos_token_id" in mm.config_json(f)
    assert "prepend_bos_token_id" not in mm.config_json(mm.model_config(tiny=True))
    with pytest.raises(ValueError, match="not a multiple of the head size"):
        mm.model_config(hidden=100)


def _tiny_run(tmp_path, monkeypatch, *flags):
    """`train_micro.py train --tiny` in process on a small synthetic stream (the CLI smoke mode);
    returns the output folder, the log records and the inputs of every training batch."""
    import sys

    from h2o_export.commands import train_micro

    data = tmp_path / "data"
    if not data.exists():
        data.mkdir()
        rng = np.random.default_rng(0)
        np.save(data / "train.npy", rng.integers(0, 200, size=4000).astype(np.uint16))
        np.save(data / "valid.npy", rng.integers(0, 200, size=200).astype(np.uint16))
        np.save(data / "test.npy", rng.integers(0, 200, size=300).astype(np.uint16))
    out = tmp_path / ("out" + "".join(flags).replace("-", "_"))
    argv = ["train_micro.py", "train", "--tiny", "--data", str(data), "--out", str(out), "--seq", "32",
            "--batch", "2", "--steps", "12", "--eval-every", "3", "--val-windows", "2", "--sink-windows", "1",
            "--warmup", "2", "--lr", "1e-2", "--patience", "0", *flags]
    batches = []
    loss = tr.batch_loss

    def spy(model, x, y, amp):
        if model.training:
            batches.append((x.clone(), y.clone()))
        return loss(model, x, y, amp)

    monkeypatch.setattr(tr, "batch_loss", spy)
    monkeypatch.setattr(sys, "argv", argv)
    train_micro.main()
    recs = [json.loads(ln) for ln in (out / "train_log.jsonl").read_text().splitlines()]
    return out, recs, batches


def test_tiny_training_run_keeps_checkpoints_and_publishes_the_best(tmp_path, monkeypatch):
    out, recs, batches = _tiny_run(tmp_path, monkeypatch, "--eval-tokens", "40")
    # windows of 32 positions: the BOS, then 31 text tokens; the BOS's prediction not scored
    assert len(batches) == 12 and all(x.shape == (2, 32) and (x[:, 0] == 0).all() for x, _ in batches)
    assert all((y[:, 0] == win.IGNORE).all() and torch.equal(y[:, 1:-1], x[:, 2:]) for x, y in batches)
    evals = [r for r in recs if r.get("event") == "eval"]
    end = json.loads((out / "run.json").read_text())
    assert [r["step"] for r in evals] == [3, 6, 9, 12] and end["stop"] == "steps" and recs[0]["bos"] == 0
    assert all(len(r["sink"]["mean"]) == 2 and all(0 < s < 1 for s in r["sink"]["max_head"]) for r in evals)
    best = min(evals, key=lambda r: r["val_loss"])
    assert end["chosen_checkpoint"] == best["checkpoint"] and end["chosen_val_loss"] == best["val_loss"]
    for r in evals:
        assert (out / r["checkpoint"] / "model.safetensors").is_file()
    assert (out / "model.safetensors").read_bytes() == (out / best["checkpoint"] / "model.safetensors").read_bytes()
    assert json.loads((out / "config.json").read_text())["prepend_bos_token_id"] == 0
    # the evaluation of the chosen checkpoint fed the BOS too: streaming full = the forward
    res = json.loads((out / "eval.json").read_text())
    assert res["stream_full_vs_forward_max_abs_nll_diff"] < 1e-4 and res["streaming"]["policies"]["full"]["tokens"] == 40


def test_tiny_training_run_without_bos_and_the_last_checkpoint(tmp_path, monkeypatch):
    out, recs, batches = _tiny_run(tmp_path, monkeypatch, "--no-bos", "--choose", "last", "--skip-eval")
    assert all(x.shape == (2, 32) and torch.equal(y[:, :-1], x[:, 1:]) for x, y in batches)
    end = json.loads((out / "run.json").read_text())
    assert recs[0]["bos"] is None and end["chosen_checkpoint"] == "ckpt/step-000012"
    assert "prepend_bos_token_id" not in json.loads((out / "config.json").read_text())
