"""The tiny test fixture tests/fixtures/tiny/ (format in its README): a byte-level BPE tokenizer
trained on a text corpus, a random GPT-NeoX checkpoint under hf/, its fp32 export, and golden
outputs computed by transformers; the export is checked against them. Run by
export/make_fixture.py (`make fixtures`). Needs torch + transformers.
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
    cases = standard_cases(model, tokens, L, pad_id=1, stepwise=4)
    expected = {name: run_hf(model, step) for name, step in cases.items()}
    desc = dict(DESCRIPTIONS)
    for name in cases:
        if name.startswith("stepwise_"):
            s = int(name.split("_")[1])
            desc[name] = (f"token-by-token from the first token, step {s}: text token {s} at position {s}, "
                          f"past = the {s} entries of the earlier steps")
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

    # the export must reproduce the golden values
    sess = ort_session(out / "model.onnx")
    _, golden = read_golden(out / "golden.json")
    worst = {}
    for name, (step, want) in golden.items():
        for k, d in compare(run_onnx(sess, step, manifest), want, step, TOLERANCES).items():
            kind = k.split(".")[0]
            worst[kind] = max(worst.get(kind, 0.0), d)
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    log(f"fixture written to {out} ({total / 1e6:.2f} MB, {len(golden)} cases); "
        f"onnxruntime vs transformers max abs diff: " + ", ".join(f"{k} {v:.2e}" for k, v in sorted(worst.items())))
    make_fp16_fixture(out, log)
    return worst


def make_fp16_fixture(fixture: Path, log: Callable[[str], None] = print) -> None:
    """`fixture`-fp16/ next to `fixture`: the fp16 export of `fixture`/hf (model.onnx, manifest.json,
    tokenizer.json), for the engine's fp16 tests (tests/engine_fp16.rs)."""
    out = fixture.parent / f"{fixture.name}-fp16"
    res = export(out, checkpoint=fixture / "hf", name="tiny-neox-fp16", dtype="fp16", force=True, log=log)
    res.manifest["source"]["path"] = f"../{fixture.name}/hf"
    (out / "manifest.json").write_text(json.dumps(res.manifest, indent=2) + "\n", encoding="utf-8")
