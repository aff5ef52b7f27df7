"""WikiText-2 raw from the Hugging Face hub, rebuilt byte for byte (export/fetch_wikitext.py is
the command line; its docstring describes the source and the checks).

The hub stores one row per line of the original file with whitespace-only lines turned into "";
`rows_to_raw` rebuilds the raw file, `check` compares it with the canonical files' sha256,
`write_atomic` writes through a temporary file and a rename. Stdlib only (pyarrow for parquet).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Callable, Iterable, Optional

DATASET, CONFIG = "Salesforce/wikitext", "wikitext-2-raw-v1"
ROWS_URL = "https://datasets-server.huggingface.co/rows"
PAGE = 100  # the rows API's largest page
# split -> (hub split name, raw file name, byte count, sha256 of the canonical file)
SPLITS = {
    "test": ("test", "wiki.test.raw", 1290590, "173c87a53759e0201f33e0ccf978e510c2042d7f2cb78229d9a50d79b9e7dd08"),
    "valid": ("validation", "wiki.valid.raw", 1146846, "4cd0f6876d07a413aa911261ff6d363c72d757d47f0fdd6015702014c89cb9c7"),
}


class FetchError(Exception):
    """Bad input, unreadable source or refused write; exit status 2."""


def rows_to_raw(rows: Iterable[str]) -> str:
    """The raw file's text from the hub's rows (one per original line; blank lines as "")."""
    out = []
    for i, r in enumerate(rows):
        if not isinstance(r, str):
            raise FetchError(f"row {i} is not a string: {type(r).__name__}")
        out.append(" \n" if r == "" else r)
    return "".join(out)


def _texts(doc, origin: str) -> list[str]:
    """Rows from a parsed JSON value: a rows-API page {"rows": [{"row": {"text"}}]}, a list of such
    pages, a list of {"text": ...} or a plain list of strings."""
    if isinstance(doc, dict) and "rows" in doc:
        doc = doc["rows"]
    if not isinstance(doc, list):
        raise FetchError(f"{origin}: expected a list of rows or a rows-API page with `rows`")
    out: list[str] = []
    for i, item in enumerate(doc):
        if isinstance(item, dict) and "rows" in item:
            out += _texts(item, f"{origin} page {i}")
            continue
        if isinstance(item, dict):
            item = item.get("row", item)
            item = item.get("text") if isinstance(item, dict) else None
        if not isinstance(item, str):
            raise FetchError(f"{origin}: row {i} has no text string")
        out.append(item)
    return out


def read_rows_file(path: Path) -> list[str]:
    """Rows from a local file: JSON (see `_texts`), JSON lines ({"text": ...} per line) or parquet."""
    if not path.is_file():
        raise FetchError(f"{path}: no such file")
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as e:
            raise FetchError("reading parquet needs pyarrow (pip install pyarrow), or use --from-rows JSON") from e
        try:
            return [t if t is not None else "" for t in pq.read_table(path, columns=["text"]).column("text").to_pylist()]
        except Exception as e:  # pyarrow raises several types for a bad file
            raise FetchError(f"{path}: not a parquet file with a `text` column ({e})") from e
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise FetchError(f"{path}: cannot read as UTF-8 ({e})") from e
    try:
        if path.suffix == ".jsonl":
            return _texts([json.loads(line) for line in text.splitlines() if line.strip()], str(path))
        return _texts(json.loads(text), str(path))
    except json.JSONDecodeError as e:
        raise FetchError(f"{path}: not JSON ({e})") from e


def fetch_rows(split: str, get: Optional[Callable[[str], bytes]] = None, log=print) -> list[str]:
    """All rows of a split through the datasets-server rows API (`get` fetches a URL; injectable)."""
    get = get or (lambda url: urllib.request.urlopen(url, timeout=60).read())
    rows: list[str] = []
    total = None
    while total is None or len(rows) < total:
        q = urllib.parse.urlencode({"dataset": DATASET, "config": CONFIG, "split": SPLITS[split][0],
                                    "offset": len(rows), "length": PAGE})
        try:
            page = json.loads(get(f"{ROWS_URL}?{q}"))
        except (OSError, ValueError) as e:
            raise FetchError(f"cannot fetch {split} rows at offset {len(rows)} from {ROWS_URL} ({e})") from e
        total = int(page.get("num_rows_total", 0))
        got = _texts(page, f"{split} rows at offset {len(rows)}")
        if not got:
            raise FetchError(f"{split}: the rows API returned no rows at offset {len(rows)} of {total}")
        rows += got
        log(f"{split}: {len(rows)}/{total} rows", end="\r", flush=True)
    log("")
    return rows


def write_atomic(path: Path, data: bytes, force: bool) -> None:
    """Write `data` to `path` through a temporary file in the same folder; refuse to replace
    an existing file unless `force`."""
    if path.exists() and not force:
        raise FetchError(f"{path} exists; pass --force to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check(split: str, data: bytes) -> Optional[str]:
    """None when `data` is the canonical file of the split, else what differs."""
    _, _, size, sha = SPLITS[split]
    got = hashlib.sha256(data).hexdigest()
    if got == sha:
        return None
    return f"{len(data)} bytes, sha256 {got}; the canonical wiki file has {size} bytes, sha256 {sha}"
