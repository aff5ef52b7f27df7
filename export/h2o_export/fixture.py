"""The tiny test fixture tests/fixtures/tiny/ (format in its README): a byte-level BPE tokenizer
trained on a text corpus, a random GPT-NeoX checkpoint under hf/, its fp32 export, and golden
outputs computed by transformers (one graph call per case, and greedy continuations from
`generate`); the export is checked against them. Next to it: the fp16 export (tiny-fp16) and the
per-layer-mask export with the PyTorch reference's run of a `@pyramid` policy (tiny-layer-masks).
Run by export/make_fixture.py (`make fixtures`). Needs torch + transformers.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable

from .exporter import export
from .graph_parity import (compare, make_tiny_checkpoint, ort_session, read_golden, run_hf, run_onnx,
                           standard_cases, write_golden)
from .reference import load_model

TOKENIZER_VOCAB = 500
MODEL_VOCAB = 512  # padded above the tokenizer's ids, as Pythia pads 50277 -> 50304
INIT_SEED = 1234  # RNG seed of the random checkpoint
CORPUS_BYTES = 2_000_000
TEXT = ("The tower is 324 metres tall, about the same height as an 81-storey building, "
        "and the tallest structure in Paris.")
TOLERANCES = {"logits": 1e-4, "kv": 1e-5, "attention_sums": 1e-5}
DESCRIPTIONS = {
    "prefill": "batch 1, 8 tokens at positions 0..7, past empty",
    "continuation_gapped": "past = cache of a 10-token prefill with positions 3, 6, 8 evicted (7 entries in "
                           "position order 0,1,2,4,5,7,9); 2 new tokens (text tokens 10, 11) at positions 10, 11",
    "continuation_slots": "as continuation_gapped, but the 7 entries sit in slots in the order 5,0,9,2,7,1,4 and "
                          "the slot array has 3 empty slots (mask 0, zeros): past 10",
    "batch2_padded": "batch 2, seq 8, past empty: row 0 = text tokens 0..7; row 1 = 3 left-padding tokens "
                     "(id 1, mask 0, position 0) + text tokens 1..5 at positions 0..4",
    "batch2_padded_decode": "next step of batch2_padded: past = its new K/V (row 1's 3 padding slots have mask 0), "
                            "1 new token per row (text token 8 at position 8; text token 6 at position 5)",
}
# Greedy continuations (golden.json "greedy"): prompts whose continuations are clean text (ids the
# tokenizer knows, no partial characters), whose top two logits stay apart by GREEDY_MIN_MARGIN at
# every step (so float noise between transformers and onnxruntime, ~1e-6, cannot flip a pick), and
# whose first token differs from the argmax of the prompt's second-to-last token (so a first token
# taken from the wrong logits row shows).
GREEDY_PROMPTS = ("Her brother", "The river the old museum")
GREEDY_NEW_TOKENS = 16
GREEDY_MIN_MARGIN = 1e-3
# tests/fixtures/tiny-layer-masks/reference.json: the PyTorch reference streaming the golden text's
# first LAYER_MASKS_TOKENS tokens under this per-layer schedule (F = 20, so PyramidKV's F/20 is 1:
# budgets 4 + 39 and 4 + 1). 48 tokens: layer 0 evicts in steps 43-46, and every step's eviction
# margin stays above what the engine-vs-torch score gap can reach (step 48 of the whole text has a
# margin of 6e-4, too close to tell engine and reference apart by)
LAYER_MASKS_POLICY = "h2o:20+4@pyramid"
LAYER_MASKS_TOKENS = 48


def train_tokenizer(corpus: Path, out: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    with open(corpus, "rb") as f:
        text = f.read(CORPUS_BYTES).decode("utf-8", errors="ignore")
    lines = [ln for ln in text.splitlines() if ln and not ln.startswith("<doc") and ln != "</doc>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=TOKENIZER_VOCAB,
        special_tokens=["<|endoftext|>", "<|padding|>"],  # ids 0 and 1, as in Pythia's tokenizer
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    tok.train_from_iterator(lines, trainer)
    tok.save(str(out))


def golden_cases(model, tokens: list[int], num_layers: int) -> tuple[dict, dict, dict]:
    """The golden cases of a fixture (graph_parity.standard_cases), transformers' outputs for each
    and each case's description: (cases, expected, descriptions)."""
    cases = standard_cases(model, tokens, num_layers, pad_id=1, stepwise=4)
    expected = {name: run_hf(model, step) for name, step in cases.items()}
    desc = dict(DESCRIPTIONS)
    for name in cases:
        if name.startswith("stepwise_"):
            s = int(name.split("_")[1])
            desc[name] = (f"token-by-token from the first token, step {s}: text token {s} at position {s}, "
                          f"past = the {s} entries of the earlier steps")
    return cases, expected, desc


