"""The tiny Llama-family fixtures tests/fixtures/tiny-llama/ and tests/fixtures/tiny-qwen2/ (format as
tests/fixtures/tiny, README in each): a random checkpoint made with transformers' own LlamaForCausalLM /
Qwen2ForCausalLM under hf/ (tiny's tokenizer), its fp32 export, golden outputs computed by
transformers (eager attention) for the standard cases and greedy continuations, checked against
the export; next to each, the fp16 export (tiny-llama-fp16, tiny-qwen2-fp16).

tiny-llama: 2 layers, 4 query heads / 2 KV heads, head_dim 16 with hidden 48 (hidden_size is not
heads x head_dim), llama3 rope_scaling whose wavelength bands split head_dim's 8 frequencies into
unscaled, smoothed and scaled ones, tied LM head, declares its BOS (id 0). tiny-qwen2: 3 layers,
4 / 2 heads, head_dim 16, hidden 64, q/k/v bias, untied LM head, rope_theta 1e6, no BOS.
Run by export/make_fixture.py --llama-only (`make fixtures`). Needs torch + transformers.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Callable

from .exporter import export
from .fixture import MODEL_VOCAB, TEXT, TOLERANCES, golden_cases, worst_differences
from .graph_parity import read_golden, write_golden
from .reference import load_model

INIT_SEED = 4321
COMMON = dict(vocab_size=MODEL_VOCAB, max_position_embeddings=2048, num_attention_heads=4, num_key_value_heads=2,
              head_dim=16, rms_norm_eps=1e-6, bos_token_id=0, eos_token_id=0, hidden_act="silu")
FIXTURES = {
    "tiny-llama": ("LlamaForCausalLM", "LlamaConfig", dict(
        hidden_size=48, intermediate_size=96, num_hidden_layers=2, rope_theta=10000.0, tie_word_embeddings=True,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 256})),
    "tiny-qwen2": ("Qwen2ForCausalLM", "Qwen2Config", dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=3, rope_theta=1000000.0,
        tie_word_embeddings=False)),
}
# Greedy prompts are the first two of these (pairs of words, in order) that make a good oracle under
# fixture.greedy_continuation's rules: a random model's continuation of a given prompt often runs into
# padded ids (500..511) or partial characters, so a fixed prompt cannot be promised.
_WORDS = ("The tower is metres tall about the same height as an building and tallest structure in Paris Her "
          "brother river old museum city war game song album church").split()
GREEDY_CANDIDATES = tuple(f"{a} {b}" for a in _WORDS[:20] for b in _WORDS)
GREEDY_NEW_TOKENS = 16
GREEDY_MIN_MARGIN = 1e-3


def make_checkpoint(out: Path, name: str, tokenizer: Path) -> Path:
    """hf/ of fixture `name`: config.json, model.safetensors (O(1) activations, as tiny's: linear weights
    ~ N(0, 1/fan_in), embeddings ~ N(0, 1), biases ~ N(0, 0.1), RMSNorm weights ~ 1 + N(0, 0.1)) and
    tokenizer.json (and, for llama, tokenizer_config.json saying that its tokenizer adds the BOS)."""
    import torch
    import transformers

    cls_name, cfg_name, kw = FIXTURES[name]
    config = getattr(transformers, cfg_name)(**COMMON, **kw)
    torch.manual_seed(INIT_SEED)
    model = getattr(transformers, cls_name)(config).eval()
    g = torch.Generator().manual_seed(INIT_SEED)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "norm" in pname:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            elif pname.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in pname:
                p.copy_(torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1]))
    hf = out / "hf"
    if hf.exists():
        shutil.rmtree(hf)
    hf.mkdir(parents=True)
    model.save_pretrained(hf, safe_serialization=True)
    (hf / "generation_config.json").unlink(missing_ok=True)
    shutil.copyfile(tokenizer, hf / "tokenizer.json")
    if config.model_type == "llama":  # a Llama tokenizer's declaration: it adds the BOS (the manifest declares it)
        (hf / "tokenizer_config.json").write_text(json.dumps({"add_bos_token": True}) + "\n")
    return hf


def greedy_continuation(model, tokenizer, text: str, bos, new_tokens: int):
    """transformers' greedy continuation of `text` (the declared BOS fed first when there is one), or None
    when it is not a good oracle (fixture.greedy_continuation's rules)."""
    import torch

    ids = tokenizer.encode(text).ids
    fed = ([bos] if bos is not None else []) + ids
    x = torch.tensor([fed])
    with torch.no_grad():
        out = model.generate(x, max_new_tokens=new_tokens, do_sample=False, output_logits=True,
                             return_dict_in_generate=True, pad_token_id=1, eos_token_id=None)
        prompt_logits = model(x).logits[0]
    tokens = out.sequences[0, len(fed):].tolist()
    margin = min(float(t[0] - t[1]) for t in (lg[0].topk(2).values for lg in out.logits))
    wrong_row = int(prompt_logits[-2].argmax())
    before = tokenizer.decode(ids, skip_special_tokens=False)
    whole = tokenizer.decode(ids + tokens, skip_special_tokens=False)
    continuation = whole[len(before):]
    clean = (whole.startswith(before) and "\ufffd" not in continuation
             and all(2 <= t < tokenizer.get_vocab_size() for t in tokens))
    if not clean or margin < GREEDY_MIN_MARGIN or wrong_row == tokens[0] or len(tokens) != new_tokens:
        return None
    return {"text": text, "ids": ids, "tokens": tokens, "continuation": continuation,
            "min_top2_logit_margin": round(margin, 6)}


def make_llama_fixture(root: Path, name: str, tokenizer: Path, log: Callable[[str], None] = print) -> dict:
    """Write tests/fixtures/`name` (and `name`-fp16) under `root`; returns the largest
    onnxruntime-vs-transformers difference per output kind."""
    from tokenizers import Tokenizer

    out = root / name
    hf = make_checkpoint(out, name, tokenizer)
    res = export(out, checkpoint=hf, name=name, dtype="fp32", force=True, log=log)
    manifest = res.manifest
    manifest["source"]["path"] = "hf"
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")

    tok = Tokenizer.from_file(str(hf / "tokenizer.json"))
    tokens = tok.encode(TEXT).ids
    model = load_model(hf)
    L, kv, hd = manifest["num_layers"], manifest["num_kv_heads"], manifest["head_dim"]
    cases, expected, desc = golden_cases(model, tokens, L)
    cls_name = FIXTURES[name][0]
    header = {
        "format": "h2o-golden/1",
        "model": f"tests/fixtures/{name} (model.onnx, manifest.json); checkpoint in hf/",
        "reference": f"transformers {cls_name}, attn_implementation='eager', output_attentions=True, float32, CPU",
        "text": TEXT,
        "tokens": tokens,
        "tolerances": TOLERANCES,
        "compare": "logits and new_key_values only at real new tokens (attention_mask[b, past_len + j] == 1); "
                   "padding rows are unspecified. attention_sums everywhere, and entries whose "
                   "attention_mask column is 0 must be exactly 0. attention_sums = output_attentions "
                   "summed over the real new queries, per QUERY head; K/V per KV head. The cases feed the "
                   "text's tokens as they are (no BOS), whatever the manifest declares.",
    }
    write_golden(out / "golden.json", header, cases, expected, L, kv, hd, desc)

    bos = manifest.get("prepend_bos_token_id")
    prompts = []
    for text in GREEDY_CANDIDATES:
        g = greedy_continuation(model, tok, text, bos, GREEDY_NEW_TOKENS)
        if g is not None:
            prompts.append(g)
        if len(prompts) == 2:
            break
    if len(prompts) < 2:
        raise RuntimeError(f"{name}: fewer than 2 of the greedy candidates make a good oracle; add candidates")
    greedy = {
        "description": f"greedy continuations of {GREEDY_NEW_TOKENS} tokens: tokens[0] is the argmax of the "
                       "prompt's last logits row (the first token after the prefill), then one token a step"
                       + (f"; the declared BOS ({bos}) is fed before the prompt's ids (ids exclude it)"
                          if bos is not None else ""),
        "reference": f"transformers {cls_name}.generate(do_sample=False), attn_implementation='eager', "
                     "full (dynamic) cache, float32, CPU",
        "max_new_tokens": GREEDY_NEW_TOKENS,
        "prompts": prompts,
    }
    path = out / "golden.json"
    text = path.read_text(encoding="utf-8")
    path.write_text(text[:-len("}\n")] + ',\n"greedy":' + json.dumps(greedy, indent=1) + "\n}\n", encoding="utf-8")

    _, golden = read_golden(path)
    worst = worst_differences(out, manifest, golden)
    log(f"{out}: {len(golden)} cases, greedy prompts {[p['text'] for p in prompts]}; onnxruntime vs transformers "
        "max abs diff: " + ", ".join(f"{k} {v:.2e}" for k, v in sorted(worst.items())))

    fp16 = root / f"{name}-fp16"
    r16 = export(fp16, checkpoint=hf, name=f"{name}-fp16", dtype="fp16", force=True, log=log)
    r16.manifest["source"]["path"] = f"../{name}/hf"
    (fp16 / "manifest.json").write_text(json.dumps(r16.manifest, indent=2) + "\n", encoding="utf-8")
    return worst


def make_llama_fixtures(root: Path, tokenizer: Path, log: Callable[[str], None] = print) -> None:
    for name in FIXTURES:
        make_llama_fixture(root, name, tokenizer, log)
