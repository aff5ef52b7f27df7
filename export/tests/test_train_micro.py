"""Tests of pythia-micro's training code (h2o_export.micro: model, evaluate, data; the CLIs
export/train_micro.py and prepare_micro_data.py)."""

from __future__ import annotations

import numpy as np
import torch
import common  # noqa: F401  (puts export/ on sys.path)

from h2o_export.micro import data as prep  # noqa: E402
from h2o_export.micro import evaluate as ev  # noqa: E402
from h2o_export.micro import model as mm  # noqa: E402

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