def worst_differences(model_dir: Path, manifest: dict, golden: dict) -> dict[str, float]:
    """The largest onnxruntime-vs-golden difference per output kind (logits, new_key_values,
    attention_sums) over every case, each within TOLERANCES (graph_parity.compare raises)."""
    sess = ort_session(model_dir / "model.onnx")
    worst: dict[str, float] = {}
    for step, want in golden.values():
        for k, d in compare(run_onnx(sess, step, manifest), want, step, TOLERANCES).items():
            kind = k.split(".")[0]
            worst[kind] = max(worst.get(kind, 0.0), d)
    return worst


def make_fixture(corpus: Path, out: Path, log: Callable[[str], None] = print) -> dict[str, float]:
    """Write the fixture into `out` (hf/ is replaced) and check it; returns the largest
    onnxruntime-vs-transformers difference per output kind."""
    hf = out / "hf"
    if hf.exists():
        shutil.rmtree(hf)
    hf.mkdir(parents=True)
    train_tokenizer(corpus, hf / "tokenizer.json")
    make_tiny_checkpoint(hf, MODEL_VOCAB, INIT_SEED)
    # transformers' save_pretrained adds generation_config.json; the fixture does not need it
    (hf / "generation_config.json").unlink(missing_ok=True)

    res = export(out, checkpoint=hf, name="tiny-neox", dtype="fp32", force=True,
                 log=log)
    manifest = res.manifest
    # the checkpoint path in the manifest is made relative, so the fixture does not name this machine
    manifest["source"]["path"] = "hf"
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")

    from tokenizers import Tokenizer

    tokens = Tokenizer.from_file(str(hf / "tokenizer.json")).encode(TEXT).ids
    model = load_model(hf)
    L, nh, hd = manifest["num_layers"], manifest["num_heads"], manifest["head_dim"]
    cases, expected, desc = golden_cases(model, tokens, L)
    header = {
        "format": "h2o-golden/1",
        "model": "tests/fixtures/tiny (model.onnx, manifest.json); checkpoint in hf/",
        "reference": "transformers GPTNeoXForCausalLM, attn_implementation='eager', output_attentions=True, "
                     "float32, CPU",
        "text": TEXT,
        "tokens": tokens,
        "tolerances": TOLERANCES,
        "compare": "logits and new_key_values only at real new tokens (attention_mask[b, past_len + j] == 1); "
                   "padding rows are unspecified. attention_sums everywhere, and entries whose "
                   "attention_mask column is 0 must be exactly 0. attention_sums = output_attentions "
                   "summed over the real new queries.",
    }
    write_golden(out / "golden.json", header, cases, expected, L, nh, hd, desc)
    add_greedy(out, log)

    # the export must reproduce the golden values
    _, golden = read_golden(out / "golden.json")
    worst = worst_differences(out, manifest, golden)
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    log(f"fixture written to {out} ({total / 1e6:.2f} MB, {len(golden)} cases); "
        f"onnxruntime vs transformers max abs diff: " + ", ".join(f"{k} {v:.2e}" for k, v in sorted(worst.items())))
    make_fp16_fixture(out, log)
    make_layer_masks_fixture(out, log)
    return worst


def make_fp16_fixture(fixture: Path, log: Callable[[str], None] = print) -> None:
    """`fixture`-fp16/ next to `fixture`: the fp16 export of `fixture`/hf (model.onnx, manifest.json,
    tokenizer.json), for the engine's fp16 tests (tests/engine_fp16.rs)."""
    out = fixture.parent / f"{fixture.name}-fp16"
    res = export(out, checkpoint=fixture / "hf", name="tiny-neox-fp16", dtype="fp16", force=True, log=log)
    res.manifest["source"]["path"] = f"../{fixture.name}/hf"
    (out / "manifest.json").write_text(json.dumps(res.manifest, indent=2) + "\n", encoding="utf-8")


