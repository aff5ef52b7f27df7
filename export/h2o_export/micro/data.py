"""Training data and tokenizer of models/pythia-micro (export/prepare_micro_data.py is the
command line; its docstring describes the files written).

The English Wikipedia corpus (WikiExtractor output) is rendered in the WikiText layout
(`render_article`, `wikitext_spacing`), a byte-level BPE tokenizer is trained on it plus the
trained part of wiki.valid.raw, and the token streams are written as uint16 arrays.
wiki.test.raw is only tokenized, never trained on.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from pathlib import Path
from typing import Optional

import numpy as np
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers


class MicroError(Exception):
    """Missing or unusable input data; the message names it."""


EOT = "<|endoftext|>"

# Abbreviations whose trailing period is not split off (a small Moses-like list).
ABBREVIATIONS = {
    "Mr", "Mrs", "Ms", "Dr", "St", "Jr", "Sr", "vs", "etc", "Inc", "Ltd", "Co", "No", "Gen",
    "Col", "Lt", "Sgt", "Capt", "Rev", "Prof", "Mt", "Ft", "Gov", "Sen", "Rep", "Hon", "Bros",
    "Corp", "Jan", "Feb", "Mar", "Apr", "Aug", "Sept", "Sep", "Oct", "Nov", "Dec", "approx",
    "ca", "cf", "al", "Vol", "vol", "pp", "p", "ed", "eds", "Op", "op",
}
DOC_OPEN = re.compile(r'^<doc id="[^"]*" url="[^"]*" title="(.*)">$')
_PUNCT = re.compile(r'([,;:!?()\[\]{}"“”«»–—/…])')
_HYPHEN = re.compile(r"(?<=\w)-(?=\w)")
_NUM_COMMA = re.compile(r"(?<=\d),(?=\d)")
_NUM_POINT = re.compile(r"(?<=\d)\.(?=\d)")
_CONTRACTION = re.compile(r"(?<=\w)'(s|re|ve|ll|d|m|S|RE|VE|LL|D|M)\b")
_NT = re.compile(r"(?<=\w)n't\b")
_SPACES = re.compile(r"\s+")


def wikitext_spacing(line: str) -> str:
    """Space a plain sentence the way WikiText-2 raw is spaced (Moses-like, approximate)."""
    s = _NUM_COMMA.sub("\x01", line)
    s = _NUM_POINT.sub("\x02", s)
    s = _HYPHEN.sub("\x03", s)
    s = _PUNCT.sub(r" \1 ", s)
    s = _NT.sub(" n't", s)
    s = _CONTRACTION.sub(r" '\1", s)
    out = []
    for tok in s.split():
        if len(tok) > 1 and tok.endswith("."):
            base = tok[:-1]
            keep = ("." in base or base in ABBREVIATIONS or (len(base) == 1 and base.isalpha()))
            out.extend([tok] if keep else [base, "."])
        else:
            out.append(tok)
    s = " ".join(out)
    s = s.replace("\x01", " @,@ ").replace("\x02", " @.@ ").replace("\x03", " @-@ ")
    return _SPACES.sub(" ", s).strip()


def is_heading(line: str) -> bool:
    """WikiExtractor writes a section title as a short line ending in one period."""
    words = line.split()
    return (line.endswith(".") and line.count(".") == 1 and 0 < len(words) <= 8
            and not line[0].islower())


def render_article(title: str, lines: list[str]) -> str:
    """One article in the WikiText-2 layout; empty sections are dropped."""
    body = [ln.strip() for ln in lines]
    body = [ln for ln in body if ln and ln != "<br>"]
    if body and body[0] == title.strip():
        body = body[1:]  # WikiExtractor repeats the title as the first line
    blocks: list[tuple[str, str]] = []  # (kind, text)
    for i, ln in enumerate(body):
        if i > 0 and is_heading(ln):
            blocks.append(("h", ln[:-1].strip()))
        else:
            blocks.append(("p", ln))
    # drop headings not followed by a paragraph (empty sections such as "References.")
    kept = [b for j, b in enumerate(blocks)
            if b[0] == "p" or any(x[0] == "p" for x in blocks[j + 1:j + 2])]
    if not any(k == "p" for k, _ in kept):
        return ""
    parts = [f" \n = {wikitext_spacing(title)} = \n \n"]
    for kind, text in kept:
        if kind == "h":
            parts.append(f" \n = = {wikitext_spacing(text)} = = \n \n")
        else:
            parts.append(f" {wikitext_spacing(text)} \n")
    return "".join(parts)


def read_corpus_articles(corpus_dir: Path):
    """Yield (title, lines) for every <doc> of corpus-*.txt, in file order."""
    files = sorted(corpus_dir.glob("corpus-*.txt"))
    if not files:
        raise MicroError(f"no corpus-*.txt in {corpus_dir}; pass --data pointing at shared/data")
    for path in files:
        title, lines = None, []
        with open(path, encoding="utf-8") as f:
            for raw in f:
                line = raw.rstrip("\n")
                m = DOC_OPEN.match(line)
                if m:
                    title, lines = m.group(1), []
                elif line == "</doc>":
                    if title is not None:
                        yield title, lines
                    title, lines = None, []
                elif title is not None:
                    lines.append(line)


def split_wikitext_articles(text: str) -> list[str]:
    """Split a wiki.*.raw text before each top-level ` = Title = ` line (with its blank line)."""
    starts = [m.start() for m in re.finditer(r"(?m)^ \n = [^=\n].* = \n", text)]
    if not starts or starts[0] != 0:
        starts = [0] + starts
    return [text[a:b] for a, b in zip(starts, starts[1:] + [len(text)])]


def chunk_for_encoding(text: str, lines_per_chunk: int = 200) -> list[str]:
    """Cut text into pieces whose joint encoding equals the encoding of the whole text.

    Cuts only before a line that starts with a space and a non-space (a paragraph or heading
    line): the byte-level pre-tokenizer then splits at the same place in the whole text.
    """
    lines = text.splitlines(keepends=True)
    chunks, cur = [], []
    for ln in lines:
        if len(cur) >= lines_per_chunk and len(ln) > 1 and ln[0] == " " and not ln[1].isspace():
            chunks.append("".join(cur))
            cur = []
        cur.append(ln)
    if cur:
        chunks.append("".join(cur))
    return chunks


def build_tokenizer(vocab_size: int, texts, seed_note: str) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True)
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=True)
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=True)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    del seed_note
    return tok


def encode_stream(tok: Tokenizer, text: str) -> np.ndarray:
    ids: list[int] = []
    for enc in tok.encode_batch(chunk_for_encoding(text), add_special_tokens=False):
        ids.extend(enc.ids)
    arr = np.asarray(ids, dtype=np.int64)
    if arr.size and arr.max() >= 65536:
        raise MicroError("token id does not fit uint16; use a vocab below 65536")
    return arr.astype(np.uint16)


def train_tokenizer(train_text: str, vocab_size: int, tokenizer_out: Path) -> Path:
    """Train the byte-level BPE on the training text and save it to tokenizer_out."""
    tok = build_tokenizer(vocab_size, iter(chunk_for_encoding(train_text, 400)), "")
    if tok.token_to_id(EOT) != 0:
        raise MicroError("<|endoftext|> did not get id 0")
    tokenizer_out.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(tokenizer_out))
    return tokenizer_out


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def prepare(data: Path, tokenizer_out: Optional[Path], out: Path, vocab_size: int = 4096,
            valid_holdout_articles: int = 6, sample_out: Optional[Path] = None,
            tokenizer_from: Optional[Path] = None) -> dict:
    """Write the tokenizer and train/valid/test.npy + data.json; returns data.json's content.

    With `tokenizer_from` (an existing tokenizer.json, e.g. models/pythia-micro's) no tokenizer
    is trained or written: the streams are encoded with that one, so a new model keeps the
    default model's vocabulary."""
    corpus_dir = data / "train-corpus"
    wt_dir = data / "wikitext-2-raw-v1"
    valid_raw, test_raw = wt_dir / "wiki.valid.raw", wt_dir / "wiki.test.raw"
    for p in (corpus_dir, valid_raw, test_raw):
        if not p.exists():
            raise MicroError(f"{p} not found; pass --data pointing at shared/data")
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()

    articles = [a for a in (render_article(t, ls) for t, ls in read_corpus_articles(corpus_dir)) if a]
    corpus_text = "".join(articles)
    valid_text = valid_raw.read_text(encoding="utf-8")
    valid_articles = split_wikitext_articles(valid_text)
    if len(valid_articles) <= valid_holdout_articles:
        raise MicroError("wiki.valid.raw has too few articles for the hold-out")
    valid_train = "".join(valid_articles[:-valid_holdout_articles])
    valid_held = "".join(valid_articles[-valid_holdout_articles:])
    print(f"corpus: {len(articles)} articles, {len(corpus_text.encode()):,} bytes rendered; "
          f"wiki.valid: {len(valid_articles)} articles ({valid_holdout_articles} held out) "
          f"[{time.time() - t0:.0f}s]", flush=True)
    if sample_out:
        sample_out.write_text(corpus_text[:20000], encoding="utf-8")

    train_text = corpus_text + valid_train
    if tokenizer_from is None:
        tokenizer_out = train_tokenizer(train_text, vocab_size, tokenizer_out)
        print(f"tokenizer: vocab {vocab_size} -> {tokenizer_out} [{time.time() - t0:.0f}s]", flush=True)
    else:
        tokenizer_out = tokenizer_from
        print(f"tokenizer: {tokenizer_from} (reused, not trained)", flush=True)
    tok = Tokenizer.from_file(str(tokenizer_out))
    if tok.token_to_id(EOT) != 0:
        raise MicroError(f"{tokenizer_out}: <|endoftext|> is not id 0")
    train_ids = encode_stream(tok, train_text)
    valid_ids = encode_stream(tok, valid_held)
    test_text = test_raw.read_text(encoding="utf-8")
    test_ids = np.asarray(tok.encode(test_text, add_special_tokens=False).ids, dtype=np.uint16)
    # the chunked encoding must agree with a whole-text encoding (checked on wiki.valid's held part)
    whole = np.asarray(tok.encode(valid_held, add_special_tokens=False).ids, dtype=np.uint16)
    if not np.array_equal(whole, valid_ids):
        raise MicroError("chunked encoding differs from whole-text encoding")
    np.save(out / "train.npy", train_ids)
    np.save(out / "valid.npy", valid_ids)
    np.save(out / "test.npy", test_ids)
    meta = {
        "vocab_size": tok.get_vocab_size(),
        "train_tokens": int(train_ids.size),
        "valid_tokens": int(valid_ids.size),
        "test_tokens": int(test_ids.size),
        "train_bytes": len(train_text.encode()),
        "corpus_articles": len(articles),
        "valid_articles_trained": len(valid_articles) - valid_holdout_articles,
        "valid_articles_held_out": valid_holdout_articles,
        "bytes_per_token_test": len(test_text.encode()) / test_ids.size,
        "tokenizer_sha256": sha256_file(tokenizer_out),
        "sources": {p.name: sha256_file(p) for p in sorted(corpus_dir.glob("corpus-*.txt"))}
        | {"wiki.valid.raw": sha256_file(valid_raw), "wiki.test.raw (eval only)": sha256_file(test_raw)},
    }
    (out / "data.json").write_text(json.dumps(meta, indent=2))
    print(json.dumps({k: v for k, v in meta.items() if k != "sources"}, indent=2))
    print(f"done [{time.time() - t0:.0f}s]")
    return meta

