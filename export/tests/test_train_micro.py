"""Tests of export/train_micro.py (pythia-micro training/eval) and prepare_micro_data.py."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

EXPORT_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(EXPORT_DIR))

import prepare_micro_data as prep  # noqa: E402
import train_micro as tm  # noqa: E402

N = 40
POLICIES = [("full", None, 0), ("local:8", 8, 8), ("h2o:5+3", 8, 3), ("sink:2+6", 8, 6)]


def tiny():
    fields = tm.model_config(tiny=True)
    fields.update(vocab_size=97, num_hidden_layers=2, hidden_size=32, num_attention_heads=4, intermediate_size=64)
    model = tm.build_model(fields, "eager")
    tm.init_weights(model, fields, seed=3)
    model.eval()
    ids = np.random.default_rng(0).integers(0, fields["vocab_size"], size=N)
    return fields, model, ids


def test_init_is_seeded_and_device_independent():
    f, a, _ = tiny()
    b = tm.build_model(f, "eager")
    tm.init_weights(b, f, seed=3)
    sa, sb = tm.canonical_state_dict(a), tm.canonical_state_dict(b)
    assert sa.keys() == sb.keys() and "embed_out.weight" in sa
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_streaming_full_matches_transformers_forward():
    f, model, ids = tiny()
    sd = tm.canonical_state_dict(model)
    ref = tm.position_nll(sd, f, torch.from_numpy(ids)[None], torch.device("cpu"))[0]
    res = tm.stream_eval(sd, f, ids, torch.device("cpu"), policies=POLICIES)
    assert res["complete"]
    assert (res["_nll"][0] - ref.double()).abs().max().item() < 1e-4


def test_policies_keep_what_they_promise():
    f, model, ids = tiny()
    res = tm.stream_eval(tm.canonical_state_dict(model), f, ids, torch.device("cpu"), policies=POLICIES)
    kept = res["_kept"]  # [L, C, H, N]; the last token (N-1) is never fed, so t_last = N-2
    t = N - 2
    pos = torch.arange(N)
    full, local, h2o, sink = (kept[:, c] for c in range(4))
    assert full[..., : t + 1].all()
    assert torch.equal(local.sum(-1), torch.full(local.shape[:-1], 8))
    assert local[..., t - 7: t + 1].all() and not local[..., : t - 7].any()
    assert torch.equal(h2o.sum(-1), torch.full(h2o.shape[:-1], 8))
    assert h2o[..., t - 2: t + 1].all()  # the 3 most recent always stay
    assert torch.equal(sink.sum(-1), torch.full(sink.shape[:-1], 8))
    assert sink[..., :2].all() and sink[..., t - 5: t + 1].all()
    assert not kept[..., t + 1:].any() and pos.numel() == N
    # evicting changes the prediction: a bounded cache is not the full model
    assert res["policies"]["local:8"]["nll"] != res["policies"]["full"]["nll"]


def test_checkpoint_round_trip_loads_in_transformers(tmp_path):
    from transformers import GPTNeoXForCausalLM

    f, model, ids = tiny()
    names = tm.save_checkpoint(model, tm.config_json(f), None, tmp_path, shard_mib=0.05)
    assert len(names) > 1  # sharded
    tm.cmd_merge(type("A", (), {"dir": str(tmp_path), "out": str(tmp_path / "model.safetensors")}))
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