def greedy_continuation(model, tokenizer, text: str, new_tokens: int) -> dict:
    """transformers' greedy continuation of `text` (GPTNeoXForCausalLM.generate, do_sample=False,
    its default full cache), with the checks GREEDY_PROMPTS promise."""
    import torch

    ids = tokenizer.encode(text).ids
    x = torch.tensor([ids])
    with torch.no_grad():
        out = model.generate(x, max_new_tokens=new_tokens, do_sample=False, output_logits=True,
                             return_dict_in_generate=True, pad_token_id=1)
        prompt_logits = model(x).logits[0]
    tokens = out.sequences[0, len(ids):].tolist()
    margin = min(float(t[0] - t[1]) for t in (lg[0].topk(2).values for lg in out.logits))
    wrong_row = int(prompt_logits[-2].argmax())
    assert int(prompt_logits[-1].argmax()) == tokens[0], "generate's first token is the prompt's last row's"
    before = tokenizer.decode(ids, skip_special_tokens=False)
    whole = tokenizer.decode(ids + tokens, skip_special_tokens=False)
    continuation = whole[len(before):]
    clean = (whole.startswith(before) and "\ufffd" not in continuation
             and all(2 <= t < tokenizer.get_vocab_size() for t in tokens))
    if not clean or margin < GREEDY_MIN_MARGIN or wrong_row == tokens[0]:
        raise RuntimeError(f"greedy prompt {text!r}: continuation {tokens} (margin {margin:.2e}, second-to-last "
                           f"row's argmax {wrong_row}) is not a good oracle; pick another prompt")
    return {"text": text, "ids": ids, "tokens": tokens, "continuation": continuation,
            "min_top2_logit_margin": round(margin, 6)}


def add_greedy(out: Path, log: Callable[[str], None] = print) -> None:
    """Add (or replace) golden.json's "greedy" key: GREEDY_PROMPTS continued by transformers. The
    file's other bytes are left as they are (the key goes last, after "cases")."""
    from tokenizers import Tokenizer

    model = load_model(out / "hf")
    tokenizer = Tokenizer.from_file(str(out / "hf" / "tokenizer.json"))
    greedy = {
        "description": f"greedy continuations of {GREEDY_NEW_TOKENS} tokens: tokens[0] is the argmax of the "
                       "prompt's last logits row (the first token after the prefill), then one token a step",
        "reference": "transformers GPTNeoXForCausalLM.generate(do_sample=False), attn_implementation='eager', "
                     "full (dynamic) cache, float32, CPU",
        "max_new_tokens": GREEDY_NEW_TOKENS,
        "prompts": [greedy_continuation(model, tokenizer, t, GREEDY_NEW_TOKENS) for t in GREEDY_PROMPTS],
    }
    path = out / "golden.json"
    text = path.read_text(encoding="utf-8")
    marker = ',\n"greedy":'
    base = text[:text.index(marker)] if marker in text else text[:-len("}\n")]
    path.write_text(base + marker + json.dumps(greedy, indent=1) + "\n}\n", encoding="utf-8")
    log(f"golden.json: greedy continuations of {len(GREEDY_PROMPTS)} prompts")


def make_layer_masks_fixture(fixture: Path, log: Callable[[str], None] = print) -> None:
    """`fixture`-layer-masks/ next to `fixture`: `fixture`/hf exported with one attention mask per
    layer (`--layer-masks`), and reference.json, the PyTorch reference (reference.py) streaming the
    golden text under LAYER_MASKS_POLICY: per-layer budgets, eviction trace, final kept sets, NLLs."""
    from .policies import parse_policy
    from .reference import run_reference

    out = fixture.parent / f"{fixture.name}-layer-masks"
    res = export(out, checkpoint=fixture / "hf", name="tiny-neox-layer-masks", dtype="fp32", force=True,
                 layer_masks=True, log=log)
    res.manifest["source"]["path"] = f"../{fixture.name}/hf"
    (out / "manifest.json").write_text(json.dumps(res.manifest, indent=2) + "\n", encoding="utf-8")
    tokens = json.loads((fixture / "golden.json").read_text(encoding="utf-8"))["tokens"][:LAYER_MASKS_TOKENS]
    model = load_model(fixture / "hf")
    layers = model.config.num_hidden_layers
    policy = parse_policy(LAYER_MASKS_POLICY, layers=layers)
    run = run_reference(model, tokens, policy)
    doc = {
        "format": "h2o-layer-masks-reference/1",
        "reference": "export/h2o_export/reference.py run_reference (PyTorch, float32, CPU), streaming from the "
                     "first token: step t feeds tokens[t] at position t",
        "policy": run["policy"],
        "budgets": [policy.for_layer(li, layers).budget for li in range(layers)],
        "tokens": tokens,
        "nll": run["nll"],
        "kept_final": run["kept_final"],
        "trace": run["trace"],
    }
    (out / "reference.json").write_text(json.dumps(doc) + "\n", encoding="utf-8")
    log(f"{out}: {LAYER_MASKS_POLICY} budgets {doc['budgets']}, {len(run['trace']['steps'])} steps")
